"""DAVIS J / F / statistics against hand-computed values and slow references.

The references here are written from the protocol's definition: the boundary
map as the toolkit's sequence of shifted XORs (and, independently, as per-pixel
loops), the dilation with ``skimage.morphology.disk`` + ``scipy.ndimage``, and
the statistics with the toolkit's uint8 bin edges made optional. The metrics
are host-side NumPy (not differentiable), so there are no gradients to check.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage
from skimage.morphology import disk

from vosjax import metrics as M
from vosjax.errors import VosjaxError

# ----------------------------------------------------------------------------- references


def ref_seg2bmap(m: np.ndarray) -> np.ndarray:
    """The boundary map exactly as the protocol states it, on one [H, W] mask."""
    m = m.astype(bool)
    e, s, se = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    e[:, :-1] = m[:, 1:]
    s[:-1, :] = m[1:, :]
    se[:-1, :-1] = m[1:, 1:]
    b = (m ^ e) | (m ^ s) | (m ^ se)
    b[-1, :] = m[-1, :] ^ e[-1, :]
    b[:, -1] = m[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def loop_seg2bmap(m: np.ndarray) -> np.ndarray:
    """Same map pixel by pixel: which neighbours each pixel is compared with."""
    h, w = m.shape

    def at(y, x):
        return bool(m[y, x]) if y < h and x < w else False

    b = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                neighbours = [at(y, x + 1)]
            elif x == w - 1:
                neighbours = [at(y + 1, x)]
            else:
                neighbours = [at(y, x + 1), at(y + 1, x), at(y + 1, x + 1)]
            b[y, x] = any(at(y, x) != n for n in neighbours)
    return b


def ref_radius(bound_th, h, w):
    return bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))


def ref_precision_recall_f(gt: np.ndarray, pred: np.ndarray, bound_th=0.008):
    """One frame: skimage disk + scipy dilation + the toolkit's case analysis."""
    r = ref_radius(bound_th, *gt.shape)
    bg, bp = ref_seg2bmap(gt), ref_seg2bmap(pred)
    se = disk(r).astype(bool)
    gt_dil = ndimage.binary_dilation(bg, structure=se) if r > 0 else bg
    fg_dil = ndimage.binary_dilation(bp, structure=se) if r > 0 else bp
    n_fg, n_gt = int(bp.sum()), int(bg.sum())
    if n_fg == 0 and n_gt > 0:
        p, rc = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1.0, 1.0
    else:
        p, rc = (bp & gt_dil).sum() / n_fg, (bg & fg_dil).sum() / n_gt
    f = 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)
    return p, rc, f


def ref_jaccard(gt, pred):
    union = int((gt | pred).sum())
    return 1.0 if union == 0 else int((gt & pred).sum()) / union


