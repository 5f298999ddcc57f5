"""Regenerate ``tests/fixtures/stcn_yv/``: STCN's YouTube-VOS driver on objects that appear later.

    python tools/make_stcn_yv_fixture.py --stcn PATH/TO/STCN --out tests/fixtures/stcn_yv/ \
        [--data ../shared/data/davis_demo] [--sequence judo] [--frames 10]

Needs PyTorch and a checkout of the authors' repository (github.com/hkchengrex/STCN);
the tests do NOT run this script, they read what it wrote. The checkout is used as it
is (nothing is copied from it): its ``model/eval_network.py`` (``STCN``) and
``inference_core_yv.py`` (``InferenceCore``, the YouTube-VOS driver: one memory per
object, each starting at the object's own first frame) are imported from
``--stcn`` with the stand-ins of ``tools/make_stcn_fixture.py`` (CPU, no downloads),
and the weights are the seeded ones of ``tests/fixtures/stcn/spec.json``
(:func:`vosjax.models.torch_import_stcn.seeded_state_dict`, same seed and rule).

The clip: the first ``--frames`` frames of DAVIS ``judo`` at 480p (padded to a
multiple of 16 by the driver), whose annotations give object 1 at frame 0, object 2
first at frame 5 and object 3 first at frame 8 (``00005.png``, 853 pixels wide, is
zero-padded by one column on the right to the frames' 854). As ``eval_youtube.py`` does, each
annotated frame is an ``interact`` call with the objects first given there, that
propagates up to and including the next annotated frame (``top_k = 20``,
``mem_every = 5``).

Written: ``clip.json`` (sequence, frames, the frames where each object is first
given, settings) and ``outputs.npz`` (float32 aggregated probabilities with
background ``[K + 1, T, H / s, W / s]``, unpadded, every ``s``-th pixel; the
full-resolution label maps ``uint8[T, H, W]``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROB_STRIDE = 8


def _davis_fixture_tool():
    spec = importlib.util.spec_from_file_location("make_stcn_fixture", ROOT / "tools" / "make_stcn_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fit_labels(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A label map cropped / zero-padded at the bottom and right to ``hw`` (judo's
    ``00005.png`` is 853 pixels wide, its frames 854)."""
    out = np.zeros(hw, m.dtype)
    h, w = min(hw[0], m.shape[0]), min(hw[1], m.shape[1])
    out[:h, :w] = m[:h, :w]
    return out


def read_clip(data: pathlib.Path, sequence: str, n_frames: int):
    """uint8 frames ``[T, H, W, 3]`` and ``{frame: label map}`` of the annotated frames
    (each fitted to the frame size by :func:`fit_labels`)."""
    from PIL import Image

    img = data / "JPEGImages" / "480p" / sequence
    ann = data / "Annotations" / "480p" / sequence
    rgb = np.stack([np.asarray(Image.open(img / f"{i:05d}.jpg").convert("RGB")) for i in range(n_frames)])
    given = {}
    for i in range(n_frames):
        f = ann / f"{i:05d}.png"
        if f.is_file():
            given[i] = fit_labels(np.asarray(Image.open(f).convert("P")), rgb.shape[1:3])
    return rgb, given


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stcn", required=True, type=pathlib.Path, help="the authors' STCN checkout")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "stcn_yv")
    p.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "davis_demo")
    p.add_argument("--spec", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "stcn" / "spec.json")
    p.add_argument("--sequence", default="judo")
    p.add_argument("--frames", type=int, default=10)
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import torch

    from vosjax.models import torch_import_stcn as tis

    torch.set_grad_enabled(False)
    davis_tool = _davis_fixture_tool()
    STCN, _, unpad = davis_tool.load_stcn(args.stcn.resolve())  # installs the stand-ins
    if not (args.stcn / "inference_core_yv.py").is_file():
        raise SystemExit(f"make_stcn_yv_fixture: {args.stcn} has no inference_core_yv.py.")
    import inference_core_yv

    inference_core_yv.torch = davis_tool._CpuTorch(torch)
    spec = json.loads(args.spec.read_text())
    net = STCN().eval()
    names = {k: list(v.shape) for k, v in net.state_dict().items()}
    if names != {n: s for n, s, _ in spec["tensors"]}:
        raise SystemExit(f"make_stcn_yv_fixture: {args.spec} does not list this STCN's tensors.")
    weights = tis.seeded_state_dict(spec["tensors"], spec["seed"])
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})

    rgb_u8, given = read_clip(args.data, args.sequence, args.frames)
    labels = sorted({int(v) for m in given.values() for v in np.unique(m) if v != 0})
    first = {lab: min(t for t, m in given.items() if np.any(m == lab)) for lab in labels}
    k = len(labels)
    x = torch.from_numpy(rgb_u8).float().div(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = ((x - mean) / std)[None]  # [1, T, 3, H, W]
    t_all = rgb.shape[1]
    # per object, its mask at its first frame (as the YouTube-VOS test set gives them)
    msk = torch.zeros((k, t_all, 1) + rgb.shape[-2:])
    for i, lab in enumerate(labels):
        msk[i, first[lab], 0] = torch.from_numpy((given[first[lab]] == lab).astype(np.float32))

    proc = inference_core_yv.InferenceCore(net, rgb, num_objects=k, top_k=20, mem_every=5)
    starts = sorted(set(first.values()))
    for j, t in enumerate(starts):
        obj_idx = [i + 1 for i, lab in enumerate(labels) if first[lab] == t]
        with_bg = torch.cat([1 - torch.sum(msk[:, t], dim=0, keepdim=True), msk[:, t]], 0)
        end = t_all if j == len(starts) - 1 else starts[j + 1] + 1
        proc.interact(with_bg, t, end, obj_idx)
    probs = np.stack([unpad(proc.prob[:, t], proc.pad)[:, 0].numpy() for t in range(proc.t)], 1)
    label_maps = np.argmax(probs, axis=0).astype(np.uint8)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    clip = {
        "sequence": args.sequence,
        "frames": list(range(t_all)),
        "labels": labels,
        "first_frame": {str(lab): first[lab] for lab in labels},
        "top_k": 20,
        "mem_every": 5,
        "pad": list(proc.pad),
        "prob_stride": PROB_STRIDE,
        "seed": spec["seed"],
    }
    (out / "clip.json").write_text(json.dumps(clip, indent=1) + "\n")
    np.savez_compressed(
        out / "outputs.npz",
        probs=probs[:, :, ::PROB_STRIDE, ::PROB_STRIDE].astype(np.float32),
        labels=label_maps,
    )
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size / 1024:.0f} KiB")
    print(f"label fractions per frame: {[np.bincount(m.ravel(), minlength=k + 1).tolist() for m in label_maps]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
