"""Static-image pseudo-videos: pair discovery, aligned deformation, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vosjax.data import DataWarning, StaticImageSource, make_pseudo_video
from vosjax.data.io import davis_palette, write_image, write_label_png
from vosjax.data.static import DeformConfig, find_image_mask_pairs
from vosjax.errors import VosjaxError


def _colour_coded(h=48, w=64, seed=0):
    """Labels with three blobs, and an image whose colour is a function of the label."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for k in (1, 2, 5):
        cy, cx, r = rng.uniform(12, h - 12), rng.uniform(12, w - 12), rng.uniform(6, 10)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
    colours = np.array(
        [[40, 40, 40]] + [[200, 30, 30], [30, 200, 30], [0, 0, 0], [0, 0, 0], [30, 30, 200]],
        np.uint8,
    )
    return colours[lab], lab, colours


def test_pseudo_video_keeps_masks_aligned_with_pixels():
    img, lab, colours = _colour_coded()
    frames, masks = make_pseudo_video(img, lab, 4, np.random.default_rng(3))
    assert frames.shape == (4, 48, 64, 3) and masks.shape == (4, 48, 64)
    assert set(np.unique(masks)) <= {0, 1, 2, 5}
    moved = 0
    for t in range(4):
        moved += (masks[t] != lab).mean() > 0.01
        for k in (1, 2, 5):
            m = masks[t] == k
            assert m.sum() > 20
            # Away from region borders (bilinear blending mixes colours there), pixels carry
            # their label's colour.
            interior = m
            for _ in range(2):  # two erosions: a bilinear footprint spans up to ~1.2 source pixels
                interior = interior & np.roll(interior, 1, 0) & np.roll(interior, -1, 0)
                interior = interior & np.roll(interior, 1, 1) & np.roll(interior, -1, 1)
            assert interior.sum() > 5
            err = np.abs(frames[t][interior].astype(int) - colours[k].astype(int)).max()
            assert err <= 1, (t, k, err)
    assert moved >= 3  # the frames are really deformed
    again = make_pseudo_video(img, lab, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(again[0], frames)
    ident = make_pseudo_video(
        img,
        lab,
        1,
        np.random.default_rng(0),
        DeformConfig(rotation_deg=0, scale=(1, 1), shear_deg=0, translate=0, tps_jitter=0),
    )
    np.testing.assert_array_equal(ident[1][0], lab)
    assert (
        np.abs(ident[0][0].astype(int) - img).max() <= 1
    )  # Pillow's fixed-point bilinear at pixel centres


def test_static_source_on_both_folder_layouts(tmp_path):
    img, lab, _ = _colour_coded()
    flat = tmp_path / "flat"
    for s in ("a", "b"):
        write_image(flat / f"{s}.jpg", img)
        write_label_png(flat / f"{s}.png", lab)
    write_image(flat / "orphan.jpg", img)
    with pytest.warns(DataWarning, match="1 file.* without a partner.*orphan"):
        src = StaticImageSource(flat, num_frames=3, seed=7)
    assert len(src) == 2
    v = src[1]
    assert v.name == "b" and v.frames.shape == (3, 48, 64, 3) and v.object_ids == (1, 2, 5)
    assert v.first_frame == {1: 0, 2: 0, 5: 0} and v.annotated.all()
    np.testing.assert_array_equal(src[1].masks, v.masks)  # deterministic per (seed, index)
    with pytest.warns(DataWarning):
        other_seed = StaticImageSource(flat, 3, seed=8)
    assert not np.array_equal(other_seed[1].masks, v.masks)
    i2, l2, pal = src.pair(0)
    np.testing.assert_array_equal(l2, lab)
    np.testing.assert_array_equal(pal[:6], davis_palette()[:6])

    split = tmp_path / "split"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir()
    write_image(split / "images" / "x.jpg", img)
    Image.fromarray(((lab > 0) * 255).astype(np.uint8), "L").save(
        split / "masks" / "x.png"
    )  # saliency style
    pairs = find_image_mask_pairs(split)
    assert [(p.name, q.name) for p, q in pairs] == [("x.jpg", "x.png")]
    assert StaticImageSource(split)[0].object_ids == (1,)
    with pytest.raises(VosjaxError, match="no image/mask pairs"):
        find_image_mask_pairs(tmp_path)
    with pytest.raises(VosjaxError, match="folder not found"):
        StaticImageSource(tmp_path / "nothing")
