"""Import PyTorch (torchvision-layout) backbone weights into vosjax backbone variables.

Reading. ``.pth`` / ``.pt`` files are read ONLY through
``torch.load(path, map_location="cpu", weights_only=True)``: vosjax never unpickles
arbitrary Python objects, and a file that ``weights_only`` refuses raises
:class:`VosjaxError`. ``.safetensors`` files are parsed here with NumPy (no torch
needed): an 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}}``, then the raw
little-endian tensor bytes (offsets relative to the end of the header). Nested
checkpoints ({"state_dict": {...}, "epoch": 3}) are flattened with "." joins and
non-tensor entries dropped.

Mapping. The backbones of :mod:`vosjax.models.backbones` use torchvision's module
names, so each of our leaves ``collection/a/b/leaf`` has the source key
``a.b.<torch leaf>`` with

=====================  ==========================  =====================================
ours                   torch                       transform
=====================  ==========================  =====================================
params .../kernel      ...weight  (O, I/g, kh, kw)  OIHW -> HWIO: transpose (2, 3, 1, 0)
params .../scale       ...weight  (C,)             none
params .../bias        ...bias    (C,)             none
batch_stats .../mean   ...running_mean             none
batch_stats .../var    ...running_var              none
=====================  ==========================  =====================================

A depthwise conv (groups = C) has torch weight (C, 1, kh, kw), which the same
transpose makes (kh, kw, 1, C): the kernel layout of ``nn.Conv(feature_group_count=C)``.
``num_batches_tracked`` entries carry no information for inference and are ignored.
When our first conv has more input channels than the source (e.g. STCN's value
encoder: RGB + mask + other-objects mask), the RGB filters are copied and the extra
input channels are zero-initialised, so the network starts out ignoring them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import pickle
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vosjax.errors import VosjaxError
from vosjax.models import backbones

METADATA_FILE = "vosjax_backbone.json"
VARIABLES_DIR = "variables"
FORMAT_VERSION = 1
TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIXES = (".safetensors",)
COMMON_PREFIXES = ("module.", "backbone.", "encoder.")
_MAX_HEADER_BYTES = 100 * 2**20

_LEAF_TO_TORCH = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_IGNORED_SUFFIXES = ("num_batches_tracked",)


# ----------------------------------------------------------------------------- reading


def _safetensors_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # a JAX dependency

    table = {
        "F64": np.float64,
        "F32": np.float32,
        "F16": np.float16,
        "BF16": ml_dtypes.bfloat16,
        "F8_E4M3": ml_dtypes.float8_e4m3fn,
        "F8_E5M2": ml_dtypes.float8_e5m2,
        "I64": np.int64,
        "I32": np.int32,
        "I16": np.int16,
        "I8": np.int8,
        "U64": np.uint64,
        "U32": np.uint32,
        "U16": np.uint16,
        "U8": np.uint8,
        "BOOL": np.bool_,
    }
    return {k: np.dtype(v).newbyteorder("<") for k, v in table.items()}


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read every tensor of a ``.safetensors`` file with NumPy only (no torch).

    Raises VosjaxError for a truncated file, a malformed header, an unknown dtype, or
    data offsets that do not match dtype x shape or fall outside the file.
    """
    path = pathlib.Path(path)
    fn = "read_safetensors"
    raw = path.read_bytes()
    if len(raw) < 8:
        raise VosjaxError(
            f"{fn}: {path} is too short to be a safetensors file (needs an 8-byte header length)."
        )
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER_BYTES or 8 + n > len(raw):
        raise VosjaxError(
            f"{fn}: {path} declares a {n}-byte header but the file has {len(raw)} bytes; "
            "the file is truncated or not safetensors."
        )

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        dup = [k for k, c in Counter(keys).items() if c > 1]
        if dup:
            raise VosjaxError(f"{fn}: {path} header repeats tensor names {dup}.")
        return dict(pairs)

    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VosjaxError(
            f"{fn}: {path} has an unreadable JSON header ({e}); the file is not safetensors."
        ) from e
    if not isinstance(header, dict):
        raise VosjaxError(f"{fn}: {path} header is not a JSON object.")
    data = memoryview(raw)[8 + n :]
    dtypes = _safetensors_dtypes()
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dt, shape, (begin, end) = (
                info["dtype"],
                [int(s) for s in info["shape"]],
                info["data_offsets"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise VosjaxError(
                f"{fn}: {path} entry {name!r} lacks dtype/shape/data_offsets ({info!r})."
            ) from e
        if dt not in dtypes:
            raise VosjaxError(
                f"{fn}: {path} tensor {name!r} has unsupported dtype {dt!r}; "
                f"supported: {', '.join(dtypes)}."
            )
        nbytes = dtypes[dt].itemsize * int(np.prod(shape, dtype=np.int64))
        if (
            not (0 <= begin <= end <= len(data))
            or end - begin != nbytes
            or min(shape, default=0) < 0
        ):
            raise VosjaxError(
                f"{fn}: {path} tensor {name!r} has data_offsets {[begin, end]} inconsistent with "
                f"dtype {dt} x shape {shape} ({nbytes} bytes) or the data size {len(data)}."
            )
        arr = np.frombuffer(data[begin:end], dtype=dtypes[dt]).reshape(shape)
        out[name] = arr.astype(arr.dtype.newbyteorder("="))
    return out


def _torch_to_numpy(torch: Any, t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
        t = t.to(torch.float32)
    return t.numpy().copy()


def _flatten(torch: Any, obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, torch.Tensor):
        try:
            out[prefix[:-1]] = _torch_to_numpy(torch, obj)
        except (RuntimeError, TypeError) as e:  # sparse, quantized, meta tensors
            raise VosjaxError(
                f"read_torch: tensor {prefix[:-1]!r} ({obj.dtype}, layout {obj.layout}) has no "
                f"dense NumPy equivalent ({e}); save dense float tensors instead."
            ) from e
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _flatten(torch, v, f"{prefix}{k}.", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(torch, v, f"{prefix}{i}.", out)
    # Other leaves (epoch counters, strings, hyper-parameters) are not weights.


def read_torch(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read a ``.pth`` / ``.pt`` state_dict with ``torch.load(..., weights_only=True)``.

    Nested dicts / lists are flattened with "." (``{"model": {"conv1.weight": t}}`` ->
    ``"model.conv1.weight"``); non-tensor leaves are dropped.
    """
    path = pathlib.Path(path)
    try:
        import torch
    except ImportError as e:
        raise VosjaxError(
            f"read_torch: reading {path} needs PyTorch, which is not installed; install the "
            "torch extra "
            "(pip install -e '.[torch]') or convert the file to .safetensors, which needs no torch."
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e)
        if (
            "WeightsUnpickler error:" in detail
        ):  # keep torch's reason, drop its advice to disable the check
            detail = detail.split("WeightsUnpickler error:", 1)[1].split(
                "Check the documentation", 1
            )[0]
        raise VosjaxError(
            f"read_torch: torch.load(weights_only=True) refused {path}: either it pickles Python "
            "objects other than tensors and plain containers (e.g. a whole nn.Module or a custom "
            "class), or it is not a torch "
            "file. vosjax never unpickles arbitrary objects; in the project that made it, save "
            "model.state_dict() instead, or export .safetensors. torch said: "
            f"{' '.join(detail.split())}"
        ) from e
    except Exception as e:  # corrupt zip, wrong format: torch raises RuntimeError and friends
        raise VosjaxError(
            f"read_torch: could not read {path} with torch.load ({type(e).__name__}: {e})."
        ) from e
    out: dict[str, np.ndarray] = {}
    _flatten(torch, obj, "", out)
    if not out:
        raise VosjaxError(f"read_torch: {path} holds no tensors (loaded a {type(obj).__name__}).")
    return out


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read a ``.pth``/``.pt`` (via torch, weights only) or ``.safetensors`` (NumPy) file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise VosjaxError(f"read_state_dict: input file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return read_torch(path)
    if suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)
    raise VosjaxError(
        f"read_state_dict: {path} has extension {suffix!r}; supported are "
        f"{', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)} "
        "(a torch state_dict or a safetensors file)."
    )


# ----------------------------------------------------------------------------- conversion


@dataclasses.dataclass
class ConversionReport:
    """What :func:`convert_state_dict` did, key by key (source keys as in the file).

    converted: source keys copied into our variables. unmatched: our expected source
    keys (torchvision names, after the prefix) with no usable source tensor. unused:
    source keys not consumed. ignored: ``num_batches_tracked`` entries.
    zero_initialised: notes on first-conv input channels that were zero-filled.
    """

    arch: str
    in_channels: int
    stop_at: str
    prefix: str
    converted: list[str] = dataclasses.field(default_factory=list)
    unmatched: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)
    zero_initialised: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _expected(
    arch: str, in_channels: int, stop_at: str
) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """torch key -> (our variable path, our shape) for every leaf of the backbone."""
    model = backbones.make_backbone(arch, in_channels=in_channels, stop_at=stop_at)  # type: ignore[arg-type]
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 32, 32, in_channels), jnp.float32)
    )
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = tuple(str(p.key) for p in path)
        out[".".join(names[1:-1] + (_LEAF_TO_TORCH[names[-1]],))] = (names, tuple(leaf.shape))
    return out


def _to_ours(src: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and src.ndim == 4:
        return np.transpose(src, (2, 3, 1, 0))  # OIHW -> HWIO
    if leaf == "kernel" and src.ndim == 2:
        return src.T  # Linear (out, in) -> Dense (in, out)
    return src


def _our_shape(src_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """Shape of a source tensor after :func:`_to_ours`."""
    if leaf == "kernel" and len(src_shape) == 4:
        return (src_shape[2], src_shape[3], src_shape[1], src_shape[0])
    if leaf == "kernel" and len(src_shape) == 2:
        return (src_shape[1], src_shape[0])
    return tuple(src_shape)


def _fits(
    src_shape: tuple[int, ...], path: tuple[str, ...], shape: tuple[int, ...], is_stem: bool
) -> bool:
    """Whether a source tensor of ``src_shape`` fits our leaf (the stem may gain input channels)."""
    ours = _our_shape(src_shape, path[-1])
    if ours == shape:
        return True
    return (
        is_stem
        and len(ours) == 4
        and ours[:2] + ours[3:] == shape[:2] + shape[3:]
        and ours[2] < shape[2]
    )


def _auto_prefix(state_dict: Mapping[str, Any], expected: Mapping[str, Any], stem: str) -> str:
    """The prefix p maximising #{our leaves k: p + k is in the source with a fitting shape}.

    Shapes break ties between encoders with the same names (STCN's ``key_encoder.``
    ResNet-50 and ``value_encoder.`` ResNet-18); a remaining tie is an error.
    """
    counts: Counter[str] = Counter()
    for key, value in state_dict.items():
        parts = key.split(".")
        for i in range(len(parts)):  # every dotted split point is a candidate prefix
            tkey = ".".join(parts[i:])
            if tkey in expected:
                path, shape = expected[tkey]
                if _fits(tuple(np.shape(value)), path, shape, tkey == stem):
                    counts[".".join(parts[:i]) + ("." if i else "")] += 1
                break
    if not counts:
        return ""
    best = max(counts.values())
    winners = sorted(p for p, c in counts.items() if c == best)
    if len(winners) > 1:
        raise VosjaxError(
            f"convert_state_dict: strip_prefix='auto' is ambiguous: prefixes {winners} each "
            f"match {best} "
            "backbone tensors; pass the one you mean as strip_prefix (--strip-prefix)."
        )
    return winners[0]


def convert_state_dict(
    arch: str,
    state_dict: Mapping[str, Any],
    *,
    in_channels: int = 3,
    stop_at: str = "s32",
    strip_prefix: str | None = None,
    allow_missing: bool = False,
    seed: int = 0,
) -> tuple[dict[str, Any], ConversionReport]:
    """Convert a torchvision-layout state_dict (name -> NumPy array) into backbone variables.

    Returns ``({"params": ..., "batch_stats": ...}, report)`` with float32 NumPy leaves
    for ``make_backbone(arch, in_channels=in_channels, stop_at=stop_at)``.

    strip_prefix: None (keys used as they are), a prefix such as ``"module."`` or
      ``"module.backbone."`` (only keys starting with it are considered), or ``"auto"``
      (the prefix under which most backbone keys are found, e.g. ``key_encoder.``).
    allow_missing: fill unmatched leaves (missing keys and shape mismatches) with a fresh
      initialisation (:func:`vosjax.models.backbones.init_leaf`, PRNG ``seed``) instead of raising.
    """
    fn = "convert_state_dict"
    backbones._check_name(fn, arch)
    backbones._check_stop_at(fn, stop_at)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise VosjaxError(f"{fn}: in_channels must be a positive integer, got {in_channels!r}.")
    if not isinstance(state_dict, Mapping):
        raise VosjaxError(
            f"{fn}: state_dict must be a mapping of name -> array, got {type(state_dict).__name__}."
        )
    expected = _expected(arch, in_channels, stop_at)
    stem = ".".join(backbones.stem_conv_path(arch)) + ".weight"
    keys = list(state_dict)
    prefix = (
        _auto_prefix(state_dict, expected, stem) if strip_prefix == "auto" else (strip_prefix or "")
    )
    report = ConversionReport(arch=arch, in_channels=in_channels, stop_at=stop_at, prefix=prefix)
    source: dict[str, str] = {}  # key without the prefix -> key in the file
    for key in keys:
        if key.endswith(_IGNORED_SUFFIXES):
            report.ignored.append(key)
        elif key.startswith(prefix):
            source[key[len(prefix) :]] = key

    flat: dict[tuple[str, ...], np.ndarray] = {}
    consumed: set[str] = set()
    for tkey, (path, shape) in expected.items():
        if tkey not in source:
            report.unmatched.append(tkey)
            continue
        orig = source[tkey]
        src = np.asarray(state_dict[orig])
        if not np.issubdtype(src.dtype, np.floating):
            report.unmatched.append(tkey)
            report.problems.append(f"{orig}: dtype {src.dtype} is not floating point")
            continue
        if not _fits(src.shape, path, shape, tkey == stem):
            report.unmatched.append(tkey)
            report.problems.append(
                f"{orig}: source shape {src.shape} (after the layout change "
                f"{_our_shape(src.shape, path[-1])}) "
                f"does not fit {'/'.join(path)} of shape {shape}"
            )
            continue
        value = _to_ours(src.astype(np.float32), path[-1])
        if value.shape != shape:  # the stem with extra input channels (checked by _fits)
            extra = np.zeros(
                value.shape[:2] + (shape[2] - value.shape[2],) + value.shape[3:], np.float32
            )
            value = np.concatenate([value, extra], axis=2)
            report.zero_initialised.append(
                f"{orig}: source has {src.shape[1]} input channels, the model {shape[2]}; "
                f"copied channels 0..{src.shape[1] - 1} and zero-initialised channels "
                f"{src.shape[1]}..{shape[2] - 1}"
            )
        flat[path] = value
        consumed.add(orig)
        report.converted.append(orig)
    ignored = set(report.ignored)
    report.unused = [k for k in keys if k not in consumed and k not in ignored]

    if report.unmatched and not allow_missing:
        hint = f" Problems: {'; '.join(report.problems)}." if report.problems else ""
        heads = sorted({k.split(".")[0] for k in report.unused})[:8]
        raise VosjaxError(
            f"{fn}: {len(report.unmatched)} of {len(expected)} {arch} variables have no source "
            "tensor "
            f"(prefix {prefix!r}): {', '.join(report.unmatched[:12])}"
            f"{' ...' if len(report.unmatched) > 12 else ''}.{hint} Check arch, in_channels and "
            f"strip_prefix (unused source keys start with: {', '.join(heads)}), "
            "or pass allow_missing=True (--allow-missing) to keep those at random initialisation."
        )
    key = jax.random.key(seed)
    for i, tkey in enumerate(report.unmatched):  # allow_missing: the module's own initialisers
        path, shape = expected[tkey]
        flat[path] = np.asarray(
            backbones.init_leaf(path[-1], jax.random.fold_in(key, i), shape), np.float32
        )
    variables: dict[str, Any] = {}
    for path, value in flat.items():
        node = variables
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return variables, report


def _get(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def convert_file(
    arch: str, path: str | pathlib.Path, **kwargs: Any
) -> tuple[dict[str, Any], ConversionReport]:
    """:func:`read_state_dict` then :func:`convert_state_dict` (same keyword arguments)."""
    return convert_state_dict(arch, read_state_dict(path), **kwargs)


# ----------------------------------------------------------------------------- checkpoint I/O


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_backbone_checkpoint(
    out_dir: str | pathlib.Path,
    variables: Mapping[str, Any],
    report: ConversionReport,
    *,
    source: str | pathlib.Path | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write ``variables`` as an Orbax checkpoint in ``out_dir/variables`` and the report
    (arch, in_channels, source file and hash, key lists) to ``out_dir/vosjax_backbone.json``."""
    import orbax.checkpoint as ocp

    out = pathlib.Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise VosjaxError(f"save_backbone_checkpoint: output {out} exists and is not a directory.")
    if (out / VARIABLES_DIR).exists() and not overwrite:
        raise VosjaxError(
            f"save_backbone_checkpoint: {out / VARIABLES_DIR} already exists; choose another "
            "output directory "
            "or pass overwrite=True (--overwrite)."
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).unlink(
        missing_ok=True
    )  # written last: its presence marks a complete conversion
    tree = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), dict(variables))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out / VARIABLES_DIR, tree, force=overwrite)
        ckptr.wait_until_finished()
    meta = {
        "format": "vosjax_backbone",
        "version": FORMAT_VERSION,
        "source": str(pathlib.Path(source).resolve()) if source is not None else None,
        "source_sha256": _sha256(pathlib.Path(source)) if source is not None else None,
        "num_params": int(
            sum(np.size(a) for a in jax.tree_util.tree_leaves(tree.get("params", {})))
        ),
        **report.to_dict(),
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def load_backbone_metadata(ckpt_dir: str | pathlib.Path) -> dict[str, Any]:
    """The ``vosjax_backbone.json`` of a converted backbone directory."""
    path = pathlib.Path(ckpt_dir) / METADATA_FILE
    if not path.is_file():
        raise VosjaxError(
            f"load_backbone_checkpoint: {path} not found; {ckpt_dir} is not (or not completely) "
            "a converted "
            "backbone; create it with tools/convert_torch_weights.py."
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VosjaxError(f"load_backbone_checkpoint: {path} is not valid JSON ({e}).") from e
    if not isinstance(meta, dict) or meta.get("format") != "vosjax_backbone":
        raise VosjaxError(f"load_backbone_checkpoint: {path} is not a vosjax backbone description.")
    if meta.get("version") != FORMAT_VERSION:
        raise VosjaxError(
            f"load_backbone_checkpoint: {path} has format version {meta.get('version')!r}; "
            f"this vosjax reads version {FORMAT_VERSION}. Re-run the conversion."
        )
    for field in ("arch", "in_channels", "stop_at"):
        if field not in meta:
            raise VosjaxError(
                f"load_backbone_checkpoint: {path} lacks field {field!r}; re-run the conversion."
            )
    return meta


def load_backbone_checkpoint(ckpt_dir: str | pathlib.Path) -> dict[str, Any]:
    """Restore ``{"params", "batch_stats"}`` written by :func:`save_backbone_checkpoint`.

    The tree structure and shapes are checked against
    ``make_backbone(arch, in_channels=..., stop_at=...)`` from the JSON description.
    """
    import orbax.checkpoint as ocp

    ckpt_dir = pathlib.Path(ckpt_dir).resolve()
    meta = load_backbone_metadata(ckpt_dir)
    model = backbones.make_backbone(
        meta["arch"], in_channels=int(meta["in_channels"]), stop_at=meta["stop_at"]
    )
    abstract = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 32, 32, int(meta["in_channels"])), jnp.float32)
    )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(ckpt_dir / VARIABLES_DIR, abstract)
    except Exception as e:  # orbax raises several types for missing / mismatched trees
        raise VosjaxError(
            f"load_backbone_checkpoint: could not restore {ckpt_dir / VARIABLES_DIR} as a "
            f"{meta['arch']} backbone (in_channels={meta['in_channels']}, "
            f"stop_at={meta['stop_at']}): {type(e).__name__}: {e}"
        ) from e
