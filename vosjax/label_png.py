"""Fast reading of label-map PNGs for scoring, without importing the data pipeline.

:func:`read_label_ids` returns exactly the label map of
:func:`vosjax.data.io.read_label_png` (the first item of its result). The
common DAVIS case, an 8-bit palette PNG, non-interlaced, whose rows all use
PNG filter type 0 ("None", which is what palette encoders write), is decoded
here: the ids are then the bytes of the inflated image data after each row's
filter byte, so one ``zlib.decompress`` and a reshape give them, with no
palette handling and no conversion. Every other file (other modes, bit
depths, filters, interlacing, a chunk whose CRC does not match, anything
unreadable) goes to ``read_label_png``, which implements all the rules and
raises the named errors.

``vosjax.data.io`` is imported only then: importing the ``vosjax.data``
package loads JAX, a start-up cost the evaluation CLI does not need.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: jaxtyping is a start-up cost here
    from jaxtyping import UInt8

__all__ = ["read_label_ids"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _palette_ids(data: bytes) -> np.ndarray | None:
    """The ids of an 8-bit, filter-0, non-interlaced palette PNG; None for any other file."""
    if not data.startswith(_SIGNATURE):
        return None
    pos, end = len(_SIGNATURE), len(data)
    header = None
    idat: list[bytes] = []
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body_end = pos + 8 + length
        if body_end + 4 > end:
            return None  # truncated
        if kind in (b"IHDR", b"IDAT"):
            (crc,) = struct.unpack_from(">I", data, body_end)
            if zlib.crc32(data[pos + 4 : body_end]) != crc:
                return None
            if kind == b"IHDR":
                header = struct.unpack_from(">IIBBBBB", data, pos + 8)
            else:
                idat.append(data[pos + 8 : body_end])
        elif kind == b"IEND":
            break
        pos = body_end + 4
    if header is None or not idat:
        return None
    width, height, depth, colour, compression, filtering, interlace = header
    if (depth, colour, compression, filtering, interlace) != (8, 3, 0, 0, 0) or not width:
        return None
    stride = width + 1
    try:
        raw = zlib.decompress(b"".join(idat), bufsize=height * stride)
    except zlib.error:
        return None
    if len(raw) != height * stride:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)
    if rows[:, 0].any():
        return None  # some row uses a predictor filter: let PIL undo it
    return np.ascontiguousarray(rows[:, 1:])


def read_label_ids(path: str | os.PathLike) -> UInt8[np.ndarray, "H W"]:
    """Label map ``uint8[H, W]`` of a mask PNG, as ``vosjax.data.io.read_label_png(path)[0]``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    ids = _palette_ids(data)
    if ids is not None:
        return ids
    from vosjax.data.io import read_label_png

    return read_label_png(path)[0]
