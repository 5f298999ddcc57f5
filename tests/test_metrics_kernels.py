"""The fast kernels of vosjax.metrics against slow, obviously-correct references.

- the disk dilation (row runs by doubling, flat padded images, any integer
  dtype bit by bit) against an OR over every offset of the disk;
- the bit-packed, all-objects-at-once :func:`label_scores` against per-object
  references written from the protocol: the boundary map pixel by pixel, the
  dilation by disk offsets, the counts and the toolkit's F formula in plain
  Python floats (so "equal" means bit-identical);
- the sparse helpers (``_flat_nonzero``, ``_bit_counts``) against NumPy.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vosjax import metrics as M

# ----------------------------------------------------------------------------- references


def ref_dilate(m: np.ndarray, r: int) -> np.ndarray:
    """OR of ``m`` shifted by every (dy, dx) with dy^2 + dx^2 <= r^2 (zero past the image)."""
    h, w = m.shape[-2:]
    out = np.zeros_like(m)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > r * r or abs(dy) >= h or abs(dx) >= w:
                continue
            # out[y, x] |= m[y + dy, x + dx]
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
            out[..., yd, xd] |= m[..., ys, xs]
    return out


def ref_boundary(m: np.ndarray) -> np.ndarray:
    """Boundary map pixel by pixel: a pixel differs from an in-image east/south/south-east neighbour."""
    h, w = m.shape
    b = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                if (y == h - 1 and dy) or (x == w - 1 and dx):
                    continue  # neighbours past the image are not compared
                if m[y, x] != m[y + dy, x + dx]:
                    b[y, x] = True
    return b


def ref_scores(g: np.ndarray, p: np.ndarray, r: int) -> tuple[float, float]:
    """J and F of one object in one frame, the toolkit's formulas in Python floats."""
    inter, union = int((g & p).sum()), int((g | p).sum())
    j = 1.0 if union == 0 else inter / float(union)
    bg, bp = ref_boundary(g), ref_boundary(p)
    n_gt, n_fg = int(bg.sum()), int(bp.sum())
    gt_match = int((bg & ref_dilate(bp, r)).sum())
    fg_match = int((bp & ref_dilate(bg, r)).sum())
    if n_fg == 0 and n_gt > 0:
        prec, rec = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        prec, rec = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        prec, rec = 1.0, 1.0
    else:
        prec, rec = fg_match / float(n_fg), gt_match / float(n_gt)
    f = 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return j, f


def blob_labels(rng: np.random.Generator, shape, ids, density=0.5) -> np.ndarray:
    """Label maps of random overlapping rectangles and speckles with the given ids."""
    t, h, w = shape
    out = np.zeros(shape, np.uint8)
    for i in range(t):
        for k in ids:
            if rng.random() < 0.15:
                continue  # object absent in this frame
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            y1, x1 = y0 + rng.integers(1, h // 2 + 2), x0 + rng.integers(1, w // 2 + 2)
            out[i, y0:y1, x0:x1] = k
        speck = rng.random((h, w)) < 0.02 * density
        out[i][speck] = rng.choice([0, *ids], int(speck.sum()))
    return out


# ----------------------------------------------------------------------------- dilation


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(1, 1), (1, 9), (7, 1), (13, 21), (40, 33)]),
    radius=st.sampled_from([0, 1, 2, 3, 5, 8, 12]),
)
def test_dilate_disk_equals_loop_over_disk_offsets(seed, shape, radius):
    rng = np.random.default_rng(seed)
    m = rng.random((2, *shape)) < rng.uniform(0.005, 0.1)
    np.testing.assert_array_equal(M.dilate_disk(m, radius), ref_dilate(m, radius))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([np.uint8, np.uint16, np.uint64]))
