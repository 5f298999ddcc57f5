"""JSONL + TensorBoard event files written without TensorFlow (vosjax.training.metric_writer)."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from vosjax.training.metric_writer import (
    EventFileWriter,
    MetricWriter,
    crc32c,
    masked_crc32c,
    read_event_scalars,
)


def crc32c_bitwise(data: bytes) -> int:
    """Bit-by-bit CRC-32C (reflected 0x82F63B78), the slow textbook form."""
    c = 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 * (c & 1))
    return c ^ 0xFFFFFFFF


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(b"") == 0
    for data in (b"a", b"vosjax", bytes(range(256)) * 3):
        assert crc32c(data) == crc32c_bitwise(data)
        assert crc32c(data) != zlib.crc32(data)  # not the IEEE polynomial
    c = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_metric_writer_jsonl_and_events(tmp_path):
    with MetricWriter(tmp_path) as w:
        w.write(1, {"train/loss": 0.5, "train/lr": 1e-4})
        w.write(2, {"train/loss": 0.25, "eval/J&F-Mean": float("nan")})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["train/loss"] == 0.5 and rows[1]["eval/J&F-Mean"] == "nan"
    (event,) = (tmp_path / "tensorboard").iterdir()
    assert "tfevents" in event.name
    scalars = read_event_scalars(event)
    assert scalars[0] == (1, "train/loss", 0.5)
    assert scalars[1][:2] == (1, "train/lr") and scalars[1][2] == pytest.approx(1e-4)
    assert scalars[2] == (2, "train/loss", 0.25)


def test_event_file_is_valid_tfrecord(tmp_path):
    w = EventFileWriter(tmp_path)
    w.scalars(7, {"a": 1.5})
    w.close()
    data = w.path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
    body = data[12:12 + length]
    assert b"brain.Event:2" in body
    corrupt = bytearray(data)
    corrupt[-6] ^= 1
    w.path.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupt"):
        read_event_scalars(w.path)


@pytest.mark.slow  # importing tensorboard pulls in tensorflow (~15 s)
def test_tensorboard_reads_our_event_files(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (it is optional; the writer does not need it)",
    )
    with MetricWriter(tmp_path) as w:
        for step in range(1, 4):
            w.write(step, {"train/loss": 1.0 / step})
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert got == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]


def test_disabled_writer_writes_nothing(tmp_path):
    w = MetricWriter(tmp_path / "x", enabled=False)
    w.write(1, {"a": 1.0})
    w.close()
    assert not (tmp_path / "x").exists()
