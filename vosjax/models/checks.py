"""Argument checks of the :class:`~vosjax.models.base.VOSModel` interface, for every model.

The public methods of the models (``init``, ``encode_key``, ``encode_value``,
``init_memory``, ``memorize``, ``segment``) check their arguments here, once,
at the boundary; the helpers they call trust them. All checks look at shapes
and dtypes only, so they run at trace time and cost nothing under ``jit``;
each raises :class:`~vosjax.errors.VosjaxError` naming the method and the
argument. Shapes (module docstring of :mod:`vosjax.models.base`):

- ``frames``: floating ``[B, T, H, W, 3]`` (ImageNet-normalised RGB);
- ``masks``: floating ``[B, O, T, H, W]`` matching the frames;
- ``obj_valid``: ``bool[B, O]``;
- ``write`` / ``refit``: ``bool[B]`` (the engine's per-video policy);
- ``feats``: the dict of ``encode_key``, entries ``[B, T, ...]`` (rank 5)
  and the size marker ``feats["frame_hw"]: f32[B, T, H, W, 0]``, a
  zero-channel array whose shape carries the input resolution (slicing or
  concatenating feats along T keeps it consistent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from vosjax import _validate
from vosjax.errors import VosjaxError

__all__ = [
    "SIZE_KEY",
    "check_feat_shape",
    "check_feats",
    "check_frames",
    "check_masks",
    "check_obj_valid",
    "check_positive_int",
    "check_row_flags",
]

SIZE_KEY = "frame_hw"


def check_frames(fn: str, frames: Any) -> tuple[int, int, int, int]:
    """``frames`` is floating ``[B, T, H, W, 3]``; returns (B, T, H, W)."""
    _validate.check_rank(fn, "frames", frames, 5, "[B, T, H, W, 3]")
    _validate.check_floating(fn, "frames", frames)
    if frames.shape[-1] != 3:
        raise VosjaxError(
            f"{fn}: argument 'frames' must have 3 (RGB) channels last, got shape "
            f"{tuple(frames.shape)}; frames are [B, T, H, W, 3] ImageNet-normalised."
        )
    b, t, h, w, _ = frames.shape
    return int(b), int(t), int(h), int(w)


def check_masks(
    fn: str, masks: Any, frames_shape: Sequence[int], num_objects: int | None = None
) -> int:
    """``masks`` is floating ``[B, O, T, H, W]`` with (B, T, H, W) = ``frames_shape`` (and
    O = ``num_objects`` where given, e.g. from ``obj_valid``); returns O."""
    _validate.check_rank(fn, "masks", masks, 5, "[B, O, T, H, W]")
    _validate.check_floating(fn, "masks", masks)
    b, t, h, w = (int(v) for v in frames_shape[:4])
    o = int(masks.shape[1]) if num_objects is None else int(num_objects)
    if tuple(masks.shape) != (b, o, t, h, w):
        objects = "O" if num_objects is None else f"O={o} of 'obj_valid'"
        raise VosjaxError(
            f"{fn}: argument 'masks' must have shape [B, O, T, H, W] with B, T, H, W = "
            f"{(b, t, h, w)} of 'frames' and {objects}, got {tuple(masks.shape)}."
        )
    return o


def check_obj_valid(fn: str, obj_valid: Any, batch: int, num_objects: int | None = None) -> int:
    """``obj_valid`` is ``bool[B, O]`` (O = ``num_objects`` where given); returns O."""
    _validate.check_rank(fn, "obj_valid", obj_valid, 2, "[B, O]")
    if jnp.dtype(obj_valid.dtype) != jnp.dtype(bool):
        raise VosjaxError(
            f"{fn}: argument 'obj_valid' must be boolean [B, O], got dtype {obj_valid.dtype}; "
            "pass e.g. obj_valid.astype(bool)."
        )
    if obj_valid.shape[0] != batch or (
        num_objects is not None and obj_valid.shape[1] != num_objects
    ):
        want = (batch, num_objects if num_objects is not None else "O")
        raise VosjaxError(
            f"{fn}: argument 'obj_valid' must have shape {want}, got {tuple(obj_valid.shape)}."
        )
    return int(obj_valid.shape[1])


def check_row_flags(fn: str, name: str, flags: Any, batch: int) -> None:
    """``flags`` is ``bool[B]`` (the engine's per-video write / refit policy)."""
    _validate.check_rank(fn, name, flags, 1, "[B]")
    if flags.shape[0] != batch or jnp.dtype(flags.dtype) != jnp.dtype(bool):
        raise VosjaxError(
            f"{fn}: argument '{name}' must be bool[{batch}], got {flags.dtype}{list(flags.shape)}."
        )


def check_feats(
    fn: str, feats: Any, keys: Sequence[str], frames_shape: Sequence[int] | None = None
) -> tuple[int, int, int, int]:
    """``feats`` is the dict of ``encode_key`` with ``keys`` (and the size marker); returns
    (B, T, H, W) of its frames. With ``frames_shape`` its (B, T) must be those of the frames."""
    if not isinstance(feats, Mapping):
        raise VosjaxError(
            f"{fn}: argument 'feats' must be the dict returned by encode_key, got "
            f"{type(feats).__name__}."
        )
    missing = [k for k in dict.fromkeys((*keys, SIZE_KEY)) if k not in feats]
    if missing:
        raise VosjaxError(
            f"{fn}: argument 'feats' lacks {missing} (has {sorted(feats)}); pass the dict returned "
            "by this model's encode_key (features of another method do not fit)."
        )
    size = feats[SIZE_KEY]
    _validate.check_rank(fn, f"feats['{SIZE_KEY}']", size, 5, "[B, T, H, W, 0]")
    b, t, h, w, _ = (int(v) for v in size.shape)
    for k in keys:
        if k == SIZE_KEY:
            continue
        _validate.check_rank(fn, f"feats['{k}']", feats[k], 5, "[B, T, h, w, C]")
        if tuple(feats[k].shape[:2]) != (b, t):
            raise VosjaxError(
                f"{fn}: feats['{k}'] has leading dims {tuple(feats[k].shape[:2])}, expected "
                f"(B, T) = {(b, t)}; slice all entries of feats the same way."
            )
    if frames_shape is not None and (b, t) != tuple(int(v) for v in frames_shape[:2]):
        raise VosjaxError(
            f"{fn}: feats hold (B, T) = {(b, t)} but 'frames' has {tuple(frames_shape[:2])}; pass "
            "the encode_key features of these frames."
        )
    return b, t, h, w


def check_feat_shape(fn: str, feat_shape: Any) -> tuple[int, int]:
    """``feat_shape`` is (h, w) of the stride-16 features, two positive ints."""
    try:
        h, w = (int(v) for v in feat_shape)
    except (TypeError, ValueError):
        raise VosjaxError(
            f"{fn}: argument 'feat_shape' must be (h, w) of the stride-16 features, got "
            f"{feat_shape!r}."
        ) from None
    if h < 1 or w < 1:
        raise VosjaxError(f"{fn}: argument 'feat_shape' must be positive, got {(h, w)}.")
    return h, w


def check_positive_int(fn: str, name: str, value: Any) -> int:
    """``value`` is a positive int (not a bool); returns it as ``int``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise VosjaxError(f"{fn}: '{name}' must be a positive int, got {value!r}.")
    return int(value)
