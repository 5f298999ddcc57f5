"""Frame samplers: every method's rules hold on random annotation patterns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vosjax.data.samplers import (
    SamplerOptions,
    default_num_frames,
    sample_frame_indices,
    sampler_spec,
    schedule_value,
)
from vosjax.errors import VosjaxError


def _candidates(seed, n, every):
    rng = np.random.default_rng(seed)
    cand = np.arange(0, n, every)
    drop = rng.uniform(size=cand.size) < 0.2
    drop[0] = False
    return cand[~drop]


def _max_step_to_next_candidate(cand, a, b):
    """Largest gap between consecutive candidates inside [a, b] (the best any sampler can do)."""
    inside = cand[(cand >= a) & (cand <= b)]
    return int(np.diff(inside).max()) if inside.size > 1 else 0


@given(
    seed=st.integers(0, 10**6),
    n=st.integers(1, 120),
    every=st.sampled_from([1, 5]),
    progress=st.floats(0, 1.2),
)
def test_gap_samplers_respect_their_schedule(seed, n, every, progress):
    cand = _candidates(seed, n, every)
    rng = np.random.default_rng(seed)
    for name in ("stcn", "trickvos", "cyclic"):
        idx, extra = sample_frame_indices(name, rng, cand, progress)
        g = schedule_value(sampler_spec(name).gap_schedule, progress)
        assert extra["max_gap"] == g and idx.dtype == np.int32
        assert len(idx) == default_num_frames(name) and set(idx.tolist()) <= set(cand.tolist())
        fwd = np.sort(idx)
        if cand.size >= len(idx):
            assert len(set(idx.tolist())) == len(idx)
            for a, b in zip(fwd[:-1], fwd[1:]):
                # Within the gap, unless the annotations themselves are sparser than the gap.
                assert b - a <= max(g, _max_step_to_next_candidate(cand, a, b))
        if name == "cyclic":
            np.testing.assert_array_equal(idx, fwd)  # the earliest frame is the reference
        else:
            assert np.array_equal(idx, fwd) or np.array_equal(idx, fwd[::-1])


@given(seed=st.integers(0, 10**6), n=st.integers(7, 150), progress=st.floats(0, 1))
def test_pcvos_reference_then_two_clips(seed, n, progress):
    cand = np.arange(n)
    idx, extra = sample_frame_indices("pcvos", np.random.default_rng(seed), cand, progress)
    inter = schedule_value(sampler_spec("pcvos").gap_schedule, progress)
    assert len(idx) == 7 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(extra["clip_id"], [0, 1, 1, 1, 2, 2, 2])
    gaps = np.diff(idx)
    assert gaps[0] <= inter and gaps[3] <= inter  # into each clip
    assert max(gaps[[1, 2, 4, 5]]) <= 5  # inside the clips


def test_pcvos_inter_clip_gap_goes_5_to_15_to_5():
    s = sampler_spec("pcvos").gap_schedule
    vals = [schedule_value(s, p) for p in np.linspace(0, 0.999, 200)]
    assert vals[0] == 5 and max(vals) == 15 and vals[-1] == 5
    peak = vals.index(15)
    assert all(a <= b for a, b in zip(vals[:peak], vals[1 : peak + 1]))
    assert all(a >= b for a, b in zip(vals[peak:-1], vals[peak + 1 :]))
    cyc = [schedule_value(sampler_spec("cyclic").gap_schedule, e / 240) for e in range(240)]
    assert cyc[0] == 5 and cyc[20] == 10 and cyc[239] == 60  # +5 every 20 of 240 epochs


@given(seed=st.integers(0, 10**6), n=st.integers(1, 300))
def test_frtm_and_joint(seed, n):
    cand = np.arange(n)
    rng = np.random.default_rng(seed)
    idx, _ = sample_frame_indices("frtm", rng, cand, 0.5)
    assert len(idx) == 3 and np.all(np.diff(idx[1:]) >= 0)
    if n >= 3:
        assert len(set(idx.tolist())) == 3
    idx, _ = sample_frame_indices("frtm", rng, cand, 0.5, SamplerOptions(max_gap=10))
    assert idx.max() - idx.min() <= 10
    idx, _ = sample_frame_indices("joint", rng, cand, 0.5)
    assert len(idx) == 4 and np.all(np.diff(idx) >= 0) and idx[-1] - idx[0] < 100
    if n >= 4:
        assert np.all(np.diff(idx) > 0)
    idx, _ = sample_frame_indices("static", rng, cand, 0.5)
    assert len(set(idx.tolist())) == 1


def test_sampler_errors():
    with pytest.raises(VosjaxError, match="unknown sampler 'xmem'"):
        sample_frame_indices("xmem", np.random.default_rng(0), np.arange(5), 0.0)
    with pytest.raises(VosjaxError, match="at least one annotated frame"):
        sample_frame_indices("stcn", np.random.default_rng(0), np.arange(0), 0.0)
    with pytest.raises(VosjaxError, match="1 \\+ 2 \\* clip_length"):
        default_num_frames("pcvos", SamplerOptions(num_frames=5))
    with pytest.raises(VosjaxError, match="gap_schedule"):
        sample_frame_indices(
            "stcn",
            np.random.default_rng(0),
            np.arange(5),
            0.0,
            SamplerOptions(gap_schedule=((0.5, 3), (0.2, 4))),
        )
