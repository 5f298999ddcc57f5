"""Import the authors' released STCN checkpoints (``stcn.pth``, ``stcn_s0.pth``) as a vosjax bundle.

The authors' inference network (their ``model/eval_network.py``) is vosjax's
``"stcn"`` model with two switches set (:func:`authors_config`):

- ``model.value_conv_bias = True``: their value encoder is their own ResNet-18
  whose 15 convolutions (stem, 12 block convs, 2 shortcut convs) carry biases;
  the key encoder is torchvision's bias-free ResNet-50 (as vosjax's);
- ``inference.pad_to = 16``: frames are zero-padded (after normalisation) to a
  multiple of 16, half before and half after, and the outputs cropped back,
  where vosjax by default runs at the frame's own size.

Their DAVIS test settings go to the bundle's ``inference`` section: top-k 20,
a memory frame every 5 frames after the first (which is always kept), 480p
frames (shorter side 480), and a memory capacity of :data:`MEMORY_FRAMES`
frames where their memory grows without bound (the same outputs for videos of
up to ``1 + 5 * (MEMORY_FRAMES - 1)`` frames; DAVIS-17 val's longest, 104
frames, writes 21).

Key mapping (ours ``collection/a/b/leaf`` <- theirs ``a.b.<torch leaf>``, leaves
and layouts as in :mod:`vosjax.models.torch_import`: conv ``kernel`` HWIO <-
``weight`` OIHW, dense ``kernel`` (in, out) <- Linear ``weight`` (out, in), BN
``scale`` / ``bias`` / ``mean`` / ``var`` <- ``weight`` / ``bias`` /
``running_mean`` / ``running_var``), after these renames of the module path:

==================================  ==========================================
ours                                theirs
==================================  ==========================================
``key_encoder/layer1``              ``key_encoder.res2``
``key_encoder/...``                 ``key_encoder....`` (conv1, bn1, layer2-3)
``value_encoder/...``               ``value_encoder....`` (conv1, bn1, layer1-3)
``fuser/block{1,2}``                ``value_encoder.fuser.block{1,2}``
``fuser/attention/channel/mlp_in``  ``value_encoder.fuser.attention.ChannelGate.mlp.1``
``fuser/attention/channel/mlp_out`` ``value_encoder.fuser.attention.ChannelGate.mlp.3``
``fuser/attention/spatial/conv``    ``value_encoder.fuser.attention.SpatialGate.spatial.conv``
``key_proj``                        ``key_proj.key_proj``
``query_comp``                      ``key_comp``
``decoder/compress``                ``decoder.compress``
``decoder/skip8``, ``skip4``        ``decoder.up_16_8.skip_conv``, ``decoder.up_8_4.skip_conv``
``decoder/up_16_8/res``, ``up_8_4`` ``decoder.up_16_8.out_conv``, ``decoder.up_8_4.out_conv``
``decoder/pred``                    ``decoder.pred``
==================================  ==========================================

``stcn_s0.pth`` (static-image pretraining) has a 4-channel value-encoder stem
(no "other objects" plane); its fifth input channel is zero-filled, as the
authors' evaluation script does. ``num_batches_tracked`` entries are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vosjax.errors import VosjaxError
from vosjax.models import torch_import

MEMORY_FRAMES = 40
REPORT_FILE = "conversion.json"
_IGNORED = ("num_batches_tracked",)
_VALUE_STEM = "value_encoder.conv1.weight"
# (ours, theirs) module-path renames, most specific first.
_RENAMES = (
    ("key_encoder.layer1.", "key_encoder.res2."),
    ("fuser.attention.channel.mlp_in.", "value_encoder.fuser.attention.ChannelGate.mlp.1."),
    ("fuser.attention.channel.mlp_out.", "value_encoder.fuser.attention.ChannelGate.mlp.3."),
    ("fuser.attention.spatial.conv.", "value_encoder.fuser.attention.SpatialGate.spatial.conv."),
    ("fuser.", "value_encoder.fuser."),
    ("key_proj.", "key_proj.key_proj."),
    ("query_comp.", "key_comp."),
    ("decoder.skip8.", "decoder.up_16_8.skip_conv."),
    ("decoder.skip4.", "decoder.up_8_4.skip_conv."),
    ("decoder.up_16_8.res.", "decoder.up_16_8.out_conv."),
    ("decoder.up_8_4.res.", "decoder.up_8_4.out_conv."),
)

#: The weight rule of :func:`seeded_state_dict`, recorded next to equivalence fixtures.
SEED_RULE = (
    "per tensor: rng = numpy.random.default_rng([seed, zlib.crc32(name)]); "
    "weight with ndim >= 2: normal(0, 1 / sqrt(prod(shape[1:]))); weight with ndim 1 "
    "(BatchNorm): uniform(0.5, 1.5); bias: normal(0, 0.05); running_mean: normal(0, 0.1); "
    "running_var: uniform(0.5, 1.5); num_batches_tracked: 0 (int64); then tensors named in "
    "SEED_GAINS are multiplied by their gain"
)
#: Extra gains of :func:`seeded_state_dict`. STCN's top-k softmax exponentiates the
#: affinities without subtracting their maximum, so random keys must stay small for it
#: to stay finite in float32 (trained keys do); the query features (key_comp) are damped
#: and the value stem boosted so that the two objects' masks, not the frame, dominate.
SEED_GAINS = {
    "key_proj.key_proj.weight": 0.25,
    "key_comp.weight": 0.1,
    "value_encoder.conv1.weight": 4.0,
}


# ----------------------------------------------------------------------------- configuration


def authors_config(memory_frames: int = MEMORY_FRAMES) -> ml_collections.ConfigDict:
    """The run config of a converted STCN bundle: ``model`` and ``inference`` sections."""
    from vosjax.models import stcn

    model = stcn.default_config("stcn")
    model.value_conv_bias = True
    model.memory_frames = int(memory_frames)
    c = ml_collections.ConfigDict()
    c.model = model
    c.inference = ml_collections.ConfigDict(
        {
            "top_k": 20,
            "memory_policy": "every_k",
            "mem_every": 5,
            "memory_frames": int(memory_frames),
            "resolution": 480,
            "pad_to": 16,
        }
    )
    c.source = ml_collections.ConfigDict(
        {"method": "STCN (Cheng et al., NeurIPS 2021)", "code": "github.com/hkchengrex/STCN"}
    )
    return c


# ----------------------------------------------------------------------------- seeded weights


def seeded_state_dict(spec: Sequence[Sequence[Any]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic random weights for a state-dict layout ``[(name, shape, dtype), ...]``.

    :data:`SEED_RULE` says how each tensor is drawn; the same call with the same
    ``spec`` and ``seed`` gives the same arrays on any machine (NumPy only).
    """
    out: dict[str, np.ndarray] = {}
    for name, shape, *_ in spec:
        shape = tuple(int(s) for s in shape)
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _IGNORED:
            out[name] = np.zeros(shape, np.int64)
            continue
        if leaf == "weight" and len(shape) >= 2:
            v = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        elif leaf == "weight":
            v = rng.uniform(0.5, 1.5, shape)
        elif leaf == "bias":
            v = rng.normal(0.0, 0.05, shape)
        elif leaf == "running_mean":
            v = rng.normal(0.0, 0.1, shape)
        elif leaf == "running_var":
            v = rng.uniform(0.5, 1.5, shape)
        else:
            raise VosjaxError(f"seeded_state_dict: no rule for tensor {name!r} (leaf {leaf!r}).")
        out[name] = (v * SEED_GAINS.get(name, 1.0)).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- conversion


