"""Memory policies: when a method writes to its memory, when it refits, how much it keeps.

A :class:`MemoryPolicy` is one frozen value, chosen by name from
:data:`POLICIES` (a method's record, :mod:`vosjax.methods`, names its
default) and adjusted by the inference options
(:meth:`MemoryPolicy.with_overrides`). The engine evaluates it as per-video
boolean masks inside its jitted step (:mod:`vosjax.inference.policies`); the
model receives it at construction (:meth:`vosjax.models.base.VOSModel.with_policy`)
and sizes and fills its memory by it, nothing of it is fixed inside a model.

With ``t`` the index of a frame in its video and no object appearing later:

================  =======================  ==========================  =====================
policy            write (per-frame mode)   refit                       capacity / kept
================  =======================  ==========================  =====================
``every_k``       ``t % 5 == 0`` (STCN)    never                       the model's; first kept
``first_last``    every frame              never                       2: first + last (TrickVOS)
``joint``         ``t % 5 == 0``           whenever a template is      the model's (20); first
                                           written                     kept
``frtm``          every frame (a sample    ``t % 8 == 0`` (t_s, or     the model's (80 weighted
                  per frame)               the model's                 samples)
                                           ``update_interval``)
================  =======================  ==========================  =====================

Objects that appear later: the frame that carries an object's first mask is
always written (and refitted), whatever the period, and restarts the write and
refit periods, so each object enters the memory at its own first frame and a
periodic schedule keeps its period afterwards. In per-clip mode
(``clip_length = L > 1``) writes happen at clip ends, every ``L`` frames by
default.

Each object has its own memory, as in the authors' drivers (STCN's
``inference_core_yv.py``: one memory bank per object, starting at the frame
where its mask is given; PCVOS and JOINT likewise), held in ONE fixed-shape
bank shared by all objects (:mod:`vosjax.ops.memory_bank`):

- every slot records the objects present when it was written; an object reads
  (softmax / top-k over) only the slots written at or after its own first
  frame (:func:`vosjax.ops.memory_bank.bank_object_valid`,
  :mod:`vosjax.ops.object_memory`). The frames written after it appeared are
  shared with the objects already there, as in the authors' code, where such
  a frame is added to every present object's memory.
- ``keep_first``: the first frame written AND every object's first frame are
  kept; the ring (``every_k``: the periodic frames; ``first_last``: the last
  frame) runs over the other slots, the lowest empty one first, then the
  oldest. With all objects in the first frame this is exactly "slot 0 keeps
  the first frame, the others are a ring".
- Fixed shape: the bank has ``capacity + late_slots`` slots. With
  ``late_slots = 0`` (the default of every policy: no extra memory or time
  for videos whose objects all start in frame 0) each later start frame takes
  one slot from the ring: ``every_k`` keeps ``capacity - 1 - (late start
  frames)`` ring frames; under ``first_last`` (2 slots) an object appearing
  later keeps its first frame, the first object keeps its own, and no slot is
  left for the last frame (while every slot is kept, only frames that bring a
  new object are stored, in the oldest slot). ``late_slots = n`` (engine
  option ``late_slots``) adds ``n`` slots and bounds each object's memory to
  its first frame + the ``capacity - 1`` most recent frames written since:
  exactly its own keep-first memory of ``capacity`` frames (TrickVOS's first +
  last per object) while at most ``n`` later start frames occur.

JOINT's template bank follows the same rules (transduction and the induction
learner's training set per object; the template encoder of eq. 3 runs over all
templates). FRTM's sample memories and target models are per object already:
an object's samples start with its own first-frame fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vosjax import methods
from vosjax.errors import VosjaxError

__all__ = ["POLICIES", "MemoryPolicy", "get_policy", "policy_of"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class MemoryPolicy:
    """When to write and refit, and what the memory keeps (static, hashable).

    Attributes:
      name: the policy's name (a key of :data:`POLICIES`).
      write_every: write a frame when this many frames passed since the last
        written one (frames with given masks are always written).
      first_write: after a frame with given masks, the first periodic write comes this
        many frames later (None = ``write_every``), then every ``write_every``.
      refit_every: refit learners when this many frames passed since the last
        refit; 0 = never periodically.
      refit_on_write: also refit whenever a frame is written (JOINT).
      capacity: memory capacity in frames; None = the model's ``memory_frames``.
      keep_first: the first frame written stays in the memory for the whole
        video (slot 0) while the other slots are a ring over the most recent
        writes; False = all slots are one ring. Each object's own first frame
        is kept too (module docstring).
      late_slots: memory slots added to ``capacity`` for the first frames of
        objects that appear after the first written frame (module docstring).
    """

    name: str
    write_every: int = 5
    refit_every: int = 0
    refit_on_write: bool = False
    capacity: int | None = None
    keep_first: bool = True
    late_slots: int = 0
    first_write: int | None = None

    def __post_init__(self) -> None:
        def bad(field: str, want: str) -> VosjaxError:
            return VosjaxError(
                f"MemoryPolicy {self.name!r}: '{field}' must be {want}, got "
                f"{getattr(self, field)!r}."
            )

        if not _is_int(self.write_every) or self.write_every < 1:
            raise bad("write_every", "a positive int")
        if self.first_write is not None and (not _is_int(self.first_write) or self.first_write < 1):
            raise bad("first_write", "None or a positive int")
        if not _is_int(self.refit_every) or self.refit_every < 0:
            raise bad("refit_every", "an int >= 0")
        if self.capacity is not None and (not _is_int(self.capacity) or self.capacity < 1):
            raise bad("capacity", "None or a positive int")
        if not _is_int(self.late_slots) or self.late_slots < 0:
            raise bad("late_slots", "an int >= 0")
        for f in ("refit_on_write", "keep_first"):
            if not isinstance(getattr(self, f), bool):
                raise bad(f, "True or False")

    def with_overrides(
        self,
        *,
        clip_length: int = 1,
        mem_every: int | None = None,
        refit_every: int | None = None,
        memory_frames: int | None = None,
        update_interval: int | None = None,
        late_slots: int | None = None,
        first_write: int | None = None,
    ) -> MemoryPolicy:
        """This policy adjusted by inference options (None = keep the policy's value).

        ``clip_length > 1`` writes at clip ends: every clip unless ``mem_every``
        says otherwise. ``update_interval`` is a model's own refit period (FRTM's
        t_s), used where the policy refits periodically and ``refit_every`` is None.
        """
        write_every = self.write_every if clip_length == 1 else clip_length
        if mem_every is not None:
            write_every = mem_every
        if refit_every is None:
            refit_every = self.refit_every
            if self.refit_every > 0 and _is_int(update_interval) and update_interval > 0:
                refit_every = update_interval
        capacity = self.capacity if memory_frames is None else memory_frames
        late = self.late_slots if late_slots is None else late_slots
        first = self.first_write if first_write is None else first_write
        return dataclasses.replace(
            self,
            write_every=write_every,
            refit_every=refit_every,
            capacity=capacity,
            late_slots=late,
            first_write=first,
        )


POLICIES: dict[str, MemoryPolicy] = {
    p.name: p
    for p in (
        MemoryPolicy("every_k", write_every=5),
        MemoryPolicy("first_last", write_every=1, capacity=2),
        MemoryPolicy("joint", write_every=5, refit_on_write=True),
        MemoryPolicy("frtm", write_every=1, refit_every=8),
    )
}


def get_policy(name: str) -> MemoryPolicy:
    """The policy named ``name``; an unknown name raises naming the valid ones."""
    if name not in POLICIES:
        raise VosjaxError(
            f"memory_policy={name!r} is not a memory policy; choose one of "
            f"{', '.join(repr(p) for p in ('auto',) + tuple(POLICIES))} ('auto' = the method's own)."
        )
    return POLICIES[name]


def policy_of(method_name: Any) -> MemoryPolicy:
    """The default policy of a registered method (``every_k`` for a model that is not one)."""
    if isinstance(method_name, str) and method_name in methods.method_names(segments=True):
        return get_policy(methods.get_method(method_name).memory_policy)
    return POLICIES["every_k"]
