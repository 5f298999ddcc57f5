"""Tests of vosjax.learners.frtm: FRTM's target model, memory, augmentation, fit and update.

NumPy references: loop convolutions, loop bilinear interpolation, eq. 2 and
eq. 4 written out, the normal equations of the w2-only problem solved with
numpy.linalg.solve, and a plain-Python simulation of the sample memory.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vosjax.errors import VosjaxError
from vosjax.learners import frtm, gauss_newton_cg, steepest_descent

# -- NumPy references --------------------------------------------------------------------------


def np_conv_same(x, k):
    """Zero-padded stride-1 cross-correlation, x [B, h, w, Ci], k [kh, kw, Ci, Co], by loops."""
    b, h, w, _ = x.shape
    kh, kw, _, co = k.shape
    ph, pw = kh // 2, kw // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    out = np.zeros((b, h, w, co))
    for i in range(h):
        for j in range(w):
            for di in range(kh):
                for dj in range(kw):
                    out[:, i, j, :] += xp[:, i + di, j + dj, :] @ k[di, dj]
    return out


def np_target_model(params, x):
    return np_conv_same(np_conv_same(x, params["w1"]), params["w2"])[..., 0]


def np_resize_linear(s, out_h, out_w):
    """Bilinear resampling with half-pixel centres and edge clamping, pixel by pixel."""
    h, w = s.shape[-2:]
    out = np.zeros(s.shape[:-2] + (out_h, out_w))
    for o in range(out_h):
        cy = min(max((o + 0.5) * h / out_h - 0.5, 0), h - 1)
        y0 = math.floor(cy)
        y1, ty = min(y0 + 1, h - 1), cy - y0
        for q in range(out_w):
            cx = min(max((q + 0.5) * w / out_w - 0.5, 0), w - 1)
            x0 = math.floor(cx)
            x1, tx = min(x0 + 1, w - 1), cx - x0
            out[..., o, q] = (
                (1 - ty) * (1 - tx) * s[..., y0, x0]
                + (1 - ty) * tx * s[..., y0, x1]
                + ty * (1 - tx) * s[..., y1, x0]
                + ty * tx * s[..., y1, x1]
            )
    return out


def np_pixel_weights(y, kappa_min=0.1):
    out = np.zeros_like(y, dtype=np.float64)
    for k in range(y.shape[0]):
        kh = y[k].mean()
        if y[k].sum() < 10:  # the authors' too_small rule: weights 1
            out[k] = 1.0
            continue
        kappa = max(kappa_min, kh)
        a = kappa / kh if kh > 0 else 0.0
        b = (1 - kappa) / (1 - kh) if kh < 1 else 0.0
        out[k] = (
            np.where(y[k] == 1, a, b)
            if set(np.unique(y[k])) <= {0.0, 1.0}
            else y[k] * a + (1 - y[k]) * b
        )
    return out


def np_loss(params, x, y, gamma, reg, kappa_min=0.1, data_scale=1.0):
    """Eq. 2 as the authors' residuals: sum_k gamma_k c sum_px v (y - s)^2 + sum_j r_j^2 |w_j|^2."""
    s = np_resize_linear(np_target_model(params, x), *y.shape[-2:])
    v = np_pixel_weights(y, kappa_min)
    data = 0.0
    for k in range(y.shape[0]):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                data += gamma[k] * data_scale * v[k, i, j] * (y[k, i, j] - s[k, i, j]) ** 2
    return data + sum(reg[j] ** 2 * np.sum(np.asarray(params[j], np.float64) ** 2) for j in ("w1", "w2"))


def np_params(params):
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


# -- synthetic data ----------------------------------------------------------------------------

C_SMALL, HID_SMALL, FEAT_SMALL, LAB_SMALL = 3, 2, (4, 5), (8, 10)


def small_problem(seed, k=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, *FEAT_SMALL, C_SMALL)).astype(np.float32)
    y = (rng.uniform(size=(k, *LAB_SMALL)) < 0.3).astype(np.float32)
    y[:, :2, :6] = 1.0  # >= 10 target pixels: the pixel weights are not all 1
    gamma = rng.uniform(0.1, 1.0, size=k).astype(np.float32)
    params = frtm.init_params(jax.random.key(seed), C_SMALL, hidden=HID_SMALL)
    return params, x, y, gamma / gamma.sum()


