"""Import the authors' released FRTM networks (``rn101_*.pth``, ``rn18_*.pth``) as a vosjax bundle.

What the files hold. The authors' ``evaluate.py`` loads ``torch.load(f)["model"]``
into their ``Tracker``, whose only registered submodule is the segmentation
network (``refiner.*``: 192 tensors with BatchNorm's ``num_batches_tracked``).
The backbone is NOT in the file: their ``ResnetFeatureExtractor`` takes
torchvision's ImageNet ``resnet101`` / ``resnet18`` (``pretrained=True``), and the
target model is learned per video. So a conversion takes two files: the FRTM
checkpoint and torchvision's ImageNet ResNet state_dict (``resnet101-5d3b4d8f.pth``
or ``resnet18-5c106cde.pth``, or any ``.safetensors`` of the same names; ``fc.*`` is
ignored). The backbone is chosen from the checkpoint like their script does:
``refiner.TSE.layer4.reduce.0.weight`` with 1024 input channels -> ResNet-101, 256
-> ResNet-18.

The converted model is vosjax's ``"frtm"`` with the authors' forms switched on
(:func:`authors_config`): ``segnet="authors"`` (their S,
:mod:`vosjax.models.frtm_decoder_authors`), ``init_refit=True`` (their
``Discriminator.init`` ends with a w2-only update on the first frame's samples),
``memory_rule="authors"`` (the first sample added after the first frame is
weighted as their ``Memory.update_sample_weights`` does, and the pixel weights of
stored soft labels come from the thresholded label), ``label_upsample=16`` (their labels and pixel weights live on the image grid: the
target scores are upsampled to the frame size; exact when H and W are multiples
of 16, otherwise vosjax's grid is ``16 * ceil(H / 16)``). Their DAVIS settings:
``init_iters=(5, 10, 10, 10, 10)``, ``update_iters=(10,)`` (``--fast``:
``(5, 10, 10, 10)`` and ``(5,)``), a memory of 80 samples, learning rate 0.1, an
update every ``train_skipping=8`` frames, ``filter_reg=precond=(1e-4, 1e-2)``,
pixel weighting ``hinge`` with ``tf=0.1``, frames at their own (480p) size.

Known differences that remain (beyond the first frame's fit): the first-frame
augmentation (theirs: OpenCV warps of the 0..255 image, vosjax: its own JAX
warps of the normalised frame) and the random initial target-model weights
(theirs: PyTorch's default conv init) are drawn differently, so an engine run
gives other target models than theirs unless both are given the same. Their
aggregation of objects (``Tracker.track``: ``softmax(p / (1 - p))`` over the
objects with the background ``min(1 - p)``) is not vosjax's soft aggregation.

Key mapping (ours ``params|batch_stats/segnet/<module>/<leaf>`` <- theirs
``refiner.<module>.<torch leaf>``, per depth d / their layer L: s32/layer5,
s16/layer4, s8/layer3, s4/layer2; layouts as :mod:`vosjax.models.torch_import`)::

    tse_reduce_d/reduce{0,2}           TSE.L.reduce.{0,2}
    tse_transform_d/transform{0,2,4}   TSE.L.transform.{0,2,4}
    rrb{1,2}_d/conv1x1                 RRB{1,2}.L.conv1x1
    rrb{1,2}_d/bb{0,1,3}               RRB{1,2}.L.bblock.{0,1,3}   (bb1: BatchNorm)
    cab_d/crc{0,2}                     CAB.L.convreluconv.{0,2}
    up_conv{1,2}                       project.conv{1,2}

and ``backbone/...`` <- torchvision's names unchanged (given here as ``backbone.*``).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vosjax.errors import VosjaxError
from vosjax.models import torch_import
from vosjax.models.torch_import_stcn import REPORT_FILE, STCNConversionReport, place_state_dict

__all__ = [
    "REPORT_FILE",
    "adjust_seeded",
    "authors_config",
    "convert_frtm",
    "convert_frtm_state_dict",
    "expected_variables",
    "segnet_torch_key",
]

_LAYER = {"s32": "layer5", "s16": "layer4", "s8": "layer3", "s4": "layer2"}
_BACKBONE_FOR_CHANNELS = {1024: "resnet101", 256: "resnet18"}
PROBE_KEY = "refiner.TSE.layer4.reduce.0.weight"
_MODULES = (  # (ours prefix, theirs prefix), per depth
    ("tse_reduce_{d}/reduce", "TSE.{L}.reduce."),
    ("tse_transform_{d}/transform", "TSE.{L}.transform."),
    ("rrb1_{d}/conv1x1", "RRB1.{L}.conv1x1"),
    ("rrb2_{d}/conv1x1", "RRB2.{L}.conv1x1"),
    ("rrb1_{d}/bb", "RRB1.{L}.bblock."),
    ("rrb2_{d}/bb", "RRB2.{L}.bblock."),
    ("cab_{d}/crc", "CAB.{L}.convreluconv."),
)


#: The adjustments of :func:`adjust_seeded`, recorded next to equivalence fixtures.
ADJUST_RULE = (
    "after vosjax.models.torch_import_stcn.seeded_state_dict: the input channel of the target "
    "scores (the last one) of every refiner.TSE.<L>.transform.0.weight is multiplied by "
    "score_gain, and logit_offset is added to refiner.project.conv2.bias"
)


def adjust_seeded(weights: Mapping[str, np.ndarray], score_gain: float, logit_offset: float) -> dict[str, np.ndarray]:
    """Seeded FRTM weights made informative (:data:`ADJUST_RULE`): with plain random weights
    S barely reads the target scores and its logits have one sign, so every pixel
    would be foreground; a louder score channel and a centred output fix both."""
    out = dict(weights)
    for k, v in weights.items():
        if k.startswith("refiner.TSE.") and k.endswith(".transform.0.weight"):
            v = v.copy()
            v[:, -1] *= np.float32(score_gain)
            out[k] = v
    b = "refiner.project.conv2.bias"
    out[b] = (weights[b] + np.float32(logit_offset)).astype(np.float32)
    return out


def authors_config(backbone: str = "resnet101", fast: bool = False) -> ml_collections.ConfigDict:
    """The run config of a converted FRTM bundle: ``model`` and ``inference`` sections."""
    from vosjax.models import frtm

    if backbone not in _BACKBONE_FOR_CHANNELS.values():
        raise VosjaxError(f"authors_config: backbone {backbone!r}; the released FRTM uses resnet101 or resnet18.")
    model = frtm.default_config("full")
    model.backbone = backbone
    model.segnet = "authors"
    model.init_refit = True
    model.memory_rule = "authors"
    model.label_upsample = 16
    model.channels = 64
    model.memory_frames = 80
    model.eta = 0.1
    model.update_interval = 8
    model.kappa_min = 0.1
    model.reg_w1, model.reg_w2 = 1e-4, 1e-2
    model.precond_w1, model.precond_w2 = 1e-4, 1e-2
    model.num_gn_init = 4 if fast else 5
    model.num_cg_init = (5, 10, 10, 10) if fast else (5, 10, 10, 10, 10)
    model.num_cg_update = 5 if fast else 10
    c = ml_collections.ConfigDict()
    c.model = model
    c.inference = ml_collections.ConfigDict({"memory_policy": "frtm", "top_k": None})
    c.source = ml_collections.ConfigDict(
        {"method": "FRTM (Robinson et al., CVPR 2020)", "code": "github.com/andr345/frtm-vos"}
    )
    return c


def segnet_torch_key(path: tuple[str, ...]) -> str:
    """The authors' key of our segnet variable ``(collection, "segnet", module..., leaf)``."""
    mods = "/".join(path[2:-1])
    leaf = torch_import._LEAF_TO_TORCH[path[-1]]
    if mods in ("up_conv1", "up_conv2"):
        return f"refiner.project.conv{mods[-1]}.{leaf}"
    for d, layer in _LAYER.items():
        for ours, theirs in _MODULES:
            o = ours.format(d=d)
            if mods.startswith(o):
                return "refiner." + theirs.format(L=layer) + mods[len(o):] + "." + leaf
    raise VosjaxError(f"segnet_torch_key: no authors' key for {'/'.join(path)}.")


