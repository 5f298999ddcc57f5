"""vosjax.label_png: the fast palette-PNG reader gives read_label_png's label map on every file."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from vosjax.data.io import read_label_png, write_label_png
from vosjax.errors import VosjaxError
from vosjax.label_png import _palette_ids, read_label_ids


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _palette_png(labels: np.ndarray, filters: list[int]) -> bytes:
    """A palette PNG written by hand, with the given filter type per row (0 None, 1 Sub, 2 Up)."""
    h, w = labels.shape
    raw = bytearray()
    prev = np.zeros(w, np.uint8)
    for y in range(h):
        row = labels[y].astype(np.uint8)
        if filters[y] == 1:
            enc = row - np.concatenate([[0], row[:-1]]).astype(np.uint8)
        elif filters[y] == 2:
            enc = row - prev
        else:
            enc = row
        raw += bytes([filters[y]]) + enc.astype(np.uint8).tobytes()
        prev = row
    palette = bytes(np.arange(256 * 3, dtype=np.uint8) % 251)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
        + _chunk(b"PLTE", palette)
        + _chunk(b"IDAT", zlib.compress(bytes(raw)))
        + _chunk(b"IEND", b"")
    )


def _labels(seed: int, shape=(23, 37)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    out[rng.random(shape) < 0.3] = rng.integers(1, 6)
    out[3:9, 4:20] = 255  # void
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_written_palette_pngs_decode_directly(tmp_path, seed):
    labels = _labels(seed)
    path = tmp_path / "m.png"
    write_label_png(path, labels)
    assert _palette_ids(path.read_bytes()) is not None  # the fast path took it
    got = read_label_ids(path)
    np.testing.assert_array_equal(got, read_label_png(path)[0])
    np.testing.assert_array_equal(got, labels)
    assert got.dtype == np.uint8 and got.flags.c_contiguous


def test_filtered_rows_and_other_modes_fall_back(tmp_path):
    labels = _labels(3)
    unfiltered = tmp_path / "plain.png"
    unfiltered.write_bytes(_palette_png(labels, [0] * labels.shape[0]))
    np.testing.assert_array_equal(read_label_ids(unfiltered), labels)
    filtered = tmp_path / "filtered.png"
    filtered.write_bytes(_palette_png(labels, [0, 1, 2] * 7 + [1, 2]))
    assert _palette_ids(filtered.read_bytes()) is None
    np.testing.assert_array_equal(read_label_ids(filtered), labels)
    np.testing.assert_array_equal(np.asarray(Image.open(filtered)), labels)
    # A grayscale 0/255 mask: read_label_png's rule (255 -> object 1) applies.
    gray = tmp_path / "gray.png"
    Image.fromarray((labels > 0).astype(np.uint8) * 255, mode="L").save(gray)
    np.testing.assert_array_equal(read_label_ids(gray), read_label_png(gray)[0])
    assert read_label_ids(gray).max() == 1


def test_bad_files_raise_the_named_errors(tmp_path):
    good = _palette_png(_labels(4), [0] * 23)
    bad_crc = bytearray(good)
    bad_crc[-20] ^= 0xFF  # inside the IDAT body: its CRC no longer matches
    cases = {
        "missing.png": None,
        "truncated.png": good[: len(good) // 2],
        "text.png": b"not an image at all",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(VosjaxError, match=name):
            read_label_ids(path)
    assert _palette_ids(bytes(bad_crc)) is None


def test_real_annotations_and_results(davis_demo):
    files = sorted((davis_demo / "Annotations" / "480p").glob("*/00000.png"))
    files += sorted((davis_demo / "reference" / "osvos" / "dog").glob("*.png"))[:5]
    assert files
    for path in files:
        np.testing.assert_array_equal(read_label_ids(path), read_label_png(path)[0])


def test_evaluate_cli_starts_without_jax():
    code = "import sys, vosjax.evaluate, vosjax.label_png; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
