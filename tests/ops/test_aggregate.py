"""Soft aggregation and label helpers against plain NumPy references."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from vosjax.errors import VosjaxError
from vosjax.ops import aggregate as agg

SHAPES = [(2, 3, 4, 5), (1, 1, 6), (2, 4, 2, 3, 3)]  # [B, O, ...]


def reference_soft_aggregate(probs, valid=None, eps=1e-7):
    """Pixel by pixel, object by object, in float64; invalid objects are simply skipped.

    The clip bounds are eps and 1 - eps as float32 represents them (1 - 1e-7
    rounds to 1 - 2**-23 in float32), since the kernel clips in float32.
    """
    lo, hi = float(np.float32(eps)), float(np.float32(1.0 - eps))
    probs = np.asarray(probs, np.float64)
    B, num = probs.shape[:2]
    valid = np.ones((B, num), bool) if valid is None else np.asarray(valid)
    out = np.zeros((B, num + 1) + probs.shape[2:])
    for b in range(B):
        bg = np.ones(probs.shape[2:])
        for i in range(num):
            if valid[b, i]:
                bg = bg * (1.0 - probs[b, i])
        channels = [bg] + [probs[b, i] for i in range(num)]
        for j, c in enumerate(channels):
            c = np.minimum(np.maximum(c, lo), hi)
            out[b, j] = np.log(c / (1.0 - c))
        for i in range(num):
            if not valid[b, i]:
                out[b, i + 1] = agg.INVALID_LOGIT
    return out


def _random_probs(seed, shape):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=shape).astype(np.float32)
    # Saturated values are the interesting edge: exact 0 and exact 1.
    p[rng.uniform(size=shape) < 0.1] = 0.0
    p[rng.uniform(size=shape) < 0.1] = 1.0
    return p


@functools.lru_cache(maxsize=None)
def _jit_aggregate(with_valid):
    if with_valid:
        return jax.jit(lambda p, v: agg.soft_aggregate(p, v))
    return jax.jit(lambda p: agg.soft_aggregate(p))


@given(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**31 - 1), use_valid=st.booleans())
def test_soft_aggregate_matches_reference(shape, seed, use_valid):
    p = _random_probs(seed, shape)
    rng = np.random.default_rng(seed + 1)
    valid = rng.uniform(size=shape[:2]) < 0.7 if use_valid else None
    got = _jit_aggregate(use_valid)(p, valid) if use_valid else _jit_aggregate(False)(p)
    want = reference_soft_aggregate(p, valid)
    assert got.shape == (shape[0], shape[1] + 1) + shape[2:] and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    probs = np.asarray(agg.logits_to_probs(got))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_soft_aggregate_unsaturated_values_are_tight():
    p = np.random.default_rng(0).uniform(0.05, 0.95, size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(agg.soft_aggregate(p)), reference_soft_aggregate(p), rtol=1e-5, atol=1e-5
    )


def test_worked_example():
    # Two objects at one pixel with p = 0.5 and 0.5: background 0.25.
    logits = agg.soft_aggregate(jnp.array([[[0.5], [0.5]]]))
    np.testing.assert_allclose(
        np.asarray(logits)[0, :, 0], [np.log(0.25 / 0.75), 0.0, 0.0], atol=1e-6
    )
    probs = np.asarray(agg.logits_to_probs(logits))[0, :, 0]
    # softmax of odds (1/3, 1, 1) -> (1/7, 3/7, 3/7)
    np.testing.assert_allclose(probs, [1 / 7, 3 / 7, 3 / 7], atol=1e-6)


def test_permutation_equivariance_over_objects():
    p = _random_probs(3, (2, 4, 3, 5))
    valid = np.array([[True, False, True, True], [True, True, True, False]])
    perm = np.array([2, 0, 3, 1])
    base = np.asarray(agg.soft_aggregate(p, valid))
    permuted = np.asarray(agg.soft_aggregate(p[:, perm], valid[:, perm]))
    np.testing.assert_allclose(
        permuted[:, 0], base[:, 0], rtol=1e-5, atol=1e-5
    )  # background unchanged
    np.testing.assert_allclose(permuted[:, 1:], base[:, 1 + perm], rtol=1e-5, atol=1e-5)


def test_invalid_slots_are_inert():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.05, 0.95, size=(1, 3, 4, 4)).astype(np.float32)
    valid = np.array([[True, False, True]])
    with_junk = p.copy()
    with_junk[:, 1] = 1.0  # a padding slot full of (garbage) certainty
    logits = np.asarray(agg.soft_aggregate(with_junk, valid))
    only_valid = np.asarray(agg.soft_aggregate(p[:, [0, 2]]))
    np.testing.assert_allclose(logits[:, [0, 1, 3]], only_valid, rtol=1e-6, atol=1e-6)
    assert (logits[:, 2] == agg.INVALID_LOGIT).all()
    probs = np.asarray(agg.logits_to_probs(jnp.asarray(logits)))
    assert (probs[:, 2] == 0.0).all()
    labels = np.asarray(agg.probs_to_labels(jnp.asarray(logits)))
    assert not (labels == 2).any()
    # No gradient reaches an invalid slot.
    g = jax.jit(
        jax.grad(
            lambda x: jnp.sum(
                agg.logits_to_probs(agg.soft_aggregate(x, jnp.asarray(valid)))[:, 1] ** 2
            )
        )
    )(jnp.asarray(with_junk))
    assert (np.asarray(g)[:, 1] == 0).all() and np.abs(np.asarray(g)[:, [0, 2]]).max() > 0


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        p = jnp.asarray(np.random.default_rng(5).uniform(0.1, 0.9, size=(2, 3, 4)))
        valid = jnp.array([[True, True, False], [True, True, True]])
        f = jax.jit(lambda x: agg.soft_aggregate(x, valid))
        check_grads(f, (p,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
        g = jax.jit(lambda x: agg.logits_to_probs(agg.soft_aggregate(x)))
        check_grads(g, (p,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_gradients_finite_at_saturated_probabilities(fill):
    p = jnp.full((1, 3, 2, 2), fill).at[:, 0, 0, 0].set(0.3)
    for valid in (None, jnp.array([[True, False, True]])):
        aggregate = functools.partial(agg.soft_aggregate, obj_valid=valid)

        def loss(x, aggregate=aggregate):
            return jnp.sum(jax.nn.log_softmax(aggregate(x), axis=1)[:, 1])

        g = jax.jit(jax.grad(loss))(p)
        assert bool(jnp.isfinite(g).all()), g
        h = jax.jit(jax.jacfwd(aggregate))(p)
        assert bool(jnp.isfinite(h).all())


def test_probs_logits_round_trip():
    logits = jax.random.normal(jax.random.PRNGKey(6), (2, 4, 3, 3))
    probs = agg.logits_to_probs(logits)
    np.testing.assert_allclose(
        np.asarray(agg.logits_to_probs(agg.probs_to_logits(probs))),
        np.asarray(probs),
        rtol=1e-5,
        atol=1e-7,
    )
    # softmax reference
    e = np.exp(np.asarray(logits, np.float64))
    np.testing.assert_allclose(np.asarray(probs), e / e.sum(axis=1, keepdims=True), rtol=1e-5)
    # probs_to_logits is log(max(p, eps)), elementwise
    p = np.array([[[0.0], [0.25], [0.75]]], np.float32)
    np.testing.assert_allclose(
        np.asarray(agg.probs_to_logits(p, eps=1e-6)), np.log(np.maximum(p, 1e-6)), rtol=1e-6
    )


def reference_one_hot(labels, ids):
    """ids: [B, O]."""
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[0], ids.shape[1]) + labels.shape[1:], np.float32)
    for b in range(labels.shape[0]):
        for i in range(ids.shape[1]):
            out[b, i] = (labels[b] == ids[b, i]).astype(np.float32)
    return out


def test_labels_to_one_hot_default_and_explicit_ids():
    labels = np.random.default_rng(7).integers(0, 5, size=(2, 3, 4, 5))  # ids 0..4, 4 is beyond O=3
    got = np.asarray(agg.labels_to_one_hot(labels, 3))
    assert got.dtype == np.float32 and got.shape == (2, 3, 3, 4, 5)
    np.testing.assert_array_equal(got, reference_one_hot(labels, np.array([[1, 2, 3]] * 2)))
    assert not got.sum(axis=1)[labels == 0].any() and not got.sum(axis=1)[labels == 4].any()
    ids = np.array([[4, 1], [2, 3]])
    np.testing.assert_array_equal(
        np.asarray(agg.labels_to_one_hot(labels, 2, ids)), reference_one_hot(labels, ids)
    )
    np.testing.assert_array_equal(
        np.asarray(agg.labels_to_one_hot(labels, 2, np.array([3, 4]))),
        reference_one_hot(labels, np.array([[3, 4]] * 2)),
    )


def test_probs_to_labels_inverts_one_hot():
    labels = np.random.default_rng(8).integers(0, 4, size=(2, 3, 6))
    one_hot = agg.labels_to_one_hot(labels, 3)
    with_bg = jnp.concatenate([1.0 - one_hot.sum(axis=1, keepdims=True), one_hot], axis=1)
    got = agg.probs_to_labels(with_bg)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), labels)
    # Through soft aggregation of the same masks (as the engine does).
    np.testing.assert_array_equal(
        np.asarray(agg.probs_to_labels(agg.soft_aggregate(one_hot))), labels
    )
    # Explicit, per-video ids round-trip too.
    ids = np.array([[7, 2, 9], [5, 6, 1]])
    mapped = np.zeros_like(labels)
    for b in range(2):
        for i in range(3):
            mapped[b][labels[b] == i + 1] = ids[b, i]
    oh = agg.labels_to_one_hot(mapped, 3, ids)
    np.testing.assert_array_equal(np.asarray(oh), np.asarray(one_hot))
    with_bg = jnp.concatenate([1.0 - oh.sum(axis=1, keepdims=True), oh], axis=1)
    np.testing.assert_array_equal(np.asarray(agg.probs_to_labels(with_bg, ids)), mapped)
    np.testing.assert_array_equal(np.asarray(jax.jit(agg.probs_to_labels)(with_bg, ids)), mapped)


def test_probs_to_labels_argmax_reference():
    x = np.random.default_rng(9).normal(size=(2, 4, 3, 5)).astype(np.float32)
    want = np.zeros((2, 3, 5), np.int32)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                want[b, i, j] = int(np.argmax(x[b, :, i, j]))
    np.testing.assert_array_equal(np.asarray(agg.probs_to_labels(x)), want)


def test_bad_input_raises_vosjax_error():
    p = jnp.zeros((2, 3, 4))
    with pytest.raises(VosjaxError, match="soft_aggregate.*'probs'.*at least 2"):
        agg.soft_aggregate(jnp.zeros((3,)))
    with pytest.raises(VosjaxError, match="'obj_valid' must have shape"):
        agg.soft_aggregate(p, jnp.ones((2, 2), bool))
    with pytest.raises(VosjaxError, match="'obj_valid' must be boolean"):
        agg.soft_aggregate(p, jnp.ones((2, 3)))
    with pytest.raises(VosjaxError, match="'eps' must lie in"):
        agg.soft_aggregate(p, eps=0.0)
    with pytest.raises(VosjaxError, match="must be floating point"):
        agg.soft_aggregate(p.astype(jnp.int32))
    with pytest.raises(VosjaxError, match="'labels' must be an integer"):
        agg.labels_to_one_hot(p, 3)
    with pytest.raises(VosjaxError, match="'num_objects' must be a positive int"):
        agg.labels_to_one_hot(p.astype(jnp.int32), 0)
    with pytest.raises(VosjaxError, match="'object_ids' must have shape"):
        agg.labels_to_one_hot(p.astype(jnp.int32), 3, jnp.array([1, 2]))
    with pytest.raises(VosjaxError, match="'object_ids' must have shape"):
        agg.probs_to_labels(p, jnp.array([1, 2, 3]))
