"""Regenerate ``tests/fixtures/stcn/``: STCN's own outputs on seeded random weights.

    python tools/make_stcn_fixture.py --stcn PATH/TO/STCN --out tests/fixtures/stcn/ \
        [--data ../shared/data/davis_demo] [--sequence bike] [--frames 0,1,2,3,2,1,0,1]

Needs PyTorch and a checkout of the authors' repository (github.com/hkchengrex/STCN);
the tests do NOT run this script, they read what it wrote. The checkout is used as it
is (nothing is copied from it): its ``model/eval_network.py`` (``STCN``) and
``inference_core.py`` (``InferenceCore``, the DAVIS evaluation driver) are imported
from ``--stcn``, with three stand-ins installed around them so that they run on a
CPU-only PyTorch without downloads:

- ``torchvision.models.resnet50`` (the key encoder's trunk) is a small
  torchvision-layout ResNet-50 written here (bias-free convs, stride on the 3x3
  conv, ``downsample = Sequential(conv1x1, BN)``); only its module names and
  shapes matter, since every weight is overwritten;
- ``torch.utils.model_zoo.load_url`` (ImageNet weights) returns an empty dict;
- ``.cuda()`` is the identity and ``device="cuda"`` becomes the CPU.

Every tensor of ``STCN().state_dict()`` is replaced by
:func:`vosjax.models.torch_import_stcn.seeded_state_dict` (seeded NumPy per tensor
name; BatchNorm running statistics randomised too), and the names, shapes and
the seed go to ``spec.json``, so a test re-creates the same weights without torch.
STCN's DAVIS inference (``top_k = 20``, ``mem_every = 5``, frames padded to a
multiple of 16) then runs on real 480p DAVIS frames of a 2-object sequence.
Its DAVIS driver takes the objects of the first frame only (an object that first
appears later is not supported there; its YouTube-VOS driver, a different
program with one memory per object, is not covered here). ``bike`` has only 4
frames, so the clip plays them forward and back (``0,1,2,3,2,1,0,1``): frame 5
is a memory frame, and frames 6-7 read it.

Written (compressed ``.npz``, float32): ``spec.json``; ``features.npz`` (frame 0's
values and frame 1's key / key_comp / memory readout, channels subsampled);
``outputs.npz`` (the aggregated probabilities of every frame with background,
unpadded, on every 4th pixel; the full-resolution label maps) and ``clip.json``
(sequence, frame indices, object labels, settings).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
VALUE_CHANNELS = slice(0, None, 16)  # stored value / readout channels (every 16th of 512)
PROB_STRIDE = 4  # stored probabilities: every 4th pixel in both directions


# ----------------------------------------------------------------------------- stand-ins


def _torchvision_stub(torch):
    """A ``torchvision.models`` module with a torchvision-layout ``resnet50`` (weights unused)."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            out = planes * 4
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != out:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            s = x if self.downsample is None else self.downsample(x)
            return self.relu(y + s)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (n, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
                blocks = []
                for j in range(n):
                    blocks.append(Bottleneck(cin, planes, 2 if (j == 0 and i > 0) else 1))
                    cin = planes * 4
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    models = types.ModuleType("torchvision.models")
    models.resnet50 = lambda pretrained=False, **_: ResNet50()
    tv = types.ModuleType("torchvision")
    tv.models = models
    return tv, models


class _CpuTorch(types.ModuleType):
    """``torch`` for the authors' inference core: ``device="cuda"`` becomes the CPU."""

    def __init__(self, torch):
        super().__init__("torch")
        self._torch = torch

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def zeros(self, *args, **kwargs):
        kwargs.pop("device", None)
        return self._torch.zeros(*args, **kwargs)


def load_stcn(stcn_dir: pathlib.Path):
    """``(STCN class, InferenceCore class, unpad)`` imported from the authors' checkout."""
    import torch
    import torch.utils.model_zoo

    for need in ("model/eval_network.py", "inference_core.py", "util/tensor_util.py"):
        if not (stcn_dir / need).is_file():
            raise SystemExit(f"make_stcn_fixture: {stcn_dir} has no {need}; pass the STCN checkout.")
    tv, models = _torchvision_stub(torch)
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.models"] = models
    torch.utils.model_zoo.load_url = lambda *a, **k: {}
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(stcn_dir))
    import inference_core
    from model.eval_network import STCN
    from util.tensor_util import unpad

    inference_core.torch = _CpuTorch(torch)
    return STCN, inference_core.InferenceCore, unpad


# ----------------------------------------------------------------------------- the run