def blob_frames(rng, n, mu, h=12, w=16, up=4, noise=0.3):
    """Features whose target cells are linearly separable from the background.

    Each frame has a disk mask on the (up*h, up*w) label grid; a feature cell is
    ``noise * N(0, I) + f mu_fg + (1 - f) mu_bg`` with f the target fraction of the cell.
    """
    big_h, big_w = h * up, w * up
    yy, xx = np.mgrid[:big_h, :big_w]
    xs, ys = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * big_h, rng.uniform(0.3, 0.7) * big_w
        r = rng.uniform(0.2, 0.32) * big_h
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
        f = m.reshape(h, up, w, up).mean((1, 3))[..., None]
        xs.append(noise * rng.normal(size=(h, w, mu.shape[1])) + f * mu[0] + (1 - f) * mu[1])
        ys.append(m)
    return np.stack(xs).astype(np.float32), np.stack(ys)


def iou(pred, gt):
    pred, gt = np.asarray(pred) > 0.5, np.asarray(gt) > 0.5
    return (pred & gt).sum() / (pred | gt).sum()


# -- the target model pieces -------------------------------------------------------------------


def test_upsample_matches_loop_reference_and_jax_resize():
    rng = np.random.default_rng(0)
    for (h, w), (big_h, big_w) in [
        ((4, 5), (8, 10)),
        ((3, 7), (48, 112)),
        ((5, 5), (5, 5)),
        ((5, 6), (17, 6)),  # one axis only, non-integer factor
        ((9, 8), (4, 21)),  # downsampling rows (plain bilinear, no antialiasing)
        ((30, 54), (480, 854)),
    ]:
        s = rng.normal(size=(2, h, w)).astype(np.float32)
        up_fn = jax.jit(functools.partial(frtm.upsample, size=(big_h, big_w)))
        up = up_fn(jnp.asarray(s))
        if big_h * big_w <= 48 * 112:
            np.testing.assert_allclose(
                np.asarray(up), np_resize_linear(s, big_h, big_w), rtol=1e-5, atol=1e-5
            )
        if big_h >= h and big_w >= w:  # jax.image.resize antialiases when downsampling
            ref = jax.image.resize(jnp.asarray(s), (2, big_h, big_w), "linear")
            # jax computes its interpolation weights in float32
            np.testing.assert_allclose(np.asarray(up), np.asarray(ref), rtol=1e-4, atol=1e-4)
        if big_h * big_w > 48 * 112:
            continue
        # the transpose (what every CG step applies) is M_H^T ct M_W
        ct = rng.normal(size=(2, big_h, big_w)).astype(np.float32)
        (back,) = jax.jit(jax.linear_transpose(up_fn, s))(ct)
        mh, mw = frtm.bilinear_matrix(big_h, h), frtm.bilinear_matrix(big_w, w)
        want = np.einsum("Hh,bHW,Ww->bhw", mh.astype(np.float64), ct, mw.astype(np.float64))
        np.testing.assert_allclose(np.asarray(back), want, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(frtm.bilinear_matrix(6, 6), np.eye(6))
    np.testing.assert_allclose(frtm.bilinear_matrix(37, 5).sum(1), 1.0, rtol=1e-6)


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_apply_matches_numpy_convolutions(seed):
    params, x, _, _ = small_problem(seed)
    got = jax.jit(frtm.apply)(params, jnp.asarray(x))
    np.testing.assert_allclose(
        np.asarray(got), np_target_model(np_params(params), x), rtol=1e-4, atol=1e-5
    )


def test_apply_batches_leading_axes():
    params, x, _, _ = small_problem(1, k=4)
    flat = jax.jit(frtm.apply)(params, jnp.asarray(x))
    nested = jax.jit(frtm.apply)(params, jnp.asarray(x).reshape(2, 2, *x.shape[1:]))
    np.testing.assert_allclose(np.asarray(nested).reshape(flat.shape), np.asarray(flat), rtol=1e-6)


def test_pixel_weights_match_eq4():
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=(5, 16, 20)) < np.array([0.005, 0.3, 0.7, 0.0, 1.0])[:, None, None]).astype(
        np.float32
    )
    y = np.concatenate([y, np.zeros((1, 16, 20), np.float32)])
    y[0, 0, :10] = 1.0  # a small target of >= 10 pixels: kappa = kappa_min
    y[5, 0, :9] = 1.0  # 9 pixels: under the authors' 10-pixel floor
    v = np.asarray(frtm.pixel_weights(jnp.asarray(y)))
    np.testing.assert_allclose(v, np_pixel_weights(y), rtol=1e-5)
    # eq. 4: a small target is boosted to 10 % influence, a large one keeps its own weight 1
    frac = y[0].mean()
    np.testing.assert_allclose(v[0][y[0] == 1], 0.1 / frac, rtol=1e-5)
    np.testing.assert_allclose(v[2], 1.0, rtol=1e-6)
    # an empty mask and one of < 10 pixels get weight 1 (frtm-vos compute_pixel_weights too_small;
    # this test pinned 1 - kappa_min = 0.9 for the empty mask before)
    np.testing.assert_allclose(v[3], 1.0, rtol=1e-6)
    np.testing.assert_allclose(v[5], 1.0, rtol=1e-6)
    np.testing.assert_allclose(v[4], 1.0, rtol=1e-6)  # full mask
    soft = rng.uniform(size=(2, 8, 10)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(frtm.pixel_weights(jnp.asarray(soft))), np_pixel_weights(soft), rtol=1e-5
    )


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_loss_matches_numpy_eq2(seed):
    params, x, y, gamma = small_problem(seed)
    reg = {"w1": 0.03, "w2": 0.2}
    got = jax.jit(functools.partial(frtm.loss, reg=reg))(
        params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(gamma)
    )
    np.testing.assert_allclose(float(got), np_loss(np_params(params), x, y, gamma, reg), rtol=1e-4)
    scaled = jax.jit(functools.partial(frtm.loss, reg=reg, data_scale=16.0))(
        params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(gamma)
    )
    want = np_loss(np_params(params), x, y, gamma, reg, data_scale=16.0)
    np.testing.assert_allclose(float(scaled), want, rtol=1e-4)