@dataclasses.dataclass
class STCNConversionReport:
    """What :func:`convert_stcn_state_dict` did (source keys as in the file).

    converted: ``{source key: our variable path}`` of every tensor used.
    unmatched: our variables with no (usable) source tensor. unused: source
    tensors that were not placed. ignored: ``num_batches_tracked``. notes:
    zero-filled channels and shape problems.
    """

    prefix: str = ""
    converted: dict[str, str] = dataclasses.field(default_factory=dict)
    unmatched: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def torch_key(path: Sequence[str]) -> str:
    """The authors' state-dict key of our variable ``(collection, module..., leaf)``."""
    mods = ".".join(path[1:-1]) + "."
    for ours, theirs in _RENAMES:
        if mods.startswith(ours):
            mods = theirs + mods[len(ours) :]
            break
    leaf = torch_import._LEAF_TO_TORCH[path[-1]]
    return mods + leaf


def expected_variables(config: Any | None = None) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """``{their key: (our path, our shape)}`` for every variable of the converted model."""
    from vosjax.models import stcn

    return variables_by_torch_key(stcn.STCN, (config or authors_config()).model, torch_key)


_EXPECTED_CACHE: dict[str, dict[str, tuple[tuple[str, ...], tuple[int, ...]]]] = {}


def variables_by_torch_key(
    model_cls: Any, model_config: Any, key_of: Any, size: int = 32
) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """``{key_of(our path): (our path, our shape)}`` for every variable of ``model_cls(model_config)``.

    The shapes come from ``jax.eval_shape`` of the model's ``init`` on a 2-frame
    ``size`` x ``size`` clip with one object (nothing is computed); results are cached
    per model class and config.
    """
    key = model_cls.__name__ + json.dumps(model_config.to_dict(), sort_keys=True, default=str)
    if key not in _EXPECTED_CACHE:
        model = model_cls(model_config)
        shapes = jax.eval_shape(
            lambda: model.init(
                jax.random.key(0),
                jnp.zeros((1, 2, size, size, 3)),
                jnp.zeros((1, 1, 2, size, size)),
                jnp.ones((1, 1), bool),
            )
        )
        out = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
            names = tuple(str(p.key) for p in path)
            out[key_of(names)] = (names, tuple(leaf.shape))
        _EXPECTED_CACHE[key] = out
    return dict(_EXPECTED_CACHE[key])