def read_clip(data: pathlib.Path, sequence: str, frames: list[int]):
    """uint8 frames ``[T, H, W, 3]`` and the first frame's label map ``[H, W]`` (480p)."""
    from PIL import Image

    img = data / "JPEGImages" / "480p" / sequence
    ann = data / "Annotations" / "480p" / sequence
    rgb = np.stack([np.asarray(Image.open(img / f"{i:05d}.jpg").convert("RGB")) for i in frames])
    labels = np.asarray(Image.open(ann / f"{frames[0]:05d}.png").convert("P"))
    return rgb, labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stcn", required=True, type=pathlib.Path, help="the authors' STCN checkout")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "stcn")
    p.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "davis_demo")
    p.add_argument("--sequence", default="bike")
    p.add_argument("--frames", default="0,1,2,3,2,1,0,1")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import torch

    from vosjax.models import torch_import_stcn as tis

    torch.set_grad_enabled(False)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    STCN, InferenceCore, unpad = load_stcn(args.stcn.resolve())
    net = STCN().eval()
    sd = net.state_dict()
    spec = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    weights = tis.seeded_state_dict(spec, args.seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})

    frames = [int(f) for f in args.frames.split(",")]
    rgb_u8, first = read_clip(args.data, args.sequence, frames)
    labels = [int(v) for v in np.unique(first) if v != 0]
    x = torch.from_numpy(rgb_u8).float().div(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = ((x - mean) / std)[None]  # [1, T, 3, H, W], as STCN's DAVIS test dataset
    msk = torch.from_numpy(np.stack([first == v for v in labels]).astype(np.float32))[:, None]

    # Record the intermediate features of the first frames (wrapping, not changing, the net).
    rec: dict[str, np.ndarray] = {}
    calls = {"key": 0, "value": 0, "read": 0}
    enc_key, enc_value = net.encode_key, net.encode_value

    def encode_key(frame):
        out = enc_key(frame)
        i = calls["key"]
        calls["key"] += 1
        if i == 1:  # encode_key is called for frame 0 (memory) then frame 1 (query)
            rec["key_f1"] = out[0][0].numpy()
            rec["key_comp_f1"] = out[1][0, VALUE_CHANNELS].numpy()
        if i == 0:
            rec["key_f0"] = out[0][0].numpy()
        return out

    def encode_value(frame, kf16, masks):
        out = enc_value(frame, kf16, masks)
        if calls["value"] == 0:
            rec["value_f0"] = out[:, VALUE_CHANNELS, 0].numpy()
        calls["value"] += 1
        return out

    net.encode_key, net.encode_value = encode_key, encode_value
    proc = InferenceCore(net, rgb, len(labels), top_k=20, mem_every=5)
    match = proc.mem_bank.match_memory

    def match_memory(qk):
        out = match(qk)
        if calls["read"] == 0:
            rec["readout_f1"] = out[:, VALUE_CHANNELS].numpy()
        calls["read"] += 1
        return out

    proc.mem_bank.match_memory = match_memory
    proc.interact(msk, 0, rgb.shape[1])
    probs = np.stack([unpad(proc.prob[:, t], proc.pad)[:, 0].numpy() for t in range(proc.t)], 1)
    label_maps = np.argmax(probs, axis=0).astype(np.uint8)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(
        json.dumps(
            {"seed": args.seed, "rule": tis.SEED_RULE, "gains": tis.SEED_GAINS, "tensors": spec},
            indent=0,
        ) + "\n"
    )
    clip = {
        "sequence": args.sequence,
        "frames": frames,
        "labels": labels,
        "top_k": 20,
        "mem_every": 5,
        "pad": list(proc.pad),
        "value_channels": [VALUE_CHANNELS.start, VALUE_CHANNELS.stop, VALUE_CHANNELS.step],
        "prob_stride": PROB_STRIDE,
        "encode_key_calls": calls["key"],
        "encode_value_calls": calls["value"],
    }
    (out / "clip.json").write_text(json.dumps(clip, indent=1) + "\n")
    np.savez_compressed(out / "features.npz", **{k: v.astype(np.float32) for k, v in rec.items()})
    np.savez_compressed(
        out / "outputs.npz",
        probs=probs[:, :, ::PROB_STRIDE, ::PROB_STRIDE].astype(np.float32),
        labels=label_maps,
    )
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size / 1024:.0f} KiB")
    print(f"mean probabilities per channel: {probs.mean(axis=(1, 2, 3)).round(3).tolist()}")
    print(f"label fractions: {np.bincount(label_maps.ravel(), minlength=3) / label_maps.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
