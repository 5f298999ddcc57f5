"""The one interface every vosjax method implements.

The inference engine (``vosjax/inference``), the trainer (``vosjax/train.py``)
and the tools never special-case a method: they call the pure functions below.
A method is a :class:`VOSModel`: a plain Python object holding a static
configuration and a Flax linen module, exposing

- ``init(rng, frames, masks, obj_valid) -> variables``
- ``encode_key(variables, frames) -> feats``
    per-frame features of query frames: the matching key and whatever the
    decoder needs (skip features); computed once per frame and shared by all
    objects.
- ``encode_value(variables, frames, masks, obj_valid, feats) -> values``
    what a (frame, per-object mask) pair contributes to the memory: value
    features for memory networks, label encodings for JOINT, training samples
    for FRTM. Differentiable w.r.t. ``masks`` (gradient correction and the
    cycle loss need that).
- ``init_memory(variables, batch, num_objects, feat_shape) -> memory``
    an EMPTY memory state: a pytree of fixed-shape buffers (slots with valid
    flags and write indices; learner weights and sample memories), so one
    compiled step serves a whole video.
- ``memorize(variables, memory, frames, masks, obj_valid, feats, write,
  refit) -> memory``
    the memory update: encode the values of the given frame(s) and insert them
    (rows where ``write`` is False are left unchanged: the engine's policies
    are masks, not Python branches). Learner-based methods also (re)fit their
    target models here where ``refit`` is True (FRTM every t_s frames, JOINT
    when a template is added).
- ``segment(variables, memory, feats, obj_valid, options) -> logits``
    per-object mask logits ``f32[B, O, T, H, W]`` at full input resolution for
    the T query frames in ``feats`` (T = 1 per-frame, T = L per-clip). These
    are per-object (sigmoid) logits BEFORE soft aggregation; the caller merges
    objects with :func:`vosjax.ops.aggregate.soft_aggregate`.

Shapes follow docs/DEVELOPING.md (Code): frames ``f32[B, T, H, W, 3]`` ImageNet-normalised,
masks / probabilities ``f32[B, O, T, H, W]``, ``obj_valid bool[B, O]`` marks
object slots in use (slot i holds object id i + 1 unless the caller keeps its
own id table). Everything is functional: no method mutates its inputs, and all
array-valued state lives in the returned pytrees.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from typing import Any, Mapping

import jax
from jaxtyping import Array, Bool, Float

from vosjax.memory_policy import MemoryPolicy, policy_of


def _config_field(config: Any, name: str) -> Any:
    try:
        return config[name]
    except (KeyError, TypeError, AttributeError, IndexError):
        return getattr(config, name, None)


Variables = Mapping[str, Any]
"""Flax variables: ``{"params": ..., "batch_stats": ...}`` (plain pytrees)."""

Feats = dict[str, Array]
"""Per-frame query features, e.g. ``{"key": f32[B,T,h,w,Ck], "s4": ..., "s8": ...}``."""

Memory = Any
"""A method's memory state: a pytree of fixed-shape arrays."""


@dataclasses.dataclass(frozen=True)
class SegmentOptions:
    """Inference-time options that any method may honour (static under jit).

    Attributes:
      top_k: keep the top-k memory entries per query position (None = dense).
      segment_len: progressive memory matching segment length F for per-clip
        inference (PCVOS eq. 4); None disables it.
      train: training-mode forward (dropout, batch-norm statistics where a
        module is configured to train them).
    """

    top_k: int | None = 20
    segment_len: int | None = None
    train: bool = False


class VOSModel(abc.ABC):
    """Base class of every method. Subclasses are cheap, stateless wrappers.

    Attributes:
      name: registry name of the method (``"stcn"``, ``"pcvos"``, ...).
      config: the model section of the run config (hashable, static).
      policy: the :class:`~vosjax.memory_policy.MemoryPolicy` the memory is
        sized and filled by (default: the method's own, from its record in
        :mod:`vosjax.methods`); the engine hands its resolved policy over with
        :meth:`with_policy`.
      stride: output stride of the matching features (16 for every method).
    """

    name: str = "base"
    stride: int = 16

    def __init__(self, config: Any, policy: MemoryPolicy | None = None):
        self.config = config
        self._policy = policy

    # -- memory policy ----------------------------------------------------------------------
    @property
    def policy(self) -> MemoryPolicy:
        if self._policy is None:
            self._policy = policy_of(_config_field(self.config, "name"))
        return self._policy

    def with_policy(self, policy: MemoryPolicy) -> "VOSModel":
        """The same model (same config, same params layout) using ``policy``."""
        if policy == self.policy:
            return self
        new = copy.copy(self)
        new._policy = policy
        return new

    @property
    def memory_frames(self) -> int | None:
        """Memory capacity in frames: the policy's, else the config's ``memory_frames``."""
        if self.policy.capacity is not None:
            return self.policy.capacity
        own = _config_field(self.config, "memory_frames")
        return None if own is None else int(own)

    @property
    def memory_slots(self) -> int | None:
        """Frame slots of a memory bank: :attr:`memory_frames` plus the policy's ``late_slots``
        (room for the first frames of objects that appear later, :mod:`vosjax.memory_policy`)."""
        frames = self.memory_frames
        return None if frames is None else frames + self.policy.late_slots

    # -- parameters -------------------------------------------------------------------------
    @abc.abstractmethod
    def init(
        self,
        rng: jax.Array,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
    ) -> Variables:
        """Initialise all variables from example inputs (T >= 2: memory + query)."""

    # -- encode the key, encode the value, segment -----------------------------------------
    @abc.abstractmethod
    def encode_key(self, variables: Variables, frames: Float[Array, "B T H W 3"], *, train: bool = False) -> Feats:
        """Query features of each frame (shared by all objects)."""

    @abc.abstractmethod
    def encode_value(
        self,
        variables: Variables,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        *,
        train: bool = False,
    ) -> Any:
        """What each (frame, object mask) contributes to the memory."""

    @abc.abstractmethod
    def segment(
        self,
        variables: Variables,
        memory: Memory,
        feats: Feats,
        obj_valid: Bool[Array, "B O"],
        options: SegmentOptions = SegmentOptions(),
    ) -> Float[Array, "B O T H W"]:
        """Per-object logits of the query frames in ``feats`` given the memory."""

    # -- memory state -----------------------------------------------------------------------
    @abc.abstractmethod
    def init_memory(
        self, variables: Variables, batch: int, num_objects: int, feat_shape: tuple[int, int]
    ) -> Memory:
        """An empty memory for ``batch`` videos of ``num_objects`` object slots.

        ``feat_shape`` is the (h, w) of stride-16 features. The capacity is
        :attr:`memory_frames` (the policy's, else the model config's).
        """

    @abc.abstractmethod
    def memorize(
        self,
        variables: Variables,
        memory: Memory,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        write: Bool[Array, "B"],
        refit: Bool[Array, "B"] | None = None,
        *,
        train: bool = False,
    ) -> Memory:
        """Insert frame(s) with their masks; refit learners where ``refit``."""

    # -- conveniences shared by all methods -------------------------------------------------
    def num_params(self, variables: Variables) -> int:
        """Number of trainable parameters."""
        return int(sum(x.size for x in jax.tree_util.tree_leaves(variables.get("params", {}))))
