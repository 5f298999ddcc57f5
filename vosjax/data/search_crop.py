"""Target-centred search-region crops (JOINT's training crop), as pure NumPy functions.

JOINT trains on a crop around the target instead of the whole frame (its
``SegProcessing``, ``ltr/data/processing.py``): per frame, the target's box is
jittered, a region of ``factor**2`` times the jittered box's area with the
aspect of the output is centred on the jittered centre, fitted to the frame
and resized to the output. :func:`sample_clip_transform
<vosjax.data.augment.sample_clip_transform>` turns the regions into the
frames' affine warps (one warp per frame, see :mod:`vosjax.data.augment`).

Boxes are ``(x, y, w, h)`` in continuous pixel coordinates (pixel ``(i, j)``
covers ``[j, j + 1) x [i, i + 1)``), so the box of a mask spanning columns
``x0..x1`` is ``x = x0, w = x1 - x0 + 1``.

The rule, for a jittered box with centre ``(cx, cy)`` and size ``(w, h)`` and
an output of ``W_out x H_out``:

1. size: ``(cw, ch) = ceil((W_out, H_out) * sqrt(w h / (W_out H_out)) * factor)``
   (area ``factor**2 w h``, aspect of the output);
2. fit (``mode``): ``"inside_major"`` divides both sides by
   ``r = max(1, min(cw / W, ch / H))`` and floors them, so the region fits the
   frame along at least one axis; ``"inside"`` uses ``max`` instead of
   ``min`` (fits along both);
3. place: ``x1 = round(cx - cw / 2)`` (Python's round, halves to even), likewise
   ``y1``; an axis along which the region fits is shifted into the frame, an
   axis along which it is larger than the frame is centred on it
   (``x1 = -((cw - W) // 2)``). What lies outside the frame reads black /
   background in the warp.

Jitter (reference frame and other frames have their own factors):
``size' = (w, h) * exp(n * scale_jitter)`` with ``n ~ N(0, 1)^2`` and
``centre' = centre + sqrt(w' h') * center_jitter * (u - 1/2)`` with
``u ~ U[0, 1)^2`` and ``center_jitter = (x factor, y factor)``.

Where this differs from the authors' code: outside the frame the region reads
black (label background) where they replicate the frame's border (masks: 0),
and their padding also overwrites the frame's last row / column inside the
region; a region one pixel larger than the frame is placed at 0 here (theirs
stays where the shift into the frame left it); a region that would be under
one pixel keeps one (theirs raises); ``max_scale_change`` (None in JOINT) is
not offered.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float, Int

from vosjax.errors import VosjaxError

__all__ = ["CROP_MODES", "jitter_box", "mask_box", "pick_target", "search_region", "target_boxes"]

CROP_MODES = ("inside_major", "inside")


def mask_box(mask: np.ndarray, obj: int) -> Float[np.ndarray, " 4"] | None:
    """``(x, y, w, h)`` of the pixels of ``mask`` equal to ``obj``; None if there are none."""
    m = np.asarray(mask) == obj
    cols = np.flatnonzero(m.any(axis=0))
    rows = np.flatnonzero(m.any(axis=1))
    if cols.size == 0:
        return None
    return np.array(
        [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], np.float64
    )


def pick_target(reference: np.ndarray, rng: np.random.Generator) -> int:
    """The target id: uniform over the objects present in ``reference`` (a label map); 0 if none.

    Draws one integer from ``rng`` only when there is an object.
    """
    ids = np.unique(np.asarray(reference))
    ids = ids[ids != 0]
    if ids.size == 0:
        return 0
    return int(ids[rng.integers(0, ids.size)])


def target_boxes(labels: np.ndarray, obj: int) -> Float[np.ndarray, "T 4"]:
    """Per-frame boxes of object ``obj`` in label maps ``[T, H, W]`` (sample order).

    A frame without the object takes the box of the nearest earlier frame of the
    sample that has it, else of the nearest later one; if no frame has it (or
    ``obj`` is 0) every box is the whole frame.
    """
    lab = np.asarray(labels)
    T, H, W = lab.shape
    boxes = [mask_box(lab[t], obj) if obj else None for t in range(T)]
    seen = [t for t, b in enumerate(boxes) if b is not None]
    if not seen:
        return np.tile(np.array([0.0, 0.0, W, H]), (T, 1))
    out = np.empty((T, 4))
    for t in range(T):
        earlier = [s for s in seen if s <= t]
        out[t] = boxes[earlier[-1] if earlier else seen[0]]
    return out


def jitter_box(
    box: Float[np.ndarray, " 4"],
    normal: Float[np.ndarray, " 2"],
    uniform: Float[np.ndarray, " 2"],
    scale_jitter: float,
    center_jitter: tuple[float, float],
) -> Float[np.ndarray, " 4"]:
    """The jittered ``(x, y, w, h)`` for given draws ``normal ~ N(0, 1)^2``, ``uniform ~ U[0, 1)^2``."""
    x, y, w, h = (float(v) for v in box)
    size = np.array([w, h]) * np.exp(np.asarray(normal, np.float64) * scale_jitter)
    offset = math.sqrt(size[0] * size[1]) * np.asarray(center_jitter, np.float64)
    centre = np.array([x + w / 2, y + h / 2]) + offset * (np.asarray(uniform, np.float64) - 0.5)
    return np.concatenate([centre - size / 2, size])


def _place(c: float, size: int, extent: int) -> int:
    """Left / top edge of a ``size`` region centred at ``c`` on an axis of ``extent`` pixels."""
    lo = round(c - size / 2)
    if size > extent:
        return -((size - extent) // 2)
    return min(max(lo, 0), extent - size)


def search_region(
    box: Float[np.ndarray, " 4"],
    out_hw: tuple[int, int],
    factor: float,
    src_hw: tuple[int, int],
    mode: str = "inside_major",
) -> Int[np.ndarray, " 4"]:
    """Integer ``(x1, y1, cw, ch)`` of the search region of ``box`` (module docstring's rule)."""
    if mode not in CROP_MODES:
        raise VosjaxError(f"search_region: 'mode' must be one of {list(CROP_MODES)}, got {mode!r}.")
    _, _, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0 and factor > 0):
        raise VosjaxError(
            f"search_region: need a box of positive size and factor > 0, got {box} and {factor}."
        )
    Ho, Wo = float(out_hw[0]), float(out_hw[1])
    H, W = int(src_hw[0]), int(src_hw[1])
    k = math.sqrt(w * h / (Wo * Ho)) * factor
    cw, ch = math.ceil(Wo * k), math.ceil(Ho * k)
    ratios = (cw / W, ch / H)
    r = max(1.0, min(ratios) if mode == "inside_major" else max(ratios))
    cw, ch = max(1, math.floor(cw / r)), max(1, math.floor(ch / r))
    cx, cy = float(box[0]) + w / 2, float(box[1]) + h / 2
    return np.array([_place(cx, cw, W), _place(cy, ch, H), cw, ch], np.int64)
