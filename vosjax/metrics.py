"""DAVIS region (J) and boundary (F) measures, exactly as the official toolkit.

This reimplements the protocol of the DAVIS 2017 evaluation toolkit
(davis2017-evaluation) for semi-supervised video object segmentation,
vectorised over frames and objects. Metrics are host-side: everything here is
NumPy on boolean / integer arrays (no JAX, no SciPy, no scikit-image), pure and
free of I/O. Reading PNGs and writing the CSVs is ``vosjax.evaluate``'s job.

Per object and frame (``gt``, ``pred`` boolean masks of one object):

- J (region similarity) = |gt & pred| / |gt | pred|, and 1 when both are empty.
- F (boundary measure): boundary maps of both masks (:func:`boundary_map`),
  each dilated by a disk of radius ``ceil(0.008 * sqrt(H^2 + W^2))``
  (:func:`dilate_disk`); precision P = matched prediction boundary pixels /
  prediction boundary pixels, recall R likewise for the ground truth, and
  F = 2PR / (P + R) (0 when P + R = 0). Empty boundaries: none (pred) vs some
  (gt) gives P = 1, R = 0; some vs none gives P = 0, R = 1; none vs none gives
  P = R = 1. Note that a mask covering the whole image has an EMPTY boundary
  map (official quirk), so a full mask against an empty one has F = 1.

Per object over a sequence (:func:`db_statistics`): mean, recall (fraction of
frames > 0.5) and decay (mean of the first quarter minus the last quarter).
In the semi-supervised protocol the first and last frames are not evaluated
(:func:`evaluate_sequence`), and :func:`summarize` averages the per-object
statistics over all objects of all sequences into the official global numbers.

Speed: :func:`evaluate_sequence` scores every object of a frame at once
(:func:`label_scores`): the masks of up to 32 objects, ground truth and
prediction, are bits of one integer image, so the boundary map and the disk
dilation (both only XORs / ORs of shifted copies) run once per frame, and the
dilation is read at boundary pixels only. The results are bit-identical to the
per-mask functions (``tests/test_metrics_kernels.py``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vosjax._boundary_kernels import (  # noqa: F401  (kernels; tests reach them as metrics._x)
    _MAX_PACKED,
    _bit_counts,
    _bmap,
    _dilate,
    _dilated_at,
    _disk_runs,
    _flat_nonzero,
    _frame_counts,
    _pack,
    _packed_dtype,
)
from vosjax.errors import VosjaxError

if TYPE_CHECKING:  # annotations only: importing jaxtyping costs the evaluation CLI's start-up
    from jaxtyping import Bool, Float, Float64, Integer

    Masks = Bool[np.ndarray, "*b H W"]
    Scores = Float64[np.ndarray, "*b"]

__all__ = [
    "DEFAULT_BOUND_TH",
    "GLOBAL_MEASURES",
    "DavisSummary",
    "SequenceScores",
    "boundary_f",
    "boundary_map",
    "boundary_precision_recall",
    "boundary_radius",
    "db_statistics",
    "dilate_disk",
    "evaluate_sequence",
    "jaccard",
    "label_scores",
    "summarize",
]

DEFAULT_BOUND_TH = 0.008
"""Boundary tolerance of the official toolkit, as a fraction of the image diagonal."""

GLOBAL_MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
"""The global measures of the official results table, in its column order."""


# --------------------------------------------------------------------------- validation


def _check_mask_pair(fn: str, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise VosjaxError(
            f"{fn}: 'gt' and 'pred' must have the same shape [..., H, W], got gt {gt.shape} "
            f"and pred {pred.shape}."
        )
    for name, x in (("gt", gt), ("pred", pred)):
        _check_mask(fn, name, x)
    return gt, pred


def _check_mask(fn: str, name: str, x: np.ndarray) -> None:
    if x.dtype != np.bool_:
        raise VosjaxError(
            f"{fn}: argument '{name}' must be a boolean mask, got dtype {x.dtype}; convert a "
            "label map with `labels == object_id` or a probability with `prob > 0.5`."
        )
    if x.ndim < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise VosjaxError(
            f"{fn}: argument '{name}' must have shape [..., H, W] with H, W >= 1, got {x.shape}."
        )


# --------------------------------------------------------------------------- J


def jaccard(gt: Masks, pred: Masks) -> Scores:
    """Region similarity J (intersection over union) per mask, as DAVIS.

    J = |gt & pred| / |gt | pred| over the last two axes, and J = 1 where both
    masks are empty (union 0). Leading axes (frames, objects) are batch axes.

    Args:
      gt: ground-truth masks, boolean ``[..., H, W]``.
      pred: predicted masks, boolean, same shape.

    Returns:
      float64 ``[...]``.
    """
    gt, pred = _check_mask_pair("jaccard", gt, pred)
    inter = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union.astype(np.float64)
    return np.where(union == 0, 1.0, j)


# --------------------------------------------------------------------------- boundaries


def boundary_map(mask: Masks) -> Masks:
    """One-pixel-wide boundary map of each mask (the toolkit's ``seg2bmap``).

    With ``e``, ``s``, ``se`` the mask shifted so that ``e[y, x] = m[y, x+1]``,
    ``s[y, x] = m[y+1, x]``, ``se[y, x] = m[y+1, x+1]`` (0 past the image):

    - interior: ``b = (m ^ e) | (m ^ s) | (m ^ se)``;
    - last row: ``b[-1, :] = m[-1, :] ^ e[-1, :]``;
    - last column: ``b[:, -1] = m[:, -1] ^ s[:, -1]``;
    - ``b[-1, -1] = 0``.

    So boundaries sit half a pixel towards the origin from the true contour,
    and a mask that fills the image has no boundary at all.

    Args:
      mask: boolean ``[..., H, W]``.

    Returns:
      boolean ``[..., H, W]``.
    """
    m = np.asarray(mask)
    _check_mask("boundary_map", "mask", m)
    return _bmap(m)


def boundary_radius(bound_th: float, height: int, width: int) -> int:
    """Dilation radius in pixels: ``bound_th`` if >= 1, else ``ceil(bound_th * diagonal)``.

    The diagonal is ``sqrt(H^2 + W^2)``; for 480 x 854 frames and the default
    ``bound_th = 0.008`` the radius is 8.
    """
    th = float(bound_th)
    if not math.isfinite(th) or th < 0:
        raise VosjaxError(f"boundary_f: 'bound_th' must be a finite number >= 0, got {bound_th!r}.")
    if th >= 1:
        if th != int(th):
            raise VosjaxError(
                f"boundary_f: 'bound_th' >= 1 is a radius in pixels and must be a whole number, "
                f"got {bound_th!r}; use e.g. {int(th)} or a fraction of the diagonal below 1."
            )
        return int(th)
    return int(np.ceil(th * np.sqrt(np.float64(height * height + width * width))))


def dilate_disk(mask: Masks, radius: int) -> Masks:
    """Binary dilation by the disk ``{(dy, dx): dy^2 + dx^2 <= radius^2}``.

    ``out[y, x] = OR over the disk of mask[y + dy, x + dx]``, with nothing
    outside the image (same as ``skimage.morphology.disk`` with
    ``scipy.ndimage.binary_dilation`` or OpenCV's ``dilate``). The disk is the
    union of one horizontal run per row offset, so the dilation is a growing
    horizontal OR (2 passes per unit of half-width) followed by one shifted OR
    per row offset: at most 4r + 1 array passes instead of |disk| ~ pi r^2 shifts.

    Args:
      mask: boolean ``[..., H, W]``.
      radius: integer >= 0.

    Returns:
      boolean ``[..., H, W]``.
    """
    m = np.asarray(mask)
    _check_mask("dilate_disk", "mask", m)
    if int(radius) != radius or radius < 0:
        raise VosjaxError(f"dilate_disk: 'radius' must be a whole number >= 0, got {radius!r}.")
    if m.size == 0:
        return m.copy()
    return _dilate(m.reshape((-1,) + m.shape[-2:]), int(radius)).reshape(m.shape)


def boundary_precision_recall(
    gt: Masks, pred: Masks, bound_th: float = DEFAULT_BOUND_TH
) -> tuple[Scores, Scores]:
    """Boundary precision P and recall R per mask, as the DAVIS toolkit.

    With ``bg = boundary_map(gt)``, ``bp = boundary_map(pred)`` and ``D`` the disk
    dilation of radius :func:`boundary_radius`:
    P = |bp & D(bg)| / |bp|, R = |bg & D(bp)| / |bg|; if |bp| = 0 < |bg|:
    P, R = 1, 0; if |bg| = 0 < |bp|: P, R = 0, 1; if both are 0: P = R = 1.

    Args:
      gt: ground-truth masks, boolean ``[..., H, W]``.
      pred: predicted masks, boolean, same shape.
      bound_th: tolerance; a fraction of the image diagonal if < 1, else a
        whole number of pixels.

    Returns:
      ``(precision, recall)``, each float64 ``[...]``.
    """
    gt, pred = _check_mask_pair("boundary_f", gt, pred)
    h, w = gt.shape[-2:]
    r = boundary_radius(bound_th, h, w)
    lead = gt.shape[:-2]
    flat_gt, flat_pred = gt.reshape(-1, h, w), pred.reshape(-1, h, w)
    n = flat_gt.shape[0]
    # One object packed as two bits (gt: bit 0, prediction: bit 1), as label_scores does.
    counts = np.zeros((4, 1, n), np.int64)
    j = np.zeros((1, n))
    work: dict = {}
    z = np.empty((h, w), np.uint8)
    for t in range(n):
        np.left_shift(flat_pred[t].view(np.uint8), np.uint8(1), out=z)
        z |= flat_gt[t].view(np.uint8)
        _frame_counts(z, 1, r, work, j[:, t], counts[:, :, t])
    n_gt, n_fg, gt_match, fg_match = counts[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_fg == 0, 1.0, fg_match / n_fg.astype(np.float64))
        recall = np.where(n_gt == 0, 1.0, gt_match / n_gt.astype(np.float64))
    # Exactly one boundary empty: the empty side's own ratio is 1 and the other's is 0.
    precision = np.where((n_fg > 0) & (n_gt == 0), 0.0, precision)
    recall = np.where((n_fg == 0) & (n_gt > 0), 0.0, recall)
    return precision.reshape(lead), recall.reshape(lead)


def boundary_f(gt: Masks, pred: Masks, bound_th: float = DEFAULT_BOUND_TH) -> Scores:
    """Boundary measure F = 2PR / (P + R) per mask (0 when P + R = 0), as DAVIS.

    P and R are :func:`boundary_precision_recall`. The dilation radius is
    ``bound_th`` pixels if ``bound_th >= 1``, else ``ceil(bound_th * sqrt(H^2 + W^2))``
    (8 px at 480 x 854 with the default 0.008). Leading axes are batch axes.

    Args:
      gt: ground-truth masks, boolean ``[..., H, W]``.
      pred: predicted masks, boolean, same shape.
      bound_th: boundary tolerance (see above).

    Returns:
      float64 ``[...]``.
    """
    p, r = boundary_precision_recall(gt, pred, bound_th)
    s = p + r
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s == 0, 0.0, 2.0 * p * r / s)


# --------------------------------------------------------------------------- label maps


def _f_from_counts(n_gt, n_fg, gt_match, fg_match) -> np.ndarray:
    """F from the four boundary counts, with the toolkit's empty-boundary rules."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_fg == 0, 1.0, fg_match / n_fg.astype(np.float64))
        recall = np.where(n_gt == 0, 1.0, gt_match / n_gt.astype(np.float64))
    precision = np.where((n_fg > 0) & (n_gt == 0), 0.0, precision)
    recall = np.where((n_fg == 0) & (n_gt > 0), 0.0, recall)
    s = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s == 0, 0.0, 2.0 * precision * recall / s)


def label_scores(
    gt_labels: Integer[np.ndarray, "T H W"],
    pred_labels: Integer[np.ndarray, "T H W"],
    object_ids: Sequence[int],
    bound_th: float = DEFAULT_BOUND_TH,
) -> tuple[Float64[np.ndarray, "O T"], Float64[np.ndarray, "O T"]]:
    """J and F of every object and frame straight from two label-map videos.

    Equal to ``jaccard(gt_labels == k, pred_labels == k)`` and
    ``boundary_f(gt_labels == k, pred_labels == k, bound_th)`` for each
    ``k`` of ``object_ids`` (row i is ``object_ids[i]``), computed for many
    objects at once: the gt and predicted masks of up to 32 objects are packed
    into the bits of one unsigned integer image (object i: bit i for the
    ground truth, bit n + i for the prediction). The boundary map and the disk
    dilation are bitwise (XOR / OR of shifted copies), so one pass over the
    packed image gives every object's boundaries, and one dilation gives both
    sides' dilated boundaries of every object; the matches are then read at the
    boundary pixels only. No void handling and no frame exclusion here (see
    :func:`evaluate_sequence`).

    Args:
      gt_labels: integer label maps ``[T, H, W]``.
      pred_labels: integer label maps, same shape.
      object_ids: the ids to score.
      bound_th: boundary tolerance of :func:`boundary_f`.

    Returns:
      ``(j, f)``, float64 ``[len(object_ids), T]`` each.
    """
    gt, pred = np.asarray(gt_labels), np.asarray(pred_labels)
    ids = [int(k) for k in object_ids]
    t_len, h, w = gt.shape
    r = boundary_radius(bound_th, h, w)
    j = np.zeros((len(ids), t_len))
    counts = np.zeros((4, len(ids), t_len), np.int64)
    for start in range(0, len(ids), _MAX_PACKED):
        group = ids[start : start + _MAX_PACKED]
        rows = slice(start, start + len(group))
        dt = _packed_dtype(len(group))
        work: dict = {}  # buffers reused frame after frame
        for t in range(t_len):
            z = _pack(gt[t], pred[t], group, dt, work)
            _frame_counts(z, len(group), r, work, j[rows, t], counts[:, rows, t])
    return j, _f_from_counts(*counts)


# --------------------------------------------------------------------------- statistics


def _decay_edges(n: int) -> np.ndarray:
    """Bin edges ``round(linspace(1, n, 5) + 1e-10) - 1`` as integers (no uint8 wrap)."""
    return (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)


def db_statistics(
    per_frame: Float[np.ndarray, "*b T"],
) -> tuple[Float64[np.ndarray, "*b"], Float64[np.ndarray, "*b"], Float64[np.ndarray, "*b"]]:
    """Mean, recall and decay of per-frame scores over the last axis, as DAVIS.

    - mean = nanmean over frames;
    - recall = mean over frames of ``score > 0.5``, where a NaN frame counts as
      not above 0.5 (the toolkit takes a nanmean of a boolean array);
    - decay: ``ids = round(linspace(1, T, 5) + 1e-10) - 1``; bin i holds frames
      ``ids[i] .. ids[i+1]`` INCLUSIVE (neighbouring bins share a frame), and
      decay = nanmean(bin 0) - nanmean(bin 3).

    The official code stores ``ids`` as uint8, which overflows from T = 256
    frames on (at T = 256 the slice end ``ids[4] + 1`` wraps to 0; from T = 257
    the edges themselves wrap), so its last bin is then usually empty and its
    decay NaN. This function is identical for T <= 255 and uses the correct,
    unwrapped edges for longer sequences (e.g. T = 300: edges 0, 75, 150, 224,
    299, where the toolkit would use 0, 75, 150, 224, 43).

    All-NaN inputs give NaN (no warning). Leading axes (objects) are batch axes.

    Args:
      per_frame: float ``[..., T]`` with T >= 1.

    Returns:
      ``(mean, recall, decay)``, each float64 ``[...]``.
    """
    v = np.asarray(per_frame)
    real = np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)
    if v.ndim < 1 or not real:
        raise VosjaxError(
            f"db_statistics: 'per_frame' must be a real array [..., T], got dtype {v.dtype} "
            f"and shape {v.shape}."
        )
    n = v.shape[-1]
    if n == 0:
        raise VosjaxError(
            "db_statistics: 'per_frame' has no frames (last axis is 0); a semi-supervised "
            "sequence needs at least 3 frames since the first and last are not evaluated."
        )
    v = v.astype(np.float64)
    ids = _decay_edges(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(v, axis=-1)
        first = np.nanmean(v[..., ids[0] : ids[1] + 1], axis=-1)
        last = np.nanmean(v[..., ids[3] : ids[4] + 1], axis=-1)
    recall = np.mean(v > 0.5, axis=-1)
    return mean, recall, first - last


# --------------------------------------------------------------------------- sequences


class SequenceScores(NamedTuple):
    """Per-object, per-frame scores of one sequence.

    ``j[i, t]`` and ``f[i, t]`` belong to object ``object_ids[i]`` and the t-th
    EVALUATED frame (frame t + 1 of the video when the first and last frames
    are excluded).
    """

    object_ids: tuple[int, ...]
    j: Float64[np.ndarray, "O T"]
    f: Float64[np.ndarray, "O T"]


class DavisSummary(NamedTuple):
    """Global numbers and per-object rows of a DAVIS evaluation.

    ``global_metrics`` maps each name of :data:`GLOBAL_MEASURES` to its value;
    ``per_object`` holds ``(f"{sequence}_{object_id}", J-Mean, F-Mean)`` rows in
    the order the sequences were given, as the official per-sequence table.
    """

    global_metrics: dict[str, float]
    per_object: list[tuple[str, float, float]]


def _check_labels(fn: str, name: str, x: np.ndarray) -> None:
    if not np.issubdtype(x.dtype, np.integer):
        raise VosjaxError(
            f"{fn}: '{name}' must be an integer label map [T, H, W] (0 = background, k = object "
            f"k), got dtype {x.dtype}."
        )
    if x.ndim != 3:
        raise VosjaxError(f"{fn}: '{name}' must have rank 3 ([T, H, W]), got shape {x.shape}.")


def evaluate_sequence(
    gt_labels: Integer[np.ndarray, "T H W"],
    pred_labels: Integer[np.ndarray, "T H W"],
    object_ids: Sequence[int] | None = None,
    exclude_first_last: bool = True,
    bound_th: float = DEFAULT_BOUND_TH,
    void_label: int | None = 255,
) -> SequenceScores:
    """Per-object, per-frame J and F of one sequence (semi-supervised DAVIS protocol).

    Object i's masks are ``gt_labels == object_ids[i]`` and
    ``pred_labels == object_ids[i]``; an object missing from the prediction is
    an empty mask. As in the official toolkit:

    - ``void_label`` pixels of the ground truth (255 in DAVIS) count as
      background (None keeps them as a label);
    - by default the objects are ``1 .. max(gt_labels[0])``: every id up to the
      largest one of the first frame, present or not;
    - with ``exclude_first_last`` frames 0 and T-1 are not evaluated (the first
      is the given reference, the toolkit also drops the last);
    - a prediction that contains (in the evaluated frames) an id that is not an
      object of the ground truth is an error.

    Args:
      gt_labels: integer ground-truth label maps ``[T, H, W]``.
      pred_labels: integer predicted label maps, same shape.
      object_ids: ids to evaluate (positive, distinct); default as above.
      exclude_first_last: drop the first and last frame (the official protocol).
      bound_th: boundary tolerance of :func:`boundary_f`.
      void_label: ground-truth label treated as background, or None.

    Returns:
      :class:`SequenceScores` with ``j``, ``f`` of shape ``[objects, frames]``.
    """
    fn = "evaluate_sequence"
    gt, pred = np.asarray(gt_labels), np.asarray(pred_labels)
    _check_labels(fn, "gt_labels", gt)
    _check_labels(fn, "pred_labels", pred)
    if gt.shape != pred.shape:
        raise VosjaxError(
            f"{fn}: 'gt_labels' and 'pred_labels' must have the same shape [T, H, W], got "
            f"gt_labels {gt.shape} and pred_labels {pred.shape}."
        )
    if gt.shape[0] < (3 if exclude_first_last else 1) or min(gt.shape[1:]) == 0:
        raise VosjaxError(
            f"{fn}: need at least {3 if exclude_first_last else 1} frames of non-empty size (the "
            f"first and last are not evaluated when exclude_first_last=True), got {gt.shape}."
        )
    if void_label is not None:
        gt = np.where(gt == void_label, 0, gt)
    if object_ids is None:
        ids = tuple(range(1, int(max(gt[0].max(), 0)) + 1))
    else:
        ids = tuple(int(i) for i in object_ids)
        if any(i <= 0 for i in ids) or len(set(ids)) != len(ids):
            raise VosjaxError(
                f"{fn}: 'object_ids' must be distinct positive ids, got {list(object_ids)}."
            )
    if exclude_first_last:
        gt, pred = gt[1:-1], pred[1:-1]
    extra: list[int] = []
    contiguous = ids == tuple(range(1, len(ids) + 1))
    if pred.size and not (contiguous and pred.min() >= 0 and pred.max() <= len(ids)):
        extra = sorted(int(k) for k in np.unique(pred) if k != 0 and int(k) not in ids)
    if extra:
        raise VosjaxError(
            f"{fn}: the prediction contains object id(s) {extra} that are not objects of the "
            f"ground truth (objects {list(ids)}); relabel the prediction or pass 'object_ids'."
        )
    j, f = label_scores(gt, pred, ids, bound_th)
    return SequenceScores(ids, j, f)


def summarize(scores: Mapping[str, SequenceScores]) -> DavisSummary:
    """Official global numbers over many sequences, plus per-object rows.

    For every object of every sequence, :func:`db_statistics` of its J and F
    rows gives (mean, recall, decay). Each global X-Y is the plain mean over
    all objects (NaN propagates, as in the toolkit), and
    J&F-Mean = (J-Mean + F-Mean) / 2.

    Args:
      scores: sequence name -> :class:`SequenceScores` (insertion order is kept).

    Returns:
      :class:`DavisSummary`.
    """
    stats: dict[str, list[np.ndarray]] = {k: [] for k in GLOBAL_MEASURES[1:]}
    rows: list[tuple[str, float, float]] = []
    for name, seq in scores.items():
        j, f = np.asarray(seq.j, dtype=np.float64), np.asarray(seq.f, dtype=np.float64)
        if j.ndim != 2 or j.shape != f.shape or j.shape[0] != len(seq.object_ids):
            raise VosjaxError(
                f"summarize: sequence {name!r} needs j and f of shape [objects, frames] with one "
                f"row per object id, got j {j.shape}, f {f.shape}, {len(seq.object_ids)} ids."
            )
        if j.shape[0] == 0:
            continue
        for letter, arr in (("J", j), ("F", f)):
            m, r, d = db_statistics(arr)
            stats[f"{letter}-Mean"].append(m)
            stats[f"{letter}-Recall"].append(r)
            stats[f"{letter}-Decay"].append(d)
        jm, fm = stats["J-Mean"][-1], stats["F-Mean"][-1]
        rows += [(f"{name}_{k}", float(jm[i]), float(fm[i])) for i, k in enumerate(seq.object_ids)]
    if not rows:
        raise VosjaxError("summarize: no objects to summarize ('scores' is empty or objectless).")
    out = {k: float(np.mean(np.concatenate(v))) for k, v in stats.items()}
    out = {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2.0, **out}
    return DavisSummary({k: out[k] for k in GLOBAL_MEASURES}, rows)
