"""Video record, lazy frame sequences, id <-> slot maps and on-device normalisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from vosjax.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LazyFrames,
    Video,
    davis_palette,
    denormalize_frames,
    normalize_frames,
    remap_to_slots,
    slots_to_labels,
)
from vosjax.errors import VosjaxError


def _reference_remap(labels, ids):
    out = np.zeros(labels.shape, np.int32)
    for idx in np.ndindex(labels.shape):
        v = int(labels[idx])
        out[idx] = ids.index(v) + 1 if v in ids else 0
    return out


@given(
    seed=st.integers(0, 2**31 - 1),
    ids=st.lists(st.integers(1, 12), min_size=1, max_size=4, unique=True),
)
def test_remap_to_slots_matches_pixel_loop_and_inverts(seed, ids):
    labels = np.random.default_rng(seed).integers(0, 13, (3, 5, 4)).astype(np.uint8)
    slots, mapping = remap_to_slots(labels, ids)
    assert slots.dtype == np.int32 and mapping == tuple(ids)
    np.testing.assert_array_equal(slots, _reference_remap(labels, ids))
    back = slots_to_labels(slots, mapping)
    np.testing.assert_array_equal(back, np.where(np.isin(labels, ids), labels, 0))


def test_remap_rejects_bad_ids():
    with pytest.raises(VosjaxError, match="distinct positive"):
        remap_to_slots(np.zeros((2, 2), np.uint8), [1, 1])
    with pytest.raises(VosjaxError, match="distinct positive"):
        remap_to_slots(np.zeros((2, 2), np.uint8), [0, 2])
    with pytest.raises(VosjaxError, match="slots must lie"):
        slots_to_labels(np.array([[3]]), (4, 5))


class _Counting:
    def __init__(self, arr):
        self.arr, self.calls = arr, []

    def __call__(self, i):
        self.calls.append(i)
        return self.arr[i]


def test_lazy_frames_decode_only_what_is_asked():
    arr = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    load = _Counting(arr)
    lazy = LazyFrames(5, load, (2, 3), np.uint8)
    assert len(lazy) == 5 and lazy.shape == (5, 2, 3) and lazy.ndim == 3 and load.calls == []
    np.testing.assert_array_equal(lazy[3], arr[3])
    np.testing.assert_array_equal(lazy[-1], arr[4])
    np.testing.assert_array_equal(lazy[1:4:2], arr[1:4:2])
    np.testing.assert_array_equal(lazy[[4, 0, 4]], arr[[4, 0, 4]])
    assert load.calls == [3, 4, 1, 3, 4, 0, 4]
    np.testing.assert_array_equal(np.asarray(lazy), arr)
    assert [x.sum() for x in lazy] == [x.sum() for x in arr]
    with pytest.raises(IndexError):
        lazy[5]
    bad = LazyFrames(2, lambda i: np.zeros((3, 3), np.uint8), (2, 3), np.uint8)
    with pytest.raises(VosjaxError, match="frame 0 has shape"):
        bad[0]


def _video(masks, first, annotated=None, ids=None):
    T, H, W = masks.shape
    return Video(
        name="v",
        frames=np.zeros((T, H, W, 3), np.uint8),
        masks=masks,
        annotated=np.ones(T, bool) if annotated is None else annotated,
        object_ids=tuple(sorted(first)) if ids is None else ids,
        first_frame=first,
        palette=davis_palette(),
        frame_names=tuple(f"{t:05d}" for t in range(T)),
    )


def test_video_first_appearance_mask_and_validation():
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, 0, 0] = 1
    masks[1, 0, 0] = 1
    masks[1, 2, 2] = 3
    v = _video(masks, {1: 0, 3: 1})
    assert v.num_frames == 3 and (v.height, v.width) == (4, 4)
    assert v.objects_first_appearing(1) == (3,)
    m = v.first_appearance_mask(1)
    assert m[2, 2] == 3 and m[0, 0] == 0 and m.sum() == 3
    assert v.first_appearance_mask(2) is None
    with pytest.raises(VosjaxError, match="first_frame keys"):
        _video(masks, {1: 0}, ids=(1, 3))
    with pytest.raises(VosjaxError, match="sorted"):
        _video(masks, {1: 0, 3: 1}, ids=(3, 1))
    with pytest.raises(VosjaxError, match="one entry per frame"):
        _video(masks, {1: 0, 3: 1}, annotated=np.ones(2, bool))


def test_normalize_frames_matches_numpy_reference_and_inverts():
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5, 3)).astype(np.uint8)
    ref = (x.astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    got = jax.jit(normalize_frames)(x)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(denormalize_frames(got)), x)
    # Linear in the input: the gradient is 1 / (255 std) per channel.
    small = jnp.asarray(
        np.random.default_rng(1).uniform(0, 2, (4, 5, 3)), jnp.float32
    )  # f32 finite differences
    check_grads(normalize_frames, (small,), order=1, modes=("rev",), eps=1e-2)
    g = jax.grad(lambda f: normalize_frames(f).sum())(jnp.ones((2, 3), jnp.float32))
    np.testing.assert_allclose(np.asarray(g[0]), 1.0 / (255.0 * np.array(IMAGENET_STD)), rtol=1e-6)
    with pytest.raises(VosjaxError, match="normalize_frames.*size 3"):
        normalize_frames(jnp.zeros((2, 4)))
