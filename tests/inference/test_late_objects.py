"""Objects that appear after frame 0 have their own memory (the real STCN network, tiny, random weights).

As in the authors' YouTube-VOS driver (STCN ``inference_core_yv.py``), an object
read only the frames written at or after its own first frame, and keeps that
first frame (``vosjax.memory_policy``). ``tests/models/test_stcn_yv_authors.py``
compares the whole path with the authors' driver.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.inference import Engine, EngineConfig
from vosjax.models import get_model
from vosjax.ops import memory as mem_ops

SIZE = (48, 64)


@pytest.fixture(scope="module")
def stcn(tk):
    from vosjax.models.stcn import default_config

    model = get_model(default_config("stcn", tiny=True))
    return model, tk.random_variables(model)


def _run(engine, variables, frames, given, slots=2):
    """Run the engine frame by frame; ``given``: frame -> slot label map. Returns the state."""
    state = engine.init_state(variables, 1, SIZE, slots)
    for t, frame in enumerate(frames):
        masks = given.get(t)
        state, _ = engine.step(
            variables, state, jnp.asarray(frame)[None, None], None if masks is None else jnp.asarray(masks)[None]
        )
    return state


def _logits(engine, variables, state, frame):
    from vosjax.inference import steps

    x, feats = steps.encode(engine.model, variables, jnp.asarray(frame)[None, None], SIZE)
    del x
    return np.asarray(
        engine.model.segment(variables, state.memory, feats, state.obj_valid, engine.options)
    )[0, :, 0]


def test_late_object_does_not_read_frames_before_it_appeared(tk, stcn):
    model, variables = stcn
    frames, labels = tk.make_video(5, SIZE, appear=(0, 3), seed=21, noise=8)
    a0 = np.where(labels[0] == 1, 1, 0).astype(np.uint8)
    both = labels[3].astype(np.uint8)  # object 2 appears, object 1's mask is given again
    given = {0: a0, 3: both}
    engine = Engine(model, EngineConfig(max_objects=2, memory_policy="every_k", mem_every=1))
    state = _run(engine, variables, frames[:4], given)

    rng = np.random.default_rng(0)
    altered = frames.copy()
    altered[:3] = rng.integers(0, 256, size=altered[:3].shape, dtype=np.uint8)  # frames 0-2
    state2 = _run(engine, variables, altered[:4], given)

    got, got2 = (_logits(engine, variables, s, frames[4]) for s in (state, state2))
    np.testing.assert_allclose(got2[1], got[1], rtol=1e-5, atol=1e-5)  # object 2: unchanged
    assert np.abs(got2[0] - got[0]).max() > 1e-3  # object 1 reads frames 0-2: changed
    bank = jax.device_get(state.memory)  # 3 slots: frame 0 kept, frame 3 kept, frame 2
    time, first = bank.time[0], bank.first[0]
    assert (time[first[0]], time[first[1]]) == (0, 3)
    ov = np.asarray(mem_ops.bank_object_valid(bank))[0]
    assert sorted(time[ov[:, 0]].tolist()) == [0, 2, 3] and time[ov[:, 1]].tolist() == [3]
    # the shared readout of the same bank (all objects over all slots) would have changed it
    q = jnp.asarray(bank.keys[:, 0])  # some query keys
    shared = [np.asarray(mem_ops.bank_read(s.memory, q, 20)) for s in (state, state2)]
    cv = shared[0].shape[-1] // 2
    assert np.abs(shared[0][..., cv:] - shared[1][..., cv:]).max() > 1e-3


@pytest.mark.parametrize("late_slots", [0, 1])
def test_first_last_keeps_the_late_objects_first_frame(tk, stcn, late_slots):
    model, variables = stcn
    frames, labels = tk.make_video(13, SIZE, appear=(0, 2), seed=22, noise=8)
    given = tk.first_masks(labels)
    assert sorted(given) == [0, 2]
    cfg = EngineConfig(max_objects=2, memory_policy="first_last", late_slots=late_slots)
    engine = Engine(model, cfg)
    state = _run(engine, variables, frames, given)  # frames 0..12 written (one write per frame)
    bank = jax.device_get(state.memory)
    assert bank.keys.shape[1] == 2 + late_slots
    time = bank.time[0]
    first = bank.first[0]
    assert time[first[1]] == 2 and time[first[0]] == 0  # 10 frames later: both first frames kept
    recent = 1 if late_slots else None  # what STCN.read_memory uses
    ov = np.asarray(mem_ops.bank_object_valid(bank, recent))[0]
    read = [sorted(time[ov[:, i]].tolist()) for i in range(2)]
    if late_slots:  # each object: its first frame + the last frame (TrickVOS per object)
        assert read == [[0, 12], [2, 12]]
    else:  # 2 slots, both kept: no room for the last frame (memory_policy docstring)
        assert read == [[0, 2], [2]]
