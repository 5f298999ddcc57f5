"""Regenerate ``tests/fixtures/pcvos/``: PCVOS's own outputs on seeded random weights.

    python tools/make_pcvos_fixture.py --pcvos PATH/TO/PCVOS --out tests/fixtures/pcvos/ \
        [--data ../shared/data/davis_demo] [--sequence bike] \
        [--frames 0,1,2,3,2,1,2,3,2,1,0,1,2] [--crop 124,356,250,658] [--clip-length 6]

Needs PyTorch and a checkout of the authors' repository (github.com/pkyong95/PCVOS);
the tests do NOT run this script, they read what it wrote. The checkout is used as
it is (nothing is copied from it): its ``model/eval_network.py`` (``PCVOS``, built
with the options of their ``inference_pretrained_pcvos.sh``: ``--refine_clip ICR
--T_window 2 --S_window 7 --shared_proj --memory_read PMM``) and
``inference_core_yv.py`` (``InferenceCore_Per_Clip``, the driver of their
``eval_youtube.py``, with ``mem_every = clip_length``, top-k 20, every frame
predicted) are imported from ``--pcvos``, with stand-ins so that they run on a
CPU-only PyTorch without downloads: the torchvision ResNet-50, ``model_zoo`` and
``.cuda()`` stand-ins of ``tools/make_stcn_fixture.py``, plus ``timm.models.layers``
(``DropPath``, unused at drop rate 0; ``trunc_normal_``, whose values are
overwritten) and an empty ``matplotlib.pyplot`` (imported, never used).

Every tensor of ``PCVOS(opt).state_dict()`` is replaced by
:func:`vosjax.models.torch_import_pcvos.seeded_state_dict` (seeded NumPy per tensor
name; BatchNorm running statistics randomised; the relative-position index
buffers are checked to equal vosjax's before they are replaced by the same
values), and names, shapes and the seed go to ``spec.json``.

The run: the 2-object DAVIS ``bike`` sequence has 4 frames, so they are played
forward and back (13 frames by default, ordered so that the memory frames 0 and 6
and the temporary PMM entries (frames 5 and 11) are four different images: two
memory entries with equal keys would tie in the top-k everywhere); to keep CPU time small the 480p frames
are CROPPED to rows 124:356 and columns 250:658 (232 x 408 pixels, not a multiple
of 16, so the authors' padding to 16 applies: 240 x 416, 15 x 26 positions at
stride 16, which the 7 x 7 windows pad to 21 x 28). Frame 0 carries the masks;
clips of L = 6 frames (1-6, 7-12) follow, so progressive memory matching (F = 5)
adds frame 5 of each clip to a temporary memory for frame 6, and frame 6 is a
memory frame for the second clip.

Written (compressed ``.npz``, float32): ``spec.json``; ``features.npz``
(frame 0's key and values; for the first clip: keys, the local keys of the
refinement, the memory read-out and the refined read-out per object, channels
subsampled); ``outputs.npz`` (aggregated probabilities with background of every
frame, unpadded, every 4th pixel; the label maps) and ``clip.json`` (sequence,
frames, crop, labels, settings).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
VALUE_CHANNELS = slice(0, None, 16)  # stored value / read-out channels (every 16th of 512)
KEY_CHANNELS = slice(0, None, 4)  # stored key channels (every 4th of 64)
LOCAL_KEY_CHANNELS = slice(0, None, 16)  # stored local-key channels (every 16th of 256)
PROB_STRIDE = 4
OPTIONS = {
    "refine_clip": "ICR",
    "memory_read": "PMM",
    "hidden_dim": 256,
    "value_dim": 512,
    "T_window": [2],
    "S_window": [7],
    "shared_proj": True,
}


def _install_stubs(torch) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import make_stcn_fixture as msf

    tv, models = msf._torchvision_stub(torch)
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.models"] = models
    layers = types.ModuleType("timm.models.layers")

    class DropPath(torch.nn.Identity):
        def __init__(self, *a, **k):
            super().__init__()

    layers.DropPath = DropPath
    layers.trunc_normal_ = lambda t, std=1.0, **k: torch.nn.init.trunc_normal_(t, std=std)
    timm = types.ModuleType("timm")
    timm_models = types.ModuleType("timm.models")
    timm.models, timm_models.layers = timm_models, layers
    sys.modules.update({"timm": timm, "timm.models": timm_models, "timm.models.layers": layers})
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = types.ModuleType("matplotlib.pyplot")
    sys.modules.update({"matplotlib": mpl, "matplotlib.pyplot": mpl.pyplot})
    import torch.utils.model_zoo

    torch.utils.model_zoo.load_url = lambda *a, **k: {}
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    return msf


def load_pcvos(pcvos_dir: pathlib.Path):
    """``(PCVOS class, InferenceCore_Per_Clip, MemoryBank class, unpad)`` from the checkout."""
    import torch

    for need in ("model/eval_network.py", "inference_core_yv.py", "inference_memory_bank.py"):
        if not (pcvos_dir / need).is_file():
            raise SystemExit(f"make_pcvos_fixture: {pcvos_dir} has no {need}; pass the PCVOS checkout.")
    msf = _install_stubs(torch)
    sys.path.insert(0, str(pcvos_dir))
    import inference_core_yv
    import inference_memory_bank
    from model.eval_network import PCVOS
    from util.tensor_util import unpad

    inference_core_yv.torch = msf._CpuTorch(torch)
    return PCVOS, inference_core_yv.InferenceCore_Per_Clip, inference_memory_bank.MemoryBank, unpad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pcvos", required=True, type=pathlib.Path, help="the authors' PCVOS checkout")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "pcvos")
    p.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "davis_demo")
    p.add_argument("--sequence", default="bike")
    p.add_argument("--frames", default="0,1,2,3,2,1,2,3,2,1,0,1,2")
    p.add_argument("--crop", default="124,356,250,658", help="top,bottom,left,right of the 480p frames")
    p.add_argument("--clip-length", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import torch

    from vosjax.models import torch_import_pcvos as tip
    from vosjax.ops.window_attention import relative_position_index

    torch.set_grad_enabled(False)
    PCVOS, InferenceCore, MemoryBank, unpad = load_pcvos(args.pcvos.resolve())
    sys.path.insert(0, str(ROOT / "tools"))
    import make_stcn_fixture as msf

    net = PCVOS(dict(OPTIONS)).eval()
    sd = net.state_dict()
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            assert np.array_equal(v.numpy(), relative_position_index((2, 7, 7))), k
    spec = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    weights = tip.seeded_state_dict(spec, args.seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})

    frames = [int(f) for f in args.frames.split(",")]
    top, bottom, left, right = (int(v) for v in args.crop.split(","))
    rgb_u8, first = msf.read_clip(args.data, args.sequence, frames)
    rgb_u8, first = rgb_u8[:, top:bottom, left:right], first[top:bottom, left:right]
    labels = [int(v) for v in np.unique(first) if v != 0]
    x = torch.from_numpy(np.ascontiguousarray(rgb_u8)).float().div(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = ((x - mean) / std)[None]  # [1, T, 3, H, W], as their test datasets normalise
    msk = torch.from_numpy(np.stack([first == v for v in labels]).astype(np.float32))[:, None]
    with_bg = torch.cat([1 - msk.sum(0, keepdim=True), msk], 0)  # as eval_youtube.py

    # Record intermediate features (wrapping, not changing, the network).
    rec: dict[str, list] = {"readout": [], "refined": []}
    calls = {"key": 0, "value": 0}
    enc_key, enc_value = net.encode_key, net.encode_value

    def encode_key(frame):
        out = enc_key(frame)
        if calls["key"] == 0:  # frame 0 (memory), then the clips' batches
            rec["key_f0"] = out[0][0].numpy()
        elif calls["key"] == 1:
            rec["key_clip"] = out[0][:, KEY_CHANNELS].numpy()
        calls["key"] += 1
        return out

    def encode_value(frame, kf16, masks):
        out = enc_value(frame, kf16, masks)
        if calls["value"] == 0:
            rec["value_f0"] = out[:, VALUE_CHANNELS, 0].numpy()
        calls["value"] += 1
        return out

    net.encode_key, net.encode_value = encode_key, encode_value
    n_obj = len(labels)

    def local_keys(module, inputs, output):
        if "k_intra_clip" not in rec:
            rec["k_intra_clip"] = output[:, LOCAL_KEY_CHANNELS].numpy()

    def refined(module, inputs, output):
        if len(rec["refined"]) < n_obj:
            rec["refined"].append(output[0, VALUE_CHANNELS].numpy())

    net.input_proj.register_forward_hook(local_keys)
    net.refine_transformer.register_forward_hook(refined)
    match = MemoryBank.match_memory_PMM

    def match_memory_PMM(self, qk):
        out = match(self, qk)
        if len(rec["readout"]) < n_obj:
            rec["readout"].append(out[0, VALUE_CHANNELS].numpy())
        return out

    MemoryBank.match_memory_PMM = match_memory_PMM
    L = args.clip_length
    proc = InferenceCore(net, rgb, n_obj, top_k=20, mem_every=L, include_last=False,
                         req_frames=None, clip_length=L)
    proc.interact(with_bg, 0, rgb.shape[1], list(range(1, n_obj + 1)))
    probs = np.stack([unpad(proc.prob[:, t], proc.pad)[:, 0].numpy() for t in range(proc.t)], 1)
    label_maps = np.argmax(probs, axis=0).astype(np.uint8)
    h16 = proc.nh // 16
    # the read-outs come as [C, L*h, w]; refined as [C, L, h, w]
    readout = np.stack([r.reshape(r.shape[0], L, h16, -1) for r in rec["readout"]])
    feats = {
        "key_f0": rec["key_f0"][KEY_CHANNELS],
        "value_f0": rec["value_f0"],
        "key_clip": rec["key_clip"],
        "k_intra_clip": rec["k_intra_clip"],
        "readout_clip": readout,
        "refined_clip": np.stack(rec["refined"]),
    }

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(
        json.dumps(
            {"seed": args.seed, "rule": tip.SEED_RULE, "gains": tip.SEED_GAINS,
             "tensors": spec},
            indent=0,
        ) + "\n"
    )
    clip = {
        "sequence": args.sequence,
        "frames": frames,
        "crop": [top, bottom, left, right],
        "labels": labels,
        "options": OPTIONS,
        "top_k": 20,
        "clip_length": L,
        "mem_every": L,
        "segment_len": 5,
        "pad": list(proc.pad),
        "key_channels": [KEY_CHANNELS.start, KEY_CHANNELS.stop, KEY_CHANNELS.step],
        "local_key_channels": [LOCAL_KEY_CHANNELS.start, LOCAL_KEY_CHANNELS.stop, LOCAL_KEY_CHANNELS.step],
        "value_channels": [VALUE_CHANNELS.start, VALUE_CHANNELS.stop, VALUE_CHANNELS.step],
        "prob_stride": PROB_STRIDE,
        "encode_key_calls": calls["key"],
        "encode_value_calls": calls["value"],
        "processed_clips": [list(map(int, c)) for c in proc.processed_frames],
    }
    (out / "clip.json").write_text(json.dumps(clip, indent=1) + "\n")
    np.savez_compressed(out / "features.npz", **{k: v.astype(np.float32) for k, v in feats.items()})
    np.savez_compressed(
        out / "outputs.npz",
        probs=probs[:, :, ::PROB_STRIDE, ::PROB_STRIDE].astype(np.float32),
        labels=label_maps,
    )
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size / 1024:.0f} KiB")
    print(f"mean probabilities per channel: {probs.mean(axis=(1, 2, 3)).round(3).tolist()}")
    print(f"label fractions: {np.bincount(label_maps.ravel(), minlength=n_obj + 1) / label_maps.size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
