"""YouTube-VOS layout: masks only where objects first appear (valid) or every 5th frame (train)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vosjax.data import (
    SyntheticSource,
    YouTubeVOSSource,
    iter_eval_videos,
    load_spec,
    write_youtube_layout,
)
from vosjax.errors import VosjaxError


@pytest.fixture(scope="module")
def late_source():
    """Videos where some objects appear after frame 0 (YouTube-VOS style)."""
    spec = load_spec(
        "default",
        height=40,
        width=56,
        num_frames=10,
        late_appearance=1.0,
        num_objects=[2, 3],
        splits={"valid": {"seed": 21, "num_videos": 3}, "train": {"seed": 22, "num_videos": 2}},
    )
    return spec


def test_valid_split_round_trip(tmp_path, late_source):
    src = SyntheticSource(late_source, "valid")
    write_youtube_layout(src, tmp_path, split="valid", image_format="png")
    meta = json.loads((tmp_path / "valid" / "meta.json").read_text())
    yt = YouTubeVOSSource(tmp_path, "valid")
    assert len(yt) == 3 and not yt.complete and sorted(meta["videos"]) == yt.videos
    for i in range(3):
        want = src[i].load()
        got = yt[yt.videos.index(want.name)]
        assert got.object_ids == want.object_ids and got.first_frame == want.first_frame
        assert any(t > 0 for t in got.first_frame.values())
        assert np.flatnonzero(got.annotated).tolist() == sorted(set(want.first_frame.values()))
        for t in np.flatnonzero(got.annotated):
            # Each mask holds only the objects that first appear on its frame.
            np.testing.assert_array_equal(np.asarray(got.masks[t]), want.first_appearance_mask(t))
        np.testing.assert_array_equal(np.asarray(got.frames), want.frames)
        # meta.json lists, per object, every frame where it is visible, starting where it appears.
        for o in want.object_ids:
            frames = meta["videos"][want.name]["objects"][str(o)]["frames"]
            visible = [
                want.frame_names[t] for t in range(want.num_frames) if (want.masks[t] == o).any()
            ]
            assert frames == visible
    # Without meta.json the ids and first frames come from the masks.
    (tmp_path / "valid" / "meta.json").unlink()
    scanned = YouTubeVOSSource(tmp_path, "valid")
    for i in range(3):
        want = src[i]
        got = scanned[scanned.videos.index(want.name)]
        assert got.first_frame == want.first_frame


def test_train_split_every_fifth_frame_is_complete(tmp_path, late_source):
    src = SyntheticSource(late_source, "train")
    write_youtube_layout(src, tmp_path, split="train", annotate_every=5)
    yt = YouTubeVOSSource(tmp_path, "train")
    assert yt.complete
    v, want = yt[0], src[0].load()
    expected = sorted({0, 5} | set(want.first_frame.values()))
    assert np.flatnonzero(v.annotated).tolist() == expected
    for t in expected:
        np.testing.assert_array_equal(np.asarray(v.masks[t]), want.masks[t])
    assert v.frames.shape == want.frames.shape


def test_streaming_gives_first_appearance_masks(tmp_path, late_source):
    src = SyntheticSource(late_source, "valid")
    write_youtube_layout(src, tmp_path, split="valid", max_videos=1)
    ev = next(iter_eval_videos(YouTubeVOSSource(tmp_path, "valid")))
    want = src[0].load()
    seen = {}
    for frame in ev:
        assert frame.image.shape == (40, 56, 3) and frame.gt is None
        if frame.new_object_ids:
            seen.update({o: frame.index for o in frame.new_object_ids})
            assert set(np.unique(frame.first_mask)) == {0, *frame.new_object_ids}
        else:
            assert frame.first_mask is None
    assert seen == want.first_frame


def test_bad_meta_and_missing_masks(tmp_path, late_source):
    src = SyntheticSource(late_source, "valid")
    write_youtube_layout(src, tmp_path, split="valid", max_videos=1)
    name = src[0].name
    meta_path = tmp_path / "valid" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"][name]["objects"]["1"]["frames"] = ["99999"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(VosjaxError, match="object 1 .* frame '99999'"):
        YouTubeVOSSource(tmp_path, "valid")[0]
    meta_path.write_text("{not json")
    with pytest.raises(VosjaxError, match="meta.json is not a YouTube-VOS meta file"):
        YouTubeVOSSource(tmp_path, "valid")
    meta_path.unlink()
    late = max(src[0].first_frame.items(), key=lambda kv: kv[1])
    write_youtube_layout(src, tmp_path, split="valid", max_videos=1)
    (tmp_path / "valid" / "Annotations" / name / f"{late[1]:05d}.png").unlink()
    with pytest.raises(
        VosjaxError, match=f"missing mask .*{late[1]:05d}.png where object {late[0]} first appears"
    ):
        YouTubeVOSSource(tmp_path, "valid")[0]
    with pytest.raises(VosjaxError, match="valid2/JPEGImages not found"):
        YouTubeVOSSource(tmp_path, "valid2")
