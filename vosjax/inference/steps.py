"""The pure parts of one engine step, in the order :class:`~vosjax.inference.engine.Engine` composes them.

Each function is one step of the engine's program (see the module docstring of
:mod:`vosjax.inference.engine` for the whole): :func:`encode`,
:func:`clip_bookkeeping`, :func:`given_masks`, :func:`read`, the per-frame
body :func:`frame_body` (:func:`apply_given` -> :func:`aggregate` ->
:func:`correct` -> :func:`box_filter`) scanned by :func:`scan_frames`,
:func:`write` (with :func:`update_refs`) and :func:`labels`. They are pure
functions of arrays and static values, traced inside the engine's one
``jax.jit``; :class:`Clip`, :class:`Given` and :class:`FrameContext` carry the
values one step hands to the next.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int, UInt8

from vosjax.data.normalize import normalize_frames
from vosjax.inference.config import EngineConfig
from vosjax.inference.cycle import correct_masks
from vosjax.inference.policies import correction_mask, refit_mask, write_mask, write_reset
from vosjax.inference.state import CorrectionRefs, EngineState
from vosjax.memory_policy import MemoryPolicy
from vosjax.models.base import SegmentOptions, Variables, VOSModel
from vosjax.ops import boxes
from vosjax.ops.aggregate import soft_aggregate


def take_frame(x: Array, index: Int[Array, " B"]) -> Array:
    """``x[b, index[b]]`` keeping a time axis of 1: ``[B, L, ...] -> [B, 1, ...]``."""
    idx = index.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.take_along_axis(x, idx.astype(jnp.int32), axis=1)


def resize(x: Array, size: tuple[int, int]) -> Array:
    """Bilinear (antialiased when shrinking) resize of the last two axes."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return jax.image.resize(x, x.shape[:-2] + tuple(size), "linear", antialias=True)


