"""Tests of vosjax.correction: gradient correction, Sobel smoothness, cycle-ERF, FGSM / MI-FGSM.

References: Sobel by explicit loops over a replicated border, the smoothness
gradient as a dense linear operator built in NumPy, the closed-form iteration
of gradient descent on a quadratic, and MI-FGSM written out in NumPy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vosjax import correction
from vosjax.errors import VosjaxError

H, W = 7, 9
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)


def np_sobel(m):
    """(gx, gy) of a [H, W] mask with replicated border, by loops."""
    h, w = m.shape
    gx, gy = np.zeros((h, w)), np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    v = m[min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)]
                    gx[i, j] += SOBEL_X[di + 1, dj + 1] * v
                    gy[i, j] += SOBEL_X.T[di + 1, dj + 1] * v
    return gx, gy


@functools.lru_cache(maxsize=4)
def np_smooth_grad_operator(h, w):
    """The matrix G with grad L_smooth(m) = G m (L_smooth is a quadratic form)."""
    cols_x, cols_y = [], []
    for e in np.eye(h * w):
        gx, gy = np_sobel(e.reshape(h, w))
        cols_x.append(gx.reshape(-1))
        cols_y.append(gy.reshape(-1))
    sx, sy = np.stack(cols_x, 1), np.stack(cols_y, 1)
    return 2.0 / (h * w) * (sx.T @ sx + sy.T @ sy)


def quadratic(c, t):
    """loss(m) = 0.5 sum c (m - t)^2, gradient c (m - t)."""
    return lambda m: 0.5 * jnp.sum(c * jnp.square(m - t))


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_sobel_and_smoothness_match_numpy(seed):
    m = np.random.default_rng(seed).uniform(size=(2, H, W)).astype(np.float32)
    gx, gy = jax.jit(correction.sobel)(m)
    for b in range(2):
        rx, ry = np_sobel(m[b].astype(np.float64))
        np.testing.assert_allclose(np.asarray(gx[b]), rx, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(gy[b]), ry, rtol=1e-5, atol=1e-5)
    ref = np.mean([np.mean(sum(g**2 for g in np_sobel(m[b].astype(np.float64)))) for b in range(2)])
    np.testing.assert_allclose(float(jax.jit(correction.smoothness_loss)(m)), ref, rtol=1e-5)


def test_smoothness_gradient_matches_operator_and_constant_is_flat():
    m = np.random.default_rng(0).uniform(size=(H, W))
    g = jax.grad(correction.smoothness_loss)(jnp.asarray(m, jnp.float32))
    np.testing.assert_allclose(
        np.asarray(g).reshape(-1),
        np_smooth_grad_operator(H, W) @ m.reshape(-1),
        rtol=1e-4,
        atol=1e-6,
    )
    assert (
        float(correction.smoothness_loss(jnp.full((H, W), 0.7))) == 0.0
    )  # replicated border: no edge penalty


def test_correction_on_quadratic_matches_closed_form():
    """m_{n} = t + (1 - rate c)^n (m_0 - t) for loss 0.5 c |m - t|^2."""
    rng = np.random.default_rng(1)
    m0, t = rng.uniform(size=(2, H, W)), rng.uniform(size=(2, H, W))
    c, rate, n = 1.5, 0.2, 10
    got, losses = jax.jit(
        functools.partial(
            correction.gradient_correction, num_iters=n, rate=rate, return_losses=True
        ),
        static_argnums=0,
    )(quadratic(c, t), m0)
    want = t + (1 - rate * c) ** n * (m0 - t)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(losses),
        [0.5 * c * np.sum(((1 - rate * c) ** k * (m0 - t)) ** 2) for k in range(n + 1)],
        rtol=1e-4,
    )


def test_correction_with_smoothness_matches_numpy_iteration():
    rng = np.random.default_rng(2)
    m0, t = rng.uniform(size=(H, W)), rng.uniform(size=(H, W))
    c, rate, lam, n = 1.0, 0.3, 0.75, 6
    got, losses = correction.gradient_correction(
        quadratic(c, t),
        jnp.asarray(m0, jnp.float32),
        n,
        rate,
        smooth_weight=lam,
        return_losses=True,
    )
    g = np_smooth_grad_operator(H, W)
    m = m0.reshape(-1)
    for _ in range(n):
        m = m - rate * (c * (m - t.reshape(-1)) + lam * g @ m)
    np.testing.assert_allclose(np.asarray(got).reshape(-1), m, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(np.asarray(losses)) < 0)


def test_smoothness_term_shrinks_isolated_speckles():
    """A big blob and 1-pixel speckles; the data term pulls to the input itself.

    Without the smoothness term nothing moves; with it, speckles (large Sobel
    energy per pixel) fade much more than the blob interior. Both terms are
    per-pixel means, as the paper's losses are; rate 5 is below the stability
    limit 2 / (lambda * max eig of the smoothness Hessian ~ 0.125).
    """
    h, w = 40, 40
    mask = np.zeros((h, w), np.float32)
    mask[14:30, 14:30] = 1.0
    speckles = [(3, 3), (3, 36), (36, 4), (35, 35), (4, 20)]
    for i, j in speckles:
        mask[i, j] = 1.0
    loss = lambda m: 0.5 * jnp.mean(jnp.square(m - mask))
    run = functools.partial(correction.gradient_correction, loss, num_iters=10, rate=5.0)
    both = jax.jit(lambda m: (run(m), run(m, smooth_weight=0.75)))
    plain, smooth = (np.asarray(v) for v in both(jnp.asarray(mask)))
    np.testing.assert_allclose(plain, mask, atol=1e-6)
    speck_vals = np.array([smooth[i, j] for i, j in speckles])
    assert speck_vals.max() < 0.5, speck_vals
    assert smooth[18:26, 18:26].min() > 0.85
    assert correction.smoothness_loss(jnp.asarray(smooth)) < 0.3 * correction.smoothness_loss(
        jnp.asarray(mask)
    )


def test_clip_keeps_masks_in_unit_interval():
    t = np.random.default_rng(3).normal(size=(H, W)) * 3
    run = functools.partial(
        correction.gradient_correction, quadratic(1.0, t), num_iters=5, rate=0.5
    )
    y, y_free = jax.jit(lambda m: (run(m, clip=True), run(m)))(jnp.full((H, W), 0.5))
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    # the paper's update is unconstrained
    assert float(y_free.min()) < 0.0 and float(y_free.max()) > 1.0


def test_cycle_erf_is_relu_of_corrected_empty_mask():
    t = np.random.default_rng(4).normal(size=(2, H, W))
    erf = correction.cycle_erf(quadratic(1.0, t), (2, H, W), num_iters=50, rate=0.1)
    want = np.maximum(t * (1 - (1 - 0.1) ** 50), 0.0)
    np.testing.assert_allclose(np.asarray(erf), want, rtol=1e-5, atol=1e-6)
    assert float(erf.min()) == 0.0


def test_correction_is_differentiable_and_vmaps():
    rng = np.random.default_rng(5)
    t = jnp.asarray(rng.uniform(size=(H, W)), jnp.float32)

    def refine(m0, t):
        return correction.gradient_correction(quadratic(1.0, t), m0, 4, 0.2, smooth_weight=0.5)

    m0 = jnp.asarray(rng.uniform(size=(H, W)), jnp.float32)
    # the map is linear in (m0, t): check its Jacobian against the NumPy operator
    g = np_smooth_grad_operator(H, W)
    step = np.eye(H * W) - 0.2 * (np.eye(H * W) + 0.5 * g)
    probe = rng.normal(size=(H, W))
    grad_m0 = jax.jit(jax.grad(lambda m: jnp.sum(refine(m, t) * probe)))(m0)
    np.testing.assert_allclose(
        np.asarray(grad_m0).reshape(-1),
        np.linalg.matrix_power(step, 4).T @ probe.reshape(-1),
        rtol=1e-4,
        atol=1e-5,
    )
    batch = jnp.stack([m0, 1 - m0])
    got = jax.jit(jax.vmap(refine, in_axes=(0, None)))(batch, t)
    np.testing.assert_allclose(
        np.asarray(got[1]), np.asarray(jax.jit(refine)(1 - m0, t)), rtol=1e-6
    )


# -- adversarial masks -------------------------------------------------------------------------


def test_fgsm_is_one_signed_ascent_step():
    rng = np.random.default_rng(6)
    m = rng.uniform(size=(H, W)).astype(np.float32)
    t = rng.uniform(size=(H, W)).astype(np.float32)
    loss = quadratic(1.0, t)
    adv = np.asarray(correction.fgsm(loss, jnp.asarray(m), eps=20))
    want = np.clip(m + 20 / 255 * np.sign(m - t), 0, 1)  # grad = m - t
    np.testing.assert_allclose(adv, want, atol=1e-7)
    assert np.abs(adv - m).max() <= 20 / 255 + 1e-7
    assert float(loss(adv)) > float(loss(m))


def np_mi_fgsm(grad, m, eps, n, decay):
    a = eps / 255 / n
    y, g = m.copy(), np.zeros_like(m)
    for _ in range(n):
        d = grad(y)
        g = decay * g + d / np.sum(np.abs(d))
        y = np.clip(np.clip(y + a * np.sign(g), m - eps / 255, m + eps / 255), 0, 1)
    return y


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_mi_fgsm_matches_numpy_and_stays_in_the_ball(decay):
    rng = np.random.default_rng(7)
    m = rng.uniform(size=(H, W)).astype(np.float64)
    t = rng.uniform(size=(H, W))
    # a non-quadratic loss so the gradient direction changes along the way
    loss = lambda y: jnp.sum(jnp.sin(3 * y) * t) + 0.5 * jnp.sum(jnp.square(y - t))
    grad = lambda y: 3 * np.cos(3 * y) * t + (y - t)
    adv = np.asarray(
        correction.mi_fgsm(loss, jnp.asarray(m, jnp.float32), eps=20, num_iters=8, decay=decay)
    )
    np.testing.assert_allclose(adv, np_mi_fgsm(grad, m, 20, 8, decay), atol=1e-6)
    assert np.abs(adv - m).max() <= 20 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert float(loss(jnp.asarray(adv))) > float(loss(jnp.asarray(m, jnp.float32)))


def test_bad_arguments_raise_vosjax_error():
    m = jnp.zeros((H, W))
    with pytest.raises(VosjaxError, match="scalar"):
        correction.gradient_correction(lambda y: y, m, 2, 0.1)
    with pytest.raises(VosjaxError, match="num_iters"):
        correction.gradient_correction(lambda y: jnp.sum(y), m, 2.0, 0.1)
    with pytest.raises(VosjaxError, match="loss_fn"):
        correction.fgsm(None, m)
    with pytest.raises(VosjaxError, match="eps"):
        correction.fgsm(lambda y: jnp.sum(y), m, eps=300)
    with pytest.raises(VosjaxError, match="mask"):
        correction.mi_fgsm(lambda y: jnp.sum(y), jnp.zeros(5), num_iters=3)
    with pytest.raises(VosjaxError, match="shape"):
        correction.cycle_erf(lambda y: jnp.sum(y), (5,))


def _np_criterion(p, y, valid, gamma, top_p):
    """libs/utils/loss.py of the authors, per sample: bootstrapped CE + mean IoU loss."""
    out = []
    for b in range(p.shape[0]):
        ks = [0] + [o + 1 for o in range(valid.shape[1]) if valid[b, o]]
        ce_pix = np.zeros(p.shape[2:])
        for k in ks:
            ce_pix += np.where(y[b, k] > 0, -np.log(np.where(y[b, k] > 0, p[b, k], 1)) * y[b, k], 0)
        num = int(p.shape[2] * p.shape[3] * top_p)
        ce = np.sort(ce_pix.ravel())[::-1][:num].mean()
        ious = [1 - np.minimum(p[b, k], y[b, k]).sum() / np.maximum(p[b, k], y[b, k]).sum()
                for k in ks[1:]]
        out.append((np.mean(ious) if ious else 0.0) + gamma * ce)
    return np.array(out)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_correction_criterion_matches_numpy_and_its_gradient(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 3, 6, 7))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    lab = rng.integers(0, 3, size=(2, 6, 7))
    y = (lab[:, None] == np.arange(3)[None, :, None, None]).astype(np.float64)
    valid = np.array([[True, True], [True, False]])
    got = correction.correction_criterion(jnp.asarray(p, jnp.float32), jnp.asarray(y, jnp.float32),
                                          jnp.asarray(valid), 0.8, 0.4)
    np.testing.assert_allclose(got, _np_criterion(p, y, valid, 0.8, 0.4), rtol=1e-5, atol=1e-6)
    from jax.test_util import check_grads

    f = lambda q: jnp.sum(correction.correction_criterion(q, jnp.asarray(y, jnp.float32),  # noqa: E731
                                                          jnp.asarray(valid), 0.8, 0.4))
    check_grads(f, (jnp.asarray(p, jnp.float32),), order=1, modes=("rev",), eps=1e-3,
                atol=5e-2, rtol=5e-2)


def test_authors_update_is_plain_unclipped_descent_on_the_mean_loss():
    """test.py:175-187: N times ``out <- out - 150 * d loss / d out``, no clip, no h * w factor."""
    rng = np.random.default_rng(0)
    t = jnp.asarray(rng.uniform(size=(2, 5, 6)), jnp.float32)
    loss = lambda y: jnp.mean((y - t) ** 2) * 3.0  # noqa: E731  (a mean loss, like theirs)
    y0 = jnp.zeros((2, 5, 6), jnp.float32)
    got = correction.gradient_correction(loss, y0, 4, correction.CORRECTION_RATE)
    ref = np.zeros((2, 5, 6))
    for _ in range(4):
        ref = ref - 150.0 * (2 * 3.0 / ref.size) * (ref - np.asarray(t, np.float64))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert float(jnp.max(jnp.abs(got))) > 1.0  # unclipped: it leaves [0, 1] here
