"""Regenerate ``tests/fixtures/frtm/``: FRTM's own outputs on seeded random weights.

    python tools/make_frtm_fixture.py --frtm PATH/TO/frtm-vos --out tests/fixtures/frtm/ \
        [--data ../shared/data/davis_demo] [--sequence dog] [--frames 10] \
        [--crop 0,320,128,576] [--backbone resnet18]

Needs PyTorch, OpenCV and a checkout of the authors' repository
(github.com/andr345/frtm-vos); the tests do NOT run this script, they read what it
wrote. Nothing is copied from the checkout: its ``evaluate.py`` (``Parameters``:
their DAVIS settings and model assembly) and ``model/tracker.py`` (``Tracker``,
their per-sequence driver) are imported from ``--frtm`` and run as they are, with
these stand-ins so that they run on a CPU-only PyTorch without downloads:

- ``torchvision.models.resnet18 / resnet101``: small torchvision-layout ResNets
  written here (only names and shapes matter: every weight is overwritten);
- ``torch.autograd.grad`` is given tuples where their GN-CG passes its ``TensorList``
  (a ``list`` subclass that recent PyTorch releases no longer accept there);
- ``easydict`` and ``tqdm`` (not installed here): a dict with attribute access, and
  the identity; ``torch.cuda.synchronize`` / ``empty_cache``: no-ops;
- ``lib._npp`` (their CUDA warping extension, used by their augmenter only): an
  empty module. Their augmenter is NOT run: the first frame's 5 samples (the
  frame plus 4 augmentations) are vosjax's
  (:func:`vosjax.learners.frtm.augment_first_frame` of the ImageNet-normalised
  frame with key ``split(PRNGKey(seed))[0]``, as ``FRTM._initial`` draws them),
  turned back to 0..255 for their tracker, so that both sides fit the target
  model to the same samples;
- their target model's initial weights (PyTorch's random conv init) are replaced
  by vosjax's draw (:func:`vosjax.learners.frtm.init_params` with key
  ``split(PRNGKey(seed))[1]``), for the same reason.

Every tensor of their refiner (``refiner.*``, what their ``.pth`` files hold)
and of the torchvision ResNet (``backbone.*`` here; their code loads ImageNet
weights) is replaced by :func:`vosjax.models.torch_import_stcn.seeded_state_dict`
(BatchNorm running statistics randomised too); names, shapes and the seed go to
``spec.json``; then :func:`vosjax.models.torch_import_frtm.adjust_seeded` makes S
read the target scores louder (``--score-gain``) and centres its logits
(``--logit-offset``), so that the masks are neither empty nor full (a full
mask makes their pixel weights, and the next update, NaN). To keep CPU time small the frames are CROPPED (rows 0-320,
columns 128-576 of 480p ``dog``: a multiple of 16 that holds the dog) and the
backbone is ResNet-18 (their ``rn18`` networks; the layout of ``rn101`` differs
only in the backbone depth and TSE input widths). Their tracker then runs the
first ``--frames`` frames (one target-model update at frame 8).

Written: ``spec.json``; ``features.npz`` (frame 1's backbone features
``layer2..layer5`` = vosjax ``s4..s32`` with channels subsampled, the target
scores of frames 1 and 9, S's logits of frame 1 on every 2nd pixel);
``outputs.npz`` (every frame's foreground probabilities, after their
aggregation, on every 4th pixel; the label maps); ``clip.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CH_STEP = {"layer2": 8, "layer3": 8, "layer4": 8, "layer5": 8}  # stored feature channels
LOGIT_STRIDE = 2
PROB_STRIDE = 4


def _torchvision_stub(torch):
    """``torchvision.models`` with torchvision-layout ``resnet18`` / ``resnet101`` (weights unused)."""
    nn = torch.nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or cin != planes:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

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
                self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                                nn.BatchNorm2d(out))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet(nn.Module):
        def __init__(self, block, sizes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (n, planes) in enumerate(zip(sizes, (64, 128, 256, 512))):
                blocks = []
                for j in range(n):
                    blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                    cin = planes * block.expansion
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, 1000)

    models = types.ModuleType("torchvision.models")
    models.resnet18 = lambda pretrained=False, **_: ResNet(Basic, (2, 2, 2, 2))
    models.resnet34 = lambda pretrained=False, **_: ResNet(Basic, (3, 4, 6, 3))
    models.resnet50 = lambda pretrained=False, **_: ResNet(Bottleneck, (3, 4, 6, 3))
    models.resnet101 = lambda pretrained=False, **_: ResNet(Bottleneck, (3, 4, 23, 3))
    tv = types.ModuleType("torchvision")
    tv.models = models
    return tv, models


def load_frtm(frtm_dir: pathlib.Path):
    """``(evaluate.Parameters, model.tracker module)`` imported from the authors' checkout."""
    import torch

    for need in ("evaluate.py", "model/tracker.py", "model/discriminator.py", "model/seg_network.py"):
        if not (frtm_dir / need).is_file():
            raise SystemExit(f"make_frtm_fixture: {frtm_dir} has no {need}; pass the frtm-vos checkout.")
    tv, models = _torchvision_stub(torch)
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.models"] = models
    easydict = types.ModuleType("easydict")

    class EasyDict(dict):
        def __getattr__(self, k):
            try:
                return self[k]
            except KeyError as e:
                raise AttributeError(k) from e

        def __setattr__(self, k, v):
            self[k] = v

    easydict.EasyDict = EasyDict
    sys.modules.setdefault("easydict", easydict)
    tq = types.ModuleType("tqdm")
    tq.tqdm = lambda it, *a, **k: it
    sys.modules.setdefault("tqdm", tq)
    npp = types.ModuleType("lib._npp")
    npp.nppig_cpp = None
    sys.modules["lib._npp"] = npp
    grad = torch.autograd.grad

    def plain_grad(outputs, inputs, grad_outputs=None, **kw):  # their TensorList -> tuple
        plain = lambda v: tuple(v) if isinstance(v, list) else v
        return grad(plain(outputs), plain(inputs), plain(grad_outputs), **kw)

    torch.autograd.grad = plain_grad
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    sys.path.insert(0, str(frtm_dir))
    import evaluate
    import model.tracker as tracker_mod

    return evaluate.Parameters, tracker_mod