def test_small_objects_are_weighted_by_v_not_v_squared():
    """The squared loss of a pixel carries v (eq. 2; the code's residual uses sqrt(v))."""
    params = small_problem(11, k=1)[0]
    y = np.zeros((1, 16, 20), np.float32)
    y[0, 0, :10] = 1.0  # 10 / 320 = 0.03125 -> v_fg = 0.1 / 0.03125 = 3.2
    x = np.random.default_rng(1).normal(size=(1, 2, 2, C_SMALL)).astype(np.float32)
    zero = {"w1": 0.0, "w2": 0.0}
    r = frtm.residuals(params, jnp.asarray(x), jnp.asarray(y), jnp.ones((1,)), reg=zero)
    s = np_resize_linear(np_target_model(np_params(params), x), 16, 20)
    v = np_pixel_weights(y)
    np.testing.assert_allclose(v[0, 0, 0], 3.2, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(r["data"]) ** 2, v * (s - y) ** 2, rtol=1e-4, atol=1e-7
    )


def test_update_solves_the_w2_normal_equations():
    """With w1 frozen the problem is linear ridge in w2: GN-CG = numpy.linalg.solve."""
    params, x, y, gamma = small_problem(7, k=4)
    reg = {"w1": 1e-3, "w2": 1e-2}
    mem = frtm.SampleMemory(
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(gamma), jnp.asarray(4), jnp.asarray(3)
    )
    n2 = params["w2"].size
    new = jax.jit(functools.partial(frtm.update, num_cg=3 * n2, reg=reg))(params, mem)
    np.testing.assert_array_equal(np.asarray(new["w1"]), np.asarray(params["w1"]))
    # design matrix: the upsampled response of the frozen first layer to each w2 basis element
    p64 = np_params(params)
    hidden = np_conv_same(x.astype(np.float64), p64["w1"])
    v = np_pixel_weights(y)
    row_w = (np.sqrt(gamma)[:, None, None] * np.sqrt(v)).reshape(-1)
    cols = []
    for e in np.eye(n2):
        s = np_conv_same(hidden, e.reshape(p64["w2"].shape))[..., 0]
        cols.append(np_resize_linear(s, *y.shape[1:]).reshape(-1) * row_w)
    design = np.stack(cols, 1)
    want = np.linalg.solve(
        design.T @ design + reg["w2"] ** 2 * np.eye(n2), design.T @ (row_w * y.reshape(-1))
    )
    np.testing.assert_allclose(np.asarray(new["w2"]).reshape(-1), want, rtol=2e-3, atol=2e-4)
    # the same update from a memory of projected features w1 * x
    projected = jax.jit(frtm.project)(params, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(projected), hidden, rtol=1e-4, atol=1e-5)
    upd = functools.partial(frtm.update, num_cg=3 * n2, reg=reg, projected=True)
    new_p = jax.jit(upd)(params, mem._replace(features=projected))
    np.testing.assert_array_equal(np.asarray(new_p["w1"]), np.asarray(params["w1"]))
    np.testing.assert_allclose(np.asarray(new_p["w2"]).reshape(-1), want, rtol=2e-3, atol=2e-4)


