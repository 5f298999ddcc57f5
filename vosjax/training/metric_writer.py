"""Training metrics on disk: a JSONL file and TensorBoard event files, without TensorFlow.

:class:`MetricWriter` appends one JSON object per call to ``WORKDIR/metrics.jsonl``
(``{"step": s, "time": t, "name": value, ...}``) and the same scalars to a
TensorBoard event file ``WORKDIR/tensorboard/events.out.tfevents.<time>.<host>``.
Only process 0 writes.

The event file is written here directly, so neither tensorflow nor
tensorboard is needed. Its format is a TFRecord stream of serialized
``tensorflow.Event`` protocol buffers. Each record is

    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

(little-endian), with CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)
and ``masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 (mod 2^32)``. The
messages used, in protobuf wire format:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

The first record carries ``file_version = "brain.Event:2"``; scalars are
``simple_value`` summaries, which TensorBoard's scalar dashboard reads.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any, Self

__all__ = [
    "EventFileWriter",
    "MetricWriter",
    "crc32c",
    "masked_crc32c",
    "read_event_scalars",
]


# ----------------------------------------------------------------------------- CRC-32C


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: reflected, init and final xor 0xFFFFFFFF."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: ``((c >> 15) | (c << 17)) + 0xA282EAD8`` mod 2^32 of ``crc32c``."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- protobuf wire format


def _varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None, summary: bytes | None = None) -> bytes:
    msg = bytes([(1 << 3) | 1]) + struct.pack("<d", wall_time)
    msg += _varint((2 << 3) | 0) + _varint(int(step))
    if file_version is not None:
        msg += _field_bytes(3, file_version.encode())
    if summary is not None:
        msg += _field_bytes(5, summary)
    return msg


def _scalar_summary(scalars: Mapping[str, float]) -> bytes:
    out = b""
    for tag, value in scalars.items():
        val = _field_bytes(1, str(tag).encode()) + bytes([(2 << 3) | 5]) + struct.pack("<f", float(value))
        out += _field_bytes(1, val)
    return out


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class EventFileWriter:
    """Append scalar summaries to one TensorBoard event file (see the module docstring)."""

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = pathlib.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.vosjax"
        self.path = self.logdir / name
        self._f = open(self.path, "ab")  # noqa: SIM115  (kept open for the run)
        self._f.write(_record(_event(time.time(), 0, file_version="brain.Event:2")))
        self._f.flush()

    def scalars(self, step: int, scalars: Mapping[str, float], wall_time: float | None = None) -> None:
        finite = {k: float(v) for k, v in scalars.items()}
        if finite:
            wt = time.time() if wall_time is None else wall_time
            self._f.write(_record(_event(wt, step, summary=_scalar_summary(finite))))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()


# ----------------------------------------------------------------------------- reading back


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def read_event_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in an event file, checking both CRCs of each record."""
    data = pathlib.Path(path).read_bytes()
    out: list[tuple[int, str, float]] = []
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        body = data[pos + 12:pos + 12 + length]
        (bcrc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if hcrc != masked_crc32c(header) or bcrc != masked_crc32c(body):
            raise ValueError(f"{path}: corrupt record at byte {pos}")
        pos += 16 + length
        step = 0
        summary = None
        for number, _, value in _fields(body):
            if number == 2:
                step = value
            elif number == 5:
                summary = value
        if summary is None:
            continue
        for number, _, value in _fields(summary):
            if number != 1:
                continue
            tag, v = None, None
            for n2, _, val2 in _fields(value):
                if n2 == 1:
                    tag = val2.decode()
                elif n2 == 2:
                    (v,) = struct.unpack("<f", val2)
            out.append((int(step), tag, float(v)))
    return out


# ----------------------------------------------------------------------------- the writer used by train.py


def _jsonable(v: Any) -> Any:
    v = float(v)
    return v if math.isfinite(v) else str(v)


class MetricWriter:
    """Scalars to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/`` (process 0 only)."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True):
        self.enabled = enabled
        self.workdir = pathlib.Path(workdir)
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self._jsonl = None
        self._events = None
        if enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.jsonl_path, "a")  # noqa: SIM115  (kept open for the run)
            self._events = EventFileWriter(self.workdir / "tensorboard")

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled or not scalars:
            return
        now = time.time()
        row = {"step": int(step), "time": now, **{k: _jsonable(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        self._events.scalars(step, {k: float(v) for k, v in scalars.items()}, now)
        self._events.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._events.close()
            self._jsonl = self._events = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