def read_clip(data: pathlib.Path, sequence: str, n: int, crop: list[int]):
    from PIL import Image

    r0, r1, c0, c1 = crop
    img = data / "JPEGImages" / "480p" / sequence
    rgb = np.stack([np.asarray(Image.open(img / f"{i:05d}.jpg").convert("RGB")) for i in range(n)])
    first = np.asarray(Image.open(data / "Annotations" / "480p" / sequence / "00000.png").convert("P"))
    return rgb[:, r0:r1, c0:c1], first[r0:r1, c0:c1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frtm", required=True, type=pathlib.Path, help="the authors' frtm-vos checkout")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "frtm")
    p.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "davis_demo")
    p.add_argument("--sequence", default="dog")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--crop", default="0,320,128,576", help="rows r0,r1 and columns c0,c1")
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet101"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-gain", type=float, default=50.0)
    p.add_argument("--logit-offset", type=float, default=-2.0)
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import torch

    from vosjax.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_frames
    from vosjax.learners import frtm as tm
    from vosjax.models import torch_import_frtm as tif
    from vosjax.models import torch_import_stcn as tis

    torch.set_grad_enabled(True)  # their GN-CG differentiates; their driver disables it where it wants
    Parameters, tracker_mod = load_frtm(args.frtm.resolve())

    crop = [int(v) for v in args.crop.split(",")]
    rgb, first = read_clip(args.data, args.sequence, args.frames, crop)
    labels = [int(v) for v in np.unique(first) if v != 0]
    assert labels == [1], f"make_frtm_fixture: one object expected, got {labels}"
    h, w = first.shape

    # their refiner's layout (names and shapes), then their own assembly with seeded weights
    from model.feature_extractor import ResnetFeatureExtractor
    from model.seg_network import SegNetwork

    width = {"resnet18": 256, "resnet101": 1024}[args.backbone]
    params = Parameters({"refiner.TSE.layer4.reduce.0.weight": torch.zeros(64, width, 1, 1)}, device="cpu")
    extractor = ResnetFeatureExtractor(params.feature_extractor)
    rp = params.refnet_params
    ft_ch = {L: c for L, c in extractor.get_out_channels().items() if L in rp.layers}
    layout = SegNetwork(params.disc_params.out_channels, rp.nchannels, ft_ch, rp.use_batch_norm)
    sd = {"refiner." + k: v for k, v in layout.state_dict().items()}
    sd.update({"backbone." + k: v for k, v in extractor.resnet.state_dict().items()})
    spec = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    weights = tif.adjust_seeded(tis.seeded_state_dict(spec, args.seed), args.score_gain, args.logit_offset)
    params = Parameters({k: torch.from_numpy(v) for k, v in weights.items() if k.startswith("refiner.")},
                        device="cpu")
    tracker = params.get_model()  # evaluate.py's assembly: extractor, refiner (weights loaded), Tracker
    tracker.feature_extractor.resnet.load_state_dict(
        {k[9:]: torch.from_numpy(v) for k, v in weights.items() if k.startswith("backbone.")})
    refiner = tracker.refiner

    # the first frame's samples and the initial target model: vosjax's draws (see above)
    key_aug, key_w = jax.random.split(jax.random.PRNGKey(args.seed))
    x0 = normalize_frames(jnp.asarray(rgb[0]))
    ims, msks = tm.augment_first_frame(x0, jnp.asarray(first == 1, jnp.float32), key_aug)
    ims255 = (np.asarray(ims) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255.0
    aug_im = torch.from_numpy(ims255.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    aug_lb = torch.from_numpy(np.array(msks, np.float32))[:, None]
    w0 = tm.init_params(key_w, params.disc_params.in_channels, params.disc_params.c_channels, 3)
    w1 = torch.from_numpy(np.asarray(w0["w1"]).transpose(3, 2, 0, 1).copy())
    w2 = torch.from_numpy(np.asarray(w0["w2"]).transpose(3, 2, 0, 1).copy())

    tracker.augment = lambda im, lb: (aug_im, aug_lb)  # instead of their OpenCV/NPP augmenter

    rec: dict[str, np.ndarray] = {}
    target_init = tracker_mod.TargetObject.initialize

    def initialize(self, ft, mask):
        self.discriminator.project.weight.data.copy_(w1)
        self.discriminator.filter.weight.data.copy_(w2)
        return target_init(self, ft, mask)

    tracker_mod.TargetObject.initialize = initialize
    classify, seg = tracker_mod.TargetObject.classify, refiner.forward
    frame = {"i": 0}

    def classify_rec(self, ft):
        s = classify(self, ft)
        if frame["i"] in (1, 9):
            rec[f"scores_f{frame['i']}"] = s[0, 0].numpy()
        return s

    def seg_rec(scores, features, image_size):
        y = seg(scores, features, image_size)
        if frame["i"] == 1:
            rec["logits_f1"] = y[0, 0, ::LOGIT_STRIDE, ::LOGIT_STRIDE].numpy()
            for L, step in CH_STEP.items():
                rec[f"{L}_f1"] = features[L][0, ::step].numpy()
        return y

    tracker_mod.TargetObject.classify = classify_rec
    refiner.forward = seg_rec

    probs = []
    track = tracker.track

    def track_rec(image):
        out = track(image)
        probs.append(out[1].numpy().copy())
        return out

    tracker.track = track_rec

    class Sequence:
        name = args.sequence
        obj_ids = labels

        def __len__(self):
            return args.frames

        def __iter__(self):
            for i in range(args.frames):
                frame["i"] = i
                im = torch.from_numpy(rgb[i]).permute(2, 0, 1).contiguous()
                if i == 0:
                    yield im, torch.from_numpy(first.astype(np.uint8))[None], labels
                else:
                    yield im, [], []

    outputs, _ = tracker.run_sequence(Sequence())
    label_maps = np.stack([o.numpy().reshape(h, w) for o in outputs]).astype(np.uint8)
    probs = np.stack([(first == 1).astype(np.float32)] + probs)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(
        json.dumps({"seed": args.seed, "rule": tis.SEED_RULE, "adjust_rule": tif.ADJUST_RULE,
                    "score_gain": args.score_gain, "logit_offset": args.logit_offset, "tensors": spec}, indent=0) + "\n"
    )
    clip = {
        "sequence": args.sequence,
        "frames": args.frames,
        "crop": crop,
        "backbone": args.backbone,
        "labels": labels,
        "channel_step": CH_STEP,
        "logit_stride": LOGIT_STRIDE,
        "prob_stride": PROB_STRIDE,
        "disc_params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.disc_params.items()
                        if k != "device"},
    }
    (out / "clip.json").write_text(json.dumps(clip, indent=1, default=str) + "\n")
    np.savez_compressed(out / "features.npz", **{k: v.astype(np.float32) for k, v in rec.items()})
    np.savez_compressed(out / "outputs.npz", probs=probs[:, ::PROB_STRIDE, ::PROB_STRIDE].astype(np.float32),
                        labels=label_maps)
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size / 1024:.0f} KiB")
    lg = rec["logits_f1"]
    print(f"frame 1 logits: min {lg.min():.3f} median {np.median(lg):.3f} max {lg.max():.3f}")
    print("foreground fraction per frame:", (label_maps > 0).mean(axis=(1, 2)).round(3).tolist())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
