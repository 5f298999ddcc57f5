"""Evaluation benchmark: ``python -m vosjax.evaluate`` end to end and its parts, vs the official toolkit.

    python tools/benchmark.py evaluate [--data DIR] [--repeats 3] [--workers N]
                                       [--official PATH] [--quick]

Data: a generated DAVIS-2017-val-sized result set (30 sequences at 480 x 854
with the val split's frame and object counts, 1999 frames, 61 objects):
palette PNG ground truth of wobbly moving blobs (some touching, some void
pixels) and noisy results (shifted, grown or shrunk, speckled, one object
sometimes lost). It is written once into ``--data`` (default: a folder in the
system temp dir, reused by later runs) with the layout the official toolkit
reads (``Annotations/480p``, ``ImageSets/2017/val.txt``, placeholder
``JPEGImages/480p/*.jpg`` that it lists but never decodes) and
``results/<seq>/*.png``.

Rows (medians over ``--repeats`` runs, wall-clock, start-up included):

- ``vosjax`` end to end: ``python -m vosjax.evaluate --quiet`` in a fresh
  subprocess (default worker count);
- with ``--official PATH`` (a checkout of davis2017-evaluation): its
  ``DAVISEvaluation(...).evaluate`` loop, semi-supervised task, in a fresh
  subprocess that imports it and writes the two CSVs as its
  ``evaluation_method.py`` does; the ratio official / vosjax, and a check
  that both give the same global numbers;
- parts, in this process, single core, over all sequences: PNG decoding of
  ground truth and results, J, and F (boundaries + disk matching), as
  vosjax computes them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# DAVIS 2017 val: (frames, objects) per sequence, in the order of val.txt.
DAVIS17_VAL = (
    ("bike-packing", 69, 2),
    ("blackswan", 50, 1),
    ("bmx-trees", 80, 2),
    ("breakdance", 84, 1),
    ("camel", 90, 1),
    ("car-roundabout", 75, 1),
    ("car-shadow", 40, 1),
    ("cows", 104, 1),
    ("dance-twirl", 90, 1),
    ("dog", 60, 1),
    ("dogs-jump", 66, 3),
    ("drift-chicane", 52, 1),
    ("drift-straight", 50, 1),
    ("goat", 90, 1),
    ("gold-fish", 78, 5),
    ("horsejump-high", 50, 2),
    ("india", 81, 3),
    ("judo", 34, 2),
    ("kite-surf", 50, 3),
    ("lab-coat", 47, 5),
    ("libby", 49, 1),
    ("loading", 50, 3),
    ("mbike-trick", 79, 2),
    ("motocross-jump", 40, 2),
    ("paragliding-launch", 80, 3),
    ("parkour", 100, 1),
    ("pigs", 79, 3),
    ("scooter-black", 43, 2),
    ("shooting", 40, 3),
    ("soapbox", 99, 3),
)
H, W = 480, 854
_STAMP = "vosjax-evaluate-bench-v1"


# --------------------------------------------------------------------------- data


def _paint(labels, value, cy, cx, ry, rx, phase, amp):
    """Set ``labels`` to ``value`` inside a blob: an ellipse whose radius wobbles with the angle."""
    ext = 1.0 + float(np.sum(amp))
    y0, y1 = max(0, int(cy - ext * ry) - 1), min(labels.shape[0], int(cy + ext * ry) + 2)
    x0, x1 = max(0, int(cx - ext * rx) - 1), min(labels.shape[1], int(cx + ext * rx) + 2)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    dy, dx = (yy - cy) / ry, (xx - cx) / rx
    ang = np.arctan2(dy, dx)
    rad = 1.0 + sum(a * np.sin((i + 2) * ang + p) for i, (a, p) in enumerate(zip(amp, phase)))
    labels[y0:y1, x0:x1][dy * dy + dx * dx <= rad * rad] = value


def _sequence(rng: np.random.Generator, frames: int, objects: int):
    """(gt, pred) uint8 label maps [T, H, W] of one generated sequence."""
    gt = np.zeros((frames, H, W), np.uint8)
    pred = np.zeros((frames, H, W), np.uint8)
    objs = []
    for _ in range(objects):
        objs.append(
            {
                "c": rng.uniform((80, 120), (H - 80, W - 120)),
                "v": rng.uniform(-3, 3, 2),
                "r": rng.uniform(25, 120, 2),
                "phase": rng.uniform(0, 2 * np.pi, 3),
                "amp": rng.uniform(0, 0.15, 3),
                "spin": rng.uniform(-0.05, 0.05),
                "lost": int(rng.integers(frames // 2, frames * 2)),  # > frames: never lost
            }
        )
    for t in range(frames):
        for k, o in enumerate(objs, start=1):
            cy, cx = o["c"] + o["v"] * t
            cy, cx = (cy - 60) % (H - 120) + 60, (cx - 60) % (W - 120) + 60
            ph = o["phase"] + o["spin"] * t
            scale = 1.0 + 0.2 * np.sin(0.05 * t + k)
            ry, rx = o["r"] * scale
            _paint(gt[t], k, cy, cx, ry, rx, ph, o["amp"])
            if o["lost"] <= t < o["lost"] + 10:
                continue  # the method lost this object for a few frames
            g = 1.0 + rng.normal(0, 0.06)
            sy, sx = rng.normal(0, 3, 2)
            _paint(
                pred[t], k, cy + sy, cx + sx, ry * g, rx * g, ph + rng.normal(0, 0.1, 3), o["amp"]
            )
        edge = gt[t] != np.roll(gt[t], 1, axis=1)
        void = edge & (rng.random((H, W)) < 0.3)
        gt[t][void] = 255
        speck = rng.random((H, W)) < 2e-4
        pred[t][speck] = rng.integers(0, objects + 1, int(speck.sum()))
    return gt, pred


def make_dataset(root: pathlib.Path, sequences=DAVIS17_VAL, seed: int = 0) -> pathlib.Path:
    """Write (once) the generated set under ``root``; returns ``root``."""
    from vosjax.data.io import write_label_png

    root = pathlib.Path(root)
    stamp = root / "STAMP"
    want = f"{_STAMP} {seed} {len(sequences)}"
    if stamp.is_file() and stamp.read_text() == want:
        return root
    rng = np.random.default_rng(seed)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    for name, frames, objects in sequences:
        gt, pred = _sequence(rng, frames, objects)
        for sub, labels in (("Annotations/480p", gt), ("results", pred)):
            d = root / sub / name
            d.mkdir(parents=True, exist_ok=True)
            for t, lab in enumerate(labels):
                write_label_png(d / f"{t:05d}.png", lab)
        jpg = root / "JPEGImages" / "480p" / name
        jpg.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            (jpg / f"{t:05d}.jpg").touch()  # listed by the official loader, never decoded
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{s[0]}\n" for s in sequences))
    stamp.write_text(want)
    return root


# --------------------------------------------------------------------------- timing


def _wall(cmd: list[str], cwd: str | None = None, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dt


def _vosjax_cmd(data: pathlib.Path, out: pathlib.Path, workers: int | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "vosjax.evaluate",
        "--gt",
        str(data),
        "--results",
        str(data / "results"),
        "--out",
        str(out),
        "--quiet",
    ]
    return cmd + ([] if workers is None else ["--workers", str(workers)])


def _official_run(official: pathlib.Path, data: pathlib.Path) -> float:
    """One run of the toolkit's own ``evaluation_method.py`` (semi-supervised), CSVs removed first."""
    for name in ("global_results-val.csv", "per-sequence_results-val.csv"):
        (data / "results" / name).unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(official / "evaluation_method.py"),
        "--task",
        "semi-supervised",
        "--davis_path",
        str(data),
        "--results_path",
        str(data / "results"),
    ]
    return _wall(cmd, cwd=str(official))


