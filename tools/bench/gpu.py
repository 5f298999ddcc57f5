"""Accelerator suite: every method's inference at 480p with 2 objects, full STCN training, memory.

    python tools/benchmark.py gpu [--frames 30] [--size 480 854] [--objects 2]
                                  [--train-batch 16] [--no-train] [--quick]

Meant for one GPU (or TPU) and to finish in under 8 minutes there; it runs on a
CPU too (``--quick``: tiny configs at 64 x 112, a smoke test of the suite
itself, no figure to compare). Every network has random weights at its
full-size config; frames and masks are random (``bench.engine``).

Inference rows (``Engine`` steps, batch 1, float32, ``--objects`` objects,
first mask given at frame 0, each step synchronised; frames per second = the
MEAN over the timed frames, which is what a long video sees when some frames
do more work, memory writes, corrections or learner updates):

- STCN (every 5th frame written, top-k 20);
- TrickVOS lightweight (MobileNetV2 encoders, first + last frame memory);
- PCVOS per-clip L = 5 and L = 10 (progressive memory matching F = 5);
- FRTM (ResNet-101 would be the paper's final model; the full config's backbone
  is used as configured) with its target-model updates;
- JOINT (a template every 5 frames, learner refits);
- cyclic VOS with gradient correction (10 steps) on every 5th frame.

Training rows: the full STCN config's main stage (3 frames of 384 x 384, its
objects per sample) at ``--train-batch`` clips per step (16: the papers'
batch), float32 and bfloat16 (``model.dtype``), jitted on all local devices:
steps/s and clips/s (``bench.train``).

Last: peak accelerator memory of the process (``memory_stats()``), where the
backend reports it. The papers' frames per second are printed beside the
rows as context: their GPUs, datasets and settings differ (see the table).
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from bench.common import machine_line
from bench.engine import measure, random_variables
from vosjax.inference import EngineConfig

# (paper FPS, where it comes from): context only, other GPUs and settings.
PAPER_FPS = {
    "STCN": "26.9 / 20.2 (TrickVOS Table 2, RTX 3090)",
    "TrickVOS lightweight": "102.1 / 99.5 baseline, 91.4 / 79.3 with CV filter (TrickVOS Table 2)",
    "PCVOS L = 5": "about STCN's speed (PCVOS Fig. 1, YouTube-VOS 2019)",
    "PCVOS L = 10": "between L = 5 and L = 15's 29.2 (PCVOS Fig. 1)",
    "FRTM": "22 (ResNet-101), 41 fast (FRTM paper, V100, DAVIS 2016)",
    "JOINT": "about 8 on single objects (JOINT paper)",
    "cyclic + correction": "9.3 (STM-ResNet50-cycle with correction, cyclic VOS Table)",
}


def _rows(quick: bool, objects: int):
    from vosjax.models.frtm import default_config as frtm_config
    from vosjax.models.joint import default_config as joint_config
    from vosjax.models.pcvos import default_config as pcvos_config
    from vosjax.models.stcn import default_config as stcn_config

    base = {"max_objects": objects, "bucket_objects": False}
    return [
        ("STCN", stcn_config("stcn", tiny=quick), EngineConfig(**base)),
        ("TrickVOS lightweight", stcn_config("trickvos", tiny=quick), EngineConfig(**base)),
        ("PCVOS L = 5", pcvos_config(tiny=quick), EngineConfig(**base, clip_length=5)),
        ("PCVOS L = 10", pcvos_config(tiny=quick),
         EngineConfig(**base, clip_length=10, segment_len=5)),
        ("FRTM", frtm_config("full", tiny=quick), EngineConfig(**base)),
        ("JOINT", joint_config("full", tiny=quick), EngineConfig(**base)),
        ("cyclic + correction", stcn_config("cyclic", tiny=quick),
         EngineConfig(**base, correction_every=5, correction_iters=10)),
    ]


def _peak_memory() -> str:
    stats = [d.memory_stats() for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s]
    if not peaks or None in peaks:
        return "not reported by this backend"
    return ", ".join(f"{p / 2**30:.2f} GiB" for p in peaks)


def _inference(args, size) -> None:
    from vosjax.models import get_model

    print(f"inference: {size[0]} x {size[1]}, {args.objects} objects, batch 1, float32, "
          f"{args.frames} timed frames per row")
    print(f"{'method':<24}{'fps':>9}{'compile':>10}   paper fps (context)")
    for name, model_cfg, cfg in _rows(args.quick, args.objects):
        model = get_model(model_cfg)
        variables = random_variables(model)
        period = max(cfg.clip_length, 5)
        timed = max(period, args.frames // period * period)
        r = measure(model, variables, cfg, size, args.objects, timed, mean_over_period=True)
        print(f"{name:<24}{r['fps']:>9.2f}{r['compile_s']:>9.1f}s   {PAPER_FPS[name]}", flush=True)


def _training(args) -> None:
    from bench.train import bench_config

    spec = "stcn.py:tiny" if args.quick else "stcn.py"
    batch = 2 if args.quick else args.train_batch
    print(f"\ntraining: configs/{spec}, main stage, batch {batch}, all local devices")
    print(f"{'dtype':<10}{'compile':>10}{'step (median)':>15}{'steps/s':>9}{'clips/s':>9}")
    for dtype in ("float32", "bfloat16"):
        r = bench_config(spec, batch, 3 if args.quick else 5, False,
                         (f"--config.model.dtype={dtype}",))
        print(f"{dtype:<10}{r['compile_s']:>9.1f}s{r['median'] * 1e3:>13.1f}ms"
              f"{1 / r['median']:>9.2f}{r['clips_per_s']:>9.2f}", flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="benchmark.py gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30, help="timed frames per inference row")
    ap.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--no-train", action="store_true", help="skip the training rows")
    ap.add_argument("--quick", action="store_true",
                    help="tiny configs at 64 x 112 with 10 frames (a CPU smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.size = 10, (64, 112)
    t0 = time.perf_counter()
    print(machine_line())
    if hasattr(os, "getloadavg"):
        print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if jax.default_backend() == "cpu" and not args.quick:
        print("note: no accelerator found; this suite is sized for one GPU / TPU")
    _inference(args, tuple(args.size))
    if not args.no_train:
        _training(args)
    print(f"\npeak accelerator memory: {_peak_memory()}")
    print(f"suite wall-clock: {time.perf_counter() - t0:.0f} s")
    return 0
