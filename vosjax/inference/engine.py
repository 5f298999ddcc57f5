"""The functional propagation engine: ``init_state`` and one jitted ``step`` per clip.

A step takes the ``L`` frames of a clip (``L = 1`` per-frame, ``L > 1``
per-clip), optional given masks for the LAST valid frame of the clip, and the
state; it returns the new state and the label maps. :meth:`Engine.step` checks
its inputs on the host (:func:`_check_step_inputs`); inside one compiled
program (``B`` videos at once; ``t`` = index of a frame in its video),
``Engine._step`` composes the pure functions of :mod:`vosjax.inference.steps`:

1. :func:`steps.encode`: frames (``uint8``) are ImageNet-normalised on device,
   resized to the working resolution (``EngineConfig.resolution``), zero-padded
   to a multiple of ``EngineConfig.pad_to`` when set, and
   ``feats = model.encode_key(frames)``;
   :func:`steps.clip_bookkeeping`: the prefix of valid frames, their number, the
   last valid frame and ``t`` of every frame; :func:`steps.given_masks`: the slot
   one-hot of the given label map, the objects given and their masks at the
   working resolution;
2. :func:`steps.read`: ``logits = model.segment(memory, feats)`` for the objects
   present before the clip; ``p = sigmoid(logits)``;
3. per frame, in order (a ``lax.scan`` of :func:`steps.frame_body` in
   :func:`steps.scan_frames`):

   a. :func:`steps.apply_given`: given masks (last frame only): a given object's
      ``p`` is its mask; the other objects lose the given pixels,
      ``p_j <- p_j (1 - max_given)``;
   b. :func:`steps.aggregate`: soft aggregation over the objects present at that
      frame, ``P = softmax(soft_aggregate(p))`` (channel 0 = background);
   c. :func:`steps.correct`: gradient correction of the object channels of ``P``
      where ``t % K == 0`` (cyclic VOS, as the authors' test.py: the memory gets
      the corrected ``P``, the output keeps the uncorrected one unless
      ``correction_output``; frames chosen by :func:`steps.correction_frames`;
      only computed, under ``lax.cond``, when some video needs it);
   d. :func:`steps.box_filter`: box filter (TrickVOS Algorithm 1, per object, CV or
      PT) of the object channels, ``P_obj <- A(BB) P_obj`` and
      ``P_bg = 1 - sum P_obj``; frames with given masks are not filtered but
      update the box history;

4. :func:`steps.write`: the last valid frame of the clip and its ``P_obj`` are
   written to memory where the policy says so (``write``), learners refit
   where ``refit`` (:mod:`vosjax.inference.policies`): the last frame of a clip
   carries the given masks, so an object is in memory before any later frame
   is read; :func:`steps.update_refs` keeps the given masks as correction references;
5. :func:`steps.labels`: labels = argmax of ``P`` (the padding cropped off) resized
   to the input size; the
   given pixels of the last frame are copied exactly.

Padding frames (``frame_valid`` False; the tail of a clip cut short at a given
frame or at the end of a video) are computed but change nothing. The engines
shared across calls (:func:`vosjax.inference.engine_cache.get_engine`) live in
:mod:`vosjax.inference.engine_cache`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int, UInt8

from vosjax.errors import VosjaxError
from vosjax.inference import steps
from vosjax.inference.config import EngineConfig
from vosjax.inference.policies import resolve_policy
from vosjax.inference.state import EngineState, StepOutput, zeros_like_refs
from vosjax.memory_policy import MemoryPolicy
from vosjax.models.base import SegmentOptions, Variables, VOSModel
from vosjax.ops import boxes

__all__ = ["Engine", "MotionFn", "model_size", "working_size"]

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


def model_size(frame_size: tuple[int, int], config: EngineConfig) -> tuple[int, int]:
    """``(h, w)`` of the model's input: :func:`working_size`, padded up to a multiple of
    ``config.pad_to`` when set (:func:`vosjax.inference.steps.pad_amounts`)."""
    h, w = working_size(frame_size, config.resolution)
    (t, b), (lft, r) = steps.pad_amounts((h, w), config.pad_to)
    return h + t + b, w + lft + r


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
    if config.correction_every and state.refs.frames.shape[2:4] != model_size((hh, ww), config):
        raise VosjaxError(
            f"{fn}: the state was made for another frame size; call init_state with "
            f"frame_size={(hh, ww)}."
        )
    new_masks = _check_new_masks(fn, new_masks, b, hh, ww, o)
    new_objects = _check_flags(fn, "new_objects", new_objects, "B, O", (b, o), False)
    frame_valid = _check_flags(fn, "frame_valid", frame_valid, "B, L", (b, length), True)
    return frames, new_masks, new_objects, frame_valid


# -- the steps of the compiled program (module docstring) ----------------------------------
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

    def model_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """The model's input size: the working size, padded to ``config.pad_to`` when set."""
        return model_size(frame_size, self.config)

    def feat_shape(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        h, w = self.model_size(frame_size)
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
            refs = zeros_like_refs(batch, o, self.model_size(frame_size))
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
        size, pad_to = self.working_size(frame_size), self.config.pad_to
        x, feats = steps.encode(model, variables, frames, size, pad_to)
        clip = steps.clip_bookkeeping(frame_valid, state.frame_count)
        given = steps.given_masks(new_labels, new_extra, clip.has_frames, size, pad_to)
        probs = steps.read(model, variables, state.memory, feats, state.obj_valid, self.options)
        do_correct = steps.correction_frames(self.config.correction_every, clip, given)
        ctx = steps.FrameContext(
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
        box_state, agg_probs, out_probs = steps.scan_frames(
            ctx, state.box, probs, x, feats, clip, do_correct
        )
        new_state = steps.write(
            self.policy, model, variables, state, x, feats, agg_probs, clip, given, box_state
        )
        labels, out_probs = steps.labels(out_probs, clip, given, size, pad_to)
        return new_state, StepOutput(labels, out_probs if self.config.return_probs else None)
