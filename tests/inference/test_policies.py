"""Memory / learner / correction schedules: resolution, masks, clip planning, and what the
engine actually passes to the model (read back from the stand-in model's call history)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.errors import VosjaxError
from vosjax.inference import Engine, EngineConfig, VideoSegmenter, plan_clips, resolve_policy
from vosjax.inference.policies import correction_mask, default_policy, refit_mask, write_mask


def test_plan_clips():
    given = [True] + [False] * 6 + [True] + [False] * 4  # 12 frames, masks at 0 and 7
    assert plan_clips(given, 1) == [(t, t + 1) for t in range(12)]
    assert plan_clips(given, 3) == [(0, 1), (1, 4), (4, 7), (7, 8), (8, 11), (11, 12)]
    assert plan_clips(given, 5) == [(0, 1), (1, 6), (6, 8), (8, 12)]
    assert plan_clips([False] * 4, 10) == [(0, 4)]
    assert plan_clips([], 3) == []
    with pytest.raises(VosjaxError, match="clip_length"):
        plan_clips(given, 0)


def test_resolve_policy_against_model_configs():
    s = resolve_policy(EngineConfig(), {"name": "stcn", "memory_frames": 16})
    assert (s.name, s.write_every, s.refit_every, s.capacity) == ("every_k", 5, 0, None)
    s = resolve_policy(EngineConfig(), {"name": "trickvos"})
    assert (s.name, s.write_every, s.capacity) == ("first_last", 1, 2)
    s = resolve_policy(EngineConfig(), {"name": "joint"})
    assert (s.name, s.write_every, s.refit_on_write) == ("joint", 5, True)
    s = resolve_policy(EngineConfig(), {"name": "frtm", "update_interval": 6})
    assert (s.name, s.write_every, s.refit_every) == ("frtm", 1, 6)
    s = resolve_policy(EngineConfig(refit_every=3), {"name": "frtm", "update_interval": 6})
    assert s.refit_every == 3
    s = resolve_policy(EngineConfig(clip_length=5), {"name": "trickvos"})
    assert (s.write_every, s.capacity) == (5, 2)
    s = resolve_policy(EngineConfig(memory_policy="every_k", memory_frames=4), {"name": "frtm"})
    assert (s.name, s.capacity, s.refit_every) == ("every_k", 4, 0)
    assert default_policy("pcvos") == "every_k" and default_policy(None) == "every_k"


def test_masks():
    c = EngineConfig(memory_policy="frtm", refit_every=4, correction_every=3)
    s = resolve_policy(c)
    since = jnp.array([0, 1, 4, 5])
    given = jnp.array([True, False, False, False])
    np.testing.assert_array_equal(write_mask(s, since, given), [True, True, True, True])
    w = jnp.array([True, False, True, True])
    np.testing.assert_array_equal(refit_mask(s, since, w, given), [True, False, True, True])
    t = jnp.arange(8)
    np.testing.assert_array_equal(
        correction_mask(c.correction_every, t, t != 6), [False, False, False, True, False, False, False, False]
    )
    assert not np.any(correction_mask(EngineConfig().correction_every, t, t >= 0))
    j = resolve_policy(EngineConfig(memory_policy="joint"))
    np.testing.assert_array_equal(
        refit_mask(j, jnp.array([9, 9]), jnp.array([True, False]), jnp.array([False, False])),
        [True, False],
    )


T = 12
GIVEN_AT = (0, 7)


def _flags(tk, toy_variables, config: EngineConfig, model_config=None) -> tuple[list[int], Engine]:
    """Per memorize call (one per clip): write + 2 * refit, as the model received them."""
    model = tk.ColorMemory(model_config or {"name": "colormem", "memory_frames": 3})
    frames, labels = tk.make_video(T, (16, 24), appear=(0, 7), seed=0, speed=1.0)
    given = tk.first_masks(labels)
    assert sorted(given) == list(GIVEN_AT)
    engine = Engine(model, config)
    seg = VideoSegmenter((engine, toy_variables))
    n = sum(len(seg.step(f, given.get(t))) for t, f in enumerate(frames)) + len(seg.flush())
    assert n == T
    mem = seg._state.memory
    calls = int(mem["calls"][0])
    return [int(v) for v in np.asarray(mem["history"][0, :calls])], engine


def _expected(write_frames, refit_frames, clip_ends):
    return [int(t in write_frames) + 2 * int(t in refit_frames) for t in clip_ends]


ALL = list(range(T))


@pytest.mark.parametrize(
    "config, model_config, writes, refits, clip_ends, capacity",
    [
        # STCN: every k-th frame (k = 3 here); a given frame restarts the period.
        (
            EngineConfig(max_objects=2, memory_policy="every_k", mem_every=3),
            None,
            {0, 3, 6, 7, 10},
            {0, 7},
            ALL,
            3,
        ),
        # TrickVOS: first + last frame: every frame written, capacity 2.
        (EngineConfig(max_objects=2, memory_policy="first_last"), None, set(ALL), {0, 7}, ALL, 2),
        # JOINT: a template every 5 frames, the learner refits when one is added.
        (EngineConfig(max_objects=2, memory_policy="joint"), None, {0, 5, 7}, {0, 5, 7}, ALL, 3),
        # JOINT's tracker (DAVIS): mem_every 3, the first periodic write 1 frame after a given
        # frame (frames 1, 4, 7, ...; again 1 after the late object's frame 7).
        (
            EngineConfig(max_objects=2, memory_policy="joint", mem_every=3, first_write=1),
            None,
            {0, 1, 4, 7, 8, 11},
            {0, 1, 4, 7, 8, 11},
            ALL,
            3,
        ),
        # FRTM: a sample every frame, refit every t_s frames (t_s from the model config).
        (
            EngineConfig(max_objects=2, memory_policy="auto"),
            {"name": "frtm", "memory_frames": 3, "update_interval": 4},
            set(ALL),
            {0, 4, 7, 11},
            ALL,
            3,
        ),
        # PCVOS: per-clip, memory written at the end of every clip of L = 3 frames; the
        # clip holding frame 7 (late object) ends there.
        (
            EngineConfig(max_objects=2, clip_length=3),
            None,
            {0, 3, 6, 7, 10},
            {0, 7},
            [0, 3, 6, 7, 10, 11],
            3,
        ),
    ],
    ids=["every_k", "first_last", "joint", "joint_first_write", "frtm", "per_clip"],
)
def test_engine_passes_the_schedule_to_the_model(
    tk, toy_variables, config, model_config, writes, refits, clip_ends, capacity
):
    flags, engine = _flags(tk, toy_variables, config, model_config)
    assert flags == _expected(writes, refits, clip_ends)
    assert engine.model.memory_frames == capacity
    assert engine.num_traces == 1
