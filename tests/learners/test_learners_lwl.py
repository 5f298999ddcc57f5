"""Tests of vosjax.learners.lwl: the LWL / JOINT induction learner (JOINT eq. 6).

References: a loop convolution, an im2col design matrix and the closed-form
ridge solution of eq. 6 by numpy.linalg.solve, and one steepest-descent step
written out in NumPy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vosjax.errors import VosjaxError
from vosjax.learners import lwl

N, H, W, C, D, K = 2, 5, 6, 3, 2, 3


def np_im2col(z, k):
    """[N, h, w, C] -> [N*h*w, k*k*C] patches of a zero-padded 'SAME' cross-correlation."""
    n, h, w, _ = z.shape
    p = k // 2
    zp = np.pad(z, ((0, 0), (p, p), (p, p), (0, 0)))
    rows = []
    for b in range(n):
        for i in range(h):
            for j in range(w):
                rows.append(zp[b, i : i + k, j : j + k, :].reshape(-1))
    return np.asarray(rows, np.float64)


def np_apply(filt, z):
    k = filt.shape[0]
    return (np_im2col(z, k) @ filt.reshape(-1, filt.shape[-1])).reshape(
        z.shape[:3] + (filt.shape[-1],)
    )


def problem(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(N, H, W, C)).astype(np.float32)
    e = rng.normal(size=(N, H, W, D)).astype(np.float32)
    wts = rng.uniform(0.2, 1.5, size=(N, H, W, D)).astype(np.float32)
    f0 = (0.1 * rng.normal(size=(K, K, C, D))).astype(np.float32)
    reg = np.float32(rng.uniform(0.3, 1.0))
    return z, e, wts, reg, f0


def np_closed_form(z, e, wts, reg):
    """argmin 0.5 sum |W (A w_d - e_d)|^2 + 0.5 reg^2 |w|^2, one ridge problem per output channel."""
    a = np_im2col(z, K)
    cols = []
    for d in range(D):
        wd = wts[..., d].reshape(-1).astype(np.float64) ** 2
        lhs = a.T @ (wd[:, None] * a) + float(reg) ** 2 * np.eye(a.shape[1])
        cols.append(np.linalg.solve(lhs, a.T @ (wd * e[..., d].reshape(-1))))
    return np.stack(cols, -1).reshape(K, K, C, D)


@functools.partial(jax.jit, static_argnames="num_iters")
def run_fit(z, e, wts, reg, f0, num_iters):
    return lwl.fit(z, e, wts, reg, f0, num_iters, return_losses=True)


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_apply_matches_numpy_convolution(seed):
    z, _, _, _, f0 = problem(seed)
    got = jax.jit(lwl.apply)(f0, z)
    np.testing.assert_allclose(
        np.asarray(got), np_apply(f0.astype(np.float64), z), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("k,c,d", [(1, 4, 3), (3, 5, 2), (5, 2, 7)])
def test_matmul_shift_convolution_matches_numpy(k, c, d):
    """The conv used by both target models (one matmul + shifted adds), incl. its transposes."""
    from vosjax.learners._conv import conv_same

    rng = np.random.default_rng(k)
    z = rng.normal(size=(2, 6, 7, c)).astype(np.float32)
    filt = rng.normal(size=(k, k, c, d)).astype(np.float32)
    got = jax.jit(conv_same)(z, filt)
    np.testing.assert_allclose(
        np.asarray(got), np_apply(filt.astype(np.float64), z), rtol=1e-5, atol=1e-5
    )
    # the transposes are checked through the VJP against the transposed im2col matrix
    ct = rng.normal(size=got.shape)
    _, vjp = jax.vjp(conv_same, jnp.asarray(z), jnp.asarray(filt))
    gz, gf = vjp(jnp.asarray(ct, jnp.float32))
    a = np_im2col(z, k)
    np.testing.assert_allclose(
        np.asarray(gf).reshape(-1, d), a.T @ ct.reshape(-1, d), rtol=1e-4, atol=1e-4
    )
    dz = np.zeros_like(z, dtype=np.float64)  # scatter the patch gradients back
    patches = ct.reshape(-1, d) @ filt.reshape(-1, d).astype(np.float64).T
    p = k // 2
    dzp = np.pad(dz, ((0, 0), (p, p), (p, p), (0, 0)))
    row = 0
    for b in range(2):
        for i in range(6):
            for j in range(7):
                dzp[b, i : i + k, j : j + k, :] += patches[row].reshape(k, k, c)
                row += 1
    np.testing.assert_allclose(np.asarray(gz), dzp[:, p : p + 6, p : p + 7], rtol=1e-4, atol=1e-4)


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_fit_converges_to_closed_form_monotonically(seed):
    z, e, wts, reg, f0 = problem(seed)
    filt, losses = run_fit(z, e, wts, reg, f0, num_iters=150)
    want = np_closed_form(z, e, wts, reg)
    np.testing.assert_allclose(np.asarray(filt), want, rtol=2e-3, atol=2e-3)
    losses = np.asarray(losses)
    assert np.all(np.diff(losses) <= 1e-6 * losses[0])
    # the reported losses are eq. 6
    np.testing.assert_allclose(losses[0], float(lwl.loss(f0, z, e, wts, reg)), rtol=1e-5)
    resid = wts * (np_apply(want, z) - e)
    np.testing.assert_allclose(
        losses[-1], 0.5 * np.sum(resid**2) + 0.5 * reg**2 * np.sum(want**2), rtol=1e-4
    )


def test_steepest_descent_steps_match_numpy():
    z, e, wts, reg, f0 = problem(1)
    a = np_im2col(z, K)
    w = f0.astype(np.float64).reshape(-1, D)
    wd = wts.reshape(-1, D).astype(np.float64) ** 2
    ev = e.reshape(-1, D).astype(np.float64)
    for _ in range(3):
        g = a.T @ (wd * (a @ w - ev)) + reg**2 * w
        jg2 = np.sum(wd * (a @ g) ** 2) + reg**2 * np.sum(g**2)
        w = w - np.sum(g**2) / jg2 * g
    filt, _ = run_fit(z, e, wts, reg, f0, num_iters=3)
    np.testing.assert_allclose(np.asarray(filt).reshape(-1, D), w, rtol=1e-4, atol=1e-6)


def test_gradients_match_finite_differences():
    """d(apply(fit(...), query))/d(features, encodings, weights, reg, init filter), float64."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        args = [np.asarray(v, np.float64) for v in problem(2)]
        query = rng.normal(size=(H, W, C))
        probe = rng.normal(size=(H, W, D))

        @jax.jit
        def f(z, e, wts, reg, f0):
            return jnp.sum(lwl.apply(lwl.fit(z, e, wts, reg, f0, 3), query) * probe)

        g = [np.asarray(v) for v in jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))(*args)]
        h = 1e-6
        for _ in range(3):
            d = [rng.normal(size=np.shape(v)) for v in args]
            fd = float(f(*[x + h * u for x, u in zip(args, d)])) - float(
                f(*[x - h * u for x, u in zip(args, d)])
            )
            fd /= 2 * h
            an = sum(float(np.vdot(gi, di)) for gi, di in zip(g, d))
            np.testing.assert_allclose(an, fd, rtol=1e-6, atol=1e-9)
        assert all(np.abs(gi).max() > 0 for gi in g)  # every input really influences the result