def test_gauss_newton_beats_steepest_descent_at_equal_jacobian_products():
    """Nonlinear (both layers) target-model fit: GN-CG reaches a lower loss per Jacobian product.

    A GN step with c CG iterations costs c + 1 vjps and c jvps; a steepest
    descent step costs one of each. SD gets num_gn * (c + 1) steps, i.e. at least as many.
    """
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(2, 16))
    mu *= 3 / np.linalg.norm(mu, axis=1, keepdims=True)
    x, y = blob_frames(rng, 5, mu)
    params = frtm.init_params(jax.random.key(0), 16, hidden=8)
    res = functools.partial(frtm.residuals, features=jnp.asarray(x), labels=jnp.asarray(y))
    num_gn, num_cg = 3, 5

    @jax.jit
    def both(params):
        _, l_gn = gauss_newton_cg(res, params, num_gn, num_cg, return_losses=True)
        _, l_sd = steepest_descent(res, params, num_gn * (num_cg + 1), return_losses=True)
        return l_gn, l_sd

    l_gn, l_sd = both(params)
    assert float(l_gn[-1]) < 0.7 * float(l_sd[-1]), (l_gn, l_sd)
    assert float(l_gn[-1]) < 0.1 * float(l_gn[0])


# -- fitting and segmenting ----------------------------------------------------------------------

C_BLOB, HID_BLOB = 24, 16


@jax.jit
def _fit_and_update(params, x0, y0, x_new, y_new, reg):
    """Algorithm 1 in miniature: first fit on 5 samples, memory of 8, one update."""
    fitted, losses = frtm.initial_fit(params, x0, y0, reg=reg, return_losses=True)
    mem = frtm.memory_init(x0, y0, capacity=8)
    for i in range(x_new.shape[0]):
        mem = frtm.memory_add(mem, x_new[i], y_new[i])
    updated, up_losses = frtm.update(fitted, mem, reg=reg, return_losses=True)
    return fitted, losses, updated, up_losses, mem


@functools.partial(jax.jit, static_argnames="size")
def _predict(params, features, size):
    return frtm.upsample(frtm.apply(params, features), size)


def _reg(value=None):
    return {k: np.float32(frtm.DEFAULT_REG[k] if value is None else value) for k in ("w1", "w2")}


