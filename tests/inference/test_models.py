"""The engine with the real networks (tiny configs, random weights): STCN per-frame and
per-clip, PCVOS per-clip with progressive matching, FRTM with its learner schedule (these two
are slow: compiling PCVOS's refinement and FRTM's Gauss-Newton fits takes minutes on a CPU;
the per-clip and progressive-matching paths themselves are covered by the stand-in tests)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vosjax.inference import Engine, EngineConfig, run_video
from vosjax.models import get_model

SIZE = (48, 64)


def _run(engine, variables, frames, given, num_objects=None, probs=False):
    preds = list(
        run_video(engine, variables, ((f, given.get(t)) for t, f in enumerate(frames)), num_objects)
    )
    assert [p.index for p in preds] == list(range(len(frames)))
    if probs:
        return np.stack([p.labels for p in preds]), [p.probs for p in preds]
    return np.stack([p.labels for p in preds])


@pytest.fixture(scope="module")
def video(tk):
    frames, labels = tk.make_video(9, SIZE, appear=(0, 0, 4), seed=8, noise=10)
    return frames, labels, tk.first_masks(labels)


def test_stcn_per_clip_equals_per_frame_with_first_frame_memory(tk, video):
    """With only the first frame in memory, reading frames together (per-clip) or one by one
    must give the same masks: the real memory network's clip path is exact."""
    from vosjax.models.stcn import default_config

    model = get_model(default_config("stcn", tiny=True))
    variables = tk.random_variables(model)
    frames, labels, given = video
    outs = []
    for clip in (1, 3):
        cfg = EngineConfig(max_objects=4, clip_length=clip, memory_frames=1, return_probs=True)
        engine = Engine(model, cfg)
        assert engine.model.memory_frames == 1 and model.memory_frames == 3
        outs.append(_run(engine, variables, frames, given, 3, probs=True))
        assert engine.num_traces == 1
    np.testing.assert_array_equal(outs[0][0][0], labels[0])
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert not np.any(outs[0][0][:4] == 3) and np.any(outs[0][0][4] == 3)


@pytest.mark.slow
def test_pcvos_per_clip_with_progressive_matching(tk, video):
    from vosjax.models.pcvos import default_config

    model = get_model(default_config(tiny=True))
    variables = tk.random_variables(model)
    frames, labels, given = video
    engine = Engine(model, EngineConfig(max_objects=4, clip_length=4, segment_len=2))
    assert engine.options.segment_len == 2
    pred = _run(engine, variables, frames, given, 3)
    assert pred.shape == labels.shape and engine.num_traces == 1
    np.testing.assert_array_equal(pred[0], labels[0])
    np.testing.assert_array_equal(pred[4][labels[4] == 3], 3)  # given frame of object 3
    assert set(np.unique(pred)) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_frtm_learner_refits_on_schedule(tk, video):
    frtm = pytest.importorskip("vosjax.models.frtm")
    model = get_model(frtm.default_config("fast", tiny=True))
    variables = tk.random_variables(model)
    frames, labels, given = video
    engine = Engine(model, EngineConfig(max_objects=2, bucket_objects=False, refit_every=3))
    assert engine.policy.name == "frtm"
    state = engine.init_state(variables, 1, SIZE)
    from vosjax.inference import ObjectTable

    table = ObjectTable(2, SIZE)
    w2 = []
    for t in range(7):
        masks, objs = (None, None)
        if t == 0:
            m, g = table.given(given[0])
            masks, objs = m[None], g[None]
        state, out = engine.step(variables, state, frames[t][None, None], masks, objs)
        w2.append(np.asarray(jax.device_get(state.memory.target["w2"])))
    assert engine.num_traces == 1
    changed = [t for t in range(1, 7) if not np.array_equal(w2[t], w2[t - 1])]
    assert changed == [3, 6]  # w2 refitted every 3 frames (w1 fixed), not in between
    counts = np.asarray(state.memory.samples.count)[0]
    capacity = model.config.memory_frames
    # 5 augmented first-frame samples, then at most one sample per later frame, up to the
    # capacity: a predicted mask with under 10 target pixels adds none (the authors'
    # Discriminator.update; checked in tests/learners/test_learners_frtm.py).
    assert all(5 <= c <= min(5 + 6, capacity) for c in counts), counts
