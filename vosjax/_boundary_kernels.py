"""Array kernels of the boundary measure, bit-packed: many masks at the cost of one.

Internal to :mod:`vosjax.metrics` (which documents the measures). Every
operation on the images is an XOR or an OR of shifted copies, so an unsigned
integer image whose bit i is mask i gets every mask's boundary map and disk
dilation in one pass. NumPy only, pure (``work`` dicts only lend buffers that
are reused frame after frame: fresh large temporaries cost page faults
comparable to the work itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


def _bmap(m: np.ndarray, work: dict | None = None) -> np.ndarray:
    """:func:`boundary_map` of ``m`` ``[..., H, W]``; for an integer ``m`` it is taken per bit.

    Every operation is an XOR or an OR, so each bit plane of a bit-packed
    image (one object per bit) gets its own boundary map in the same pass.
    The interior rule runs on the flattened array (east = next element, south
    = next row), which is wrong only in the last column and the last row of
    each image: those are then overwritten by their own rules. ``work`` (a
    dict, see :func:`_scratch`) lends the output and temporary buffers.
    """
    m = np.ascontiguousarray(m)
    w = m.shape[-1]
    flat = m.reshape(-1)
    n0 = max(flat.size - w - 1, 0)
    bf = _scratch(work, "bmap", flat.size, m.dtype)
    tmp = _scratch(work, "bmap_tmp", n0, m.dtype)
    here = flat[:n0]
    np.bitwise_xor(here, flat[1 : 1 + n0], out=bf[:n0])
    np.bitwise_xor(here, flat[w : w + n0], out=tmp)
    bf[:n0] |= tmp
    np.bitwise_xor(here, flat[w + 1 : w + 1 + n0], out=tmp)
    bf[:n0] |= tmp
    bf[n0:] = 0
    b = bf.reshape(m.shape)
    b[..., -1, :-1] = m[..., -1, :-1] ^ m[..., -1, 1:]
    b[..., :-1, -1] = m[..., :-1, -1] ^ m[..., 1:, -1]
    b[..., -1, -1] = 0
    return b


class _DiskRuns(NamedTuple):
    """Zero-padded images, flattened, and their horizontal runs for a disk dilation.

    ``padded`` is ``[N, H + 2 ry, W + 2 rx]`` flattened (row stride ``wp``);
    ``runs[k][q - k]`` is the OR of ``padded`` over ``q - k .. q + k`` (a row
    segment: the margins keep it inside the row of any image pixel ``q``);
    ``half[d]`` is the half-width of the disk's row at vertical offset ``d``.
    """

    padded: np.ndarray
    wp: int
    ry: int
    rx: int
    half: list[int]
    runs: dict[int, np.ndarray]


def _scratch(work: dict | None, key, size: int, dtype: np.dtype) -> np.ndarray:
    """A 1-D buffer of ``size`` elements; reused from ``work`` (grown on demand) when given.

    Reusing buffers across frames matters: fresh large arrays cost page faults
    that are slower than the ORs written into them.
    """
    if work is None:
        return np.empty(size, dtype)
    buf = work.get((key, dtype))
    if buf is None or buf.size < size:
        buf = work[(key, dtype)] = np.empty(size, dtype)
    return buf[:size]


def _disk_runs(m: np.ndarray, r: int, work: dict | None = None) -> _DiskRuns:
    """Pad ``m`` ``[N, H, W]`` and build the row runs of every width the disk of radius r needs.

    A run of length L is the OR of two runs of a power of two a >= L / 2 (the
    second shifted by L - a), so all widths cost a few passes, not one per pixel
    of half-width. ``work`` (a dict) lends reusable buffers.
    """
    n, h, w = m.shape
    ry = min(r, h - 1)  # offsets past the image cannot reach a pixel of it
    rx = min(r, w - 1)
    # Half-width of the disk's row at offset dy: the largest k with k^2 + dy^2 <= r^2.
    half = [min(math.isqrt(r * r - dy * dy), rx) for dy in range(ry + 1)]
    wp = w + 2 * rx
    size = n * (h + 2 * ry) * wp
    flat = _scratch(work, "padded", size, m.dtype)
    flat[:] = 0
    flat.reshape(n, h + 2 * ry, wp)[:, ry : ry + h, rx : rx + w] = m
    one_sided: dict[int, np.ndarray] = {1: flat}  # [i] = OR of flat[i : i + L]

    def run(length: int) -> np.ndarray:
        if length not in one_sided:
            a = 1 << (length.bit_length() - 1)
            base, shift = (run(a // 2), a // 2) if a == length else (run(a), length - a)
            out = _scratch(work, length, size, m.dtype)
            np.bitwise_or(base[: size - shift], base[shift:], out=out[: size - shift])
            out[size - shift :] = base[size - shift :]
            one_sided[length] = out
        return one_sided[length]

    runs = {k: run(2 * k + 1) for k in sorted(set(half))}
    return _DiskRuns(flat, wp, ry, rx, half, runs)


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Disk dilation of ``m`` ``[N, H, W]`` (see :func:`dilate_disk`).

    Only ORs of shifted copies, so an integer ``m`` is dilated bit plane by bit
    plane (one object per bit) at the cost of a single mask: the row runs of
    :func:`_disk_runs`, then one OR per row offset of the disk, all on the
    flattened padded images.
    """
    n, h, w = m.shape
    d = _disk_runs(m, r)
    size = d.padded.size
    lo, hi = d.ry * d.wp + d.rx, size - d.ry * d.wp - d.rx
    out = np.zeros(size, dtype=m.dtype)
    seg = out[lo:hi]
    for dy in range(-d.ry, d.ry + 1):
        k = d.half[abs(dy)]
        start = lo + dy * d.wp - k
        seg |= d.runs[k][start : start + (hi - lo)]
    return out.reshape(n, h + 2 * d.ry, d.wp)[:, d.ry : d.ry + h, d.rx : d.rx + w]