def test_fitted_target_model_segments_held_out_frames():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(2, C_BLOB))
    mu *= 3 / np.linalg.norm(mu, axis=1, keepdims=True)
    x0, y0 = blob_frames(rng, 5, mu)
    x_new, y_new = blob_frames(rng, 3, mu)
    x_test, y_test = blob_frames(rng, 12, mu)
    params = frtm.init_params(jax.random.key(1), C_BLOB, hidden=HID_BLOB)
    fitted, losses, updated, up_losses, mem = _fit_and_update(params, x0, y0, x_new, y_new, _reg())

    assert losses.shape == (frtm.NUM_GN_INIT + 1,) and float(losses[-1]) < 0.2 * float(losses[0])
    scores = _predict(fitted, x_test, y_test.shape[1:])
    assert iou(scores, y_test) > 0.9
    # the update keeps w1, lowers the loss on the memory and still segments
    np.testing.assert_array_equal(np.asarray(updated["w1"]), np.asarray(fitted["w1"]))
    assert float(up_losses[-1]) <= float(up_losses[0])
    assert int(mem.count) == 8
    scores = _predict(updated, x_test, y_test.shape[1:])
    assert iou(scores, y_test) > 0.9


def test_per_object_learners_batch_with_vmap():
    """vmap over an object axis = fitting each object on its own.

    The two-layer fit is ill-conditioned (w1 and w2 trade scale; only lambda
    pins it) and 5-10 CG iterations do not converge, so float32 rounding,
    which differs between the batched and the single program, is amplified:
    with the default lambda the weights of two float32 runs differ by several
    percent (each is as far from a float64 run). A stronger lambda keeps that
    below 1 %, far below what mixing up objects would cause.
    """
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(2, C_BLOB))
    mu *= 3 / np.linalg.norm(mu, axis=1, keepdims=True)
    objs = [blob_frames(rng, 5, mu) + blob_frames(rng, 3, mu) for _ in range(2)]
    params = jax.vmap(lambda k: frtm.init_params(k, C_BLOB, hidden=HID_BLOB))(
        jax.random.split(jax.random.key(3), 2)
    )
    stacked = [np.stack([o[i] for o in objs]) for i in range(4)]
    reg = _reg(0.1)
    batched = jax.jit(jax.vmap(_fit_and_update, in_axes=(0, 0, 0, 0, 0, None)))(
        params, *stacked, reg
    )
    for i, o in enumerate(objs):
        one = _fit_and_update(jax.tree_util.tree_map(lambda p, i=i: p[i], params), *o, reg)
        for got, want in zip(
            jax.tree_util.tree_leaves(batched[4]), jax.tree_util.tree_leaves(one[4])
        ):
            np.testing.assert_array_equal(np.asarray(got[i]), np.asarray(want))
        for k in range(4):
            for got, want in zip(
                jax.tree_util.tree_leaves(batched[k]), jax.tree_util.tree_leaves(one[k])
            ):
                want = np.asarray(want)
                np.testing.assert_allclose(
                    np.asarray(got[i]), want, rtol=1e-2, atol=1e-2 * np.abs(want).max()
                )


def test_gradients_through_fit_match_finite_differences():
    """d(scores of a query after fitting)/d(features, labels, regularisation), float64.

    Labels on the feature grid (U = identity) keep this doubly differentiated
    program small; U is linear and its transpose is checked above.
    """
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        params = {
            k: np.asarray(v, np.float64)
            for k, v in frtm.init_params(jax.random.key(4), 3, hidden=2).items()
        }
        x = rng.normal(size=(2, 3, 4, 3))
        y = np.clip(rng.uniform(size=(2, 3, 4)) + 0.2 * (rng.uniform(size=(2, 3, 4)) > 0.5), 0, 1)
        lam = np.float64(0.05)
        query = rng.normal(size=(3, 4, 3))
        probe = rng.normal(size=(3, 4))

        @jax.jit
        def f(x, y, lam):
            fitted = frtm.fit(params, x, y, num_gn=2, num_cg=3, reg={"w1": lam, "w2": 2 * lam})
            return jnp.sum(frtm.apply(fitted, query) * probe)

        g = [np.asarray(v) for v in jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, y, lam)]
        h = 1e-6
        for _ in range(3):
            d = [rng.normal(size=np.shape(v)) for v in (x, y, lam)]
            fd = (
                float(f(x + h * d[0], y + h * d[1], lam + h * d[2]))
                - float(f(x - h * d[0], y - h * d[1], lam - h * d[2]))
            ) / (2 * h)
            an = sum(float(np.vdot(gi, di)) for gi, di in zip(g, d))
            np.testing.assert_allclose(an, fd, rtol=1e-5, atol=1e-8)


