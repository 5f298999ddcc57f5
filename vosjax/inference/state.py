"""The engine's state: one pytree of fixed-shape buffers per batch of videos.

Every leaf has the batch axis ``B`` first (so sharding the batch over
devices, or ``vmap`` over a further axis, needs no special cases), and no
shape depends on the frame number: one compiled step serves a whole video at
constant cost per frame.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, UInt8

from vosjax.ops.boxes import BoxFilterState

__all__ = ["CorrectionRefs", "EngineState", "StepOutput"]


class CorrectionRefs(NamedTuple):
    """Per-object reference of gradient correction (cyclic VOS eq. 7).

    Object ``o`` is corrected against the frame where its mask was given and
    that mask (``Y_1`` of the paper; objects that appear later have their own
    first frame), both at the engine's working resolution.

    Attributes:
      frames: ``f32[B, O, h, w, 3]`` ImageNet-normalised frames.
      masks: ``f32[B, O, h, w]`` the given masks.
      valid: ``bool[B, O]`` True once the object has a reference.
    """

    frames: Float[Array, "B O h w 3"]
    masks: Float[Array, "B O h w"]
    valid: Bool[Array, "B O"]


class EngineState(NamedTuple):
    """Everything the engine carries from one step to the next.

    Attributes:
      memory: the model's memory (``VOSModel.init_memory``): memory slots with a
        valid mask and write index, or learner weights and sample memories.
      obj_valid: ``bool[B, O]`` object slots in use (slot ``i`` is the ``i``-th
        object that appeared; the drivers keep the id of each slot).
      frame_count: ``int32[B]`` frames processed so far (= index of the next frame).
      since_write: ``int32[B]`` frames since the last frame written to memory.
      since_refit: ``int32[B]`` frames since the learners were last refitted.
      box: the box filter's history per object (``[B, O]``), or None without box filter.
      refs: gradient-correction references, or None without correction.
    """

    memory: Any
    obj_valid: Bool[Array, "B O"]
    frame_count: Int[Array, " B"]
    since_write: Int[Array, " B"]
    since_refit: Int[Array, " B"]
    box: BoxFilterState | None
    refs: CorrectionRefs | None

    @property
    def batch(self) -> int:
        return int(self.obj_valid.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.obj_valid.shape[1])


class StepOutput(NamedTuple):
    """What one step returns for its ``L`` frames.

    Attributes:
      labels: ``uint8[B, L, H, W]`` slot label maps at the input resolution:
        0 = background, ``i + 1`` = object slot ``i``. Frames whose
        ``frame_valid`` is False hold zeros.
      probs: ``f32[B, O + 1, L, H, W]`` aggregated probabilities (channel 0 =
        background) when ``EngineConfig.return_probs``, else None.
    """

    labels: UInt8[Array, "B L H W"]
    probs: Float[Array, "B K L H W"] | None


def zeros_like_refs(batch: int, num_objects: int, hw: tuple[int, int]) -> CorrectionRefs:
    """Empty references (no object has one yet)."""
    h, w = hw
    return CorrectionRefs(
        jnp.zeros((batch, num_objects, h, w, 3), jnp.float32),
        jnp.zeros((batch, num_objects, h, w), jnp.float32),
        jnp.zeros((batch, num_objects), bool),
    )
