"""JOINT's search-region crop: the rule against plain references, the warp, the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vosjax.data import SyntheticSource, make_train_pipeline
from vosjax.data.augment import (
    AugmentConfig,
    apply_clip_transform,
    frame_affine,
    sample_clip_transform,
)
from vosjax.data.search_crop import jitter_box, mask_box, pick_target, search_region, target_boxes
from vosjax.errors import VosjaxError

STILL = {"rotation_deg": 0.0, "shear_deg": 0.0, "flip_prob": 0.0, "brightness": 0.0,
         "contrast": 0.0, "saturation": 0.0, "hue_deg": 0.0}
JOINT = {"search_area_factor": 5.0, "search_scale_jitter": (0.25, 0.5),
         "search_center_jitter": ((3.0, 3.0), (5.5, 4.5)), "search_crop": "inside_major"}


def ref_region(box, out_hw, factor, img_hw, mode="inside_major"):
    """The rule, step by step, in plain Python: (x1, y1, width, height) of the crop."""
    x, y, w, h = box
    Ho, Wo = out_hw
    H, W = img_hw
    # area factor^2 * w * h, aspect of the output, rounded up
    cw = math.ceil(Wo * factor * math.sqrt(w * h) / math.sqrt(Wo * Ho))
    ch = math.ceil(Ho * factor * math.sqrt(w * h) / math.sqrt(Wo * Ho))
    # shrink (never grow) so that it fits one axis (inside_major) or both (inside)
    need = [cw / W, ch / H]
    r = min(need) if mode == "inside_major" else max(need)
    if r > 1:
        cw, ch = math.floor(cw / r), math.floor(ch / r)
    cw, ch = max(cw, 1), max(ch, 1)  # a sliver of an extreme aspect keeps one pixel
    out = []
    for c, size, extent in ((x + w / 2, cw, W), (y + h / 2, ch, H)):
        lo = round(c - size / 2)
        if size > extent:  # larger than the frame: centred on it
            lo = -((size - extent) // 2)
        else:  # shifted inside: first off the left / top edge, then off the right / bottom
            lo = max(lo, 0)
            lo = min(lo, extent - size)
        out.append(lo)
    return (out[0], out[1], cw, ch)


def ref_jitter(box, normal, uniform, s, c):
    x, y, w, h = box
    w2, h2 = w * math.exp(normal[0] * s), h * math.exp(normal[1] * s)
    m = math.sqrt(w2 * h2)
    cx = x + w / 2 + m * c[0] * (uniform[0] - 0.5)
    cy = y + h / 2 + m * c[1] * (uniform[1] - 0.5)
    return (cx - w2 / 2, cy - h2 / 2, w2, h2)


@pytest.mark.parametrize(
    "box,img_hw,factor,mode,want",
    [
        ((90, 50, 30, 20), (120, 200), 3, "inside_major", (58, 32, 95, 57)),  # interior; 57.5 -> 58
        ((2, 3, 10, 10), (120, 200), 3, "inside_major", (0, 0, 39, 24)),  # top-left border: shifted in
        ((190, 110, 10, 10), (120, 200), 3, "inside_major", (161, 96, 39, 24)),  # bottom-right border
        ((180, 30, 40, 40), (100, 400), 5, "inside_major", (70, -27, 259, 155)),  # taller than the frame
        ((30, 20, 20, 20), (60, 80), 5, "inside_major", (-10, 0, 100, 60)),  # both axes: fits y only
        ((30, 20, 20, 20), (60, 80), 5, "inside", (0, 6, 80, 48)),  # both axes: fits both
    ],
)
def test_search_region_hand_computed_cases(box, img_hw, factor, mode, want):
    """Worked by hand for an 80 x 48 (w x h) output, e.g. the first: k = 3 sqrt(600 / 3840),
    ceil(80 k) = 95, ceil(48 k) = 57, x1 = round(105 - 47.5) = 58, y1 = round(60 - 28.5) = 32."""
    got = tuple(int(v) for v in search_region(np.array(box, float), (48, 80), factor, img_hw, mode))
    assert got == want
    assert ref_region(box, (48, 80), factor, img_hw, mode) == want


def test_search_region_matches_the_reference_on_random_boxes_and_draws():
    rng = np.random.default_rng(0)
    for _ in range(400):
        H, W = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        Ho, Wo = int(rng.integers(8, 500)), int(rng.integers(8, 900))
        x0, y0 = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
        box = (x0, y0, rng.uniform(1, W - x0), rng.uniform(1, H - y0))
        n, u = rng.standard_normal(2), rng.uniform(size=2)
        j = ref_jitter(box, n, u, 0.5, (5.5, 4.5))
        np.testing.assert_allclose(jitter_box(np.array(box), n, u, 0.5, (5.5, 4.5)), j, rtol=1e-12)
        factor = float(rng.choice([1.0, 2.5, 5.0]))
        for mode in ("inside_major", "inside"):
            got = search_region(np.array(j), (Ho, Wo), factor, (H, W), mode)
            want = ref_region(j, (Ho, Wo), factor, (H, W), mode)
            assert tuple(int(v) for v in got) == want
            x1, y1, cw, ch = want
            if mode == "inside":
                assert 0 <= x1 and x1 + cw <= W and 0 <= y1 and y1 + ch <= H
            else:  # inside one axis at least; an overflowing axis covers the frame
                assert (0 <= x1 and x1 + cw <= W) or (0 <= y1 and y1 + ch <= H)
                for lo, size, extent in ((x1, cw, W), (y1, ch, H)):
                    assert (0 <= lo and lo + size <= extent) or (lo <= 0 and lo + size >= extent)


def test_jitter_box_fixed_draws():
    box = np.array([10.0, 20.0, 40.0, 10.0])
    np.testing.assert_allclose(jitter_box(box, [0, 0], [0.5, 0.5], 0.5, (3, 3)), box)
    # size x2 in w (normal = 2 ln 2 at scale 0.5); centre moved by sqrt(80 * 10) * 3 * (+0.5, -0.5)
    got = jitter_box(box, [2 * math.log(2), 0.0], [1.0, 0.0], 0.5, (3, 3))
    d = math.sqrt(800) * 1.5
    np.testing.assert_allclose(got, [30 + d - 40, 25 - d - 5, 80, 10])


def test_mask_box_target_boxes_and_fallbacks():
    lab = np.zeros((4, 10, 12), np.uint8)
    lab[0, 2:5, 3:9] = 1
    lab[2, 6:8, 1:2] = 1
    lab[:, 0, 0] = 2
    assert mask_box(lab[0], 1).tolist() == [3, 2, 6, 3]
    assert mask_box(lab[1], 1) is None
    b = target_boxes(lab, 1)
    assert b[0].tolist() == [3, 2, 6, 3] and b[1].tolist() == b[0].tolist()  # absent: last seen box
    assert b[2].tolist() == [1, 6, 1, 2] and b[3].tolist() == b[2].tolist()
    lab[0] = 0
    assert target_boxes(lab, 1)[0].tolist() == [1, 6, 1, 2]  # none earlier: the nearest later one
    assert target_boxes(lab, 3).tolist() == [[0, 0, 12, 10]] * 4  # never present: the whole frame
    assert target_boxes(lab, 0).tolist() == [[0, 0, 12, 10]] * 4
    rng = np.random.default_rng(0)
    assert {pick_target(lab[2], rng) for _ in range(50)} == {1, 2}
    assert pick_target(np.zeros((3, 3), np.uint8), rng) == 0


def test_transform_uses_the_rule_with_the_reference_and_other_jitters():
    cfg = AugmentConfig(**STILL, **JOINT)
    boxes = np.array([[90, 50, 30, 20], [100, 40, 20, 30], [60, 70, 40, 20], [5, 5, 10, 10]], float)
    tf = sample_clip_transform(np.random.default_rng(3), (120, 200), (48, 80), cfg, 4, boxes)
    rng = np.random.default_rng(3)  # the documented draws: [T, 2] normals, then [T, 2] uniforms
    n, u = rng.standard_normal((4, 2)), rng.uniform(size=(4, 2))
    for t in range(4):
        s, c = (0.25, (3, 3)) if t == 0 else (0.5, (5.5, 4.5))
        want = ref_region(ref_jitter(boxes[t], n[t], u[t], s, c), (48, 80), 5.0, (120, 200))
        assert tuple(int(v) for v in tf.search_regions[t]) == want
    assert tf.crop_matrices.shape == (4, 3, 3)
    np.testing.assert_array_equal(tf.matrix, tf.crop_matrices[0])


def test_warped_labels_keep_the_target_where_the_region_puts_it():
    H, W, Ho, Wo = 120, 200, 48, 80
    lab = np.zeros((3, H, W), np.uint8)
    lab[0, 50:70, 90:120] = 1  # centred: the region is (58, 32, 95, 57) with factor 3, no jitter
    lab[1, 40:60, 60:100] = 1
    lab[2, 80:110, 150:190] = 1  # near the bottom-right corner: the region is shifted in
    lab[:, 5:15, 5:15] = 2
    frames = np.repeat((lab[..., None] * 100).astype(np.uint8), 3, -1)
    still = AugmentConfig(**STILL, search_area_factor=3.0, search_scale_jitter=(0, 0),
                          search_center_jitter=((0, 0), (0, 0)))
    jit = AugmentConfig(**STILL, search_area_factor=3.0)
    for cfg, seed in ((still, 0), (jit, 1), (jit, 2)):
        tf = sample_clip_transform(np.random.default_rng(seed), (H, W), (Ho, Wo), cfg, 3, target_boxes(lab, 1))
        f, out = apply_clip_transform(tf, frames, lab)
        assert f.shape == (3, Ho, Wo, 3) and out.shape == (3, Ho, Wo)
        for t in range(3):
            x1, y1, cw, ch = tf.search_regions[t]
            x, y, w, h = mask_box(lab[t], 1)
            ys, xs = np.nonzero(out[t] == 1)
            # the box maps by (p - corner) * output / region, cut at the output's edges;
            # nearest sampling: within a pixel
            sx, sy = Wo / cw, Ho / ch
            ex = np.clip([(x - x1) * sx, (x + w - x1) * sx], 0, Wo)
            ey = np.clip([(y - y1) * sy, (y + h - y1) * sy], 0, Ho)
            assert abs(xs.min() - ex[0]) <= 1 and abs(xs.max() + 1 - ex[1]) <= 1
            assert abs(ys.min() - ey[0]) <= 1 and abs(ys.max() + 1 - ey[1]) <= 1
            if cfg is still and t < 2:  # unjittered, away from the border: centred in the output
                assert abs((xs.min() + xs.max() + 1) / 2 - Wo / 2) <= 1
                assert abs((ys.min() + ys.max() + 1) / 2 - Ho / 2) <= 1


def test_reference_own_flip_frame_scale_and_the_stream_off():
    boxes = np.tile([90.0, 50.0, 30.0, 20.0], (3, 1))
    cfg = AugmentConfig(**{**STILL, "flip_prob": 0.5}, **JOINT, reference_own_flip=True)
    apart = 0
    for seed in range(40):
        tf = sample_clip_transform(np.random.default_rng(seed), (120, 200), (48, 80), cfg, 3, boxes)
        sign = np.sign(tf.crop_matrices[:, 0, 0])  # no rotation: negative = mirrored
        assert sign[1] == sign[2] and (sign[1] < 0) == tf.flip
        apart += sign[0] != sign[1]
    assert 5 < apart < 35
    # a zoom of s about the output centre: the point at distance d goes to distance s d
    fwd = np.linalg.inv(frame_affine((48, 80), 0.0, 0.0, 1.5))
    np.testing.assert_allclose(fwd @ [40 + 10, 24 - 4, 1], [40 + 15, 24 - 6, 1])
    zoom = AugmentConfig(**STILL, frame_scale=0.2)
    tf = sample_clip_transform(np.random.default_rng(0), (30, 40), (16, 16), zoom, num_frames=4)
    scales = [math.sqrt(abs(np.linalg.det(np.linalg.inv(m)[:2, :2]))) for m in tf.frame_matrices]
    assert all(math.exp(-0.2) <= s <= math.exp(0.2) for s in scales) and len(set(scales)) == 4
    # off (the default): target boxes are ignored and the draws are the plain crop's
    a = sample_clip_transform(np.random.default_rng(7), (30, 40), (16, 16), AugmentConfig(), 3, boxes)
    b = sample_clip_transform(np.random.default_rng(7), (30, 40), (16, 16), AugmentConfig(), 3)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.crop_matrices is None and a.search_regions is None


def test_config_errors_name_the_field():
    for kw, field in (
        ({"search_area_factor": -1.0}, "search_area_factor"),
        ({"search_crop": "replicate"}, "search_crop"),
        ({"search_scale_jitter": (0.25, -0.5)}, "search_scale_jitter"),
        ({"search_center_jitter": ((3.0, 3.0), (5.5,))}, "search_center_jitter"),
        ({"frame_scale": -0.1}, "frame_scale"),
    ):
        with pytest.raises(VosjaxError, match=field):
            AugmentConfig(**kw)
    with pytest.raises(VosjaxError, match="target_boxes"):
        sample_clip_transform(np.random.default_rng(0), (30, 40), (16, 16), AugmentConfig(**JOINT), 3)
    with pytest.raises(VosjaxError, match="target_boxes"):
        sample_clip_transform(np.random.default_rng(0), (30, 40), (16, 16), AugmentConfig(**JOINT), 3,
                              np.zeros((2, 4)))
    with pytest.raises(VosjaxError, match="reference_own_flip"):
        sample_clip_transform(np.random.default_rng(0), (30, 40), (16, 16),
                              AugmentConfig(reference_own_flip=True))


def test_joint_pipeline_with_the_search_region(tiny_spec):
    src = SyntheticSource(tiny_spec, "train")
    aug = {**STILL, **JOINT, "search_area_factor": 3.0, "frame_rotation_deg": 15.0, "frame_scale": 0.2,
           "flip_prob": 0.5, "reference_own_flip": True, "brightness": 0.2}
    cfg = {"sampler": "joint", "batch_size": 4, "crop_size": (24, 40), "max_objects": 2,
           "min_object_pixels": 4, "augment": aug, "window": 8}
    it = make_train_pipeline(cfg, src, seed=3, process_index=0, process_count=1)
    batches = [next(it) for _ in range(2)]
    it.close()
    again = make_train_pipeline(cfg, src, seed=3, process_index=0, process_count=1)
    np.testing.assert_array_equal(next(again)["labels"], batches[0]["labels"])
    again.close()
    for b in batches:
        assert b["frames"].shape == (4, 4, 24, 40, 3) and b["labels"].shape == (4, 4, 24, 40)
        for i in range(4):
            assert b["obj_valid"][i, 0]  # the target: slot 1, visible in the reference frame
            assert (b["labels"][i, 0] == 1).sum() >= 4
            v = src[int(b["video_index"][i])]
            ref = v.masks[b["frame_indices"][i, 0]]
            assert (ref == b["object_ids"][i, 0]).any()  # drawn among the reference's objects
