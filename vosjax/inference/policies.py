"""The memory policy and the correction schedule as boolean masks (computed inside ``jit``).

The engine never branches in Python on the frame number: every decision is a
mask over videos (``bool[B]``) computed from integer counters of the engine
state, so one compiled step serves a whole video. :func:`resolve_policy`
turns an :class:`~vosjax.inference.config.EngineConfig` (a policy name and
overrides) and the model's config into the static
:class:`~vosjax.memory_policy.MemoryPolicy` the engine and the model use; the
functions below evaluate it.

Counters (per video): ``t`` the index in the video of a frame,
``since_write`` frames since the last written frame, ``since_refit`` frames
since the last refit. With no object appearing mid-video these give exactly
the schedules of the papers:

- write frame ``t`` iff ``t % k == 0`` per-frame (STCN every 5th frame, JOINT
  a template every T = 5 frames), every frame for TrickVOS's first + last
  memory and FRTM's sample memory, the last frame of every clip (PCVOS); with
  ``first_write = f`` iff ``t >= f`` and ``(t - f) % k == 0`` (JOINT's tracker: frames
  1, 4, 7, ... for k = 3, f = 1; :func:`write_reset`);
- refit (learners) iff ``t % t_s == 0`` for FRTM (t_s = 8), whenever a
  template is written for JOINT;
- gradient correction of frame ``t`` iff ``t % K == 0`` and ``t > 0``.

Frames carrying given masks (the first frame; objects appearing later) are
always written and refitted, and restart the write / refit periods, so a
periodic schedule keeps its period after a clip was cut short at such a frame.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from vosjax.inference.config import EngineConfig
from vosjax.memory_policy import MemoryPolicy, get_policy, policy_of

__all__ = [
    "correction_mask",
    "default_policy",
    "refit_mask",
    "resolve_policy",
    "write_mask",
    "write_reset",
]


def _model_field(model_config: Any, name: str) -> Any:
    if model_config is None:
        return None
    try:
        return model_config[name]
    except (KeyError, TypeError, AttributeError):
        return getattr(model_config, name, None)


def default_policy(model_name: str | None) -> str:
    """The memory policy a method's record names (``every_k`` for a model that is not registered)."""
    return policy_of(model_name).name


def resolve_policy(config: EngineConfig, model_config: Any = None) -> MemoryPolicy:
    """The policy ``config.memory_policy`` names, with ``config``'s overrides applied.

    ``auto`` picks the method's own (:func:`default_policy` of
    ``model_config.name``). A periodic refit defaults to the model's
    ``update_interval`` (FRTM's t_s) when it has one.
    """
    name = config.memory_policy
    if name == "auto":
        name = default_policy(_model_field(model_config, "name"))
    return get_policy(name).with_overrides(
        clip_length=config.clip_length,
        mem_every=config.mem_every,
        refit_every=config.refit_every,
        memory_frames=config.memory_frames,
        late_slots=config.late_slots,
        update_interval=_model_field(model_config, "update_interval"),
        first_write=config.first_write,
    )


def write_mask(
    policy: MemoryPolicy, since_write: Int[Array, " B"], given: Bool[Array, " B"]
) -> Bool[Array, " B"]:
    """Write the frame that ends this step? ``since_write >= write_every`` or masks given.

    ``since_write`` counts the frames since the last written one INCLUDING
    the frames of this step up to the candidate frame.
    """
    return (since_write >= policy.write_every) | given


def write_reset(policy: MemoryPolicy, given: Bool[Array, " B"]) -> Int[Array, " B"]:
    """``since_write`` after a written frame: 0, or ``write_every - first_write`` where masks
    were given, so that the next periodic write comes ``first_write`` frames later."""
    first = policy.write_every if policy.first_write is None else policy.first_write
    return jnp.where(given, policy.write_every - first, 0).astype(jnp.int32)


def refit_mask(
    policy: MemoryPolicy,
    since_refit: Int[Array, " B"],
    write: Bool[Array, " B"],
    given: Bool[Array, " B"],
) -> Bool[Array, " B"]:
    """Refit the learners at this frame? Periodic, on writes (JOINT), or where masks are given."""
    out = given
    if policy.refit_every > 0:
        out = out | (since_refit >= policy.refit_every)
    if policy.refit_on_write:
        out = out | write
    return out


def correction_mask(
    every: int, t: Int[Array, "*shape"], valid: Bool[Array, "*shape"]
) -> Bool[Array, "*shape"]:
    """Correct frame ``t``? ``t % K == 0`` and ``t > 0`` with ``K = every`` (0 = never; frame 0
    carries the given masks)."""
    if every <= 0:
        return jnp.zeros(jnp.shape(t), bool)
    return valid & (t > 0) & (t % every == 0)
