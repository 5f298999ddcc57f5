"""Noisy reference masks (vosjax.robustness) against loop references."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vosjax import robustness
from vosjax.errors import VosjaxError


def _np_box(m):
    out = np.zeros_like(m)
    for o in range(m.shape[0]):
        ys, xs = np.nonzero(m[o] > 0)
        if len(ys):
            out[o, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    return out


def _np_morph(m, r, grow):
    h, w = m.shape[-2:]
    out = np.zeros_like(m)
    for o in range(m.shape[0]):
        for i in range(h):
            for j in range(w):
                win = [m[o, a, b] > 0.5 if 0 <= a < h and 0 <= b < w else False
                       for a in range(i - r, i + r + 1) for b in range(j - r, j + r + 1)]
                out[o, i, j] = any(win) if grow else all(win)
    return out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_box_erode_dilate_match_loops(seed):
    rng = np.random.default_rng(seed)
    m = (rng.uniform(size=(3, 7, 9)) > 0.7).astype(np.float32)
    m[2] = 0  # empty map stays empty
    np.testing.assert_array_equal(robustness.box_masks(m), _np_box(m))
    np.testing.assert_array_equal(robustness.dilate(m, 1), _np_morph(m, 1, True))
    np.testing.assert_array_equal(robustness.erode(m, 1), _np_morph(m, 1, False))


def test_low_quality_is_a_worse_mask_of_the_same_object():
    m = np.zeros((2, 20, 20), np.float32)
    m[0, 5:15, 5:15] = 1
    m[1, 2:8, 10:18] = 1
    lq = np.asarray(robustness.low_quality_masks(jax.random.PRNGKey(0), m, radius=2, flip=0.02))
    for o in range(2):
        iou = (lq[o] * m[o]).sum() / np.maximum(lq[o], m[o]).sum()
        assert 0.3 < iou < 0.95
    assert set(np.unique(lq)) <= {0.0, 1.0}
    with pytest.raises(VosjaxError):
        robustness.low_quality_masks(jax.random.PRNGKey(0), m, radius=-1)
