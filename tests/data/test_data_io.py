"""Palette PNG I/O and robust reading of images and masks."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from vosjax.data import io
from vosjax.errors import VosjaxError


def test_davis_palette_matches_bit_spreading_and_known_colours():
    pal = io.davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    # The colours every DAVIS mask file carries.
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    for i in (7, 13, 100, 255):  # reference: bit 3j + c of i -> bit 7 - j of channel c
        want = [sum(((i >> (3 * j + c)) & 1) << (7 - j) for j in range(3)) for c in range(3)]
        assert pal[i].tolist() == want
    assert len({tuple(c) for c in pal}) == 256


def test_label_png_round_trip_keeps_ids_and_palette(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 3, 7, 200], size=(13, 17)).astype(np.uint8)
    pal = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    path = tmp_path / "sub" / "m.png"
    io.write_label_png(path, labels, pal)
    got, got_pal = io.read_label_png(path)
    np.testing.assert_array_equal(got, labels)
    np.testing.assert_array_equal(got_pal, pal)
    assert Image.open(path).mode == "P"
    assert sorted(os.listdir(path.parent)) == ["m.png"]  # no temp file left behind


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "m.png"
    io.write_label_png(path, np.ones((4, 4), np.uint8))
    with pytest.raises(VosjaxError, match="0..255"):
        io.write_label_png(path, np.full((4, 4), 300))
    np.testing.assert_array_equal(io.read_label_png(path)[0], np.ones((4, 4)))
    assert sorted(os.listdir(tmp_path)) == ["m.png"]


def test_grayscale_binary_mask_is_object_one_and_other_gray_values_are_ids(tmp_path):
    a = np.zeros((6, 7), np.uint8)
    a[2:4, 3:6] = 255
    Image.fromarray(a, "L").save(tmp_path / "bin.png")
    lab, pal = io.read_label_png(tmp_path / "bin.png")
    np.testing.assert_array_equal(lab, (a == 255).astype(np.uint8))
    np.testing.assert_array_equal(pal, io.davis_palette())
    b = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    Image.fromarray(b, "L").save(tmp_path / "ids.png")
    np.testing.assert_array_equal(io.read_label_png(tmp_path / "ids.png")[0], b)


def test_one_bit_and_sixteen_bit_masks(tmp_path):
    a = np.zeros((5, 9), bool)
    a[1:3, 2:7] = True
    Image.fromarray(a).convert("1").save(tmp_path / "one.png")
    np.testing.assert_array_equal(io.read_label_png(tmp_path / "one.png")[0], a.astype(np.uint8))
    b = np.array([[0, 4], [9, 0]], np.uint16)
    Image.fromarray(b).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(io.read_label_png(tmp_path / "i16.png")[0], b)
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(VosjaxError, match="big.png.*outside 0..255"):
        io.read_label_png(tmp_path / "big.png")


def test_rgb_mask_is_decoded_through_the_palette(tmp_path):
    pal = io.davis_palette()
    ids = np.array([[0, 1, 2], [3, 0, 5]], np.uint8)
    Image.fromarray(pal[ids]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(io.read_label_png(tmp_path / "rgb.png")[0], ids)
    rgba = np.concatenate([pal[ids], np.full((2, 3, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(io.read_label_png(tmp_path / "rgba.png")[0], ids)
    odd = pal[ids].copy()
    odd[0, 0] = (1, 2, 3)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    with pytest.raises(VosjaxError, match=r"odd.png.*\(1, 2, 3\).*not in the palette"):
        io.read_label_png(tmp_path / "odd.png")


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(VosjaxError, match="file not found.*nope.png"):
        io.read_label_png(tmp_path / "nope.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(VosjaxError, match="text.jpg is not a readable image"):
        io.read_image(tmp_path / "text.jpg")
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(VosjaxError, match="cut.jpg is corrupt or truncated"):
        io.read_image(tmp_path / "cut.jpg")
    noisy = np.random.default_rng(3).integers(0, 5, (64, 64)).astype(np.uint8)
    io.write_label_png(tmp_path / "m.png", noisy)
    png = (tmp_path / "m.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(VosjaxError, match="cut.png"):
        io.read_label_png(tmp_path / "cut.png")
    with pytest.raises(VosjaxError, match="frame_7.jpg"):
        io.read_image(data[:100], name="frame_7.jpg")


def test_read_from_bytes_equals_read_from_file(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    io.write_label_png(tmp_path / "m.png", labels)
    got, _ = io.read_label_png((tmp_path / "m.png").read_bytes())
    np.testing.assert_array_equal(got, labels)


def test_fit_mask_to_frame_resizes_nearest_with_warning_or_refuses():
    lab = np.zeros((480, 853), np.uint8)
    lab[100:200, 400:500] = 2
    with pytest.warns(
        io.DataWarning, match="judo/00005.png: mask is 853x480 but its frame is 854x480"
    ):
        out = io.fit_mask_to_frame(lab, (480, 854), "judo/00005.png")
    assert out.shape == (480, 854)
    assert set(np.unique(out)) == {0, 2}  # nearest: no blended ids
    assert abs(int((out == 2).sum()) - 100 * 100) <= 100  # one column may be duplicated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = io.fit_mask_to_frame(lab, (480, 853))
    assert same is lab
    with pytest.raises(VosjaxError, match="x.png: mask is 853x480 but its frame is 480x480"):
        io.fit_mask_to_frame(lab, (480, 480), "x.png")


def test_judo_mask_of_the_real_demo_data(davis_demo):
    path = davis_demo / "Annotations" / "480p" / "judo" / "00005.png"
    lab, pal = io.read_label_png(path)
    assert lab.shape == (480, 853) and set(np.unique(lab)) == {0, 2}
    np.testing.assert_array_equal(pal[:4], io.davis_palette()[:4])
    frame = io.read_image(davis_demo / "JPEGImages" / "480p" / "judo" / "00005.jpg")
    assert frame.shape == (480, 854, 3) and frame.dtype == np.uint8
    assert io.read_image_size(davis_demo / "JPEGImages" / "480p" / "judo" / "00005.jpg") == (
        480,
        854,
    )


def test_write_image_checks_and_round_trips(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (9, 11, 3)).astype(np.uint8)
    io.write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), img)
    io.write_image(tmp_path / "a.jpg", img)
    assert io.read_image(tmp_path / "a.jpg").shape == img.shape
    with pytest.raises(VosjaxError, match="uint8"):
        io.write_image(tmp_path / "b.png", img.astype(np.float32))
    with pytest.raises(VosjaxError, match="extension"):
        io.write_image(tmp_path / "b.bmp", img)
