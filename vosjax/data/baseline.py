"""The "copy the first mask" baseline: how much of a benchmark is solved without tracking.

The prediction for frame ``t`` is, for every object that has appeared by
``t``, its mask on the frame where it first appeared (objects painted in order
of appearance, later ones on top); objects not yet appeared are absent. It is
scored with the DAVIS semi-supervised protocol (:mod:`vosjax.metrics`: first
and last frames excluded, per-object J / F statistics, J&F-Mean). A benchmark
where objects move must make this score low.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from jaxtyping import UInt8

from vosjax import metrics
from vosjax.data.video import Video
from vosjax.errors import VosjaxError

__all__ = ["copy_first_mask_prediction", "copy_first_mask_baseline"]


def copy_first_mask_prediction(video: Video) -> UInt8[np.ndarray, "T H W"]:
    """Label maps ``[T, H, W]`` of the copy-the-first-mask prediction for ``video``."""
    T, H, W = video.num_frames, video.height, video.width
    pred = np.zeros((T, H, W), np.uint8)
    canvas = np.zeros((H, W), np.uint8)
    for t in range(T):
        first = video.first_appearance_mask(t)
        if first is not None:
            canvas = np.where(first > 0, first, canvas)
        pred[t] = canvas
    return pred


def copy_first_mask_baseline(source: Any, max_videos: int | None = None) -> dict[str, float]:
    """DAVIS global measures (``"J&F-Mean"``, ``"J-Mean"``, ...) of the baseline over a source.

    Every video must be completely annotated on every frame (synthetic
    videos, DAVIS train/val); otherwise a :class:`VosjaxError` names the video.
    The result also holds ``"num_videos"`` and ``"num_objects"``.
    """
    n = len(source) if max_videos is None else min(len(source), int(max_videos))
    scores = {}
    num_objects = 0
    for i in range(n):
        v = source[i]
        if not (v.complete and np.all(v.annotated)):
            raise VosjaxError(
                f"copy_first_mask_baseline: video {v.name!r} is not annotated on every frame; the "
                "baseline needs "
                "complete ground truth (synthetic videos, DAVIS train / val)."
            )
        gt = np.asarray(v.masks)
        scores[v.name] = metrics.evaluate_sequence(
            gt, copy_first_mask_prediction(v), object_ids=v.object_ids
        )
        num_objects += len(v.object_ids)
    if not scores:
        raise VosjaxError("copy_first_mask_baseline: 'source' holds no videos.")
    out = dict(metrics.summarize(scores).global_metrics)
    out["num_videos"] = float(n)
    out["num_objects"] = float(num_objects)
    return out