def test_bfloat16_fit():
    params, x, y, _ = small_problem(5)
    bf = jnp.bfloat16
    p_bf = jax.tree_util.tree_map(lambda v: v.astype(bf), params)
    fitted, losses = jax.jit(
        lambda p, x, y: frtm.initial_fit(p, x, y, num_gn=2, num_cg=4, return_losses=True)
    )(p_bf, jnp.asarray(x, bf), jnp.asarray(y, bf))
    assert fitted["w1"].dtype == bf and fitted["w2"].dtype == bf
    assert np.all(np.isfinite(np.asarray(losses))) and float(losses[-1]) < 0.8 * float(losses[0])


# -- the sample memory -------------------------------------------------------------------------


def reference_memory(k0, capacity, num_adds, eta):
    """Plain-Python FRTM memory: which sample (by insertion index) is in each slot, and the weights."""
    slots = list(range(k0)) + [None] * (capacity - k0)
    w = [2.0 / (k0 + 1)] + [1.0 / (k0 + 1)] * (k0 - 1) + [0.0] * (capacity - k0)
    last = k0 - 1
    for i in range(num_adds):
        count = sum(s is not None for s in slots)
        new_w = w[last] / (1 - eta)
        slot = count if count < capacity else min(range(capacity), key=lambda j: (w[j], j))
        slots[slot], w[slot], last = k0 + i, new_w, slot
        total = sum(w)
        w = [v / total for v in w]
    return slots, w


