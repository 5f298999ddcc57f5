"""Host-side warps against slow per-pixel NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vosjax.data import geometry as geo
from vosjax.errors import VosjaxError


def _sample_ref(img, x, y, nearest):
    """One sample at continuous (x, y), pixel centres at j + 0.5, edges clamped, 0 outside."""
    h, w = img.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        return np.zeros(img.shape[2:], np.float64)
    if nearest:
        return img[int(math.floor(y)), int(math.floor(x))].astype(np.float64)
    fx = min(max(x - 0.5, 0.0), w - 1)
    fy = min(max(y - 0.5, 0.0), h - 1)
    x0, y0 = int(math.floor(fx)), int(math.floor(fy))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = fx - x0, fy - y0
    f = img.astype(np.float64)
    return (f[y0, x0] * (1 - ax) + f[y0, x1] * ax) * (1 - ay) + (
        f[y1, x0] * (1 - ax) + f[y1, x1] * ax
    ) * ay


@given(seed=st.integers(0, 2**31 - 1), nearest=st.booleans(), channels=st.sampled_from([0, 3]))
def test_warp_mesh_matches_per_pixel_reference(seed, nearest, channels):
    rng = np.random.default_rng(seed)
    shape = (13, 17) if channels == 0 else (13, 17, 3)
    img = rng.integers(0, 256, shape).astype(np.uint8)
    out_hw, cell = (11, 14), 4
    xs, ys = geo.mesh_points(out_hw, cell)
    assert xs.tolist() == [0, 4, 8, 12, 14] and ys.tolist() == [0, 4, 8, 11]
    mx, my = np.meshgrid(xs, ys)
    cx = mx * 1.1 + 0.5 + rng.uniform(-1, 1, mx.shape)  # a smooth-ish, non-affine map
    cy = my * 0.9 + 1.0 + rng.uniform(-1, 1, my.shape)
    got = geo.warp_mesh(img, cx, cy, out_hw, cell, nearest=nearest)
    assert got.shape == out_hw + shape[2:]
    close = 0
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            x, y = j + 0.5, i + 0.5
            a = np.searchsorted(xs, x) - 1
            b = np.searchsorted(ys, y) - 1
            u = (x - xs[a]) / (xs[a + 1] - xs[a])
            v = (y - ys[b]) / (ys[b + 1] - ys[b])

            def blend(c):
                return (c[b, a] * (1 - u) + c[b, a + 1] * u) * (1 - v) + (
                    c[b + 1, a] * (1 - u) + c[b + 1, a + 1] * u
                ) * v

            ref = _sample_ref(img, blend(cx), blend(cy), nearest)
            close += np.abs(got[i, j].astype(float) - ref).max() <= (0 if nearest else 2)
    # Pillow steps through quads in fixed point: samples on pixel edges may round the other way.
    assert close >= out_hw[0] * out_hw[1] - 3


def test_crop_affine_identity_flip_and_rotation():
    H, W = 6, 10
    m = geo.crop_affine((H, W), (W / 2, H / 2), (W, H))
    np.testing.assert_allclose(m, np.eye(3), atol=1e-12)
    f = geo.crop_affine((H, W), (W / 2, H / 2), (W, H), flip=True)
    np.testing.assert_allclose(f @ [1.0, 2.0, 1.0], [W - 1.0, 2.0, 1.0])
    r = geo.crop_affine((10, 10), (5, 5), (10, 10), angle_deg=90)
    np.testing.assert_allclose(r @ [10.0, 5.0, 1.0], [5.0, 10.0, 1.0], atol=1e-12)  # +x goes to +y
    img = np.random.default_rng(0).integers(0, 256, (H, W, 3)).astype(np.uint8)
    np.testing.assert_array_equal(geo.warp_affine(img, m, (H, W)), img)
    np.testing.assert_array_equal(geo.warp_affine(img, f, (H, W)), img[:, ::-1])
    np.testing.assert_array_equal(
        geo.warp_affine(img[..., 0], f, (H, W), nearest=True), img[:, ::-1, 0]
    )


@given(seed=st.integers(0, 2**31 - 1))
def test_warp_affine_nearest_matches_reference(seed):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 5, (9, 11)).astype(np.uint8)
    m = geo.crop_affine(
        (7, 8),
        (rng.uniform(3, 8), rng.uniform(3, 6)),
        (rng.uniform(4, 9), rng.uniform(4, 9)),
        rng.uniform(-30, 30),
        rng.uniform(-10, 10),
        bool(rng.integers(0, 2)),
    )
    got = geo.warp_affine(lab, m, (7, 8), nearest=True)
    agree = 0
    for i in range(7):
        for j in range(8):
            x, y, _ = m @ [j + 0.5, i + 0.5, 1.0]
            ref = _sample_ref(lab, x, y, nearest=True)
            agree += got[i, j] == ref
    assert (
        agree >= 7 * 8 - 2
    )  # Pillow rounds sample positions in fixed point: ties on pixel edges may differ


def test_tps_interpolates_control_points_and_reproduces_affine_maps():
    rng = np.random.default_rng(0)
    ctrl = rng.uniform(0, 50, (9, 2))
    vals = ctrl + rng.uniform(-4, 4, ctrl.shape)
    params = geo.tps_fit(ctrl, vals)
    np.testing.assert_allclose(geo.tps_eval(params, ctrl), vals, atol=1e-8)
    A = np.array([[1.1, 0.2], [-0.1, 0.9]])
    aff = ctrl @ A.T + [3.0, -2.0]
    w, a, _ = geo.tps_fit(ctrl, aff)
    np.testing.assert_allclose(w, 0, atol=1e-9)
    pts = rng.uniform(0, 50, (20, 2))
    np.testing.assert_allclose(geo.tps_eval((w, a, ctrl), pts), pts @ A.T + [3.0, -2.0], atol=1e-8)
    # The spline against its defining sum, term by term.
    w, a, c = params
    p = pts[3]
    terms = [
        w[i] * (np.sum((p - c[i]) ** 2) * math.log(np.sum((p - c[i]) ** 2))) for i in range(len(c))
    ]
    np.testing.assert_allclose(
        geo.tps_eval(params, p[None])[0], a[0] + p @ a[1:] + np.sum(terms, 0), rtol=1e-10
    )
    with pytest.raises(VosjaxError, match="tps_fit"):
        geo.tps_fit(ctrl[:2], vals[:2])


def test_mesh_of_a_tps_is_within_a_pixel_of_the_exact_spline():
    rng = np.random.default_rng(1)
    H, W, cell = 120, 200, 16
    gy, gx = np.meshgrid(np.linspace(0, H, 4), np.linspace(0, W, 4), indexing="ij")
    ctrl = np.stack([gx.ravel(), gy.ravel()], -1)
    params = geo.tps_fit(ctrl, ctrl + rng.uniform(-1, 1, ctrl.shape) * 0.05 * np.array([W, H]))
    xs, ys = geo.mesh_points((H, W), cell)
    mx, my = np.meshgrid(xs, ys)
    corners = geo.tps_eval(params, np.stack([mx.ravel(), my.ravel()], -1)).reshape(
        len(ys), len(xs), 2
    )
    # A coordinate ramp warped through the mesh reads back the (bilinearly blended) source x.
    ramp = np.tile(np.arange(W, dtype=np.uint8)[None, :], (H, 1))
    warped = geo.warp_mesh(
        ramp, corners[..., 0], corners[..., 1], (H, W), cell, nearest=True
    ).astype(float)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    exact = geo.tps_eval(params, np.stack([xx.ravel(), yy.ravel()], -1)).reshape(H, W, 2)
    inside = (
        (exact[..., 0] > 2)
        & (exact[..., 0] < W - 2)
        & (exact[..., 1] > 2)
        & (exact[..., 1] < H - 2)
    )
    err = np.abs(warped - np.floor(exact[..., 0]))[inside]
    assert err.max() <= 2 and err.mean() < 0.3
