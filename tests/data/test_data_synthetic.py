"""The synthetic generator: determinism, exact occlusion-aware ground truth, difficulty knobs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vosjax.data import (
    SyntheticSource,
    SyntheticSpec,
    available_presets,
    build_scene,
    copy_first_mask_baseline,
    load_spec,
)
from vosjax.data.synthetic_spec import SPEC_DIR
from vosjax.errors import VosjaxError


def test_videos_are_a_pure_function_of_spec_split_and_index(tiny_spec):
    a = SyntheticSource(tiny_spec, "train")[2].load()
    b = SyntheticSource(load_spec(json.loads(tiny_spec.to_json())), "train")[2]
    # Lazy rendering in another order gives the same frames.
    for t in (5, 0, 7, 3):
        np.testing.assert_array_equal(np.asarray(b.frames[t]), a.frames[t])
        np.testing.assert_array_equal(np.asarray(b.masks[t]), a.masks[t])
    assert a.first_frame == b.first_frame and a.object_ids == b.object_ids
    c = SyntheticSource(tiny_spec, "train")[3].load()
    v = SyntheticSource(tiny_spec, "val")[2].load()
    assert not np.array_equal(a.frames, c.frames) and not np.array_equal(a.frames, v.frames)
    assert a.frames.shape == (8, 40, 56, 3) and a.masks.dtype == np.uint8 and a.annotated.all()


def test_labels_and_colours_come_from_the_front_most_object(tiny_spec):
    for index in (0, 1):
        scene = build_scene(tiny_spec, "train", index)
        H, W = scene.height, scene.width
        for t in (0, scene.num_frames // 2, scene.num_frames - 1):
            img, lab = scene.render(t)
            covers = [scene.layer_mask(i, t) for i in range(len(scene.layers))]
            colours = [scene.layer_colour(i, t) for i in range(len(scene.layers))]
            bg = scene.background(t).astype(np.float64)
            gain = scene.gain(t)
            for y in range(H):
                for x in range(W):
                    front, front_depth = None, -np.inf  # pick by depth, not by list order
                    for i, lay in enumerate(scene.layers):
                        if covers[i][y, x] and lay.depth > front_depth:
                            front, front_depth = i, lay.depth
                    want_label = 0 if front is None else scene.layers[front].label
                    assert lab[y, x] == want_label, (index, t, y, x)
                    c = bg[y, x] if front is None else colours[front][y, x]
                    np.testing.assert_array_equal(img[y, x], np.clip(np.rint(c * gain), 0, 255))


def test_first_frame_is_where_each_target_first_has_pixels_and_ids_follow_appearance(tiny_spec):
    for split in ("train", "val"):
        src = SyntheticSource(tiny_spec, split)
        for i in range(len(src)):
            v = src[i].load()
            present = {o: np.flatnonzero((v.masks == o).any(axis=(1, 2))) for o in v.object_ids}
            assert all(p.size for p in present.values())
            assert v.first_frame == {o: int(p[0]) for o, p in present.items()}
            assert v.object_ids == tuple(range(1, len(v.object_ids) + 1))
            assert [v.first_frame[o] for o in v.object_ids] == sorted(v.first_frame.values())
            assert v.first_frame[1] == 0
            assert set(np.unique(v.masks)) <= {0, *v.object_ids}


def test_default_preset_difficulty_knobs_are_really_on():
    spec = load_spec(
        "default",
        height=48,
        width=72,
        num_frames=20,
        splits={"train": {"seed": 5, "num_videos": 12}},
    )
    seen = dict(
        late=0,
        left_and_returned=0,
        occluded=0,
        distractor_twin=0,
        rotated=0,
        deformed=0,
        max_objects=0,
    )
    for i in range(12):
        scene = build_scene(spec, "train", i)
        v = SyntheticSource(spec, "train")[i].load()
        seen["max_objects"] = max(seen["max_objects"], len(v.object_ids))
        seen["late"] += any(t > 0 for t in v.first_frame.values())
        for k, lay in enumerate(scene.layers):
            if lay.kind == "distractor":
                twins = [
                    o
                    for o in scene.layers
                    if o.kind == "target"
                    and o.texture[0] == lay.texture[0]
                    and np.abs(o.texture[2] - lay.texture[2]).max() <= 10
                ]
                seen["distractor_twin"] += bool(twins)
            if lay.kind != "target":
                continue
            seen["rotated"] += abs(lay.ang_vel) > 0
            seen["deformed"] += lay.deform_amp > 0
            alone = np.array([scene.layer_mask(k, t).any() for t in range(spec.num_frames)])
            after = alone[lay.t_appear :]
            gone = np.flatnonzero(~after)
            if gone.size and after[gone[0] :].any():
                seen["left_and_returned"] += 1
            unoccluded = sum(scene.layer_mask(k, t).sum() for t in range(spec.num_frames))
            seen["occluded"] += int((v.masks == lay.label).sum()) < unoccluded
    assert seen["late"] >= 2 and seen["left_and_returned"] >= 1 and seen["occluded"] >= 3
    assert seen["distractor_twin"] >= 6 and seen["rotated"] >= 10 and seen["deformed"] >= 10
    assert 3 <= seen["max_objects"] <= 5


def test_demo_preset_is_small_and_copying_the_first_mask_scores_poorly():
    spec = load_spec("demo")
    assert (
        (spec.height, spec.width) == (64, 64)
        and spec.num_objects[1] <= 2
        and spec.occluders == (0, 0)
    )
    scores = copy_first_mask_baseline(SyntheticSource("demo", "val"), max_videos=12)
    assert scores["J&F-Mean"] < 0.3, (
        scores
    )  # objects move: copying the first mask does not track them
    assert scores["num_videos"] == 12


def test_presets_ship_and_document_every_field():
    assert {"demo", "default"} <= set(available_presets())
    fields = {f for f in SyntheticSpec.__dataclass_fields__}
    doc = load_spec.__module__
    import vosjax.data.synthetic_spec as mod

    for f in fields:
        assert f in mod.__doc__, f"knob {f!r} is not documented"
    for name in ("demo", "default"):
        raw = json.loads((SPEC_DIR / f"synthetic_{name}.json").read_text())
        assert set(raw) - {"_comment"} == fields, name  # presets spell every knob out
    assert doc


def test_spec_errors_name_the_field():
    with pytest.raises(VosjaxError, match="unknown synthetic spec field.*'colour'"):
        load_spec("demo", colour=3)
    with pytest.raises(VosjaxError, match="'num_objects'"):
        load_spec("demo", num_objects=[0, 2])
    with pytest.raises(VosjaxError, match="'shapes'"):
        load_spec("demo", shapes=["square"])
    with pytest.raises(VosjaxError, match="no synthetic preset named 'nope'"):
        load_spec("nope")
    with pytest.raises(VosjaxError, match="split 'test'"):
        SyntheticSource("demo", "test")
    with pytest.raises(VosjaxError, match="'late_appearance'"):
        load_spec("demo", late_appearance=1.5)


def test_layer_masks_and_poses_match_per_pixel_references(tiny_spec):
    scene = build_scene(tiny_spec, "train", 4)
    for k, lay in enumerate(scene.layers):
        for t in (0, 3, 7):
            # Pose: the unbounded path folded back into [lo, hi] by repeated reflection.
            raw = lay.p0 + lay.vel * t + lay.wob_amp * np.sin(lay.wob_freq * t + lay.wob_phase)
            for ax in range(2):
                while not lay.lo[ax] <= raw[ax] <= lay.hi[ax]:
                    raw[ax] = (
                        2 * lay.lo[ax] - raw[ax]
                        if raw[ax] < lay.lo[ax]
                        else 2 * lay.hi[ax] - raw[ax]
                    )
            centre, angle, scale = lay.pose(t)
            np.testing.assert_allclose(centre, raw, atol=1e-9)
            # Coverage: pixel centre -> object coordinates -> warp -> inside the radial profile.
            mask = scene.layer_mask(k, t)
            if t < lay.t_appear:
                assert not mask.any()
                continue
            phis = np.linspace(-np.pi, np.pi, len(lay.profile))
            bad = 0
            for y in range(scene.height):
                for x in range(scene.width):
                    d = np.array([x + 0.5, y + 0.5]) - centre
                    rot = np.array(
                        [[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]]
                    )
                    qx, qy = rot @ d / (lay.radius * scale)
                    if lay.deform_amp > 0:
                        ph = lay.deform_freq * t
                        qx, qy = (
                            qx
                            + lay.deform_amp
                            * np.sin(lay.deform_k[1] * qy + ph + lay.deform_phase[0]),
                            qy
                            + lay.deform_amp
                            * np.sin(lay.deform_k[0] * qx + ph + lay.deform_phase[1]),
                        )
                    rho = np.interp(np.arctan2(qy, qx), phis, lay.profile)
                    bad += bool(np.hypot(qx, qy) <= rho) != bool(mask[y, x])
            assert bad <= 2, (k, t, bad)  # float rounding exactly on the outline