@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_memory_add_matches_reference(eta):
    k0, capacity, adds = 3, 6, 9
    feats = np.arange(k0 + adds, dtype=np.float32)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.float32
    )
    labels = np.arange(k0 + adds, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    add = jax.jit(functools.partial(frtm.memory_add, eta=eta))
    mem = frtm.memory_init(jnp.asarray(feats[:k0]), jnp.asarray(labels[:k0]), capacity=capacity)
    for i in range(adds):
        mem = add(mem, feats[k0 + i], labels[k0 + i])
        slots, w = reference_memory(k0, capacity, i + 1, eta)
        np.testing.assert_allclose(np.asarray(mem.weights), w, rtol=1e-5, atol=1e-7)
        filled = [j for j, s in enumerate(slots) if s is not None]
        np.testing.assert_array_equal(
            np.asarray(mem.features)[filled, 0, 0, 0], [slots[j] for j in filled]
        )
        np.testing.assert_array_equal(
            np.asarray(mem.labels)[filled, 0, 0], [slots[j] for j in filled]
        )
        assert int(mem.count) == len(filled)
    # the newest sample has the largest weight, the ratio of consecutive ones is 1 / (1 - eta)
    w = np.asarray(mem.weights)
    assert int(mem.last) == int(np.argmax(w))
    newest = sorted(w)[-2:]
    np.testing.assert_allclose(newest[1] / newest[0], 1 / (1 - eta), rtol=1e-5)


def test_empty_memory_first_sample_gets_all_weight():
    mem = frtm.memory_empty((2, 2, 3), (4, 4), capacity=4)
    assert int(mem.count) == 0 and float(mem.weights.sum()) == 0.0
    mem = frtm.memory_add(mem, jnp.ones((2, 2, 3)), jnp.ones((4, 4)))
    np.testing.assert_allclose(np.asarray(mem.weights), [1, 0, 0, 0])
    mem = frtm.memory_add(mem, jnp.ones((2, 2, 3)), jnp.ones((4, 4)))
    np.testing.assert_allclose(np.asarray(mem.weights), np.array([0.9, 1, 0, 0]) / 1.9, rtol=1e-6)


# -- first-frame augmentation ------------------------------------------------------------------


def test_first_frame_weights_and_small_labels_are_skipped():
    # frtm-vos Memory.initialize: weights[:K] = 1/K, weights[0] = 2/K, normalised
    np.testing.assert_allclose(frtm.first_frame_weights(5), [2 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6])
    mem = frtm.memory_init(jnp.ones((5, 2, 2, 3)), jnp.ones((5, 4, 4)), capacity=8)
    np.testing.assert_allclose(np.asarray(mem.weights)[:5], frtm.first_frame_weights(5), rtol=1e-6)
    # Discriminator.update: a label with < 10 pixels above 0.5 adds nothing
    small = jnp.zeros((4, 4)).at[0, :3].set(1.0).at[1, :3].set(0.6).at[2, :3].set(0.4)  # 6 pixels > 0.5
    same = frtm.memory_add(mem, jnp.full((2, 2, 3), 7.0), small)
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(mem)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    big = jnp.zeros((4, 4)).at[:3].set(1.0).at[3, 0].set(1.0)  # 13 pixels
    grown = frtm.memory_add(mem, jnp.full((2, 2, 3), 7.0), big)
    assert int(grown.count) == 6 and float(grown.features[5, 0, 0, 0]) == 7.0
    # a fit's default sample weights are the first-frame ones
    params, x, y, _ = small_problem(5, k=3)
    d = jax.jit(frtm.loss)(params, jnp.asarray(x), jnp.asarray(y))
    e = jax.jit(frtm.loss)(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(frtm.first_frame_weights(3)))
    np.testing.assert_allclose(float(d), float(e), rtol=1e-6)


def np_diffusion_fill(image, hole, iters):
    known = 1 - hole
    mean = (image * known[..., None]).sum((0, 1)) / max(known.sum(), 1)
    x = np.where(hole[..., None] > 0, mean, image).astype(np.float64)
    h, w = hole.shape
    for _ in range(iters):
        new = x.copy()
        for i in range(h):
            for j in range(w):
                if hole[i, j] > 0:
                    nb = [x[max(i - 1, 0), j], x[min(i + 1, h - 1), j], x[i, max(j - 1, 0)], x[i, min(j + 1, w - 1)]]
                    new[i, j] = sum(nb) / 4
        x = new
    return x


def test_inpaint_diffusion_matches_loop_reference():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(9, 11, 3)).astype(np.float32)
    hole = np.zeros((9, 11), np.float32)
    hole[3:7, 2:6] = 1
    got = np.asarray(jax.jit(functools.partial(frtm.inpaint_diffusion, iters=7))(jnp.asarray(image), jnp.asarray(hole)))
    np.testing.assert_allclose(got, np_diffusion_fill(image, hole, 7), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[hole == 0], image[hole == 0])  # known pixels kept
    # a smooth (linear) background is filled back exactly in the limit: harmonic fill
    ramp = np.broadcast_to(np.linspace(0, 1, 11)[None, :, None], (9, 11, 3)).astype(np.float32)
    filled = np.asarray(frtm.inpaint_diffusion(jnp.asarray(ramp), jnp.asarray(hole), 400))
    np.testing.assert_allclose(filled, ramp, atol=1e-3)


