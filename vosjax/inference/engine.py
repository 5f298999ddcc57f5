"""The functional propagation engine: ``init_state`` and one jitted ``step`` per clip.

A step takes the ``L`` frames of a clip (``L = 1`` per-frame, ``L > 1``
per-clip), optional given masks for the LAST valid frame of the clip, and the
state; it returns the new state and the label maps. :meth:`Engine.step` checks
its inputs on the host (:func:`_check_step_inputs`); inside one compiled
program (``B`` videos at once; ``t`` = index of a frame in its video),
``Engine._step`` composes the pure functions of this module:

1. :func:`_encode`: frames (``uint8``) are ImageNet-normalised on device,
   resized to the working resolution (``EngineConfig.resolution``), and
   ``feats = model.encode_key(frames)``;
   :func:`_clip_bookkeeping`: the prefix of valid frames, their number, the
   last valid frame and ``t`` of every frame; :func:`_given_masks`: the slot
   one-hot of the given label map, the objects given and their masks at the
   working resolution;
2. :func:`_read`: ``logits = model.segment(memory, feats)`` for the objects
   present before the clip; ``p = sigmoid(logits)``;
3. per frame, in order (a ``lax.scan`` of :func:`_frame_body` in
   :func:`_scan_frames`):

   a. :func:`_correct`: gradient correction of ``p`` where ``t % K == 0``
      (cyclic VOS; frames chosen by :func:`_correction_frames`; only computed,
      under ``lax.cond``, when some video needs it);
   b. :func:`_apply_given`: given masks (last frame only): a given object's
      ``p`` is its mask; the other objects lose the given pixels,
      ``p_j <- p_j (1 - max_given)``;
   c. :func:`_aggregate`: soft aggregation over the objects present at that
      frame, ``P = softmax(soft_aggregate(p))`` (channel 0 = background);
   d. :func:`_box_filter`: box filter (TrickVOS Algorithm 1, per object, CV or
      PT) of the object channels, ``P_obj <- A(BB) P_obj`` and
      ``P_bg = 1 - sum P_obj``; frames with given masks are not filtered but
      update the box history;

4. :func:`_write`: the last valid frame of the clip and its ``P_obj`` are
   written to memory where the policy says so (``write``), learners refit
   where ``refit`` (:mod:`vosjax.inference.policies`): the last frame of a clip
   carries the given masks, so an object is in memory before any later frame
   is read; :func:`_update_refs` keeps the given masks as correction references;
5. :func:`_labels`: labels = argmax of ``P`` resized to the input size; the
   given pixels of the last frame are copied exactly.

Padding frames (``frame_valid`` False; the tail of a clip cut short at a given
frame or at the end of a video) are computed but change nothing. The engines
shared across calls (:func:`vosjax.inference.engine_cache.get_engine`) live in
:mod:`vosjax.inference.engine_cache`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int, UInt8

from vosjax.data.normalize import normalize_frames
from vosjax.errors import VosjaxError
from vosjax.inference.config import EngineConfig
from vosjax.inference.cycle import correct_masks
from vosjax.inference.policies import (
    Schedule,
    correction_mask,
    refit_mask,
    resolve_schedule,
    write_mask,
)
from vosjax.inference.state import CorrectionRefs, EngineState, StepOutput, zeros_like_refs
from vosjax.models.base import SegmentOptions, Variables, VOSModel
from vosjax.ops import boxes
from vosjax.ops.aggregate import soft_aggregate

__all__ = ["Engine", "MotionFn", "working_size"]

MotionFn = boxes.MotionFn


def working_size(frame_size: tuple[int, int], resolution: int | None) -> tuple[int, int]:
    """``(h, w)`` the model runs at: the frame size, or its shorter side scaled to ``resolution``.

    ``h = round(H * r / min(H, W))``, ``w = round(W * r / min(H, W))``
    (e.g. 480 x 854 at r = 240 gives 240 x 427).
    """
    hh, ww = int(frame_size[0]), int(frame_size[1])
    if resolution is None:
        return hh, ww
    s = resolution / min(hh, ww)
    return max(1, round(hh * s)), max(1, round(ww * s))


def _with_capacity(model: VOSModel, capacity: int | None) -> VOSModel:
    """The same model with ``memory_frames = capacity`` (params do not depend on it)."""
    cfg = model.config
    if capacity is None:
        return model
    try:
        current = cfg["memory_frames"]
    except (KeyError, TypeError, AttributeError):
        current = getattr(cfg, "memory_frames", None)
    if current is None:
        raise VosjaxError(
            f"Engine: the memory policy asks for a capacity of {capacity} frames but the model "
            f"{getattr(model, 'name', type(model).__name__)!r} has no 'memory_frames' field; "
            "leave EngineConfig.memory_frames at None."
        )
    if current == capacity:
        return model
    if hasattr(cfg, "copy_and_resolve_references"):
        new = cfg.copy_and_resolve_references()
        new.memory_frames = capacity
    else:
        new = dict(cfg)
        new["memory_frames"] = capacity
    return type(model)(new)


def _take_frame(x: Array, index: Int[Array, " B"]) -> Array:
    """``x[b, index[b]]`` keeping a time axis of 1: ``[B, L, ...] -> [B, 1, ...]``."""
    idx = index.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.take_along_axis(x, idx.astype(jnp.int32), axis=1)


def _resize(x: Array, size: tuple[int, int]) -> Array:
    """Bilinear (antialiased when shrinking) resize of the last two axes."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return jax.image.resize(x, x.shape[:-2] + tuple(size), "linear", antialias=True)


