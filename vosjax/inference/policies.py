"""Memory, learner, correction and clip schedules as boolean masks (computed inside ``jit``).

The engine never branches in Python on the frame number: every decision is a
mask over videos (``bool[B]``) computed from integer counters of the engine
state, so one compiled step serves a whole video. :func:`resolve_schedule`
turns an :class:`~vosjax.inference.config.EngineConfig` and the model's own
config into a static :class:`Schedule`; the functions below evaluate it.

Counters (per video): ``t`` the index in the video of a frame,
``since_write`` frames since the last written frame, ``since_refit`` frames
since the last refit. With no object appearing mid-video these give exactly
the schedules of the papers:

- write frame ``t`` iff ``t % k == 0`` per-frame (STCN every 5th frame, JOINT
  a template every T = 5 frames), every frame for TrickVOS's first + last
  memory and FRTM's sample memory, the last frame of every clip (PCVOS);
- refit (learners) iff ``t % t_s == 0`` for FRTM (t_s = 8), whenever a
  template is written for JOINT;
- gradient correction of frame ``t`` iff ``t % K == 0`` and ``t > 0``.

Frames carrying given masks (the first frame; objects appearing later) are
always written and refitted, and restart the write / refit periods, so a
periodic schedule keeps its period after a clip was cut short at such a frame.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from vosjax.inference.clips import plan_clips  # re-exported (defined with ClipBuffer)
from vosjax.inference.config import EngineConfig

__all__ = [
    "Schedule",
    "correction_mask",
    "default_policy",
    "plan_clips",
    "refit_mask",
    "resolve_schedule",
    "write_mask",
]

# Registry names of the models -> their paper's memory policy.
_MODEL_POLICY = {"trickvos": "first_last", "joint": "joint", "frtm": "frtm"}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Resolved, static schedule of one engine.

    Attributes:
      policy: the memory policy name.
      write_every: write a frame when this many frames passed since the last write.
      refit_every: refit when this many frames passed since the last refit (0 = never
        periodically).
      refit_on_write: refit whenever a frame is written (JOINT).
      capacity: memory capacity in frames to build the model with (None = the model's).
      correction_every: gradient correction period K (0 = off).
    """

    policy: str
    write_every: int
    refit_every: int
    refit_on_write: bool
    capacity: int | None
    correction_every: int


def _model_field(model_config: Any, name: str) -> Any:
    if model_config is None:
        return None
    try:
        return model_config[name]
    except (KeyError, TypeError, AttributeError):
        return getattr(model_config, name, None)


def default_policy(model_name: str | None) -> str:
    """The paper's memory policy of a registry model name (``every_k`` for memory networks)."""
    return _MODEL_POLICY.get(str(model_name), "every_k")


def resolve_schedule(config: EngineConfig, model_config: Any = None) -> Schedule:
    """Resolve ``memory_policy="auto"`` and the None defaults against the model config.

    ``auto`` picks the model's paper policy (:func:`default_policy` of
    ``model_config.name``). FRTM's refit period defaults to the model's
    ``update_interval`` (t_s) when it has one. The capacity is only changed
    where the policy defines it (``first_last``: 2) or ``memory_frames`` asks.
    """
    policy = config.memory_policy
    if policy == "auto":
        policy = default_policy(_model_field(model_config, "name"))
    resolved = config.replace(memory_policy=policy)
    refit_every = resolved.refit_period
    if config.refit_every is None and policy == "frtm":
        interval = _model_field(model_config, "update_interval")
        if isinstance(interval, int) and not isinstance(interval, bool) and interval > 0:
            refit_every = interval
    return Schedule(
        policy=policy,
        write_every=resolved.write_every,
        refit_every=refit_every,
        refit_on_write=resolved.refit_on_write,
        capacity=resolved.capacity,
        correction_every=config.correction_every,
    )


def write_mask(
    schedule: Schedule, since_write: Int[Array, " B"], given: Bool[Array, " B"]
) -> Bool[Array, " B"]:
    """Write the frame that ends this step? ``since_write >= write_every`` or masks given.

    ``since_write`` counts the frames since the last written one INCLUDING
    the frames of this step up to the candidate frame.
    """
    return (since_write >= schedule.write_every) | given


def refit_mask(
    schedule: Schedule,
    since_refit: Int[Array, " B"],
    write: Bool[Array, " B"],
    given: Bool[Array, " B"],
) -> Bool[Array, " B"]:
    """Refit the learners at this frame? Periodic, on writes (JOINT), or where masks are given."""
    out = given
    if schedule.refit_every > 0:
        out = out | (since_refit >= schedule.refit_every)
    if schedule.refit_on_write:
        out = out | write
    return out


def correction_mask(
    schedule: Schedule, t: Int[Array, "*shape"], valid: Bool[Array, "*shape"]
) -> Bool[Array, "*shape"]:
    """Correct frame ``t``? ``t % K == 0`` and ``t > 0`` (frame 0 carries the given masks)."""
    k = schedule.correction_every
    if k <= 0:
        return jnp.zeros(jnp.shape(t), bool)
    return valid & (t > 0) & (t % k == 0)
