"""DAVIS layout: writer and reader round trip, the real demo folder, and every malformed input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from vosjax.data import (
    DataWarning,
    DavisSource,
    SyntheticSource,
    read_sequence_list,
    write_davis_layout,
)
from vosjax.data.io import davis_palette, write_image, write_label_png
from vosjax.errors import VosjaxError


def test_round_trip_of_generated_videos_is_exact(tiny_davis, tiny_spec):
    src = SyntheticSource(tiny_spec, "train")
    assert read_sequence_list(tiny_davis / "ImageSets" / "2017" / "train.txt") == [
        src[i].name for i in range(len(src))
    ]
    assert (tiny_davis / "JPEGImages" / "40p").is_dir() and (
        tiny_davis / "Annotations" / "40p"
    ).is_dir()
    davis = DavisSource(tiny_davis, year="2017", split="train", resolution="40p")
    assert len(davis) == len(src)
    for i in range(len(src)):
        want, got = src[i].load(), davis[i]
        assert (
            got.name == want.name
            and got.object_ids == want.object_ids
            and got.first_frame == want.first_frame
        )
        assert got.annotated.all() and got.complete and got.frame_names == want.frame_names
        np.testing.assert_array_equal(np.asarray(got.masks), want.masks)
        np.testing.assert_array_equal(np.asarray(got.frames), want.frames)  # PNG frames: lossless
        np.testing.assert_array_equal(got.palette, davis_palette())
    assert len(DavisSource(tiny_davis, split="val", resolution="40p")) == 3


def test_jpeg_layout_and_year_2016_merges_objects(tmp_path, tiny_spec):
    src = SyntheticSource(tiny_spec, "val")
    write_davis_layout(src, tmp_path, year="2016", split="val", max_videos=2)
    frame = tmp_path / "JPEGImages" / "40p" / src[0].name / "00000.jpg"
    assert frame.is_file() and Image.open(frame).format == "JPEG"
    d16 = DavisSource(tmp_path, year="2016", split="val", resolution="40p")
    assert len(d16) == 2
    v, want = d16[0], src[0].load()
    np.testing.assert_array_equal(np.asarray(v.masks), (want.masks > 0).astype(np.uint8))
    assert v.object_ids == (1,)
    err = np.abs(np.asarray(v.frames).astype(int) - want.frames.astype(int))
    assert err.mean() < 12  # JPEG (quality 95, chroma subsampled) of small, sharply textured frames


def test_real_demo_folder(davis_demo):
    src = DavisSource(
        davis_demo, year="2017", split="val"
    )  # no ImageSets: every folder is a sequence
    assert src.sequences == ["bike", "dog", "drift-straight", "judo"]
    with pytest.warns(
        DataWarning, match=r"judo/00005.png: mask is 853x480 but its frame is 854x480"
    ):
        judo = src[src.index_of("judo")]
        masks = np.asarray(judo.masks)
    assert judo.num_frames == 16 and judo.frames.shape == (16, 480, 854, 3)
    assert judo.object_ids == (1, 2, 3, 4) and judo.first_frame == {1: 0, 2: 5, 3: 8, 4: 13}
    assert np.flatnonzero(judo.annotated).tolist() == [0, 5, 8, 13] and not judo.complete
    assert masks.shape == (16, 480, 854) and set(np.unique(masks[5])) == {0, 2}
    assert not masks[1].any()  # unannotated frames read as empty
    dog = src[src.index_of("dog")]
    assert dog.num_frames == 60 and dog.object_ids == (1,) and dog.annotated.sum() == 1
    assert np.asarray(dog.frames[59]).shape == (480, 854, 3)
    bike = DavisSource(davis_demo, sequences=["bike"])[0]
    assert bike.object_ids == (1, 2) and bike.first_frame == {1: 0, 2: 0}
    np.testing.assert_array_equal(bike.palette[:3], davis_palette()[:3])


def _seq(root, name, n=3, hw=(8, 10), masks=(0,), mask_fn=None):
    rng = np.random.default_rng(0)
    for t in range(n):
        write_image(
            root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg",
            rng.integers(0, 255, (*hw, 3)).astype(np.uint8),
        )
    for t in masks:
        lab = np.zeros(hw, np.uint8) if mask_fn is None else mask_fn(t)
        write_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", lab)


def test_malformed_folders_raise_errors_naming_the_file(tmp_path):
    _seq(tmp_path, "ok", masks=(0, 1, 2), mask_fn=lambda t: np.full((8, 10), t % 2, np.uint8))
    _seq(tmp_path, "nofirst", masks=(1,))
    (tmp_path / "JPEGImages" / "480p" / "empty").mkdir(parents=True)
    with pytest.raises(VosjaxError, match=r"missing first-frame mask .*nofirst/00000.png"):
        DavisSource(tmp_path, sequences=["nofirst"])[0]
    with pytest.raises(VosjaxError, match=r"empty sequence: no .jpg/.png frames in .*empty"):
        DavisSource(tmp_path, sequences=["empty"])[0]
    with pytest.raises(VosjaxError, match=r"sequence 'ghost' has no frame folder"):
        DavisSource(tmp_path, sequences=["ghost"])
    lst = tmp_path / "ImageSets" / "2017" / "train.txt"
    lst.parent.mkdir(parents=True)
    lst.write_text("ok\n# comment\n\nghost\n")
    with pytest.raises(VosjaxError, match="ghost"):
        DavisSource(tmp_path, split="train")
    with pytest.raises(VosjaxError, match=r"JPEGImages/720p"):
        DavisSource(tmp_path, resolution="720p")
    with pytest.raises(VosjaxError, match="'year'"):
        DavisSource(tmp_path, year="2018")
    # A truncated frame is reported when it is read, naming the file.
    bad = tmp_path / "JPEGImages" / "480p" / "ok" / "00001.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    v = DavisSource(tmp_path, sequences=["ok"])[0]
    assert v.object_ids == (1,) and v.first_frame == {1: 1} and v.complete
    with pytest.raises(
        VosjaxError, match=r"ok/00001.jpg is (corrupt or truncated|not a readable image)"
    ):
        v.frames[1]
    # A frame of another size is an error naming it.
    write_image(
        tmp_path / "JPEGImages" / "480p" / "ok" / "00002.jpg", np.zeros((9, 10, 3), np.uint8)
    )
    with pytest.raises(
        VosjaxError, match=r"ok/00002.jpg: frame is 10x9 but the sequence's first frame is 10x8"
    ):
        v.frames[2]


def test_rgb_grayscale_and_noncontiguous_masks_are_read_as_ids(tmp_path):
    pal = davis_palette()
    lab = np.zeros((8, 10), np.uint8)
    lab[1:3, 1:3] = 1
    lab[5:7, 6:9] = 3  # ids {1, 3}: not contiguous
    _seq(tmp_path, "rgb", n=2, masks=())
    p = tmp_path / "Annotations" / "480p" / "rgb"
    p.mkdir(parents=True)
    Image.fromarray(pal[lab]).save(p / "00000.png")  # RGB
    Image.fromarray(((lab > 0) * 255).astype(np.uint8), "L").save(
        p / "00001.png"
    )  # DAVIS-2016-style 0/255
    v = DavisSource(tmp_path, sequences=["rgb"])[0]
    np.testing.assert_array_equal(v.masks[0], lab)
    np.testing.assert_array_equal(v.masks[1], (lab > 0).astype(np.uint8))
    assert v.object_ids == (1, 3) and v.first_frame == {1: 0, 3: 0}


def test_mask_of_a_different_aspect_is_an_error(tmp_path):
    _seq(tmp_path, "s", n=1, masks=(0,), mask_fn=lambda t: np.zeros((8, 4), np.uint8))
    with pytest.raises(VosjaxError, match=r"s/00000.png: mask is 4x8 but its frame is 10x8"):
        DavisSource(tmp_path, sequences=["s"])[0]


def test_writer_rejects_duplicate_names(tmp_path, tiny_spec):
    src = SyntheticSource(tiny_spec, "val")
    with pytest.raises(VosjaxError, match="two videos are named"):
        write_davis_layout([src[0], src[0]], tmp_path)
    with pytest.raises(VosjaxError, match="image_format"):
        write_davis_layout(src, tmp_path, image_format="bmp")
    shutil.rmtree(tmp_path)