# -- host-side input checks of Engine.step -------------------------------------------------
def _check_new_masks(fn: str, new_masks: Any, b: int, hh: int, ww: int, o: int) -> Any:
    """``new_masks`` as a ``uint8`` slot label map ``[B, H, W]`` (zeros when None)."""
    if new_masks is None:
        return np.zeros((b, hh, ww), np.uint8)
    on_host = not isinstance(new_masks, jax.Array)
    nm = np.asarray(new_masks) if on_host else new_masks
    if nm.shape != (b, hh, ww) or not np.issubdtype(nm.dtype, np.integer):
        raise VosjaxError(
            f"{fn}: 'new_masks' must be an integer slot label map [B, H, W] = "
            f"{[b, hh, ww]}, got {nm.dtype}{list(nm.shape)}."
        )
    if on_host and nm.size and (nm.min() < 0 or nm.max() > o):
        raise VosjaxError(
            f"{fn}: 'new_masks' holds slot {int(nm.max())} but the state has {o} object "
            "slots (labels are 0 = none, i + 1 = slot i); map object ids to slots first."
        )
    if nm.dtype != np.uint8:
        nm = nm.astype(np.uint8) if on_host else nm.astype(jnp.uint8)
    return nm


def _check_flags(
    fn: str, name: str, value: Any, dims: str, shape: tuple[int, int], default: bool
) -> Any:
    """``value`` as ``bool[shape]`` (filled with ``default`` when None)."""
    if value is None:
        return np.full(shape, default, bool)
    if tuple(np.shape(value)) != shape:
        raise VosjaxError(
            f"{fn}: '{name}' must be bool[{dims}] = {list(shape)}, got {np.shape(value)}."
        )
    return value if isinstance(value, jax.Array) else np.asarray(value, bool)


def _check_step_inputs(
    config: EngineConfig,
    state: Any,
    frames: Any,
    new_masks: Any,
    new_objects: Any,
    frame_valid: Any,
) -> tuple[Any, Any, Any, Any]:
    """Every check of :meth:`Engine.step`; returns ``(frames, new_masks, new_objects, frame_valid)``.

    Host inputs stay NumPy until the compiled call (no eager device ops, so
    nothing but the step itself is ever compiled while a video runs); the
    defaults are filled in (no masks, no objects, all frames valid).
    """
    fn = "Engine.step"
    if not isinstance(state, EngineState):
        raise VosjaxError(
            f"{fn}: 'state' must come from Engine.init_state, got {type(state).__name__}."
        )
    b, o = state.obj_valid.shape
    length = config.clip_length
    if not isinstance(frames, jax.Array):
        frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[:2] != (b, length) or frames.shape[-1] != 3:
        raise VosjaxError(
            f"{fn}: 'frames' must be uint8[B={b}, L={length}, H, W, 3], got "
            f"{frames.dtype}{list(frames.shape)}."
        )
    if frames.dtype != np.uint8:
        raise VosjaxError(
            f"{fn}: 'frames' must be uint8 RGB (normalisation happens on device), got "
            f"{frames.dtype}; pass e.g. np.asarray(frames, np.uint8)."
        )
    hh, ww = frames.shape[2:4]
    if config.correction_every and state.refs.frames.shape[2:4] != working_size(
        (hh, ww), config.resolution
    ):
        raise VosjaxError(
            f"{fn}: the state was made for another frame size; call init_state with "
            f"frame_size={(hh, ww)}."
        )
    new_masks = _check_new_masks(fn, new_masks, b, hh, ww, o)
    new_objects = _check_flags(fn, "new_objects", new_objects, "B, O", (b, o), False)
    frame_valid = _check_flags(fn, "frame_valid", frame_valid, "B, L", (b, length), True)
    return frames, new_masks, new_objects, frame_valid