def test_integer_dilation_and_boundaries_are_per_bit(seed, dtype):
    rng = np.random.default_rng(seed)
    nbits = 8 * np.dtype(dtype).itemsize
    planes = rng.random((nbits, 19, 26)) < 0.05
    packed = np.zeros((1, 19, 26), dtype)
    for k in range(nbits):
        packed[0] |= planes[k].astype(dtype) << dtype(k)
    dil = M._dilate(packed, 4)[0]
    bnd = M._bmap(packed)[0]
    for k in (0, 1, nbits // 2, nbits - 1):
        np.testing.assert_array_equal((dil >> dtype(k)) & dtype(1), ref_dilate(planes[k], 4))
        np.testing.assert_array_equal((bnd >> dtype(k)) & dtype(1), ref_boundary(planes[k]))


# ----------------------------------------------------------------------------- label_scores


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    case=st.sampled_from(
        [
            ((3, 17, 23), (1, 2), 0.008),  # contiguous ids, uint8 packing by shifts
            ((2, 30, 41), (1, 2, 3, 4, 5), 2),  # 5 objects: uint16 packing
            ((2, 20, 24), (7, 3, 200), 3),  # arbitrary ids: packing by comparisons
            ((2, 12, 15), tuple(range(1, 36)), 1),  # 35 objects: two packed groups
            ((2, 1, 30), (1, 2), 2),  # one-row frames
        ]
    ),
)
def test_label_scores_equal_per_object_reference(seed, case):
    shape, ids, bound_th = case
    rng = np.random.default_rng(seed)
    gt = blob_labels(rng, shape, ids)
    pred = blob_labels(rng, shape, ids)
    pred[0] = gt[0]  # a perfect frame
    gt[-1][gt[-1] == ids[0]] = 0  # an object missing from the ground truth
    r = M.boundary_radius(bound_th, *shape[1:])
    j, f = M.label_scores(gt, pred, ids, bound_th)
    assert j.shape == f.shape == (len(ids), shape[0])
    for i, k in enumerate(ids):
        for t in range(shape[0]):
            rj, rf = ref_scores(gt[t] == k, pred[t] == k, r)
            assert (j[i, t], f[i, t]) == (rj, rf), (k, t)
    assert np.all(j[:, 0] == 1.0) and np.all(f[:, 0] == 1.0)


def test_label_scores_ignore_other_labels_and_full_masks():
    gt = np.zeros((2, 10, 12), np.int32)
    pred = np.zeros_like(gt)
    gt[0] = 5  # object 5 fills the frame: no boundary at all (the toolkit's quirk)
    gt[1, 2:6, 3:8] = 9  # id 9 is not scored: it must not disturb object 5
    pred[1, 2:6, 3:8] = 5
    j, f = M.label_scores(gt, pred, [5])
    for t in range(2):
        assert (j[0, t], f[0, t]) == ref_scores(gt[t] == 5, pred[t] == 5, 1)
    assert (j[0, 0], f[0, 0]) == (0.0, 1.0)


def test_label_scores_match_the_per_mask_functions_at_davis_size():
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:480, :854]
    gt = np.zeros((3, 480, 854), np.uint8)
    pred = np.zeros_like(gt)
    for t in range(3):
        for k in (1, 2, 3):
            cy, cx, rad = rng.uniform(60, 420), rng.uniform(60, 790), rng.uniform(20, 90)
            gt[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2] = k
            sy, sx = rng.normal(0, 4, 2)
            pred[t][(yy - cy - sy) ** 2 + ((xx - cx - sx) / 1.1) ** 2 <= rad**2] = k
        speck = rng.random((480, 854)) < 1e-4
        pred[t][speck] = rng.integers(0, 4, int(speck.sum()))
    j, f = M.label_scores(gt, pred, (1, 2, 3))
    for i, k in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(j[i], M.jaccard(gt == k, pred == k))
        np.testing.assert_array_equal(f[i], M.boundary_f(gt == k, pred == k))
    assert 0.2 < f.mean() < 1.0


# ----------------------------------------------------------------------------- helpers


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.sampled_from([1, 7, 8, 64, 1001, 4096]),
    dtype=st.sampled_from([np.uint8, np.uint16, np.bool_]),
)
def test_flat_nonzero_and_bit_counts(seed, size, dtype):
    rng = np.random.default_rng(seed)
    a = (rng.random(size) < 0.01) * rng.integers(1, 255, size)
    a = a.astype(dtype)
    np.testing.assert_array_equal(M._flat_nonzero(a), np.flatnonzero(a))
    if dtype is not np.bool_:
        nbits = 8 * np.dtype(dtype).itemsize
        want = [int(np.count_nonzero((a >> dtype(k)) & dtype(1))) for k in range(nbits)]
        assert M._bit_counts(a, nbits).tolist() == want


def test_packed_dtype_holds_both_sides():
    for n in (1, 4, 5, 8, 9, 16, 17, 32):
        assert 8 * M._packed_dtype(n).itemsize >= 2 * n
    assert M._packed_dtype(4) == np.uint8 and M._packed_dtype(32) == np.uint64