def test_augment_first_frame():
    """The authors' recipe: target cut out, background inpainted, target pasted back rotated
    (+-5 .. +-45 deg), scaled (0.5 - 2.5), moved to a grid of centres; sample 0 the original."""
    h, w = 40, 56
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - 18) / 6.0) ** 2 + ((xx - 22) / 8.0) ** 2 < 1).astype(np.float32)
    rng = np.random.default_rng(0)
    image = np.stack(
        [mask, rng.normal(size=(h, w)), np.linspace(-1, 1, w)[None].repeat(h, 0)], -1
    ).astype(np.float32)
    aug = jax.jit(frtm.augment_first_frame)
    images, masks = aug(jnp.asarray(image), jnp.asarray(mask), jax.random.key(0))
    images, masks = np.asarray(images), np.asarray(masks)
    assert images.shape == (frtm.NUM_AUG, h, w, 3) and masks.shape == (frtm.NUM_AUG, h, w)
    np.testing.assert_array_equal(images[0], image)
    np.testing.assert_array_equal(masks[0], mask)
    assert set(np.unique(masks)) <= {0.0, 1.0}  # nearest-neighbour labels
    # channel 0 of the image IS the mask: the pasted target and its label move together, and
    # the inpainted hole carries no trace of the target (channel 0 there is ~0)
    inside = masks[1:] > 0.5
    assert images[1:, ..., 0][inside].mean() > 0.8
    assert np.abs(images[1:, ..., 0][~inside]).mean() < 0.05
    # areas scale by s^2 with s in 0.5 .. 2.5 (and >= 10 px wide): within (0.5^2, 2.5^2) * skew
    ratio = masks[1:].sum((1, 2)) / mask.sum()
    assert np.all(ratio > 0.2) and np.all(ratio < 2.5**2 * 1.3)
    # every augmentation moves the target (new centres from a grid over the frame)
    c0 = np.array(np.nonzero(mask)).mean(1)
    moved = [np.abs(np.array(np.nonzero(m)).mean(1) - c0).max() for m in masks[1:]]
    assert max(moved) > 3
    # pure: same key, same samples; another key, other samples
    again = np.asarray(aug(jnp.asarray(image), jnp.asarray(mask), jax.random.key(0))[1])
    other = np.asarray(aug(jnp.asarray(image), jnp.asarray(mask), jax.random.key(1))[1])
    np.testing.assert_array_equal(again, masks)
    assert np.abs(other[1:] - masks[1:]).max() > 0.5
    # the parameter lists are the authors' (evaluate.py / train.py aug_params)
    assert frtm.FG_ROTATION == (5, -5, 10, -10, 20, -20, 30, -30, 45, -45)
    assert frtm.FG_SCALE == (0.5, 0.7, 1.0, 1.5, 2.0, 2.5)


# -- argument checking -------------------------------------------------------------------------


def test_bad_arguments_raise_vosjax_error():
    params, x, y, _ = small_problem(0)
    with pytest.raises(VosjaxError, match="features"):
        frtm.fit(params, x[0], y, num_gn=1, num_cg=1)
    with pytest.raises(VosjaxError, match="channels"):
        frtm.fit(params, x[..., :2], y, num_gn=1, num_cg=1)
    with pytest.raises(VosjaxError, match="samples"):
        frtm.fit(params, x, y[:2], num_gn=1, num_cg=1)
    with pytest.raises(VosjaxError, match="'w1' and 'w2'"):
        frtm.fit({"w1": params["w1"]}, x, y, num_gn=1, num_cg=1)
    with pytest.raises(VosjaxError, match="projected"):
        frtm.fit(params, x, y, num_gn=1, num_cg=1, projected=True)  # C channels, not hidden
    with pytest.raises(VosjaxError, match="w1 cannot"):
        h = np.zeros(x.shape[:-1] + (HID_SMALL,), np.float32)
        frtm.fit(
            params, h, y, num_gn=1, num_cg=1, projected=True, trainable={"w1": True, "w2": True}
        )
    with pytest.raises(VosjaxError, match="reg"):
        frtm.fit(params, x, y, num_gn=1, num_cg=1, reg={"w1": 1.0})
    with pytest.raises(VosjaxError, match="K0"):
        frtm.memory_init(jnp.asarray(x), jnp.asarray(y), capacity=2)
    mem = frtm.memory_init(jnp.asarray(x), jnp.asarray(y), capacity=5)
    with pytest.raises(VosjaxError, match="do not match"):
        frtm.memory_add(mem, jnp.asarray(x[0, :2]), jnp.asarray(y[0]))
    with pytest.raises(VosjaxError, match="eta"):
        frtm.memory_add(mem, jnp.asarray(x[0]), jnp.asarray(y[0]), eta=1.0)
    with pytest.raises(VosjaxError, match="mask"):
        frtm.augment_first_frame(jnp.zeros((8, 8, 3)), jnp.zeros((8, 9)), jax.random.key(0))