# -- the steps of the compiled program (module docstring) ----------------------------------
class _Clip(NamedTuple):
    """Frame bookkeeping of one clip (:func:`_clip_bookkeeping`)."""

    valid: Bool[Array, "B L"]  # the prefix of valid frames
    n_valid: Int[Array, " B"]  # its length
    has_frames: Bool[Array, " B"]  # n_valid > 0
    last: Int[Array, " B"]  # index in the clip of the last valid frame (0 if none)
    t: Int[Array, "B L"]  # index in the video of every frame of the clip


class _Given(NamedTuple):
    """The masks given for the last valid frame of a clip (:func:`_given_masks`)."""

    labels: UInt8[Array, "B H W"]  # slot label map at the input size (0 = none)
    obj: Bool[Array, "B O"]  # objects given (False for a video without frames)
    any_obj: Bool[Array, " B"]  # some object given
    soft: Float[Array, "B O h w"]  # the given masks at the working size


class _FrameContext(NamedTuple):
    """What every frame of a clip shares in :func:`_frame_body` (bound with functools.partial)."""

    config: EngineConfig
    model: VOSModel
    motion_fn: MotionFn | None
    feat_shape: tuple[int, int]
    variables: Variables
    refs: CorrectionRefs | None
    obj_before: Bool[Array, "B O"]  # objects present before the clip
    given: _Given
    last: Int[Array, " B"]


def _encode(
    model: VOSModel, variables: Variables, frames: UInt8[Array, "B L H W 3"], size: tuple[int, int]
) -> tuple[Float[Array, "B L h w 3"], Any]:
    """``(x, model.encode_key(x))``, ``x`` = the ImageNet-normalised frames resized to ``size``."""
    x = normalize_frames(frames)
    if tuple(size) != tuple(frames.shape[2:4]):
        x = jnp.moveaxis(_resize(jnp.moveaxis(x, -1, 2), size), 2, -1)
    return x, model.encode_key(variables, x)


def _clip_bookkeeping(frame_valid: Bool[Array, "B L"], frame_count: Int[Array, " B"]) -> _Clip:
    """Keep the valid prefix of ``frame_valid``; ``last = max(n_valid - 1, 0)``, ``t = count + l``."""
    length = frame_valid.shape[1]
    valid = frame_valid & (jnp.cumsum(~frame_valid, axis=1) == 0)  # keep a prefix
    n_valid = jnp.sum(valid, axis=1).astype(jnp.int32)
    last = jnp.maximum(n_valid - 1, 0)
    t = frame_count[:, None] + jnp.arange(length, dtype=jnp.int32)[None]  # [B, L]
    return _Clip(valid, n_valid, n_valid > 0, last, t)