def pad_amounts(
    size: tuple[int, int], pad_to: int | None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` that pad ``size`` up to multiples of ``pad_to``.

    ``extra = ceil(n / d) * d - n`` per axis, ``floor(extra / 2)`` before and the
    rest after (STM / STCN); all zero when ``pad_to`` is None.
    """
    if not pad_to:
        return (0, 0), (0, 0)
    out = []
    for n in size:
        extra = -int(n) % int(pad_to)
        out.append((extra // 2, extra - extra // 2))
    return out[0], out[1]


def pad_hw(x: Array, pads: tuple[tuple[int, int], tuple[int, int]], hw_axis: int) -> Array:
    """Zero-pad axes ``hw_axis`` and ``hw_axis + 1`` of ``x`` by ``pads``."""
    if pads == ((0, 0), (0, 0)):
        return x
    widths = [(0, 0)] * x.ndim
    widths[hw_axis], widths[hw_axis + 1] = pads
    return jnp.pad(x, widths)


def crop_hw(x: Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    """Undo :func:`pad_hw` on the last two axes."""
    (t, b), (lft, r) = pads
    h, w = x.shape[-2:]
    return x[..., t : h - b, lft : w - r]


# -- host-side input checks of Engine.step -------------------------------------------------
class Clip(NamedTuple):
    """Frame bookkeeping of one clip (:func:`clip_bookkeeping`)."""

    valid: Bool[Array, "B L"]  # the prefix of valid frames
    n_valid: Int[Array, " B"]  # its length
    has_frames: Bool[Array, " B"]  # n_valid > 0
    last: Int[Array, " B"]  # index in the clip of the last valid frame (0 if none)
    t: Int[Array, "B L"]  # index in the video of every frame of the clip


class Given(NamedTuple):
    """The masks given for the last valid frame of a clip (:func:`given_masks`)."""

    labels: UInt8[Array, "B H W"]  # slot label map at the input size (0 = none)
    obj: Bool[Array, "B O"]  # objects given (False for a video without frames)
    any_obj: Bool[Array, " B"]  # some object given
    soft: Float[Array, "B O h w"]  # the given masks at the working size


class FrameContext(NamedTuple):
    """What every frame of a clip shares in :func:`frame_body` (bound with functools.partial)."""

    config: EngineConfig
    model: VOSModel
    motion_fn: boxes.MotionFn | None
    feat_shape: tuple[int, int]
    variables: Variables
    refs: CorrectionRefs | None
    obj_before: Bool[Array, "B O"]  # objects present before the clip
    given: Given
    last: Int[Array, " B"]


def encode(
    model: VOSModel,
    variables: Variables,
    frames: UInt8[Array, "B L H W 3"],
    size: tuple[int, int],
    pad_to: int | None = None,
) -> tuple[Float[Array, "B L h w 3"], Any]:
    """``(x, model.encode_key(x))``, ``x`` = the ImageNet-normalised frames resized to ``size``
    and zero-padded to multiples of ``pad_to`` (:func:`pad_amounts`)."""
    x = normalize_frames(frames)
    if tuple(size) != tuple(frames.shape[2:4]):
        x = jnp.moveaxis(resize(jnp.moveaxis(x, -1, 2), size), 2, -1)
    x = pad_hw(x, pad_amounts(size, pad_to), 2)
    return x, model.encode_key(variables, x)


def clip_bookkeeping(frame_valid: Bool[Array, "B L"], frame_count: Int[Array, " B"]) -> Clip:
    """Keep the valid prefix of ``frame_valid``; ``last = max(n_valid - 1, 0)``, ``t = count + l``."""
    length = frame_valid.shape[1]
    valid = frame_valid & (jnp.cumsum(~frame_valid, axis=1) == 0)  # keep a prefix
    n_valid = jnp.sum(valid, axis=1).astype(jnp.int32)
    last = jnp.maximum(n_valid - 1, 0)
    t = frame_count[:, None] + jnp.arange(length, dtype=jnp.int32)[None]  # [B, L]
    return Clip(valid, n_valid, n_valid > 0, last, t)


def given_masks(
    new_labels: UInt8[Array, "B H W"],
    new_extra: Bool[Array, "B O"],
    has_frames: Bool[Array, " B"],
    size: tuple[int, int],
    pad_to: int | None = None,
) -> Given:
    """Slot one-hot of ``new_labels``; objects given = present there or in ``new_extra``.

    The one-hot masks are resized to the working ``size`` only on the (rare)
    steps that carry masks, then zero-padded like the frames (``pad_to``).
    """
    b, hh, ww = new_labels.shape
    o = new_extra.shape[1]
    slot_ids = jnp.arange(1, o + 1, dtype=jnp.int32)
    full = new_labels[:, None].astype(jnp.int32) == slot_ids[None, :, None, None]
    obj = (jnp.any(full, axis=(2, 3)) | new_extra) & has_frames[:, None]
    any_obj = jnp.any(obj, axis=1)
    if tuple(size) == (hh, ww):
        soft = full.astype(jnp.float32)  # [B, O, h, w]
    else:
        soft = lax.cond(
            jnp.any(any_obj),
            lambda: resize(full.astype(jnp.float32), size),
            lambda: jnp.zeros((b, o, *size), jnp.float32),
        )
    soft = pad_hw(soft, pad_amounts(size, pad_to), 2)
    return Given(new_labels, obj, any_obj, soft)


def read(
    model: VOSModel,
    variables: Variables,
    memory: Any,
    feats: Any,
    obj_before: Bool[Array, "B O"],
    options: SegmentOptions,
) -> Float[Array, "B O L h w"]:
    """``p = sigmoid(model.segment(memory, feats))`` of the objects present before the clip, else 0."""
    logits = model.segment(variables, memory, feats, obj_before, options)
    probs = jax.nn.sigmoid(logits.astype(jnp.float32))
    return jnp.where(obj_before[:, :, None, None, None], probs, 0.0)


def correction_frames(every: int, clip: Clip, given: Given) -> Bool[Array, "B L"]:
    """Frames to correct: ``policies.correction_mask``, except a frame that carries given masks."""
    length = clip.t.shape[1]
    do_correct = correction_mask(every, clip.t, clip.valid)
    return do_correct & ~(given.any_obj[:, None] & (jnp.arange(length)[None] == clip.last[:, None]))


def correct(
    ctx: FrameContext,
    big: Float[Array, "B K h w"],
    x_l: Float[Array, "B h w 3"],
    feats_l: Any,
    correct_l: Bool[Array, " B"],
) -> Float[Array, "B K h w"]:
    """Gradient correction (:func:`vosjax.inference.cycle.correct_masks`) of the aggregated
    probabilities of the rows that need it (objects present before the clip, with a reference)."""
    cfg, refs = ctx.config, ctx.refs
    rows = correct_l[:, None] & ctx.obj_before & refs.valid
    return lax.cond(
        jnp.any(rows),
        lambda: correct_masks(
            ctx.model,
            ctx.variables,
            x_l,
            feats_l,
            big,
            refs,
            rows,
            ctx.feat_shape,
            num_iters=cfg.correction_iters,
            rate=cfg.correction_rate,
            gamma=cfg.correction_gamma,
            smooth=cfg.correction_smooth,
            top_p=cfg.correction_top_p,
            top_k=cfg.top_k,
        ),
        lambda: big,
    )


def apply_given(
    p: Float[Array, "B O h w"],
    given: Given,
    at_given: Bool[Array, " B"],
    obj_before: Bool[Array, "B O"] | None = None,
) -> tuple[Float[Array, "B O h w"], Bool[Array, "B O"]]:
    """``(p, g_obj)``: a given object's ``p`` is its mask, the others get ``P_j (1 - max_given)``.

    ``P_j`` is ``p_j`` aggregated over the objects present before
    (``obj_before``; :func:`aggregate`), as the authors' drivers do when objects
    appear in a frame where others are tracked (STCN ``inference_core_yv.py``:
    the propagated, aggregated probabilities of the frame, zeroed under the
    given masks, are aggregated again with the given masks); with one object
    before, ``P_1 = p_1``. ``obj_before=None`` uses ``p_j`` as it is.
    """
    g_obj = given.obj & at_given[:, None]  # [B, O]
    if obj_before is not None:
        p_agg = aggregate(p, obj_before)[:, 1:]
        p = jnp.where((at_given & jnp.any(g_obj, axis=1))[:, None, None, None], p_agg, p)
    g_union = jnp.max(jnp.where(g_obj[:, :, None, None], given.soft, 0.0), axis=1)
    p = jnp.where(g_obj[:, :, None, None], given.soft, p * (1.0 - g_union[:, None]))
    return p, g_obj


def aggregate(p: Float[Array, "B O h w"], present: Bool[Array, "B O"]) -> Float[Array, "B K h w"]:
    """``P = softmax(soft_aggregate(p))`` over the present objects (channel 0 = background)."""
    return jax.nn.softmax(soft_aggregate(p, present), axis=1)


def box_filter(
    box_state: boxes.BoxFilterState,
    big: Float[Array, "B K h w"],
    g_obj: Bool[Array, "B O"],
    valid_l: Bool[Array, " B"],
    config: EngineConfig,
    motion_fn: boxes.MotionFn | None,
) -> tuple[boxes.BoxFilterState, Float[Array, "B K h w"]]:
    """TrickVOS Algorithm 1 on the object channels of ``P``: ``(box history, filtered P)``.

    Given objects are not filtered but set their box; padding frames keep the history.
    """
    # Algorithm 1 post-processes the predictions: the box history follows the
    # filtered masks, the memory keeps the model's own (unfiltered) predictions.
    new_box, filt = boxes.box_filter_step(
        box_state, big[:, 1:], config.box_filter, motion_fn, config.box_margin
    )
    filt = jnp.where(g_obj[:, :, None, None], big[:, 1:], filt)
    new_box = boxes.BoxFilterState(
        jnp.where(g_obj[..., None], boxes.mask_to_box(big[:, 1:]), new_box.prev_box),
        new_box.prev_prev_box,
        new_box.count,
    )
    keep = valid_l[:, None]
    box_state = jax.tree_util.tree_map(
        lambda n, c: jnp.where(keep.reshape(keep.shape + (1,) * (n.ndim - 2)), n, c),
        new_box,
        box_state,
    )
    bg = jnp.clip(1.0 - jnp.sum(filt, axis=1, keepdims=True), 0.0, 1.0)
    return box_state, jnp.concatenate([bg, filt], axis=1)


def frame_body(ctx: FrameContext, box_state: Any, inputs: tuple) -> tuple[Any, tuple]:
    """The ``lax.scan`` body over the frames of a clip: given -> aggregate -> correct -> box filter.

    Returns ``(box_state, (P,))``, or ``(box_state, (P, P_out))`` where the
    output differs from what the memory gets: gradient correction changes the
    memory's ``P`` only (unless ``correction_output``), the box filter the output only.
    """
    pos, p, x_l, feats_l, valid_l, correct_l = inputs
    at_given = (pos == ctx.last) & ctx.given.any_obj  # [B]
    p, g_obj = apply_given(p, ctx.given, at_given, ctx.obj_before)
    big = aggregate(p, ctx.obj_before | g_obj)
    out = big
    if ctx.config.correction_every:
        big = correct(ctx, big, x_l, feats_l, correct_l)
        if ctx.config.correction_output:
            out = big
    if ctx.config.box_filter:
        box_state, out = box_filter(box_state, out, g_obj, valid_l, ctx.config, ctx.motion_fn)
    if out is big:
        return box_state, (big,)
    return box_state, (big, out)


def scan_frames(
    ctx: FrameContext,
    box_state: boxes.BoxFilterState | None,
    probs: Float[Array, "B O L h w"],
    x: Float[Array, "B L h w 3"],
    feats: Any,
    clip: Clip,
    do_correct: Bool[Array, "B L"],
) -> tuple[Any, Float[Array, "B K L h w"], Float[Array, "B K L h w"]]:
    """:func:`frame_body` over the frames of the clip, in order.

    Returns ``(box_state, P, P_out)``: ``P`` is what the memory gets, ``P_out``
    what the step outputs (box-filtered; ``P`` without box filter).
    """
    length = clip.valid.shape[1]
    feats_t = jax.tree_util.tree_map(lambda f: jnp.moveaxis(f, 1, 0)[:, :, None], feats)
    xs = (
        jnp.arange(length, dtype=jnp.int32),
        jnp.moveaxis(probs, 2, 0),
        jnp.moveaxis(x, 1, 0),
        feats_t,
        jnp.moveaxis(clip.valid, 1, 0),
        jnp.moveaxis(do_correct, 1, 0),
    )
    box_state, scanned = lax.scan(functools.partial(frame_body, ctx), box_state, xs)
    return box_state, jnp.moveaxis(scanned[0], 0, 2), jnp.moveaxis(scanned[-1], 0, 2)


def update_refs(
    refs: CorrectionRefs | None, x_last: Float[Array, "B 1 h w 3"], given: Given
) -> CorrectionRefs | None:
    """The given frame and masks become the correction references of the objects given."""
    if refs is None:
        return None
    fresh = given.obj  # first mask of each object (or a replaced one)
    return CorrectionRefs(
        jnp.where(fresh[:, :, None, None, None], x_last[:, :1], refs.frames),
        jnp.where(fresh[:, :, None, None], given.soft, refs.masks),
        refs.valid | fresh,
    )


def write(
    policy: MemoryPolicy,
    model: VOSModel,
    variables: Variables,
    state: EngineState,
    x: Float[Array, "B L h w 3"],
    feats: Any,
    agg_probs: Float[Array, "B K L h w"],
    clip: Clip,
    given: Given,
    box_state: Any,
) -> EngineState:
    """The new state: memory written / learners refit at the last valid frame where the policy says."""
    obj_after = state.obj_valid | given.obj
    since_write = state.since_write + clip.n_valid
    since_refit = state.since_refit + clip.n_valid
    write = clip.has_frames & write_mask(policy, since_write, given.any_obj)
    refit = clip.has_frames & refit_mask(policy, since_refit, write, given.any_obj)
    x_last = take_frame(x, clip.last)
    feats_last = jax.tree_util.tree_map(lambda f: take_frame(f, clip.last), feats)
    masks_last = take_frame(jnp.moveaxis(agg_probs[:, 1:], 2, 1), clip.last)  # [B, 1, O, h, w]
    masks_last = jnp.moveaxis(masks_last, 1, 2)
    memory = model.memorize(
        variables, state.memory, x_last, masks_last, obj_after, feats_last, write, refit
    )
    return EngineState(
        memory=memory,
        obj_valid=jnp.where(clip.has_frames[:, None], obj_after, state.obj_valid),
        frame_count=state.frame_count + clip.n_valid,
        since_write=jnp.where(write, write_reset(policy, given.any_obj), since_write),
        since_refit=jnp.where(refit, 0, since_refit),
        box=box_state,
        refs=update_refs(state.refs, x_last, given),
    )


def labels(
    probs: Float[Array, "B K L h w"],
    clip: Clip,
    given: Given,
    size: tuple[int, int] | None = None,
    pad_to: int | None = None,
) -> tuple[UInt8[Array, "B L H W"], Float[Array, "B K L H W"]]:
    """``(labels, P)`` at the input size: argmax of ``P``, the given pixels copied exactly.

    ``P`` has the padding of :func:`encode` (working ``size``, ``pad_to``)
    cropped off before it is resized to the input size.

    On the frame that carries masks, a pixel of a given object that is not in
    its given mask becomes background; padding frames are 0.
    """
    b, hh, ww = given.labels.shape
    length = clip.valid.shape[1]
    if size is not None:
        probs = crop_hw(probs, pad_amounts(size, pad_to))
    probs = resize(probs, (hh, ww))
    labels = jnp.argmax(probs, axis=1).astype(jnp.int32)  # [B, L, H, W]
    is_last = jnp.arange(length)[None] == clip.last[:, None]  # [B, L]
    table = jnp.concatenate([jnp.zeros((b, 1), bool), given.obj], axis=1)  # slot -> given
    labels_given = jnp.take_along_axis(table, labels.reshape(b, -1), axis=1).reshape(labels.shape)
    exact = jnp.where(
        given.labels[:, None] > 0,
        given.labels[:, None].astype(jnp.int32),
        jnp.where(labels_given, 0, labels),
    )
    labels = jnp.where((is_last & given.any_obj[:, None])[:, :, None, None], exact, labels)
    labels = jnp.where(clip.valid[:, :, None, None], labels, 0).astype(jnp.uint8)
    return labels, probs
