"""Constant cost per frame on a long video (slow: 1000 frames)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.inference import Engine, EngineConfig, ObjectTable
from vosjax.models import get_model
from vosjax.models.stcn import default_config


def _copy(tree):
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


@pytest.mark.slow
def test_constant_cost_per_frame_over_1000_frames(tk):
    """The memory is bounded (TrickVOS: first + last frame), so a step costs the same at frame
    900 as at frame 10: the mean step time of the last 100 frames is within 10 % of frames
    10-110, with no compilation after the first step.

    The video is processed straight through (1000 frames); the states before frame 10 and
    before frame 900 are kept, and the two 100-frame windows are then replayed from them
    interleaved step by step, so that other processes on a shared machine load both windows
    alike (the straight-through times are in the failure message).
    """
    model = get_model(default_config("trickvos", tiny=True))
    variables = tk.random_variables(model)
    n, size = 1000, (48, 64)
    frames, labels = tk.make_video(n, size, appear=(0, 0, 300), seed=0, speed=1.0)
    given = tk.first_masks(labels)
    engine = Engine(model, EngineConfig(max_objects=3, bucket_objects=False))
    table = ObjectTable(3, size)
    state = engine.init_state(variables, 1, size)
    saved, straight = {}, []

    def step(state, t):
        masks, objects = (None, None)
        if t in given:
            m, g = table.given(given[t])
            masks, objects = m[None], g[None]
        state, out = engine.step(variables, state, frames[t][None, None], masks, objects)
        jax.block_until_ready(out.labels)
        return state, out

    for t in range(n):
        if t in (10, n - 100):
            saved[t] = _copy(state)
        start = time.perf_counter()
        state, out = step(state, t)
        straight.append(time.perf_counter() - start)
    assert engine.num_traces == 1
    assert int(state.frame_count[0]) == n and bool(state.obj_valid[0, 2])
    # The object that appeared at frame 300 is tracked at the end.
    assert np.any(np.asarray(out.labels) == 3)

    a, b = saved[10], saved[n - 100]
    times_a, times_b = [], []
    for i in range(100):
        for which in ("a", "b"):
            t0 = (10 if which == "a" else n - 100) + i
            start = time.perf_counter()
            if which == "a":
                a, _ = step(a, t0)
                times_a.append(time.perf_counter() - start)
            else:
                b, _ = step(b, t0)
                times_b.append(time.perf_counter() - start)
    early, late = float(np.mean(times_a)), float(np.mean(times_b))
    straight = np.asarray(straight)
    assert engine.num_traces == 1
    assert abs(late / early - 1.0) < 0.10, (
        f"frames 10-110: {early * 1e3:.1f} ms, last 100: {late * 1e3:.1f} ms per step "
        f"(straight through: {straight[10:110].mean() * 1e3:.1f} / {straight[-100:].mean() * 1e3:.1f} ms)"
    )
