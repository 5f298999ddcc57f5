"""The functional propagation engine: ``init_state`` and one jitted ``step`` per clip.

A step takes the ``L`` frames of a clip (``L = 1`` per-frame, ``L > 1``
per-clip), optional given masks for the LAST valid frame of the clip, and the
state; it returns the new state and the label maps. Inside one compiled
program (``B`` videos at once; ``t`` = index of a frame in its video):

1. frames (``uint8``) are ImageNet-normalised on device and resized to the
   working resolution (``EngineConfig.resolution``);
2. ``feats = model.encode_key(frames)``; ``logits = model.segment(memory,
   feats)`` for the objects present before the clip; ``p = sigmoid(logits)``;
3. per frame, in order (a ``lax.scan``):

   a. gradient correction of ``p`` where ``t % K == 0`` (cyclic VOS; only
      computed, under ``lax.cond``, when some video needs it);
   b. given masks (last frame only): a given object's ``p`` is its mask; the
      other objects lose the given pixels, ``p_j <- p_j (1 - max_given)``;
   c. soft aggregation over the objects present at that frame,
      ``P = softmax(soft_aggregate(p))`` (channel 0 = background);
   d. box filter (TrickVOS Algorithm 1, per object, CV or PT) of the object
      channels, ``P_obj <- A(BB) P_obj`` and ``P_bg = 1 - sum P_obj``; frames
      with given masks are not filtered but update the box history;

4. the last valid frame of the clip and its ``P_obj`` are written to memory
   where the policy says so (``write``), learners refit where ``refit``
   (:mod:`vosjax.inference.policies`): the last frame of a clip carries the
   given masks, so an object is in memory before any later frame is read;
5. labels = argmax of ``P`` resized to the input size; the given pixels of
   the last frame are copied exactly.

Padding frames (``frame_valid`` False; the tail of a clip cut short at a given
frame or at the end of a video) are computed but change nothing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Int, UInt8

from vosjax.data.normalize import normalize_frames
from vosjax.errors import VosjaxError
from vosjax.inference import cycle
from vosjax.inference.config import EngineConfig
from vosjax.inference.policies import correction_mask, refit_mask, resolve_policy, write_mask
from vosjax.memory_policy import MemoryPolicy
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


def _take_frame(x: Array, index: Int[Array, " B"]) -> Array:
    """``x[b, index[b]]`` keeping a time axis of 1: ``[B, L, ...] -> [B, 1, ...]``."""
    idx = index.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.take_along_axis(x, idx.astype(jnp.int32), axis=1)


def _resize(x: Array, size: tuple[int, int]) -> Array:
    """Bilinear (antialiased when shrinking) resize of the last two axes."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return jax.image.resize(x, x.shape[:-2] + tuple(size), "linear", antialias=True)


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
        self.policy: MemoryPolicy = resolve_policy(config, model.config)
        self.model = model.with_policy(self.policy)
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
        fn = "Engine.step"
        if not isinstance(state, EngineState):
            raise VosjaxError(
                f"{fn}: 'state' must come from Engine.init_state, got {type(state).__name__}."
            )
        b, o = state.obj_valid.shape
        length = self.config.clip_length
        # Host inputs stay NumPy until the compiled call (no eager device ops, so nothing but
        # the step itself is ever compiled while a video runs).
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
        if self.config.correction_every and state.refs.frames.shape[2:4] != self.working_size(
            (hh, ww)
        ):
            raise VosjaxError(
                f"{fn}: the state was made for another frame size; call init_state with "
                f"frame_size={(hh, ww)}."
            )
        if new_masks is None:
            new_masks = np.zeros((b, hh, ww), np.uint8)
        else:
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
            new_masks = nm
        if new_objects is None:
            new_objects = np.zeros((b, o), bool)
        elif tuple(np.shape(new_objects)) != (b, o):
            raise VosjaxError(
                f"{fn}: 'new_objects' must be bool[B, O] = {[b, o]}, got {np.shape(new_objects)}."
            )
        elif not isinstance(new_objects, jax.Array):
            new_objects = np.asarray(new_objects, bool)
        if frame_valid is None:
            frame_valid = np.ones((b, length), bool)
        elif tuple(np.shape(frame_valid)) != (b, length):
            raise VosjaxError(
                f"{fn}: 'frame_valid' must be bool[B, L] = {[b, length]}, got {np.shape(frame_valid)}."
            )
        elif not isinstance(frame_valid, jax.Array):
            frame_valid = np.asarray(frame_valid, bool)
        return self._step_jit(variables, state, frames, new_masks, new_objects, frame_valid)

    # -- the compiled program -------------------------------------------------------------
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
        cfg, model = self.config, self.model
        b, length, hh, ww, _ = frames.shape
        o = state.obj_valid.shape[1]
        wh, wwid = self.working_size((hh, ww))
        feat_shape = self.feat_shape((hh, ww))

        x = normalize_frames(frames)
        if (wh, wwid) != (hh, ww):
            x = jnp.moveaxis(_resize(jnp.moveaxis(x, -1, 2), (wh, wwid)), 2, -1)
        feats = model.encode_key(variables, x)

        # frame bookkeeping
        frame_valid = frame_valid & (jnp.cumsum(~frame_valid, axis=1) == 0)  # keep a prefix
        n_valid = jnp.sum(frame_valid, axis=1).astype(jnp.int32)
        has_frames = n_valid > 0
        last = jnp.maximum(n_valid - 1, 0)
        t = state.frame_count[:, None] + jnp.arange(length, dtype=jnp.int32)[None]  # [B, L]

        # given masks (last valid frame of the clip)
        slot_ids = jnp.arange(1, o + 1, dtype=jnp.int32)
        given_full = new_labels[:, None].astype(jnp.int32) == slot_ids[None, :, None, None]
        given_obj = (jnp.any(given_full, axis=(2, 3)) | new_extra) & has_frames[:, None]
        given_any = jnp.any(given_obj, axis=1)
        if (wh, wwid) == (hh, ww):
            given_soft = given_full.astype(jnp.float32)  # [B, O, h, w]
        else:  # resized only on the (rare) steps that carry masks
            given_soft = lax.cond(
                jnp.any(given_any),
                lambda: _resize(given_full.astype(jnp.float32), (wh, wwid)),
                lambda: jnp.zeros((b, o, wh, wwid), jnp.float32),
            )
        obj_before = state.obj_valid
        obj_after = obj_before | given_obj

        # segmentation of the clip from the memory
        logits = model.segment(variables, state.memory, feats, obj_before, self.options)
        probs = jax.nn.sigmoid(logits.astype(jnp.float32))
        probs = jnp.where(obj_before[:, :, None, None, None], probs, 0.0)

        do_correct = correction_mask(cfg.correction_every, t, frame_valid)
        do_correct = do_correct & ~(
            given_any[:, None] & (jnp.arange(length)[None] == last[:, None])
        )
        refs = state.refs

        def per_frame(box_state, inputs):
            pos, p, x_l, feats_l, valid_l, correct_l = inputs
            if cfg.correction_every:
                rows = correct_l[:, None] & obj_before & refs.valid
                p = lax.cond(
                    jnp.any(rows),
                    lambda: cycle.correct_masks(
                        model,
                        variables,
                        x_l,
                        feats_l,
                        p,
                        refs,
                        rows,
                        feat_shape,
                        num_iters=cfg.correction_iters,
                        rate=cfg.correction_rate,
                        gamma=cfg.correction_gamma,
                        smooth=cfg.correction_smooth,
                        top_k=cfg.top_k,
                    ),
                    lambda: p,
                )
            at_given = (pos == last) & given_any  # [B]
            g_obj = given_obj & at_given[:, None]  # [B, O]
            g_union = jnp.max(jnp.where(g_obj[:, :, None, None], given_soft, 0.0), axis=1)
            p = jnp.where(g_obj[:, :, None, None], given_soft, p * (1.0 - g_union[:, None]))
            present = obj_before | g_obj
            big = jax.nn.softmax(soft_aggregate(p, present), axis=1)
            if cfg.box_filter:
                # Algorithm 1 post-processes the predictions: the box history follows the
                # filtered masks, the memory keeps the model's own (unfiltered) predictions.
                new_box, filt = boxes.box_filter_step(
                    box_state, big[:, 1:], cfg.box_filter, self.motion_fn, cfg.box_margin
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
                return box_state, (big, jnp.concatenate([bg, filt], axis=1))
            return box_state, (big,)

        feats_t = jax.tree_util.tree_map(lambda f: jnp.moveaxis(f, 1, 0)[:, :, None], feats)
        xs = (
            jnp.arange(length, dtype=jnp.int32),
            jnp.moveaxis(probs, 2, 0),
            jnp.moveaxis(x, 1, 0),
            feats_t,
            jnp.moveaxis(frame_valid, 1, 0),
            jnp.moveaxis(do_correct, 1, 0),
        )
        box_state, scanned = lax.scan(per_frame, state.box, xs)
        agg_probs = jnp.moveaxis(scanned[0], 0, 2)  # [B, O+1, L, h, w]: what the memory gets
        out_probs = jnp.moveaxis(scanned[-1], 0, 2)  # what the step outputs (box-filtered)

        # memory update at the last valid frame
        since_write = state.since_write + n_valid
        since_refit = state.since_refit + n_valid
        write = has_frames & write_mask(self.policy, since_write, given_any)
        refit = has_frames & refit_mask(self.policy, since_refit, write, given_any)
        x_last = _take_frame(x, last)
        feats_last = jax.tree_util.tree_map(lambda f: _take_frame(f, last), feats)
        masks_last = _take_frame(jnp.moveaxis(agg_probs[:, 1:], 2, 1), last)  # [B, 1, O, h, w]
        masks_last = jnp.moveaxis(masks_last, 1, 2)
        memory = model.memorize(
            variables, state.memory, x_last, masks_last, obj_after, feats_last, write, refit
        )
        if refs is not None:
            fresh = given_obj  # first mask of each object (or a replaced one)
            refs = CorrectionRefs(
                jnp.where(fresh[:, :, None, None, None], x_last[:, :1], refs.frames),
                jnp.where(fresh[:, :, None, None], given_soft, refs.masks),
                refs.valid | fresh,
            )
        new_state = EngineState(
            memory=memory,
            obj_valid=jnp.where(has_frames[:, None], obj_after, obj_before),
            frame_count=state.frame_count + n_valid,
            since_write=jnp.where(write, 0, since_write),
            since_refit=jnp.where(refit, 0, since_refit),
            box=box_state,
            refs=refs,
        )

        # outputs at the input resolution
        out_probs = _resize(out_probs, (hh, ww))
        labels = jnp.argmax(out_probs, axis=1).astype(jnp.int32)  # [B, L, H, W]
        is_last = jnp.arange(length)[None] == last[:, None]  # [B, L]
        table = jnp.concatenate([jnp.zeros((b, 1), bool), given_obj], axis=1)  # slot -> given
        labels_given = jnp.take_along_axis(table, labels.reshape(b, -1), axis=1).reshape(
            labels.shape
        )
        exact = jnp.where(
            new_labels[:, None] > 0,
            new_labels[:, None].astype(jnp.int32),
            jnp.where(labels_given, 0, labels),
        )
        labels = jnp.where((is_last & given_any[:, None])[:, :, None, None], exact, labels)
        labels = jnp.where(frame_valid[:, :, None, None], labels, 0).astype(jnp.uint8)
        return new_state, StepOutput(labels, out_probs if cfg.return_probs else None)
