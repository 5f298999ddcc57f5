"""Clip-consistent augmentation against NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vosjax.data.augment import (
    AugmentConfig,
    ClipTransform,
    _hue_rotation,
    apply_clip_transform,
    sample_clip_transform,
)
from vosjax.errors import VosjaxError

NONE = AugmentConfig(
    crop_scale=(1.0, 1.0),
    crop_aspect=(1.0, 1.0),
    rotation_deg=0,
    shear_deg=0,
    flip_prob=0,
    brightness=0,
    contrast=0,
    saturation=0,
    hue_deg=0,
)


def test_identity_config_returns_the_clip_unchanged():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 12, 20, 3)).astype(np.uint8)
    labels = rng.integers(0, 4, (3, 12, 20)).astype(np.uint8)
    tf = sample_clip_transform(rng, (12, 20), (12, 20), NONE)
    f, lab = apply_clip_transform(tf, frames, labels)
    np.testing.assert_array_equal(f, frames)
    np.testing.assert_array_equal(lab, labels)
    flip = sample_clip_transform(
        rng, (12, 20), (12, 20), AugmentConfig(**{**NONE.__dict__, "flip_prob": 1.0})
    )
    f, lab = apply_clip_transform(flip, frames, labels)
    np.testing.assert_array_equal(f, frames[:, :, ::-1])
    np.testing.assert_array_equal(lab, labels[:, :, ::-1])


def test_one_transform_for_the_whole_clip_and_masks_stay_on_their_pixels():
    rng = np.random.default_rng(1)
    lab = np.zeros((60, 80), np.uint8)
    lab[10:30, 10:40] = 1
    lab[35:55, 45:75] = 2
    colours = np.array([[50, 50, 50], [220, 20, 20], [20, 20, 220]], np.uint8)
    frames = np.stack([colours[lab]] * 3)
    labels = np.stack([lab] * 3)
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0, hue_deg=0)
    for _ in range(5):
        tf = sample_clip_transform(rng, (60, 80), (32, 32), cfg)
        f, lab = apply_clip_transform(tf, frames, labels)
        assert f.shape == (3, 32, 32, 3) and lab.shape == (3, 32, 32)
        np.testing.assert_array_equal(f[0], f[2])  # identical frames -> identical outputs
        np.testing.assert_array_equal(lab[0], lab[1])
        for k in (1, 2):
            m = lab[0] == k
            inner = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
            if inner.any():
                assert np.abs(f[0][inner].astype(int) - colours[k]).max() <= 1


def test_colour_transform_matches_reference():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (2, 6, 7, 3)).astype(np.uint8)
    labels = np.zeros((2, 6, 7), np.uint8)
    cfg = AugmentConfig(
        **{**NONE.__dict__, "brightness": 0.3, "contrast": 0.3, "saturation": 0.5, "hue_deg": 30.0}
    )
    tf = sample_clip_transform(rng, (6, 7), (6, 7), cfg)
    assert abs(tf.hue_deg) > 0 and tf.saturation != 1
    got, _ = apply_clip_transform(tf, frames, labels)
    gray = np.array([0.299, 0.587, 0.114])
    hue = Rotation.from_rotvec(np.ones(3) / math.sqrt(3) * math.radians(tf.hue_deg)).as_matrix()
    for t in range(2):
        # Step by step, pixel by pixel: hue rotation about the gray axis, saturation towards gray,
        # contrast towards the frame's mean gray, brightness.
        x = np.zeros((6, 7, 3))
        for i in range(6):
            for j in range(7):
                p = hue @ frames[t, i, j].astype(np.float64)
                x[i, j] = tf.saturation * p + (1 - tf.saturation) * (gray @ p)
        mean = np.mean([[gray @ x[i, j] for j in range(7)] for i in range(6)])
        x = tf.brightness * (tf.contrast * x + (1 - tf.contrast) * mean)
        np.testing.assert_allclose(got[t], np.clip(np.rint(x), 0, 255), atol=1)
    np.testing.assert_allclose(
        _hue_rotation(37.0),
        Rotation.from_rotvec(np.ones(3) / math.sqrt(3) * math.radians(37.0)).as_matrix(),
        atol=1e-12,
    )


def test_crop_stays_inside_the_frame_and_configs_are_checked():
    rng = np.random.default_rng(3)
    for _ in range(50):
        tf = sample_clip_transform(
            rng, (48, 64), (20, 30), AugmentConfig(rotation_deg=0, shear_deg=0, flip_prob=0)
        )
        corners = np.array([[0, 0, 1], [30, 0, 1], [0, 20, 1], [30, 20, 1]], float)
        src = corners @ tf.matrix.T
        assert src[:, 0].min() >= -1e-9 and src[:, 0].max() <= 64 + 1e-9
        assert src[:, 1].min() >= -1e-9 and src[:, 1].max() <= 48 + 1e-9
    with pytest.raises(VosjaxError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(VosjaxError, match="brightness"):
        AugmentConfig(brightness=1.5)
    with pytest.raises(VosjaxError, match="labels"):
        apply_clip_transform(tf, np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 5), np.uint8))
    assert isinstance(tf, ClipTransform)


def _np_frame_affine_sample(label, angle_deg, shear_deg):
    """Reference: forward-map every output pixel centre back by inverting x' = c + R Sh (x - c), nearest."""
    H, W = label.shape
    a, s = math.radians(angle_deg), math.tan(math.radians(shear_deg))
    fwd = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array([[1, s], [0, 1]])
    inv = np.linalg.inv(fwd)
    out = np.zeros_like(label)
    for i in range(H):
        for j in range(W):
            x, y = inv @ np.array([j + 0.5 - W / 2, i + 0.5 - H / 2]) + np.array([W / 2, H / 2])
            jj, ii = int(math.floor(x)), int(math.floor(y))
            if 0 <= ii < H and 0 <= jj < W:
                out[i, j] = label[ii, jj]
    return out


