"""Data benchmark: training-pipeline clips per second at 384 x 384, and generator frames per second.

    python tools/benchmark.py data [--size 384] [--batch 8] [--workers 0 2] [--quick]

Pipelines (STCN sampler, 3 frames per clip, full augmentation) are timed on
(a) DAVIS-layout JPEG files at 854 x 480 written by the generator into a
temporary folder (the real-data path: JPEG + palette PNG decoding), and
(b) the "default" synthetic preset rendered on the fly. The baseline of the
same run is the bare decode of the same clips (3 JPEG frames + 3 PNG masks,
no sampling logic, no augmentation), so "vs decode" is the share of the
I/O ceiling the full pipeline reaches. Generator numbers are frames rendered
per second, scene construction included, per preset.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from bench.common import machine_line
from vosjax.data import (
    DavisSource,
    SyntheticSource,
    load_spec,
    make_train_pipeline,
    read_image,
    read_label_png,
    write_davis_layout,
)


def _median_rate(
    fn, items_per_call: int, repeats: int, warmup: int = 1
) -> tuple[float, float, float]:
    """(median, min, max) items per second over ``repeats`` timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(items_per_call / (time.perf_counter() - t0))
    return statistics.median(rates), min(rates), max(rates)


def _pipeline_rate(source, size: int, batch: int, workers: int, batches: int, repeats: int):
    cfg = {
        "sampler": "stcn",
        "batch_size": batch,
        "crop_size": (size, size),
        "num_workers": workers,
        "num_threads": 2 if workers == 0 else 1,
        "prefetch": 2,
    }
    it = make_train_pipeline(cfg, source, seed=0, process_index=0, process_count=1)
    try:
        for _ in range(2):  # start-up (worker processes, first scenes) is not throughput
            next(it)
        return _median_rate(lambda: [next(it) for _ in range(batches)], batches * batch, repeats)
    finally:
        it.close()


def _decode_rate(davis: DavisSource, batch: int, repeats: int):
    rng = np.random.default_rng(0)

    def clips():
        for _ in range(batch):
            frames, masks = davis.files(int(rng.integers(len(davis))))
            t0 = int(rng.integers(0, len(frames) - 3))
            for t in range(t0, t0 + 3):
                read_image(frames[t])
                read_label_png(masks[t])

    return _median_rate(clips, batch, repeats)


def _generator_fps(preset: str, videos: int):
    src = SyntheticSource(preset, "train")

    def run():
        for i in range(videos):
            v = src[i]
            for t in range(v.num_frames):
                v.frames[t]

    T = src.spec.num_frames
    return _median_rate(run, videos * T, repeats=3), src.spec


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="benchmark.py data", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=384, help="training crop size (square)")
    ap.add_argument("--batch", type=int, default=8, help="clips per batch")
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="grain worker processes to try"
    )
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = ap.parse_args(argv)
    # Throughput is timed over several consecutive batches per repeat, so the few
    # batches that grain prefetches while the previous measurement prints do not count.
    repeats = 2 if args.quick else 3
    batches = 4 if args.quick else 8

    print(machine_line())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"cpu cores: {os.cpu_count()} (load average {load})  |  crop {args.size}x{args.size}, "
        f"batch {args.batch}, 3 frames per clip"
    )
    print()
    print("generator (frames rendered per second, scene construction included)")
    for preset in ("demo", "default"):
        (med, lo, hi), spec = _generator_fps(preset, videos=4 if args.quick else 8)
        print(
            f"  {preset:8s} {spec.height}x{spec.width}, {spec.num_frames} frames/video: "
            f"{med:8.1f} frames/s  (min {lo:.1f}, max {hi:.1f})"
        )
    print()

    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(
            "default",
            name="bench",
            height=480,
            width=854,
            num_frames=30,
            splits={"train": {"seed": 7, "num_videos": 4 if args.quick else 8}},
        )
        t0 = time.perf_counter()
        write_davis_layout(SyntheticSource(spec, "train"), tmp, split="train", image_format="jpg")
        print(
            f"wrote {len(SyntheticSource(spec, 'train'))} DAVIS-layout videos (854x480 JPEG) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        davis = DavisSource(tmp, split="train", resolution="480p")
        base, blo, bhi = _decode_rate(davis, args.batch, repeats)
        print("training pipeline, clips per second (median of repeats; min, max)")
        print(
            f"  baseline: decode 3 JPEG frames + 3 PNG masks per clip, 854x480: {base:7.1f} "
            "clips/s "
            f"({blo:.1f}, {bhi:.1f})"
        )
        for workers in args.workers:
            med, lo, hi = _pipeline_rate(davis, args.size, args.batch, workers, batches, repeats)
            print(
                f"  DAVIS files 854x480 -> {args.size}^2, workers={workers}: {med:7.1f} clips/s "
                f"({lo:.1f}, {hi:.1f})  = {med / base:.2f}x decode baseline"
            )
        synthetic = SyntheticSource("default", "train")
        for workers in args.workers:
            med, lo, hi = _pipeline_rate(
                synthetic, args.size, args.batch, workers, batches, repeats
            )
            print(
                f"  synthetic 'default' on the fly -> {args.size}^2, workers={workers}: "
                f"{med:7.1f} clips/s "
                f"({lo:.1f}, {hi:.1f})  = {med / base:.2f}x decode baseline"
            )
    return 0