def _strip_prefix(keys: Sequence[str]) -> str:
    """``"module."`` when every key carries it (a DataParallel save), else ``""``."""
    return "module." if keys and all(k.startswith("module.") for k in keys) else ""


def convert_stcn_state_dict(
    state_dict: Mapping[str, Any],
    *,
    config: Any | None = None,
    allow_missing: bool = False,
    seed: int = 0,
) -> tuple[dict[str, Any], STCNConversionReport]:
    """The authors' STCN state_dict (name -> array) as vosjax ``{"params", "batch_stats"}``.

    Raises :class:`VosjaxError` when a source tensor cannot be placed (an
    unknown name, or a shape that does not fit) or, unless ``allow_missing``
    (then: :func:`vosjax.models.backbones.init_leaf`, PRNG ``seed``), when one of
    our variables has no source tensor.
    """
    return place_state_dict(
        state_dict,
        expected_variables(config),
        fn="convert_stcn_state_dict",
        network="STCN",
        hint="Is this the authors' STCN checkpoint (stcn.pth / stcn_s0.pth)?",
        allow_missing=allow_missing,
        seed=seed,
    )


def place_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[tuple[str, ...], tuple[int, ...]]],
    *,
    fn: str,
    network: str,
    hint: str,
    allow_missing: bool = False,
    seed: int = 0,
    ignore: Sequence[str] = _IGNORED,
) -> tuple[dict[str, Any], STCNConversionReport]:
    """Place every tensor of ``state_dict`` by ``expected`` (``{their key: (our path, our shape)}``).

    Keys ending in one of ``ignore`` are listed as ignored; a DataParallel
    ``"module."`` prefix is stripped. Errors as :func:`convert_stcn_state_dict`
    (``network`` and ``hint`` word them).
    """
    if not isinstance(state_dict, Mapping):
        raise VosjaxError(f"{fn}: state_dict must be a mapping name -> array, got {type(state_dict).__name__}.")
    prefix = _strip_prefix(list(state_dict))
    report = STCNConversionReport(prefix=prefix)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    problems: list[str] = []
    for key in state_dict:
        if key.endswith(tuple(ignore)):
            report.ignored.append(key)
            continue
        name = key[len(prefix) :]
        if name not in expected:
            report.unused.append(key)
            continue
        path, shape = expected[name]
        src = np.asarray(state_dict[key])
        if not np.issubdtype(src.dtype, np.floating):
            problems.append(f"{key}: dtype {src.dtype} is not floating point")
            report.unused.append(key)
            continue
        value = torch_import._to_ours(src.astype(np.float32), path[-1])
        if name == _VALUE_STEM and value.ndim == 4 and value.shape[2] < shape[2]:
            extra = shape[2] - value.shape[2]
            value = np.concatenate(
                [value, np.zeros(value.shape[:2] + (extra,) + value.shape[3:], np.float32)], 2
            )
            report.notes.append(
                f"{key}: {src.shape[1]} input channels (a single-object stage-0 model); "
                f"channels {src.shape[1]}..{shape[2] - 1} (the other objects' mask) zero-filled"
            )
        if value.shape != shape:
            problems.append(
                f"{key}: shape {tuple(src.shape)} (ours {value.shape}) does not fit "
                f"{'/'.join(path)} of shape {shape}"
            )
            report.unused.append(key)
            continue
        flat[path] = value
        report.converted[key] = "/".join(path)
    placed = set(flat)
    report.unmatched = [k for k, (p, _) in expected.items() if p not in placed]
    report.notes.extend(problems)
    if report.unused:
        raise VosjaxError(
            f"{fn}: {len(report.unused)} source tensors cannot be placed in vosjax's {network}: "
            f"{', '.join(report.unused[:12])}{' ...' if len(report.unused) > 12 else ''}."
            f"{' Problems: ' + '; '.join(problems[:6]) + '.' if problems else ''} {hint}"
        )
    if report.unmatched and not allow_missing:
        raise VosjaxError(
            f"{fn}: {len(report.unmatched)} of {len(expected)} variables have no source tensor: "
            f"{', '.join(report.unmatched[:12])}{' ...' if len(report.unmatched) > 12 else ''}. "
            "Pass allow_missing=True (--allow-missing) to keep those at initialisation."
        )
    from vosjax.models import backbones

    rng = jax.random.key(seed)
    for i, name in enumerate(report.unmatched):
        path, shape = expected[name]
        if path[-1] in ("kernel", "scale", "var", "bias", "mean"):
            flat[path] = np.asarray(backbones.init_leaf(path[-1], jax.random.fold_in(rng, i), shape))
        else:  # e.g. PCVOS's relative-position bias table: no bias
            flat[path] = np.zeros(shape, np.float32)
        report.notes.append(f"{name}: missing, {'/'.join(path)} left at initialisation")
    variables: dict[str, Any] = {}
    for path, value in flat.items():
        node = variables
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return variables, report


