"""Score a model on a data source with the DAVIS protocol, in process (the trainer's evaluation).

:func:`evaluate_source` runs the engine over the videos of any vosjax data
source (``len(src)``, ``src[i] -> Video``: synthetic, DAVIS, ...), feeding
each object's mask on the frame where it first appears, and scores the
predictions with :mod:`vosjax.metrics` (first and last frames excluded,
per-object J / F statistics, J&F-Mean). Engines are cached per (model
config, engine config) (:func:`vosjax.inference.engine_cache.get_engine`,
re-exported here), so periodic evaluations during training compile once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vosjax import metrics
from vosjax.data.evaluation import iter_eval_videos
from vosjax.errors import VosjaxError
from vosjax.inference.config import EngineConfig
from vosjax.inference.engine_cache import get_engine  # re-exported
from vosjax.inference.runner import eval_video_frames, run_video
from vosjax.models.base import VOSModel

__all__ = ["evaluate_source", "get_engine"]


def evaluate_source(
    model: VOSModel,
    variables: Any,
    source: Any,
    engine_config: EngineConfig | None = None,
    max_videos: int | None = None,
    *,
    progress: bool = False,
    return_scores: bool = False,
) -> metrics.DavisSummary | tuple[metrics.DavisSummary, dict[str, metrics.SequenceScores]]:
    """DAVIS semi-supervised scores of ``model`` on the first ``max_videos`` videos of ``source``.

    Every video must be annotated on every frame (synthetic, DAVIS train / val);
    its objects are the video's ``object_ids`` (including objects that appear
    mid-video). Returns the :class:`~vosjax.metrics.DavisSummary` (and the
    per-frame scores with ``return_scores``).
    """
    config = EngineConfig() if engine_config is None else engine_config
    if not isinstance(config, EngineConfig):
        config = EngineConfig.from_config(config)
    engine = get_engine(model, config)
    videos = list(iter_eval_videos(source, max_videos))
    if not videos:
        raise VosjaxError("evaluate_source: the source holds no videos.")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(v.num_frames for v in videos), desc="evaluate", unit="frame")
    scores: dict[str, metrics.SequenceScores] = {}
    try:
        for ev in videos:
            v = ev.video
            if not (v.complete and np.all(v.annotated)):
                raise VosjaxError(
                    f"evaluate_source: video {v.name!r} has ground truth on "
                    f"{int(np.sum(v.annotated))} of {v.num_frames} frames; DAVIS scoring needs "
                    "every frame annotated (synthetic videos, DAVIS train / val)."
                )
            if v.name in scores:
                raise VosjaxError(f"evaluate_source: two videos are named {v.name!r}.")
            pred = []
            for p in run_video(engine, variables, eval_video_frames(ev), len(v.object_ids)):
                pred.append(p.labels)
                if bar is not None:
                    bar.update(1)
            gt = np.asarray(v.masks)
            scores[v.name] = metrics.evaluate_sequence(gt, np.stack(pred), object_ids=v.object_ids)
    finally:
        if bar is not None:
            bar.close()
    summary = metrics.summarize(scores)
    return (summary, scores) if return_scores else summary