def _given_masks(
    new_labels: UInt8[Array, "B H W"],
    new_extra: Bool[Array, "B O"],
    has_frames: Bool[Array, " B"],
    size: tuple[int, int],
) -> _Given:
    """Slot one-hot of ``new_labels``; objects given = present there or in ``new_extra``.

    The one-hot masks are resized to the working ``size`` only on the (rare)
    steps that carry masks.
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
            lambda: _resize(full.astype(jnp.float32), size),
            lambda: jnp.zeros((b, o, *size), jnp.float32),
        )
    return _Given(new_labels, obj, any_obj, soft)


def _read(
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


def _correction_frames(schedule: Schedule, clip: _Clip, given: _Given) -> Bool[Array, "B L"]:
    """Frames to correct: ``policies.correction_mask``, except a frame that carries given masks."""
    length = clip.t.shape[1]
    do_correct = correction_mask(schedule, clip.t, clip.valid)
    return do_correct & ~(given.any_obj[:, None] & (jnp.arange(length)[None] == clip.last[:, None]))


def _correct(
    ctx: _FrameContext,
    p: Float[Array, "B O 1 h w"],
    x_l: Float[Array, "B h w 3"],
    feats_l: Any,
    correct_l: Bool[Array, " B"],
) -> Float[Array, "B O 1 h w"]:
    """Gradient correction (:func:`vosjax.inference.cycle.correct_masks`) of the rows that need it."""
    cfg, refs = ctx.config, ctx.refs
    rows = correct_l[:, None] & ctx.obj_before & refs.valid
    return lax.cond(
        jnp.any(rows),
        lambda: correct_masks(
            ctx.model,
            ctx.variables,
            x_l,
            feats_l,
            p,
            refs,
            rows,
            ctx.feat_shape,
            num_iters=cfg.correction_iters,
            rate=cfg.correction_rate,
            gamma=cfg.correction_gamma,
            smooth=cfg.correction_smooth,
            top_k=cfg.top_k,
        ),
        lambda: p,
    )


def _apply_given(
    p: Float[Array, "B O h w"], given: _Given, at_given: Bool[Array, " B"]
) -> tuple[Float[Array, "B O h w"], Bool[Array, "B O"]]:
    """``(p, g_obj)``: a given object's ``p`` is its mask, the others get ``p (1 - max_given)``."""
    g_obj = given.obj & at_given[:, None]  # [B, O]
    g_union = jnp.max(jnp.where(g_obj[:, :, None, None], given.soft, 0.0), axis=1)
    p = jnp.where(g_obj[:, :, None, None], given.soft, p * (1.0 - g_union[:, None]))
    return p, g_obj


def _aggregate(p: Float[Array, "B O h w"], present: Bool[Array, "B O"]) -> Float[Array, "B K h w"]:
    """``P = softmax(soft_aggregate(p))`` over the present objects (channel 0 = background)."""
    return jax.nn.softmax(soft_aggregate(p, present), axis=1)


