"""Pictures of vosjax results: overlays, cycle-ERF heat maps, J&F bar plots, speed vs accuracy.

    python tools/visualize.py overlay --frames DIR --results DIR --out DIR [--alpha 0.5]
    python tools/visualize.py erf --checkpoint BUNDLE --frames DIR --masks DIR \\
        --reference 00000 --target 00010 --out erf.png [--steps 50] [--size 240]
    python tools/visualize.py bars --csv RESULTS/per-sequence_results.csv --out jf.svg
    python tools/visualize.py speed --checkpoint BUNDLE --gt DAVIS_ROOT --out speed.svg \\
        [--lengths 1 5 10 15] [--sequences ...] [--size 240] [--table speed.json]

- ``overlay``: every result PNG blended over its frame (palette colours, contours),
  PNGs in ``OUT/<seq>/`` (as ``vosjax.segment --overlay`` writes them); ``--frames``/``--results`` take the layouts of
  ``python -m vosjax.segment`` (a DAVIS root, a folder of sequences, or one sequence).
- ``erf``: cycle-ERF (cyclic VOS eq. 12) of every object of the target frame's mask,
  shown as a heat map over the reference frame (one panel per object, side by side).
- ``bars``: per-object J-Mean and F-Mean of the evaluation CSV, with the mean J&F line.
- ``speed``: frames per second (steady state, compilation excluded) and J&F-Mean of one
  model per clip length ``L`` (per-frame L = 1, per-clip L > 1), as a line plot;
  ``--table`` also writes (or, with ``--plot-only``, reads) the measurements as JSON.

Plots are SVG (no plotting library needed); overlays are PNG, the erf image takes the
format of its ``--out`` suffix (PNG or JPEG).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vosjax.errors import VosjaxError  # noqa: E402

# --------------------------------------------------------------------------- SVG plots

_BLUE, _ORANGE, _GREY = "#3b6fb6", "#e3873b", "#888888"


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
    )
    t = f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>'
    return "\n".join(
        [head, '<rect width="100%" height="100%" fill="white"/>', t, *body, "</svg>\n"]
    )


def _axis_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def bar_plot_svg(
    rows: Sequence[tuple[str, float, float]], title: str = "J and F per object"
) -> str:
    """Grouped bars (J-Mean, F-Mean) per object row ``(name, j, f)``, values in [0, 1]."""
    if not rows:
        raise VosjaxError("bar_plot_svg: no rows to plot.")
    left, top, bottom, group = 50, 36, 110, 34
    width = left + 20 + group * len(rows)
    height = top + 220 + bottom
    plot_h = 220
    body = []
    for v in _axis_ticks(0.0, 1.0):
        y = top + plot_h * (1 - v)
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for i, (name, j, f) in enumerate(rows):
        x0 = left + 6 + i * group
        for k, (val, colour) in enumerate(((j, _BLUE), (f, _ORANGE))):
            val = float(np.clip(val, 0.0, 1.0)) if np.isfinite(val) else 0.0
            h = plot_h * val
            body.append(
                f'<rect class="bar" x="{x0 + k * 12}" y="{top + plot_h - h:.1f}" width="11" '
                f'height="{h:.1f}" fill="{colour}"><title>{html.escape(name)}: '
                f"{'J' if k == 0 else 'F'} = {val:.3f}</title></rect>"
            )
        lx, ly = x0 + 12, top + plot_h + 8
        body.append(
            f'<text x="{lx}" y="{ly}" transform="rotate(60 {lx} {ly})">{html.escape(name)}</text>'
        )
    jf = float(np.mean([(j + f) / 2 for _, j, f in rows]))
    y = top + plot_h * (1 - jf)
    body.append(
        f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="{_GREY}" '
        f'stroke-dasharray="4 3"/><text x="{width - 12}" y="{y - 4:.1f}" text-anchor="end">'
        f"mean J&amp;F {jf:.3f}</text>"
    )
    body.append(f'<rect x="{left}" y="{height - 22}" width="10" height="10" fill="{_BLUE}"/>')
    body.append(f'<text x="{left + 14}" y="{height - 13}">J-Mean</text>')
    body.append(
        f'<rect x="{left + 70}" y="{height - 22}" width="10" height="10" fill="{_ORANGE}"/>'
    )
    body.append(f'<text x="{left + 84}" y="{height - 13}">F-Mean</text>')
    return _svg(width, height, body, title)


def speed_plot_svg(
    points: Sequence[dict], title: str = "Speed vs accuracy across clip lengths"
) -> str:
    """Line plot of ``{"clip_length", "fps", "jf"}`` points: x = frames / s, y = J&F-Mean."""
    if not points:
        raise VosjaxError("speed_plot_svg: no points to plot.")
    pts = sorted(points, key=lambda p: p["clip_length"])
    width, height, left, top, pw, ph = 520, 360, 60, 36, 420, 260
    fx = [p["fps"] for p in pts]
    fy = [p["jf"] for p in pts]
    x0, x1 = 0.0, max(fx) * 1.15
    y0, y1 = max(0.0, min(fy) - 0.05), min(1.0, max(fy) + 0.05)
    if y1 - y0 < 0.05:
        y0, y1 = max(0.0, y0 - 0.05), min(1.0, y1 + 0.05)

    def sx(v):
        return left + pw * (v - x0) / (x1 - x0)

    def sy(v):
        return top + ph * (1 - (v - y0) / (y1 - y0))

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for v in _axis_ticks(x0, x1):
        body.append(
            f'<text x="{sx(v):.1f}" y="{top + ph + 16}" text-anchor="middle">{v:.2f}</text>'
        )
    for v in _axis_ticks(y0, y1):
        body.append(f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.3f}</text>')
    body.append(
        f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">frames / s</text>'
    )
    body.append(
        f'<text x="16" y="{top + ph / 2}" transform="rotate(-90 16 {top + ph / 2})" '
        'text-anchor="middle">J&amp;F-Mean</text>'
    )
    path = " ".join(f"{sx(p['fps']):.1f},{sy(p['jf']):.1f}" for p in pts)
    body.append(f'<polyline points="{path}" fill="none" stroke="{_BLUE}" stroke-width="2"/>')
    for p in pts:
        cx, cy = sx(p["fps"]), sy(p["jf"])
        label = "per-frame" if p["clip_length"] == 1 else f"L={p['clip_length']}"
        body.append(
            f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{_BLUE}">'
            f"<title>{label}: {p['fps']:.2f} fps, J&amp;F {p['jf']:.3f}</title></circle>"
        )
        body.append(f'<text x="{cx + 6:.1f}" y="{cy - 6:.1f}">{label}</text>')
    return _svg(width, height, body, title)


def _write_text(path: pathlib.Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- images


def heat_map(values: np.ndarray) -> np.ndarray:
    """``uint8[H, W, 3]`` colour map (black -> red -> yellow -> white) of values scaled to [0, 1]."""
    v = np.asarray(values, np.float64)
    hi = float(v.max()) if v.size else 0.0
    v = v / hi if hi > 0 else np.zeros_like(v)
    r = np.clip(3 * v, 0, 1)
    g = np.clip(3 * v - 1, 0, 1)
    b = np.clip(3 * v - 2, 0, 1)
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def blend(image: np.ndarray, colours: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    out = (1 - alpha) * image.astype(np.float64) + alpha * colours.astype(np.float64)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def overlay_folder(
    frames: str,
    results: str,
    out: str,
    alpha: float = 0.5,
    resolution: str = "480p",
    sequences: Sequence[str] | None = None,
) -> int:
    """Overlay every result PNG on its frame; returns the number of images written."""
    from vosjax.data.io import read_image, read_label_png, write_image
    from vosjax.inference.overlay import overlay
    from vosjax.segment import find_sequences

    count = 0
    for seq in find_sequences(frames, results, None, resolution, sequences):
        if not seq.masks:
            raise VosjaxError(f"visualize overlay: no result PNGs for sequence {seq.name!r}.")
        for p in seq.frame_paths:
            if p.stem not in seq.masks:
                continue
            labels, palette = read_label_png(seq.masks[p.stem])
            img = read_image(p)
            if labels.shape != img.shape[:2]:
                raise VosjaxError(
                    f"visualize overlay: {seq.masks[p.stem]} is {labels.shape[1]}x"
                    f"{labels.shape[0]}, its frame {img.shape[1]}x{img.shape[0]}."
                )
            write_image(
                pathlib.Path(out) / seq.name / f"{p.stem}.png", overlay(img, labels, palette, alpha)
            )
            count += 1
    return count


def erf_image(
    checkpoint: str,
    frames: str,
    masks: str,
    reference: str,
    target: str,
    out: str,
    steps: int = 50,
    rate: float = 1.0,
    size: int | None = None,
    resolution: str = "480p",
    sequence: str | None = None,
) -> np.ndarray:
    """cycle-ERF heat maps of the target frame's objects over the reference frame (a PNG/JPEG)."""
    import jax
    import jax.numpy as jnp

    from vosjax.checkpoint import load_bundle
    from vosjax.data.io import fit_mask_to_frame, read_image, read_label_png, write_image
    from vosjax.data.normalize import normalize_frames
    from vosjax.inference.cycle import cycle_erf_map
    from vosjax.inference.engine import working_size
    from vosjax.segment import find_sequences

    seqs = find_sequences(frames, masks, None, resolution, [sequence] if sequence else None)
    if len(seqs) != 1:
        raise VosjaxError(f"visualize erf: {len(seqs)} sequences found; pick one with --sequence.")
    seq = seqs[0]
    paths = {p.stem: p for p in seq.frame_paths}
    for name in (reference, target):
        if name not in paths:
            raise VosjaxError(f"visualize erf: no frame {name!r} in sequence {seq.name!r}.")
    if target not in seq.masks:
        raise VosjaxError(f"visualize erf: no mask {target}.png for the target frame.")
    ref_img, tgt_img = read_image(paths[reference]), read_image(paths[target])
    labels = fit_mask_to_frame(read_label_png(seq.masks[target])[0], tgt_img.shape[:2], target)
    ids = [int(k) for k in np.unique(labels) if k not in (0, 255)]
    if not ids:
        raise VosjaxError(f"visualize erf: the target mask {target}.png has no object.")
    model, variables, _ = load_bundle(checkpoint)
    h, w = working_size(ref_img.shape[:2], size)

    def prep(img):
        x = normalize_frames(jnp.asarray(img))[None]
        return jax.image.resize(x, (1, h, w, 3), "linear", antialias=True)

    m = jnp.asarray(np.stack([labels == k for k in ids])[None], jnp.float32)
    m = jax.image.resize(m, (1, len(ids), h, w), "linear", antialias=True)
    stride = int(getattr(model, "stride", 16))
    feat = (-(-h // stride), -(-w // stride))
    fn = jax.jit(
        lambda r, t, mm: cycle_erf_map(model, variables, r, t, mm, feat, num_iters=steps, rate=rate)
    )
    erf = np.asarray(fn(prep(ref_img), prep(tgt_img), m))[0]  # [O, h, w]
    panels = []
    for k in range(len(ids)):
        e = np.asarray(jax.image.resize(erf[k], ref_img.shape[:2], "linear"))
        panels.append(blend(ref_img, heat_map(e)))
    img = np.concatenate(panels, axis=1)
    write_image(out, img)
    return img


def measure_speed(
    checkpoint: str,
    gt: str,
    lengths: Sequence[int],
    sequences=None,
    size: int | None = None,
    max_videos: int | None = None,
    resolution: str = "480p",
) -> list[dict]:
    """``[{"clip_length", "fps", "jf", "frames"}]``: J&F-Mean and steady-state fps per clip length.

    Each length is run twice over the videos: a first pass compiles (and is not
    timed), the second is timed and scored.
    """
    from vosjax.checkpoint import load_bundle
    from vosjax.data import DavisSource
    from vosjax.inference import EngineConfig, evaluate_source
    from vosjax.inference.segmenter import _inference_section

    model, variables, run = load_bundle(checkpoint)
    base = {k: v for k, v in _inference_section(run).items() if k in EngineConfig.field_names()}
    source = DavisSource(gt, split="val", resolution=resolution, sequences=sequences)
    frames = sum(
        source[i].num_frames
        for i in range(len(source) if max_videos is None else min(len(source), max_videos))
    )
    points = []
    for length in lengths:
        cfg = EngineConfig.from_config(base, clip_length=int(length), resolution=size)
        evaluate_source(model, variables, source, cfg, max_videos)  # compiles
        start = time.perf_counter()
        summary = evaluate_source(model, variables, source, cfg, max_videos)
        secs = time.perf_counter() - start
        points.append(
            {
                "clip_length": int(length),
                "fps": frames / secs,
                "jf": summary.global_metrics["J&F-Mean"],
                "frames": frames,
            }
        )
    return points


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/visualize.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overlay", help="result PNGs blended over their frames")
    o.add_argument("--frames", required=True)
    o.add_argument("--results", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--alpha", type=float, default=0.5)
    o.add_argument("--resolution", default="480p")
    o.add_argument("--sequences", nargs="+")
    e = sub.add_parser("erf", help="cycle-ERF heat maps (cyclic VOS eq. 12)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--frames", required=True)
    e.add_argument("--masks", required=True, help="masks of the target frame (GT or results)")
    e.add_argument("--reference", required=True, help="reference frame name, e.g. 00000")
    e.add_argument("--target", required=True, help="target frame name, e.g. 00010")
    e.add_argument("--sequence", default=None)
    e.add_argument("--out", required=True)
    e.add_argument("--steps", type=int, default=50, help="M (the paper: 50)")
    e.add_argument("--rate", type=float, default=1.0)
    e.add_argument("--size", type=int, default=None, help="shorter side the model runs at")
    e.add_argument("--resolution", default="480p")
    b = sub.add_parser("bars", help="per-object J / F bars from per-sequence_results.csv")
    b.add_argument("--csv", required=True)
    b.add_argument("--out", required=True)
    s = sub.add_parser("speed", help="speed vs accuracy across clip lengths")
    s.add_argument("--checkpoint")
    s.add_argument("--gt", help="DAVIS root with every frame annotated")
    s.add_argument("--lengths", type=int, nargs="+", default=[1, 5, 10, 15])
    s.add_argument("--sequences", nargs="+")
    s.add_argument("--size", type=int, default=None)
    s.add_argument("--max-videos", type=int, default=None)
    s.add_argument("--resolution", default="480p", help="JPEGImages / Annotations sub-folder")
    s.add_argument("--table", default=None, help="JSON of the measurements (written or read)")
    s.add_argument("--plot-only", action="store_true", help="plot --table, measure nothing")
    s.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "overlay":
            n = overlay_folder(
                args.frames, args.results, args.out, args.alpha, args.resolution, args.sequences
            )
            print(f"wrote {n} overlays under {args.out}")
        elif args.cmd == "erf":
            erf_image(
                args.checkpoint,
                args.frames,
                args.masks,
                args.reference,
                args.target,
                args.out,
                args.steps,
                args.rate,
                args.size,
                args.resolution,
                args.sequence,
            )
            print(f"wrote {args.out}")
        elif args.cmd == "bars":
            with open(args.csv, newline="") as f:
                rows = list(csv.reader(f))
            if not rows or rows[0][:3] != ["Sequence", "J-Mean", "F-Mean"]:
                raise VosjaxError(f"visualize bars: {args.csv} is not a per-sequence_results.csv.")
            data = [(r[0], float(r[1]), float(r[2])) for r in rows[1:]]
            _write_text(pathlib.Path(args.out), bar_plot_svg(data))
            print(f"wrote {args.out} ({len(data)} objects)")
        else:
            if args.plot_only:
                if not args.table:
                    raise VosjaxError("visualize speed: --plot-only needs --table.")
                points = json.loads(pathlib.Path(args.table).read_text())
            else:
                if not (args.checkpoint and args.gt):
                    raise VosjaxError(
                        "visualize speed: needs --checkpoint and --gt (or --plot-only)."
                    )
                points = measure_speed(
                    args.checkpoint,
                    args.gt,
                    args.lengths,
                    args.sequences,
                    args.size,
                    args.max_videos,
                    args.resolution,
                )
                if args.table:
                    _write_text(pathlib.Path(args.table), json.dumps(points, indent=1) + "\n")
            _write_text(pathlib.Path(args.out), speed_plot_svg(points))
            for p in points:
                print(f"L={p['clip_length']:>3}: {p['fps']:8.2f} frames/s, J&F {p['jf']:.3f}")
            print(f"wrote {args.out}")
    except VosjaxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
