"""Depthwise convolution (fused shifted slices) against a loop-by-loop NumPy reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

from vosjax.errors import VosjaxError
from vosjax.ops.depthwise import depthwise_conv2d


def reference_depthwise(x, kernel, stride, padding):
    """Every output pixel of every channel as an explicit float64 sum over the window."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    b, h, w, c = x.shape
    kh, kw = kernel.shape[:2]
    ph, pw = padding
    xp = np.zeros((b, h + 2 * ph, w + 2 * pw, c))
    xp[:, ph : ph + h, pw : pw + w] = x
    ho, wo = (h + 2 * ph - kh) // stride + 1, (w + 2 * pw - kw) // stride + 1
    out = np.zeros((b, ho, wo, c))
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    window = xp[n, i * stride : i * stride + kh, j * stride : j * stride + kw, ch]
                    out[n, i, j, ch] = np.sum(window * kernel[:, :, 0, ch])
    return out


@functools.cache
def _jitted(stride, padding):
    return jax.jit(lambda x, k: depthwise_conv2d(x, k, stride, padding))


# A few compiled shapes; hypothesis varies the values and the seeds.
CASES = [
    ((2, 7, 9, 3), 3, 1, (1, 1)),
    ((1, 8, 11, 4), 3, 2, (1, 1)),  # even H, odd W: torch's ceil(n / 2) sizes
    ((1, 9, 6, 2), 5, 2, (2, 2)),
    ((2, 5, 5, 1), 3, 1, (0, 0)),
    ((1, 6, 7, 2), 1, 2, (0, 0)),
]


@settings(deadline=None, max_examples=15)
@given(case=st.sampled_from(CASES), seed=st.integers(0, 2**31 - 1))
def test_matches_numpy_reference(case, seed):
    shape, k, stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(size=(k, k, 1, shape[-1])).astype(np.float32)
    got = np.asarray(_jitted(stride, padding)(x, kernel))
    want = reference_depthwise(x, kernel, stride, padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_equals_grouped_convolution(stride):
    """Same numbers as XLA's grouped convolution with the same HWIO kernel (what nn.Conv
    with feature_group_count = C computes), so parameters are interchangeable."""
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(2, 13, 10, 6)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 1, 6)).astype(np.float32)
    want = lax.conv_general_dilated(
        x, kernel, (stride, stride), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6,
    )
    got = depthwise_conv2d(x, kernel, stride, (1, 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_gradients_match_finite_differences(stride):
    rng = np.random.default_rng(10 + stride)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(1, 6, 7, 2)), jnp.float64)
        kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 2)), jnp.float64)
        f = lambda a, k: depthwise_conv2d(a, k, stride, (1, 1))
        check_grads(f, (x, kernel), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_bfloat16_keeps_dtype_and_accumulates_in_float32():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 9, 9, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 1, 4)).astype(np.float32)
    xb, kb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16)
    got = depthwise_conv2d(xb, kb, 1, (1, 1))
    assert got.dtype == jnp.bfloat16
    want = reference_depthwise(np.asarray(xb, np.float32), np.asarray(kb, np.float32), 1, (1, 1))
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize(
    "x_shape,k_shape,stride,padding,match",
    [
        ((7, 9, 3), (3, 3, 1, 3), 1, (1, 1), "'x'"),
        ((1, 7, 9, 3), (3, 3, 3), 1, (1, 1), "'kernel'"),
        ((1, 7, 9, 3), (3, 3, 2, 3), 1, (1, 1), r"\[kh, kw, 1, C\]"),
        ((1, 7, 9, 3), (3, 3, 1, 4), 1, (1, 1), "channels"),
        ((1, 7, 9, 3), (3, 3, 1, 3), 0, (1, 1), "'stride'"),
        ((1, 2, 9, 3), (5, 5, 1, 3), 1, (0, 0), "does not fit"),
    ],
)
def test_bad_input_raises_clear_error(x_shape, k_shape, stride, padding, match):
    with pytest.raises(VosjaxError, match=match):
        depthwise_conv2d(jnp.zeros(x_shape), jnp.zeros(k_shape), stride, padding)