def _dilated_at(d: _DiskRuns, q: np.ndarray) -> np.ndarray:
    """The disk dilation read at the flat padded positions ``q`` only (gathers, no dense pass)."""
    acc = np.zeros(q.shape, dtype=d.padded.dtype)
    for dy in range(-d.ry, d.ry + 1):
        k = d.half[abs(dy)]
        acc |= d.runs[k][q + (dy * d.wp - k)]
    return acc


def _flat_nonzero(a: np.ndarray) -> np.ndarray:
    """``np.flatnonzero`` of a contiguous 1-D array, scanning 8 bytes at a time when it is sparse."""
    per = 8 // a.dtype.itemsize if a.dtype.itemsize < 8 else 0
    if per == 0 or a.size % per:
        return np.flatnonzero(a)
    words = np.flatnonzero(a.view(np.uint64))
    cand = (words[:, None] * per + np.arange(per)).reshape(-1)
    return cand[a[cand] != 0]


# Objects handled together: gt and prediction masks of each take one bit of a
# uint64 word, so at most 32 objects share a bit-packed image.
_MAX_PACKED = 32


def _packed_dtype(n: int) -> np.dtype:
    """Smallest unsigned dtype holding ``2 n`` bits."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if 2 * n <= 8 * np.dtype(dt).itemsize:
            return np.dtype(dt)
    raise AssertionError(n)


def _bit_counts(vals: np.ndarray, nbits: int) -> np.ndarray:
    """Number of elements of the 1-D unsigned ``vals`` with bit ``k`` set, for ``k < nbits``."""
    size = vals.dtype.itemsize
    if vals.size == 0:
        return np.zeros(nbits, np.int64)
    octets = vals.astype(f"<u{size}", copy=False).view(np.uint8).reshape(-1, size)
    bits = np.unpackbits(octets, axis=1, bitorder="little")
    return bits.sum(axis=0, dtype=np.int64)[:nbits]


def _pack(g: np.ndarray, p: np.ndarray, ids: Sequence[int], dt: np.dtype, work: dict) -> np.ndarray:
    """Bit-packed masks of one frame: bit i is ``g == ids[i]``, bit n + i is ``p == ids[i]``."""
    n = len(ids)
    z = _scratch(work, "z", g.size, dt).reshape(g.shape)
    eq = _scratch(work, "eq", g.size, np.dtype(bool)).reshape(g.shape)
    tmp = _scratch(work, "pack_tmp", g.size, dt).reshape(g.shape)
    contiguous = list(ids) == list(range(1, n + 1))
    unsigned = g.dtype.kind == "u" and p.dtype.kind == "u"
    if contiguous and unsigned and int(g.max()) <= n and int(p.max()) <= n:
        # Labels 0..n only: id k -> bit k - 1 is (1 << k) >> 1, and 0 -> no bit.
        np.left_shift(dt.type(1), g, out=z)
        z >>= dt.type(1)
        np.left_shift(dt.type(1), p, out=tmp)
        tmp >>= dt.type(1)
        tmp <<= dt.type(n)
        z |= tmp
        return z
    z[...] = 0
    for i, k in enumerate(ids):
        for labels, bit in ((g, i), (p, n + i)):
            np.equal(labels, k, out=eq)
            np.left_shift(eq.view(np.uint8), dt.type(bit), out=tmp)
            z |= tmp
    return z


def _frame_counts(
    z: np.ndarray, n: int, r: int, work: dict, j: np.ndarray, counts: np.ndarray
) -> None:
    """J (into ``j[:, ]``) and the four boundary counts (into ``counts[:, :]``) of one packed frame.

    ``z`` ``[H, W]`` is :func:`_pack`'s image; ``j`` is ``[n]``, ``counts`` is
    ``[4, n]``: n_gt, n_fg, gt_match, fg_match.
    """
    h, w = z.shape
    dt = z.dtype.type
    zm = _scratch(work, "zm", z.size, z.dtype).reshape(z.shape)
    eq = _scratch(work, "eq", z.size, np.dtype(bool)).reshape(z.shape)
    for i in range(n):
        m = dt((1 << i) | (1 << (n + i)))
        np.bitwise_and(z, m, out=zm)
        union = np.count_nonzero(zm)
        np.equal(zm, m, out=eq)
        j[i] = 1.0 if union == 0 else np.count_nonzero(eq) / np.float64(union)
    bt = _bmap(z, work).reshape(-1)
    idx = _flat_nonzero(bt)
    if idx.size == 0:
        counts[:] = 0
        return
    rows, cols = np.divmod(idx, w)
    y0, x0 = int(rows.min()), int(cols.min())
    # Matches only happen at boundary pixels and only involve boundary pixels within r, so
    # the dilation of the bounding box of all boundaries (zero outside) is exact there.
    crop = bt.reshape(h, w)[y0 : int(rows.max()) + 1, x0 : int(cols.max()) + 1]
    d = _disk_runs(crop[None], r, work)
    dil = _dilated_at(d, (rows - y0 + d.ry) * d.wp + (cols - x0 + d.rx))
    vals = bt[idx]
    # gt bit i is matched by the dilated prediction bit n + i, and the other way round.
    matched = vals & ((dil >> dt(n)) | (dil << dt(n)))
    both, hits = _bit_counts(vals, 2 * n), _bit_counts(matched, 2 * n)
    counts[0], counts[1], counts[2], counts[3] = both[:n], both[n:], hits[:n], hits[n:]