def ref_statistics(v: np.ndarray, uint8_edges: bool):
    """One object's (mean, recall, decay), optionally with the toolkit's uint8 edges."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(v)
        recall = np.nanmean(v > 0.5)
        ids = np.round(np.linspace(1, len(v), 5) + 1e-10) - 1
        ids = ids.astype(np.uint8) if uint8_edges else ids.astype(np.int64)
        bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return mean, recall, decay


def blobs(rng, shape, sigma, level=0.3):
    """Random smooth masks: thresholded Gaussian-filtered noise over the last two axes."""
    noise = rng.normal(size=shape)
    sig = (0,) * (len(shape) - 2) + (sigma, sigma)
    x = ndimage.gaussian_filter(noise, sigma=sig)
    return x > level * x.std()


def square(h, w, y0, x0, size):
    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


# ----------------------------------------------------------------------------- boundary map


def test_boundary_map_of_a_square_by_hand():
    m = square(7, 7, 2, 2, 3)  # rows/cols 2..4
    expected = np.zeros((7, 7), dtype=bool)
    expected[1, 1:5] = True  # row above (its lower / lower-right neighbour is inside)
    expected[1:5, 1] = True  # column to the left
    expected[4, 2:5] = True  # bottom row of the square
    expected[2:5, 4] = True  # right column of the square
    np.testing.assert_array_equal(M.boundary_map(m), expected)
    assert expected.sum() == 12


def test_boundary_map_single_pixel_and_corners():
    m = np.zeros((5, 6), dtype=bool)
    m[2, 3] = True
    expected = np.zeros((5, 6), dtype=bool)
    expected[[2, 2, 1, 1], [3, 2, 3, 2]] = True  # the pixel, left, up, up-left
    np.testing.assert_array_equal(M.boundary_map(m), expected)

    # Bottom-right pixel: its own boundary bit is forced to 0 (b[-1, -1] = 0).
    m = np.zeros((5, 6), dtype=bool)
    m[-1, -1] = True
    expected = np.zeros((5, 6), dtype=bool)
    expected[3, 4] = True  # via se
    expected[4, 4] = True  # last-row rule: m[-1, x] ^ m[-1, x + 1]
    expected[3, 5] = True  # last-column rule: m[y, -1] ^ m[y + 1, -1]
    np.testing.assert_array_equal(M.boundary_map(m), expected)


def test_boundary_map_last_row_and_column_rules():
    h, w = 5, 6
    last_row = np.zeros((h, w), dtype=bool)
    last_row[-1, :] = True
    expected = np.zeros((h, w), dtype=bool)
    expected[-2, :] = True  # the row above; the last row itself has no horizontal change
    np.testing.assert_array_equal(M.boundary_map(last_row), expected)

    last_col = np.zeros((h, w), dtype=bool)
    last_col[:, -1] = True
    expected = np.zeros((h, w), dtype=bool)
    expected[:, -2] = True
    np.testing.assert_array_equal(M.boundary_map(last_col), expected)

    # A mask filling the image has no boundary; a left half has its edge column.
    assert not M.boundary_map(np.ones((h, w), dtype=bool)).any()
    half = np.zeros((h, w), dtype=bool)
    half[:, :3] = True
    expected = np.zeros((h, w), dtype=bool)
    expected[:, 2] = True
    np.testing.assert_array_equal(M.boundary_map(half), expected)


@given(
    shape=st.sampled_from([(1, 1), (1, 6), (6, 1), (2, 2), (7, 9), (12, 10)]),
    seed=st.integers(0, 2**31 - 1),
    density=st.sampled_from([0.1, 0.5, 0.9]),
)
def test_boundary_map_matches_loop_and_shift_references(shape, seed, density):
    rng = np.random.default_rng(seed)
    masks = rng.random((3,) + shape) < density
    got = M.boundary_map(masks)
    assert got.shape == masks.shape and got.dtype == bool
    for m, b in zip(masks, got):
        np.testing.assert_array_equal(b, ref_seg2bmap(m))
        np.testing.assert_array_equal(b, loop_seg2bmap(m))


# ----------------------------------------------------------------------------- dilation


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 8, 40])
def test_dilate_disk_matches_scipy_skimage(radius):
    rng = np.random.default_rng(radius)
    masks = rng.random((4, 23, 31)) < 0.02
    masks[0] = False
    masks[1, 0, 0] = masks[1, -1, -1] = True  # corners: nothing wraps or leaks outside
    got = M.dilate_disk(masks.reshape(2, 2, 23, 31), radius).reshape(4, 23, 31)
    for m, g in zip(masks, got):
        ref = ndimage.binary_dilation(m, structure=disk(radius).astype(bool)) if m.any() else m
        np.testing.assert_array_equal(g, ref)


def test_disk_shape_is_euclidean():
    m = np.zeros((1, 9, 9), dtype=bool)
    m[0, 4, 4] = True
    np.testing.assert_array_equal(M.dilate_disk(m, 3)[0, 1:8, 1:8], disk(3).astype(bool))
    assert M.dilate_disk(m, 1)[0].sum() == 5  # a plus, not a 3 x 3 square


# ----------------------------------------------------------------------------- J and F by hand


def test_jaccard_by_hand():
    a = square(10, 10, 2, 2, 4)
    b = square(10, 10, 2, 3, 4)  # shifted right by one: 12 shared of 20
    empty = np.zeros((10, 10), dtype=bool)
    one = np.zeros((10, 10), dtype=bool)
    one[5, 5] = True
    gt = np.stack([a, one, empty, empty, one])
    pred = np.stack([b, one, empty, one, empty])
    np.testing.assert_allclose(M.jaccard(gt, pred), [0.6, 1.0, 1.0, 0.0, 0.0])
    assert M.jaccard(gt.reshape(5, 1, 10, 10), pred.reshape(5, 1, 10, 10)).shape == (5, 1)
    assert M.jaccard(a, b).shape == ()


def test_boundary_f_by_hand():
    a = square(10, 10, 2, 2, 4)
    b = square(10, 10, 2, 3, 4)
    # Radius 0: the two L-shaped 16-pixel boundaries share 8 pixels.
    p, r = M.boundary_precision_recall(a, b, bound_th=0)
    assert (p, r) == (0.5, 0.5)
    assert M.boundary_f(a, b, bound_th=0) == 0.5
    # Radius 1: every boundary pixel is within one pixel of the other boundary.
    assert M.boundary_f(a, b, bound_th=1) == 1.0
    assert M.boundary_f(a, a) == 1.0

    # One-pixel objects moved diagonally: 4-pixel boundaries; with the radius-1 disk (a
    # plus) 3 of 4 pixels match on each side, with radius 2 all do.
    one, moved = np.zeros((10, 10), dtype=bool), np.zeros((10, 10), dtype=bool)
    one[4, 4] = True
    moved[5, 5] = True
    p, r = M.boundary_precision_recall(one, moved, bound_th=1)
    assert (p, r) == (0.75, 0.75)
    assert M.boundary_f(one, moved, bound_th=1) == pytest.approx(0.75)
    assert M.boundary_f(one, moved, bound_th=2) == 1.0


def test_boundary_f_empty_cases():
    empty = np.zeros((10, 10), dtype=bool)
    one = np.zeros((10, 10), dtype=bool)
    one[5, 5] = True
    full = np.ones((10, 10), dtype=bool)
    gt = np.stack([one, empty, empty, full, full])
    pred = np.stack([empty, one, empty, empty, one])
    p, r = M.boundary_precision_recall(gt, pred)
    np.testing.assert_array_equal(p, [1.0, 0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(r, [0.0, 1.0, 1.0, 1.0, 1.0])
    # A full mask has no boundary, so full vs empty scores F = 1 (J = 0): the toolkit's quirk.
    np.testing.assert_array_equal(M.boundary_f(gt, pred), [0.0, 0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(M.jaccard(gt, pred), [0.0, 0.0, 1.0, 0.0, 0.01])


def test_boundary_f_masks_touching_the_border():
    h, w = 12, 16
    left = np.zeros((h, w), dtype=bool)
    left[:, :8] = True  # boundary: column 7, every row (the last one by the last-row rule)
    wider = np.zeros((h, w), dtype=bool)
    wider[:, :9] = True
    assert M.boundary_map(left).sum() == h
    assert M.boundary_f(left, wider, bound_th=0) == 0.0
    assert M.boundary_f(left, wider, bound_th=1) == 1.0
    bottom = np.zeros((h, w), dtype=bool)
    bottom[-3:, 5:] = True  # touches the bottom and right borders
    for bt in (0, 1, 3):
        assert M.boundary_f(left, bottom, bound_th=bt) == pytest.approx(
            ref_precision_recall_f(left, bottom, bt)[2]
        )


def test_boundary_radius():
    assert M.boundary_radius(0.008, 480, 854) == 8
    assert M.boundary_radius(0.008, 100, 100) == 2  # ceil(1.13)
    assert M.boundary_radius(0.008, 10, 10) == 1
    assert M.boundary_radius(0.0, 480, 854) == 0
    assert M.boundary_radius(3, 480, 854) == 3
    for bad in (-0.1, float("nan"), 2.5):
        with pytest.raises(VosjaxError, match="bound_th"):
            M.boundary_radius(bad, 10, 10)


# ----------------------------------------------------------------------------- F vs reference


@pytest.mark.parametrize(
    "shape,sigma,bound_th",
    [
        ((6, 17, 23), 2, 0.008),
        ((6, 64, 64), 4, 0.008),
        ((4, 120, 200), 6, 0.008),
        ((4, 64, 64), 3, 5),
    ],
)
def test_boundary_f_matches_reference_on_blobs(shape, sigma, bound_th):
    rng = np.random.default_rng(sum(shape))
    gt = blobs(rng, shape, sigma)
    pred = blobs(rng, shape, sigma)
    pred[0] = gt[0]
    pred[1] = False
    gt[2] = False
    # Shifted just past the tolerance: horizontal edges still match, vertical ones do not.
    pred[3] = np.roll(gt[3], ref_radius(bound_th, *shape[1:]) + 1, axis=1)
    p, r = M.boundary_precision_recall(gt, pred, bound_th)
    f = M.boundary_f(gt, pred, bound_th)
    j = M.jaccard(gt, pred)
    for t in range(shape[0]):
        rp, rr, rf = ref_precision_recall_f(gt[t], pred[t], bound_th)
        assert p[t] == pytest.approx(rp, abs=1e-15) and r[t] == pytest.approx(rr, abs=1e-15)
        assert f[t] == pytest.approx(rf, abs=1e-15)
        assert j[t] == pytest.approx(ref_jaccard(gt[t], pred[t]), abs=1e-15)
    assert 0 < f[3] < 1 and f[0] == 1


def test_boundary_f_matches_reference_at_davis_size():
    rng = np.random.default_rng(7)
    gt = blobs(rng, (3, 480, 854), 25)
    pred = blobs(rng, (3, 480, 854), 25)
    pred[0] = np.roll(gt[0], (5, -6), axis=(0, 1))  # boundaries partly within the 8 px disk
    f = M.boundary_f(gt, pred)
    for t in range(3):
        assert f[t] == pytest.approx(ref_precision_recall_f(gt[t], pred[t])[2], abs=1e-15)
    assert 0.3 < f[0] < 1.0


# ----------------------------------------------------------------------------- statistics


def test_db_statistics_by_hand():
    mean, recall, decay = M.db_statistics(np.array([1.0, 0.5, 0.2]))
    # n = 3: edges 0, 1, 1, 2, 2; bin 0 = frames 0..1, bin 3 = frame 2.
    assert mean == pytest.approx(1.7 / 3) and recall == pytest.approx(1 / 3)
    assert decay == pytest.approx(0.75 - 0.2)

    # n = 4 with a NaN: edges 0, 1, 2, 2, 3; the NaN is skipped by the means and is
    # "not above 0.5" for the recall.
    mean, recall, decay = M.db_statistics(np.array([1.0, np.nan, 0.2, 0.8]))
    assert mean == pytest.approx(2.0 / 3) and recall == 0.5
    assert decay == pytest.approx(1.0 - 0.5)

    assert M.db_statistics(np.array([0.7])) == (0.7, 1.0, 0.0)
    m, r, d = M.db_statistics(np.array([np.nan, np.nan]))
    assert np.isnan(m) and r == 0 and np.isnan(d)


def test_db_statistics_long_sequences_do_not_wrap():
    n = 300
    v = np.where(np.arange(n) < n // 2, 1.0, 0.0)
    mean, recall, decay = M.db_statistics(v)
    # Correct edges 0, 75, 150, 224, 299: bin 0 all ones, bin 3 all zeros.
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)
    # The toolkit's uint8 edges would end at 299 % 256 = 43: an empty last bin, NaN decay.
    assert np.isnan(ref_statistics(v, uint8_edges=True)[2])
    # Below 256 frames nothing wraps and the two agree; at 256 the toolkit's end index
    # ids[4] + 1 = 255 + 1 already overflows uint8, emptying its last bin.
    v = np.random.default_rng(0).random(256)
    assert M.db_statistics(v[:255])[2] == ref_statistics(v[:255], uint8_edges=True)[2]
    assert np.isnan(ref_statistics(v, uint8_edges=True)[2])
    assert M.db_statistics(v)[2] == ref_statistics(v, uint8_edges=False)[2]


@given(
    n=st.integers(1, 255),
    seed=st.integers(0, 2**31 - 1),
    nan_frac=st.sampled_from([0.0, 0.2]),
)
def test_db_statistics_matches_toolkit_reference(n, seed, nan_frac):
    rng = np.random.default_rng(seed)
    v = rng.random((3, n))
    v[rng.random((3, n)) < nan_frac] = np.nan
    got = M.db_statistics(v)
    assert all(x.shape == (3,) for x in got)
    for row in range(3):
        want = ref_statistics(v[row], uint8_edges=True)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g[row], w, rtol=1e-12, atol=1e-15, equal_nan=True)


# ----------------------------------------------------------------------------- sequences


def _two_object_sequence():
    """7 frames of 40 x 50 labels: two moving squares, predictions with known faults."""
    t_count, h, w = 7, 40, 50
    gt = np.zeros((t_count, h, w), dtype=np.uint8)
    pred = np.zeros_like(gt)
    for t in range(t_count):
        gt[t, 5:15, 5 + t : 15 + t] = 1
        gt[t, 20:32, 30:42] = 2
        pred[t, 5:15, 6 + t : 16 + t] = 1  # object 1 one pixel to the right
        if t % 2:
            pred[t, 22:32, 30:42] = 2  # object 2 found on odd frames only
    pred[0] = 0  # first and last frames are not evaluated: garbage there is ignored
    pred[-1] = 1
    return gt, pred


def test_evaluate_sequence_matches_per_object_reference():
    gt, pred = _two_object_sequence()
    res = M.evaluate_sequence(gt, pred)
    assert res.object_ids == (1, 2) and res.j.shape == res.f.shape == (2, 5)
    for i, k in enumerate(res.object_ids):
        for t in range(5):
            g, p = gt[t + 1] == k, pred[t + 1] == k
            assert res.j[i, t] == pytest.approx(ref_jaccard(g, p))
            assert res.f[i, t] == pytest.approx(ref_precision_recall_f(g, p)[2])
    np.testing.assert_allclose(res.j[0], 90 / 110)
    np.testing.assert_allclose(res.j[1], [10 / 12, 0, 10 / 12, 0, 10 / 12])
    full = M.evaluate_sequence(gt, pred, exclude_first_last=False)
    assert full.j.shape == (2, 7) and full.j[0, 0] == 0.0


def test_evaluate_sequence_object_rules():
    gt, pred = _two_object_sequence()
    # Default objects are 1..max(first frame), present or not: id 1 absent here, so it is
    # an empty object (J = F = 1 where the prediction is empty too).
    gt3 = np.where(gt == 1, 3, gt)
    gt3[gt3 == 2] = 0
    pred3 = np.where(pred == 1, 3, 0).astype(pred.dtype)
    res = M.evaluate_sequence(gt3, pred3)
    assert res.object_ids == (1, 2, 3)
    np.testing.assert_array_equal(res.j[:2], 1.0)
    np.testing.assert_array_equal(res.f[:2], 1.0)
    # Objects missing from the prediction are empty masks.
    res = M.evaluate_sequence(gt, np.where(pred == 2, 0, pred))
    np.testing.assert_array_equal(res.j[1], 0.0)
    np.testing.assert_array_equal(res.f[1], 0.0)
    # An id the ground truth does not have is an error naming it.
    bad = pred.copy()
    bad[3, 0, 0] = 3
    with pytest.raises(VosjaxError, match=r"\[3\]"):
        M.evaluate_sequence(gt, bad)
    with pytest.raises(VosjaxError, match=r"\[2\]"):
        M.evaluate_sequence(gt, pred, object_ids=[1])
    assert M.evaluate_sequence(gt, np.where(pred == 2, 0, pred), object_ids=[1]).j.shape == (1, 5)
    # Void (255) ground-truth pixels are background, as in the toolkit.
    void = gt.copy()
    void[:, 0:3, :] = 255
    want = M.evaluate_sequence(gt, pred)
    got = M.evaluate_sequence(void, pred)
    np.testing.assert_array_equal(got.j, want.j)
    np.testing.assert_array_equal(got.f, want.f)


def test_summarize_is_the_official_aggregate():
    rng = np.random.default_rng(3)
    scores = {
        "a": M.SequenceScores((1, 2), rng.random((2, 9)), rng.random((2, 9))),
        "b": M.SequenceScores((1,), rng.random((1, 20)), rng.random((1, 20))),
    }
    summary = M.summarize(scores)
    per = {"J": [], "F": []}
    rows = []
    for name, s in scores.items():
        for i, k in enumerate(s.object_ids):
            per["J"].append(ref_statistics(s.j[i], uint8_edges=True))
            per["F"].append(ref_statistics(s.f[i], uint8_edges=True))
            rows.append((f"{name}_{k}", per["J"][-1][0], per["F"][-1][0]))
    g = summary.global_metrics
    assert tuple(g) == M.GLOBAL_MEASURES
    for letter in "JF":
        for col, stat in enumerate(("Mean", "Recall", "Decay")):
            assert g[f"{letter}-{stat}"] == pytest.approx(np.mean([x[col] for x in per[letter]]))
    assert g["J&F-Mean"] == pytest.approx((g["J-Mean"] + g["F-Mean"]) / 2)
    assert [r[0] for r in summary.per_object] == ["a_1", "a_2", "b_1"]
    np.testing.assert_allclose([r[1:] for r in summary.per_object], [r[1:] for r in rows])


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_named_errors():
    a = np.zeros((4, 5), dtype=bool)
    with pytest.raises(VosjaxError, match=r"jaccard.*\(4, 5\).*\(5, 4\)"):
        M.jaccard(a, a.T)
    with pytest.raises(VosjaxError, match=r"boundary_f.*\(2, 4, 5\).*\(4, 5\)"):
        M.boundary_f(np.zeros((2, 4, 5), dtype=bool), a)
    with pytest.raises(VosjaxError, match="boolean mask.*labels == object_id"):
        M.jaccard(a.astype(np.uint8), a)
    with pytest.raises(VosjaxError, match=r"\[\.\.\., H, W\]"):
        M.boundary_map(np.zeros(5, dtype=bool))
    with pytest.raises(VosjaxError, match="radius"):
        M.dilate_disk(a, -1)
    with pytest.raises(VosjaxError, match="no frames"):
        M.db_statistics(np.zeros((2, 0)))
    labels = np.zeros((5, 4, 5), dtype=np.int32)
    with pytest.raises(VosjaxError, match=r"\(5, 4, 5\).*\(5, 4, 6\)"):
        M.evaluate_sequence(labels, np.zeros((5, 4, 6), dtype=np.int32))
    with pytest.raises(VosjaxError, match="integer label map"):
        M.evaluate_sequence(labels.astype(np.float32), labels)
    with pytest.raises(VosjaxError, match="at least 3 frames"):
        M.evaluate_sequence(labels[:2], labels[:2])
    with pytest.raises(VosjaxError, match="object_ids"):
        M.evaluate_sequence(labels, labels, object_ids=[1, 1])
    with pytest.raises(VosjaxError, match="no objects"):
        M.summarize({})


# ----------------------------------------------------------------------------- real data


def _png(path):
    return np.array(Image.open(path))


@pytest.mark.parametrize("seq", ["dog", "drift-straight"])
def test_osvos_reference_masks_on_real_annotation(davis_demo, seq):
    gt = _png(davis_demo / "Annotations" / "480p" / seq / "00000.png")
    pred = _png(davis_demo / "reference" / "osvos" / seq / "00000.png")
    assert gt.shape == pred.shape == (480, 854)
    g, p = gt == 1, pred == 1
    j, f = float(M.jaccard(g, p)), float(M.boundary_f(g, p))
    assert j == pytest.approx(ref_jaccard(g, p), abs=1e-15)
    rp, rr, rf = ref_precision_recall_f(g, p)
    assert f == pytest.approx(rf, abs=1e-15)
    assert np.allclose(M.boundary_precision_recall(g, p), (rp, rr), atol=1e-15)
    # A published method on the frame it was given: close, but not a copy.
    assert 0.85 < j < 1.0 and 0.9 < f < 1.0 and f > j


def test_boundary_f_speed_on_real_masks(davis_demo):
    folder = davis_demo / "reference" / "osvos" / "drift-straight"
    frames = np.stack([_png(folder / f"{t:05d}.png") == 1 for t in range(50)])
    # 3 "objects": the masks against themselves 1, 2 and 3 frames later (real motion).
    gt = np.stack([frames] * 3, axis=1)
    pred = np.stack([np.roll(frames, -s, axis=0) for s in (1, 2, 3)], axis=1)
    start = time.perf_counter()
    f = M.boundary_f(gt, pred)
    elapsed = time.perf_counter() - start
    print(f"\nboundary_f, 50 frames x 3 objects at 480 x 854: {elapsed:.3f} s")
    assert f.shape == (50, 3)
    for t, o in [(0, 0), (17, 1), (40, 2)]:
        assert f[t, o] == pytest.approx(ref_precision_recall_f(gt[t, o], pred[t, o])[2], abs=1e-15)
    assert np.all(f[:45].mean(axis=0)[:-1] >= f[:45].mean(axis=0)[1:])  # farther apart, lower F