def expected_variables(config: Any | None = None) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """``{their key: (our path, our shape)}`` for every variable of the converted model
    (backbone keys as ``backbone.<torchvision name>``)."""
    from vosjax.models import frtm

    model = frtm.FRTM((config or authors_config()).model)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 1, 64, 64, 3)),
                           jnp.zeros((1, 1, 1, 64, 64)), jnp.ones((1, 1), bool))
    )
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = tuple(str(p.key) for p in path)
        if names[1] == "backbone":
            key = "backbone." + ".".join(names[2:-1] + (torch_import._LEAF_TO_TORCH[names[-1]],))
        else:
            key = segnet_torch_key(names)
        out[key] = (names, tuple(leaf.shape))
    return out


def _refiner(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The ``refiner.*`` tensors of a checkpoint (``{"model": state_dict}`` flattened to
    ``model.refiner.*`` or a bare state_dict) and the other keys (ignored)."""
    out, other = {}, []
    for k, v in checkpoint.items():
        name = k[len("model."):] if k.startswith("model.") else k
        name = name[len("module."):] if name.startswith("module.") else name
        (out.__setitem__(name, v) if name.startswith("refiner.") else other.append(k))
    return out, other


def detect_backbone(checkpoint: Mapping[str, Any]) -> str:
    """``"resnet101"`` or ``"resnet18"`` from the input width of their TSE.layer4 reduction."""
    refiner, _ = _refiner(checkpoint)
    if PROBE_KEY not in refiner:
        raise VosjaxError(
            f"convert_frtm: no {PROBE_KEY!r} in the checkpoint; is this the authors' FRTM file "
            "(rn101_*.pth / rn18_*.pth)?"
        )
    c = int(np.shape(refiner[PROBE_KEY])[1])
    if c not in _BACKBONE_FOR_CHANNELS:
        raise VosjaxError(f"convert_frtm: {PROBE_KEY} has {c} input channels; expected 1024 or 256.")
    return _BACKBONE_FOR_CHANNELS[c]


def convert_frtm_state_dict(
    checkpoint: Mapping[str, Any],
    backbone_state_dict: Mapping[str, Any] | None,
    *,
    config: Any | None = None,
    allow_missing: bool = False,
    seed: int = 0,
) -> tuple[dict[str, Any], STCNConversionReport]:
    """The authors' FRTM checkpoint plus torchvision's ResNet as vosjax ``{"params", "batch_stats"}``.

    ``backbone_state_dict`` None leaves the backbone missing (an error unless
    ``allow_missing``). Errors as
    :func:`vosjax.models.torch_import_stcn.place_state_dict`.
    """
    refiner, other = _refiner(checkpoint)
    if backbone_state_dict is None and not allow_missing:
        raise VosjaxError(
            "convert_frtm_state_dict: the authors' FRTM files hold the segmentation network only; "
            f"pass torchvision's ImageNet {detect_backbone(checkpoint)} state_dict as the backbone "
            "(--backbone-weights), or allow_missing=True (--allow-missing) for a random backbone."
        )
    merged = dict(refiner)
    fc = []
    for k, v in (backbone_state_dict or {}).items():
        (fc.append(k) if k.startswith("fc.") else merged.__setitem__("backbone." + k, v))
    config = config or authors_config(detect_backbone(checkpoint))
    variables, report = place_state_dict(
        merged,
        expected_variables(config),
        fn="convert_frtm_state_dict",
        network="FRTM",
        hint="Is this the authors' FRTM checkpoint with torchvision's ImageNet ResNet of the same depth?",
        allow_missing=allow_missing,
        seed=seed,
    )
    report.ignored.extend(other + fc)
    return variables, report


def convert_frtm(
    source: str | pathlib.Path,
    output: str | pathlib.Path,
    *,
    backbone: str | pathlib.Path | None = None,
    fast: bool = False,
    allow_missing: bool = False,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[pathlib.Path, STCNConversionReport]:
    """Read ``source`` (the FRTM checkpoint) and ``backbone`` (torchvision's ImageNet ResNet of
    the depth the checkpoint needs), convert, and write a bundle with :func:`authors_config`
    (``fast``: their ``--fast`` iteration counts) and ``conversion.json`` (both files,
    their sha256 and the report)."""
    from vosjax import checkpoint

    src = pathlib.Path(source)
    out = pathlib.Path(output)
    if (out / "variables").exists() and not overwrite:
        raise VosjaxError(f"convert_frtm: {out} already holds a bundle; pass overwrite=True (--overwrite).")
    ckpt = torch_import.read_state_dict(src)
    arch = detect_backbone(ckpt)
    bb = None if backbone is None else torch_import.read_state_dict(pathlib.Path(backbone))
    config = authors_config(arch, fast)
    variables, report = convert_frtm_state_dict(
        ckpt, bb, config=config, allow_missing=allow_missing, seed=seed
    )
    bundle = checkpoint.export_bundle(out, config, variables, overwrite=True)
    meta = {
        "arch": "frtm",
        "backbone": arch,
        "source": str(src),
        "sha256": torch_import._sha256(src),
        "backbone_source": None if backbone is None else str(backbone),
        "backbone_sha256": None if backbone is None else torch_import._sha256(pathlib.Path(backbone)),
        "source_tensors": len(ckpt) + (0 if bb is None else len(bb)),
        **report.to_dict(),
    }
    (bundle / REPORT_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return bundle, report