def export_network(
    arch: str,
    source: str | pathlib.Path,
    output: str | pathlib.Path,
    config: Any,
    convert: Any,
    *,
    overwrite: bool = False,
    read: Any = None,
) -> tuple[pathlib.Path, Any]:
    """Read ``source``, convert it with ``convert(state_dict) -> (variables, report)`` and
    write a vosjax bundle of ``config`` to ``output`` (the shared tail of every ``convert_*``).

    ``source`` is read with ``read`` (default :func:`vosjax.models.torch_import.read_state_dict`:
    ``.pth`` via ``torch.load(weights_only=True)``, or ``.safetensors``). The bundle also
    holds :data:`REPORT_FILE`: the arch, the source file, its sha256 and the report
    (every source tensor and the variable it went to).
    """
    from vosjax import checkpoint

    src = pathlib.Path(source)
    out = pathlib.Path(output)
    if (out / "variables").exists() and not overwrite:
        raise VosjaxError(
            f"convert_{arch}: {out} already holds a bundle; pass overwrite=True (--overwrite)."
        )
    state_dict = (read or torch_import.read_state_dict)(src)
    variables, report = convert(state_dict)
    bundle = checkpoint.export_bundle(out, config, variables, overwrite=True)
    meta = {
        "arch": arch,
        "source": str(src),
        "sha256": torch_import._sha256(src),
        "source_tensors": len(state_dict),
        **report.to_dict(),
    }
    (bundle / REPORT_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return bundle, report


def convert_stcn(
    source: str | pathlib.Path,
    output: str | pathlib.Path,
    *,
    allow_missing: bool = False,
    memory_frames: int = MEMORY_FRAMES,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[pathlib.Path, STCNConversionReport]:
    """Convert the authors' STCN checkpoint ``source`` into a bundle at ``output`` with
    :func:`authors_config` (:func:`export_network`)."""
    config = authors_config(memory_frames)
    return export_network(
        "stcn", source, output, config,
        lambda sd: convert_stcn_state_dict(sd, config=config, allow_missing=allow_missing, seed=seed),
        overwrite=overwrite,
    )