def test_vmap_over_objects_matches_loop():
    probs = [problem(s) for s in (10, 11)]
    stacked = [np.stack([p[i] for p in probs]) for i in range(5)]
    batched, batched_losses = jax.jit(jax.vmap(functools.partial(run_fit, num_iters=150)))(*stacked)
    for i, p in enumerate(probs):
        one, one_losses = run_fit(*p, num_iters=150)
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(one), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(batched_losses[i]), np.asarray(one_losses), rtol=1e-4)


def test_bad_arguments_raise_vosjax_error():
    z, e, wts, reg, f0 = problem(0)
    with pytest.raises(VosjaxError, match="encodings"):
        lwl.fit(z, e[:, :3], wts, reg, f0, 2)
    with pytest.raises(VosjaxError, match="weights"):
        lwl.fit(z, e, wts[:, :3], reg, f0, 2)
    with pytest.raises(VosjaxError, match="filter"):
        lwl.fit(z, e, wts, reg, f0[:2, :2], 2)
    with pytest.raises(VosjaxError, match="output channels"):
        lwl.fit(z, e, wts, reg, f0[..., :1], 2)
    with pytest.raises(VosjaxError, match="reg"):
        lwl.fit(z, e, wts, np.ones(2), f0, 2)
    with pytest.raises(VosjaxError, match="num_iters"):
        lwl.fit(z, e, wts, reg, f0, -1)
