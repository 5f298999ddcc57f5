"""Jitted propagation engine over fixed-shape state: memory, objects, per-frame and per-clip stepping.

- :class:`EngineConfig`: every inference option (static under ``jit``);
- :class:`Engine`: ``init_state`` and the compiled ``step`` over clips of frames;
- :class:`VideoSegmenter`: streaming ``step(frame, mask=None, objects=None)``;
- :func:`run_video`, :func:`run_batch`: whole videos (several at once, sharded);
- :func:`evaluate_source`: DAVIS scores of a model on a data source.
"""

from vosjax.inference.clips import plan_clips
from vosjax.inference.config import BOX_FILTERS, MEMORY_POLICIES, EngineConfig
from vosjax.inference.engine import Engine, working_size
from vosjax.inference.evaluation import evaluate_source
from vosjax.inference.policies import resolve_policy
from vosjax.inference.runner import eval_video_frames, run_batch, run_video, shard_batch
from vosjax.inference.segmenter import (
    ObjectTable,
    Prediction,
    VideoSegmenter,
    engine_from_bundle,
    object_slots,
)
from vosjax.inference.state import CorrectionRefs, EngineState, StepOutput

__all__ = [
    "BOX_FILTERS",
    "MEMORY_POLICIES",
    "CorrectionRefs",
    "Engine",
    "EngineConfig",
    "EngineState",
    "ObjectTable",
    "Prediction",
    "StepOutput",
    "VideoSegmenter",
    "engine_from_bundle",
    "eval_video_frames",
    "evaluate_source",
    "object_slots",
    "plan_clips",
    "resolve_policy",
    "run_batch",
    "run_video",
    "shard_batch",
    "working_size",
]