def _box_filter(
    box_state: boxes.BoxFilterState,
    big: Float[Array, "B K h w"],
    g_obj: Bool[Array, "B O"],
    valid_l: Bool[Array, " B"],
    config: EngineConfig,
    motion_fn: MotionFn | None,
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


def _frame_body(ctx: _FrameContext, box_state: Any, inputs: tuple) -> tuple[Any, tuple]:
    """The ``lax.scan`` body over the frames of a clip: correct -> given -> aggregate -> box filter.

    Returns ``(box_state, (P,))``, or ``(box_state, (P, box-filtered P))`` with a box filter.
    """
    pos, p, x_l, feats_l, valid_l, correct_l = inputs
    if ctx.config.correction_every:
        p = _correct(ctx, p, x_l, feats_l, correct_l)
    at_given = (pos == ctx.last) & ctx.given.any_obj  # [B]
    p, g_obj = _apply_given(p, ctx.given, at_given)
    big = _aggregate(p, ctx.obj_before | g_obj)
    if not ctx.config.box_filter:
        return box_state, (big,)
    box_state, filtered = _box_filter(box_state, big, g_obj, valid_l, ctx.config, ctx.motion_fn)
    return box_state, (big, filtered)


def _scan_frames(
    ctx: _FrameContext,
    box_state: boxes.BoxFilterState | None,
    probs: Float[Array, "B O L h w"],
    x: Float[Array, "B L h w 3"],
    feats: Any,
    clip: _Clip,
    do_correct: Bool[Array, "B L"],
) -> tuple[Any, Float[Array, "B K L h w"], Float[Array, "B K L h w"]]:
    """:func:`_frame_body` over the frames of the clip, in order.

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
    box_state, scanned = lax.scan(functools.partial(_frame_body, ctx), box_state, xs)
    return box_state, jnp.moveaxis(scanned[0], 0, 2), jnp.moveaxis(scanned[-1], 0, 2)


def _update_refs(
    refs: CorrectionRefs | None, x_last: Float[Array, "B 1 h w 3"], given: _Given
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


def _write(
    schedule: Schedule,
    model: VOSModel,
    variables: Variables,
    state: EngineState,
    x: Float[Array, "B L h w 3"],
    feats: Any,
    agg_probs: Float[Array, "B K L h w"],
    clip: _Clip,
    given: _Given,
    box_state: Any,
) -> EngineState:
    """The new state: memory written / learners refit at the last valid frame where the schedule says."""
    obj_after = state.obj_valid | given.obj
    since_write = state.since_write + clip.n_valid
    since_refit = state.since_refit + clip.n_valid
    write = clip.has_frames & write_mask(schedule, since_write, given.any_obj)
    refit = clip.has_frames & refit_mask(schedule, since_refit, write, given.any_obj)
    x_last = _take_frame(x, clip.last)
    feats_last = jax.tree_util.tree_map(lambda f: _take_frame(f, clip.last), feats)
    masks_last = _take_frame(jnp.moveaxis(agg_probs[:, 1:], 2, 1), clip.last)  # [B, 1, O, h, w]
    masks_last = jnp.moveaxis(masks_last, 1, 2)
    memory = model.memorize(
        variables, state.memory, x_last, masks_last, obj_after, feats_last, write, refit
    )
    return EngineState(
        memory=memory,
        obj_valid=jnp.where(clip.has_frames[:, None], obj_after, state.obj_valid),
        frame_count=state.frame_count + clip.n_valid,
        since_write=jnp.where(write, 0, since_write),
        since_refit=jnp.where(refit, 0, since_refit),
        box=box_state,
        refs=_update_refs(state.refs, x_last, given),
    )


def _labels(
    probs: Float[Array, "B K L h w"], clip: _Clip, given: _Given
) -> tuple[UInt8[Array, "B L H W"], Float[Array, "B K L H W"]]:
    """``(labels, P)`` at the input size: argmax of ``P``, the given pixels copied exactly.

    On the frame that carries masks, a pixel of a given object that is not in
    its given mask becomes background; padding frames are 0.
    """
    b, hh, ww = given.labels.shape
    length = clip.valid.shape[1]
    probs = _resize(probs, (hh, ww))
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


class Engine:
    """Jitted propagation engine for one model and one :class:`EngineConfig`.

    Args:
      model: any :class:`~vosjax.models.base.VOSModel`.
      config: the inference options.
      motion_fn: the parametric box tracker ``f32[..., 4] -> f32[..., 4]`` for
        ``box_filter="pt"`` (e.g. ``vosjax.models.tracker.make_motion_fn(params)``).

    Use :meth:`init_state` once per video (batch) and :meth:`step` per clip;
    ``num_traces`` counts how often the step was traced (= compiled).
    """

    def __init__(
        self,
        model: VOSModel,
        config: EngineConfig | None = None,
        *,
        motion_fn: MotionFn | None = None,
    ):
        if not isinstance(model, VOSModel):
            raise VosjaxError(
                f"Engine: 'model' must be a vosjax VOSModel (vosjax.models.get_model), got "
                f"{type(model).__name__}."
            )
        config = EngineConfig() if config is None else config
        if not isinstance(config, EngineConfig):
            raise VosjaxError(
                f"Engine: 'config' must be an EngineConfig (EngineConfig.from_config(...)), got "
                f"{type(config).__name__}."
            )
        if config.box_filter == "pt" and motion_fn is None:
            raise VosjaxError(
                "Engine: box_filter='pt' needs the parametric tracker: pass motion_fn= "
                "(vosjax.models.tracker.make_motion_fn(params)), or use box_filter='cv'."
            )
        if config.box_filter != "pt" and motion_fn is not None:
            raise VosjaxError("Engine: motion_fn is only used with box_filter='pt'.")
        self.config = config
        self.schedule: Schedule = resolve_schedule(config, model.config)
        self.model = _with_capacity(model, self.schedule.capacity)
        self.motion_fn = motion_fn
        self.stride = int(getattr(model, "stride", 16))
        self.options = SegmentOptions(top_k=config.top_k, segment_len=config.pmm_segment_len)
        self.num_traces = 0
        self._step_jit = jax.jit(self._step, donate_argnums=(1,))

    # -- state ----------------------------------------------------------------------------
    def working_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """The resolution the model runs at for frames of ``frame_size`` (H, W)."""
        return working_size(frame_size, self.config.resolution)

    def feat_shape(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        h, w = self.working_size(frame_size)
        return math.ceil(h / self.stride), math.ceil(w / self.stride)

    def init_state(
        self,
        variables: Variables,
        batch: int,
        frame_size: tuple[int, int],
        num_objects: int | None = None,
    ) -> EngineState:
        """An empty state for ``batch`` videos of ``frame_size = (H, W)``.

        ``num_objects`` object slots (default ``config.max_objects``; at most that).
        """
        fn = "Engine.init_state"
        o = self.config.max_objects if num_objects is None else num_objects
        for name, v in (("batch", batch), ("num_objects", o)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise VosjaxError(f"{fn}: '{name}' must be a positive int, got {v!r}.")
        if o > self.config.max_objects:
            raise VosjaxError(
                f"{fn}: num_objects={o} exceeds EngineConfig.max_objects="
                f"{self.config.max_objects}; raise max_objects."
            )
        if len(tuple(frame_size)) != 2 or min(int(s) for s in frame_size) < 1:
            raise VosjaxError(f"{fn}: 'frame_size' must be (H, W), got {frame_size!r}.")
        batch, o = int(batch), int(o)
        memory = self.model.init_memory(variables, batch, o, self.feat_shape(frame_size))
        zeros = jnp.zeros((batch,), jnp.int32)
        box = boxes.box_filter_init((batch, o)) if self.config.box_filter else None
        refs = None
        if self.config.correction_every:
            refs = zeros_like_refs(batch, o, self.working_size(frame_size))
        state = EngineState(memory, jnp.zeros((batch, o), bool), zeros, zeros, zeros, box, refs)
        # Distinct buffers for every leaf: the step donates the state, and a buffer shared by
        # two leaves (zeros reused above, or inside the model's memory) cannot be donated twice.
        return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), state)

    # -- stepping -------------------------------------------------------------------------
    def step(
        self,
        variables: Variables,
        state: EngineState,
        frames: UInt8[Array, "B L H W 3"],
        new_masks: Int[Array, "B H W"] | None = None,
        new_objects: Bool[Array, "B O"] | None = None,
        frame_valid: Bool[Array, "B L"] | None = None,
    ) -> tuple[EngineState, StepOutput]:
        """Segment one clip of ``L = config.clip_length`` frames per video and update the state.

        Args:
          variables: the model variables.
          state: from :meth:`init_state` or the previous step (donated: do not reuse it).
          frames: ``uint8[B, L, H, W, 3]`` RGB frames.
          new_masks: slot label map ``[B, H, W]`` (``i + 1`` = object slot ``i``,
            0 = no mask) given for the LAST valid frame of each video's clip:
            objects that appear there, or objects whose mask is replaced.
          new_objects: ``bool[B, O]`` slots given there even if their mask is
            empty (default: the slots present in ``new_masks``).
          frame_valid: ``bool[B, L]``, a prefix of valid frames per video (the
            rest is padding); default all True.

        Returns:
          ``(state, StepOutput)``; one compilation serves every step with the same shapes.
        """
        inputs = _check_step_inputs(self.config, state, frames, new_masks, new_objects, frame_valid)
        return self._step_jit(variables, state, *inputs)

    # -- the compiled program (module docstring) ------------------------------------------
    def _step(
        self,
        variables: Variables,
        state: EngineState,
        frames: UInt8[Array, "B L H W 3"],
        new_labels: UInt8[Array, "B H W"],
        new_extra: Bool[Array, "B O"],
        frame_valid: Bool[Array, "B L"],
    ) -> tuple[EngineState, StepOutput]:
        self.num_traces += 1
        model, frame_size = self.model, tuple(frames.shape[2:4])
        size = self.working_size(frame_size)
        x, feats = _encode(model, variables, frames, size)
        clip = _clip_bookkeeping(frame_valid, state.frame_count)
        given = _given_masks(new_labels, new_extra, clip.has_frames, size)
        probs = _read(model, variables, state.memory, feats, state.obj_valid, self.options)
        do_correct = _correction_frames(self.schedule, clip, given)
        ctx = _FrameContext(
            self.config,
            model,
            self.motion_fn,
            self.feat_shape(frame_size),
            variables,
            state.refs,
            state.obj_valid,
            given,
            clip.last,
        )
        box_state, agg_probs, out_probs = _scan_frames(
            ctx, state.box, probs, x, feats, clip, do_correct
        )
        new_state = _write(
            self.schedule, model, variables, state, x, feats, agg_probs, clip, given, box_state
        )
        labels, out_probs = _labels(out_probs, clip, given)
        return new_state, StepOutput(labels, out_probs if self.config.return_probs else None)