def _global_row(path: pathlib.Path) -> list[str]:
    return path.read_text().splitlines()[1].split(",")


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):8.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def _parts(data: pathlib.Path, sequences, repeats: int) -> None:
    """Single-process times of decoding, J and F on ``sequences`` (medians over repeats)."""
    from vosjax import metrics
    from vosjax.label_png import read_label_ids

    def load():
        out = []
        for name, _, _ in sequences:
            gt = np.stack(
                [
                    read_label_ids(p)
                    for p in sorted((data / "Annotations/480p" / name).glob("*.png"))
                ]
            )
            pr = np.stack(
                [read_label_ids(p) for p in sorted((data / "results" / name).glob("*.png"))]
            )
            gt[gt == 255] = 0
            out.append((gt[1:-1], pr[1:-1], tuple(range(1, int(gt[0].max()) + 1))))
        return out

    videos = load()
    frames = sum(v[0].shape[0] for v in videos)
    obj_frames = sum(v[0].shape[0] * len(v[2]) for v in videos)
    pngs = sum(2 * f for _, f, _ in sequences)

    def per_object(fn):
        return lambda: [fn(g == k, p == k) for g, p, ids in videos for k in ids]

    rows = [
        ("decode (all gt + result PNGs)", load, f"{pngs} PNGs"),
        ("J per object (jaccard)", per_object(metrics.jaccard), f"{obj_frames} object-frames"),
        (
            "F per object (boundary_f)",
            per_object(metrics.boundary_f),
            f"{obj_frames} object-frames",
        ),
        (
            "J + F packed (label_scores)",
            lambda: [metrics.label_scores(g, p, ids) for g, p, ids in videos],
            f"{frames} frames",
        ),
    ]
    print(
        f"\nparts, one process, {len(sequences)} sequences ({frames} scored frames, "
        f"{obj_frames} object-frames), median of {repeats}:"
    )
    for label, fn, what in rows:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"  {label:32s} {med:8.2f} s   ({what})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmark.py evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "vosjax-bench-evaluate"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="vosjax --workers (default: its own)")
    ap.add_argument("--official", default=None, help="checkout of davis2017-evaluation")
    ap.add_argument("--parts-sequences", type=int, default=6, help="sequences timed for the parts")
    ap.add_argument("--no-parts", action="store_true")
    ap.add_argument("--quick", action="store_true", help="6 sequences, 1 repeat")
    args = ap.parse_args(argv)
    from bench.common import machine_line

    seqs = DAVIS17_VAL[:6] if args.quick else DAVIS17_VAL
    repeats = 1 if args.quick else args.repeats
    data = pathlib.Path(args.data) / ("quick" if args.quick else "davis17val")
    t0 = time.perf_counter()
    make_dataset(data, seqs)
    print(machine_line() + f" | {os.cpu_count()} CPUs")
    print(
        f"data: {data} ({len(seqs)} sequences at {W}x{H}, {sum(s[1] for s in seqs)} frames, "
        f"{sum(s[2] for s in seqs)} objects; ready in {time.perf_counter() - t0:.1f} s)"
    )
    repo = pathlib.Path(__file__).resolve().parents[2]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    )
    official = pathlib.Path(args.official).resolve() if args.official else None
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        for _ in range(repeats):  # interleaved, so both see the same machine load
            ours.append(_wall(_vosjax_cmd(data, out, args.workers), env=env))
            if official is not None:
                theirs.append(_official_run(official, data))
        ours_row = _global_row(out / "global_results.csv")
    print(f"\nend to end, wall-clock, start-up included, median of {repeats}:")
    print(
        f"  vosjax   python -m vosjax.evaluate (workers: {args.workers or 'default'}) {_median(ours)}"
    )
    if official is not None:
        print(f"  official evaluation_method.py (one process)  {_median(theirs)}")
        ratio = statistics.median(theirs) / statistics.median(ours)
        print(f"  ratio official / vosjax: {ratio:.2f}x")
        theirs_row = _global_row(data / "results" / "global_results-val.csv")
        same = [float(a) for a in ours_row] == [float(b) for b in theirs_row]
        print(
            f"  global numbers (3 decimals) {'identical' if same else 'DIFFER'}: "
            f"vosjax {ours_row} official {theirs_row}"
        )
    if not args.no_parts:
        _parts(data, seqs[: args.parts_sequences], repeats)
    return 0