def test_per_frame_affine_differs_per_frame_and_matches_reference():
    rng = np.random.default_rng(5)
    T, H, W = 4, 24, 32
    base = np.zeros((H, W), np.uint8)
    base[6:18, 8:20] = 1
    base[10:14, 22:28] = 2
    labels = np.repeat(base[None], T, 0)
    frames = np.repeat(np.where(base[..., None] > 0, 200, 30).astype(np.uint8).repeat(3, -1)[None], T, 0)
    cfg = AugmentConfig(**{**NONE.__dict__, "frame_rotation_deg": 15.0, "frame_shear_deg": 10.0})
    tf = sample_clip_transform(rng, (H, W), (H, W), cfg, num_frames=T)
    assert tf.frame_matrices.shape == (T, 3, 3)
    f, lab = apply_clip_transform(tf, frames, labels)
    # each frame moved on its own: no two frames alike, none equal to the input
    assert all(not np.array_equal(lab[t], base) for t in range(T))
    assert len({lab[t].tobytes() for t in range(T)}) == T
    # the drawn frame matrix is a rotation + x-shear about the centre within the ranges
    for t in range(T):
        fwd = np.linalg.inv(tf.frame_matrices[t])[:2, :2]
        angle = math.degrees(math.atan2(fwd[1, 0], fwd[0, 0]))
        shear = math.degrees(math.atan((fwd[0, 1] * math.cos(math.radians(angle))
                                        + fwd[1, 1] * math.sin(math.radians(angle)))))
        assert abs(angle) <= 15.0 + 1e-6 and abs(shear) <= 10.0 + 1e-6
        ref = _np_frame_affine_sample(base, angle, shear)
        # nearest sampling: only pixels whose source sits on a pixel edge may differ
        assert (lab[t] != ref).mean() < 0.01
    # labels and frames stay aligned (one warp for both; bilinear frames blur the edges only)
    assert ((f[..., 0] > 115) != (lab > 0)).mean() < 0.03


def test_per_frame_affine_off_draws_nothing_more():
    cfg = AugmentConfig()
    a = sample_clip_transform(np.random.default_rng(7), (30, 40), (16, 16), cfg, num_frames=3)
    rng_b = np.random.default_rng(7)
    b = sample_clip_transform(rng_b, (30, 40), (16, 16), cfg)
    assert a.frame_matrices is None and b.frame_matrices is None
    np.testing.assert_array_equal(a.matrix, b.matrix)
    with pytest.raises(VosjaxError, match="frame_shear_deg"):
        AugmentConfig(frame_shear_deg=-1.0)
    on = AugmentConfig(frame_rotation_deg=15.0)
    tf = sample_clip_transform(np.random.default_rng(0), (30, 40), (16, 16), on, num_frames=3)
    with pytest.raises(VosjaxError, match="per-frame affines"):
        apply_clip_transform(tf, np.zeros((2, 30, 40, 3), np.uint8), np.zeros((2, 30, 40), np.uint8))
