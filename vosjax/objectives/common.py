"""What every training objective shares: batch preparation, option parsing, the memory rollout.

A training batch (from :func:`vosjax.data.make_train_pipeline`, on device)
holds ``frames uint8[B, T, H, W, 3]``, ``labels int32[B, T, H, W]`` (0 =
background, slot ``i`` = label ``i + 1``) and ``obj_valid bool[B, O]``. Frame
0 is the reference whose mask the model is given.

:func:`rollout` runs a memory model the way it runs at inference, with the
model interface only (``encode_key`` / ``memorize`` / ``segment``): the
reference frame enters the memory with its ground-truth masks, then the
query frames are segmented group by group (one frame per group for
per-frame methods, one clip per group for PCVOS); after each group the
soft-aggregated probabilities of its last frame (or of all its frames) are
written to the memory and the next group reads it. Gradients flow through
the predicted masks into the memory, as in STCN / STM training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from vosjax.config_utils import read_section
from vosjax.data.normalize import normalize_frames
from vosjax.errors import VosjaxError
from vosjax.models.base import SegmentOptions
from vosjax.ops.aggregate import labels_to_one_hot, soft_aggregate

__all__ = [
    "Batch",
    "Prepared",
    "Rollout",
    "aggregate",
    "hard_iou",
    "parse_options",
    "prepare_batch",
    "rollout",
    "slice_feats",
    "take_frames",
]

TRAIN_OPTIONS = SegmentOptions(top_k=None, segment_len=None, train=True)
"""Training-time segmentation: dense readout (no top-k), no progressive matching."""

Batch = Mapping[str, Array]
"""A training batch: ``frames uint8[B, T, H, W, 3]``, ``labels int32[B, T, H, W]``,
``obj_valid bool[B, O]`` (plus the pipeline's bookkeeping fields, unused here)."""

ObjectiveFn = Callable[..., tuple[Array, dict[str, Array]]]


def parse_options(cls: type, config: Any, where: str = "objective") -> Any:
    """Build the frozen options dataclass ``cls`` from a config section (``name`` is skipped).

    :func:`vosjax.config_utils.read_section`: unknown fields raise
    :class:`VosjaxError` naming the closest valid ones; lists become tuples.
    """
    if hasattr(config, "to_dict") or isinstance(config, Mapping):
        d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        config = {k: v for k, v in d.items() if k != "name"}
    return read_section(cls, config, where)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A batch ready for a model: normalised frames, per-object masks, validity."""

    frames: Float[Array, "B T H W 3"]
    labels: Int[Array, "B T H W"]
    masks: Float[Array, "B O T H W"]
    obj_valid: Bool[Array, "B O"]


def prepare_batch(batch: Batch, dtype: Any = jnp.float32) -> Prepared:
    """Normalise frames (ImageNet) and expand labels into per-object masks ``[B, O, T, H, W]``."""
    for key in ("frames", "labels", "obj_valid"):
        if key not in batch:
            raise VosjaxError(
                f"objective: the batch lacks field {key!r} (have {sorted(batch)}); feed batches "
                "of vosjax.data.make_train_pipeline."
            )
    frames = normalize_frames(batch["frames"]).astype(dtype)
    labels = jnp.asarray(batch["labels"]).astype(jnp.int32)
    obj_valid = jnp.asarray(batch["obj_valid"]).astype(bool)
    masks = labels_to_one_hot(labels, obj_valid.shape[1]) * obj_valid[:, :, None, None, None]
    return Prepared(frames, labels, masks.astype(jnp.float32), obj_valid)


def aggregate(
    logits: Float[Array, "B O T H W"], obj_valid: Bool[Array, "B O"]
) -> tuple[Float[Array, "B C T H W"], Float[Array, "B O T H W"]]:
    """``(aggregated logits [B, O+1, ...], aggregated object probabilities [B, O, ...])``.

    ``soft_aggregate(sigmoid(logits))``: background ``prod_i (1 - p_i)``, then
    the odds-logits whose softmax over the O + 1 classes is the probability
    of each object; invalid slots get probability 0.
    """
    agg = soft_aggregate(jax.nn.sigmoid(logits.astype(jnp.float32)), obj_valid)
    probs = jax.nn.softmax(agg, axis=1)[:, 1:]
    return agg, probs * obj_valid[:, :, None, None, None]


def slice_feats(feats: Mapping[str, Array], idx: Sequence[int]) -> dict[str, Array]:
    """The features of frames ``idx`` (axis 1 of every entry)."""
    return {k: take_frames(v, idx, axis=1) for k, v in feats.items()}


@dataclasses.dataclass
class Rollout:
    """Outputs of :func:`rollout` for the query frames (in the order of ``groups``).

    ``logits`` are per-object logits ``[B, O, Tq, H, W]``, ``agg`` the
    aggregated logits ``[B, O+1, Tq, H, W]``, ``probs`` the aggregated object
    probabilities ``[B, O, Tq, H, W]``; ``frames`` lists the frame index of
    each query position; ``feats`` are all frames' key features; ``memory``
    is the final memory state.
    """

    logits: Array
    agg: Array
    probs: Array
    frames: list[int]
    feats: dict[str, Array]
    memory: Any


def rollout(
    model: Any,
    variables: Any,
    prep: Prepared,
    groups: Sequence[Sequence[int]],
    *,
    memorize_all: bool = False,
    refit: bool = False,
    train: bool = True,
    options: SegmentOptions = TRAIN_OPTIONS,
    feats: Mapping[str, Array] | None = None,
    reference: int = 0,
    update_memory: bool = True,
) -> Rollout:
    """Segment the query ``groups`` of frames in order, each reading the memory so far.

    The memory starts with frame ``reference`` and its ground-truth masks.
    After each group (except the last) the memory receives its last frame
    (``memorize_all``: every frame of the group) with the predicted
    probabilities, unless ``update_memory`` is False (FRTM trains on the
    reference only). ``refit`` asks learner-based models to refit on every
    write (JOINT, FRTM).
    """
    B, O = prep.obj_valid.shape
    if feats is None:
        feats = model.encode_key(variables, prep.frames, train=train)
    h, w = feats["key"].shape[2:4]
    memory = model.init_memory(variables, B, O, (h, w))
    ones = jnp.ones((B,), bool)
    refit_mask = ones if refit else None

    def write(memory, idx, masks):
        frames = take_frames(prep.frames, idx, axis=1)
        return model.memorize(
            variables, memory, frames, masks, prep.obj_valid, slice_feats(feats, idx), ones,
            refit_mask, train=train,
        )

    memory = write(memory, [reference], prep.masks[:, :, reference:reference + 1])
    outs, order = [], []
    for g, group in enumerate(groups):
        group = list(group)
        logits = model.segment(variables, memory, slice_feats(feats, group), prep.obj_valid, options)
        agg, probs = aggregate(logits, prep.obj_valid)
        outs.append((logits.astype(jnp.float32), agg, probs))
        order += group
        if update_memory and g + 1 < len(groups):
            if memorize_all:
                memory = write(memory, group, probs)
            else:
                memory = write(memory, group[-1:], probs[:, :, -1:])
    cat = [jnp.concatenate([o[i] for o in outs], axis=2) for i in range(3)]
    return Rollout(cat[0], cat[1], cat[2], order, dict(feats), memory)


def take_frames(x: Array, idx: Sequence[int], axis: int) -> Array:
    """``x`` at frame positions ``idx`` along ``axis`` (a plain slice when contiguous)."""
    idx = list(idx)
    if idx == list(range(idx[0], idx[-1] + 1)):
        return jax.lax.slice_in_dim(x, idx[0], idx[-1] + 1, axis=axis)
    return jnp.take(x, jnp.asarray(idx), axis=axis)


def hard_iou(
    probs: Float[Array, "B O T H W"], masks: Float[Array, "B O T H W"], obj_valid: Bool[Array, "B O"]
) -> Float[Array, ""]:
    """Mean IoU of the thresholded predictions (``p > 0.5``) over valid objects and frames.

    A monitoring number (no gradient); a map where both masks are empty counts as 1.
    """
    pred = probs > 0.5
    gt = masks > 0.5
    inter = jnp.sum(pred & gt, axis=(-2, -1))
    union = jnp.sum(pred | gt, axis=(-2, -1))
    iou = jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)  # [B, O, T]
    valid = jnp.broadcast_to(obj_valid[:, :, None], iou.shape)
    return jax.lax.stop_gradient(jnp.sum(jnp.where(valid, iou, 0.0)) / jnp.maximum(jnp.sum(valid), 1))
