"""Whole-video drivers: one video (:func:`run_video`) or several at once (:func:`run_batch`).

Both stream frames (one frame of each video in memory at a time, plus a clip
buffer), cut clips where masks are given (one :class:`vosjax.inference.clips.ClipBuffer`
per video),
keep object ids as given, and call the engine's compiled step.

``run_batch`` steps ``B`` videos of one frame size together: the engine state
has ``B`` rows (sharded over the devices of ``mesh`` when one is given: the
batch axis of the state, the frames and the outputs is split across the
mesh's first axis, so each device runs its own videos). Each row cuts its
clips independently; a row that finished its video feeds padding
(``frame_valid`` False) until every row is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import UInt8

from vosjax.errors import VosjaxError
from vosjax.inference.clips import Clip, ClipBuffer
from vosjax.inference.engine import Engine
from vosjax.inference.segmenter import ObjectTable, Prediction, VideoSegmenter, object_slots

__all__ = ["FrameInput", "eval_video_frames", "run_batch", "run_video", "shard_batch"]

FrameInput = tuple[np.ndarray, np.ndarray | None]
"""``(frame uint8[H, W, 3], mask uint8[H, W] of object ids or None)``."""


def eval_video_frames(video: Any) -> Iterator[FrameInput]:
    """``(image, first-appearance mask)`` pairs of a :class:`vosjax.data.EvalVideo`."""
    for f in video:
        yield f.image, f.first_mask


def run_video(
    engine: Engine,
    variables: Any,
    frames: Iterable[FrameInput],
    num_objects: int | None = None,
) -> Iterator[Prediction]:
    """Segment one video; yields a :class:`Prediction` per frame, in order.

    ``frames`` yields ``(frame, mask-or-None)``; masks carry object ids (new
    objects, or replaced masks). ``num_objects``: the video's object count
    when known (slots are then ``object_slots(num_objects, config)``),
    else ``max_objects`` slots.
    """
    slots = None if num_objects is None else object_slots(num_objects, engine.config)
    seg = VideoSegmenter((engine, variables), num_objects=slots)
    for frame, mask in frames:
        yield from seg.step(frame, mask)
    yield from seg.flush()


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Place every array of ``tree`` with its leading (batch) axis split over ``mesh``'s first axis."""
    spec = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, spec), tree)


class _Row:
    """One video of a batch: its frame iterator, object table and clip buffer."""

    def __init__(
        self, frames: Iterable[FrameInput], slots: int, size: tuple[int, int], clip_length: int
    ):
        self.it = iter(frames)
        self.table = ObjectTable(slots, size, "run_batch")
        self.size = size
        self.clips = ClipBuffer(clip_length, size)
        self.done = False
        self.out: list[np.ndarray] = []

    def fill(self) -> None:
        """Pull frames until the clip is complete (L frames, a mask, or the video's end)."""
        while not self.done and not self.clips.complete:
            try:
                frame, mask = next(self.it)
            except StopIteration:
                self.done = True
                break
            f = np.asarray(frame)
            if f.shape != (*self.size, 3) or f.dtype != np.uint8:
                raise VosjaxError(
                    f"run_batch: every frame of a batch must be uint8{[*self.size, 3]}, got "
                    f"{f.dtype}{list(f.shape)}; batch videos of one size."
                )
            self.clips.push(f, None if mask is None else self.table.given(mask))


def _batch_inputs(clips: Sequence[Clip], size: tuple[int, int], slots: int) -> tuple:
    """``(frames, new_masks, new_objects, frame_valid)`` of ``Engine.step``, one row per clip."""
    frames = np.stack([c.frames for c in clips])
    valid = np.stack([c.valid for c in clips])
    labels = np.zeros((len(clips), *size), np.uint8)
    given = np.zeros((len(clips), slots), bool)
    for i, c in enumerate(clips):
        if c.given is not None:
            labels[i], given[i] = c.given
    return frames, labels, given, valid


def run_batch(
    engine: Engine,
    variables: Any,
    videos: Sequence[Iterable[FrameInput]],
    frame_size: tuple[int, int],
    num_objects: int | None = None,
    *,
    mesh: Mesh | None = None,
) -> list[UInt8[np.ndarray, "T H W"]]:
    """Segment several videos of one frame size at once; returns each video's label maps (ids).

    Args:
      engine, variables: the engine and the model variables.
      videos: one iterable of ``(frame, mask-or-None)`` per video.
      frame_size: ``(H, W)`` shared by all frames.
      num_objects: the largest object count among the videos (default:
        ``max_objects`` slots).
      mesh: shard the batch over this mesh's first axis (its size must divide
        the number of videos). Use a mesh with Auto axis types (``jax.sharding.Mesh``
        or ``vosjax.parallel.make_mesh``): the models reshape batch axes freely.
    """
    b = len(videos)
    if b == 0:
        raise VosjaxError("run_batch: 'videos' is empty.")
    if mesh is not None and b % mesh.devices.shape[0]:
        raise VosjaxError(
            f"run_batch: {b} videos cannot be split over the {mesh.devices.shape[0]} devices of "
            "the mesh's first axis; pad the batch or use a smaller mesh."
        )
    size = (int(frame_size[0]), int(frame_size[1]))
    slots = (
        engine.config.max_objects
        if num_objects is None
        else object_slots(num_objects, engine.config)
    )
    rows = [_Row(v, slots, size, engine.config.clip_length) for v in videos]
    state = engine.init_state(variables, b, size, slots)
    if mesh is not None:
        state = shard_batch(state, mesh)
    while True:
        for r in rows:
            r.fill()
        if not any(len(r.clips) for r in rows):
            break
        clips = [r.clips.take() for r in rows]  # a finished row gives an empty (padding) clip
        inputs = _batch_inputs(clips, size, slots)
        if mesh is not None:
            inputs = shard_batch(inputs, mesh)
        state, out = engine.step(variables, state, *inputs)
        out_labels = np.asarray(out.labels)
        for i, (r, c) in enumerate(zip(rows, clips)):
            if c.num_frames:
                r.out.extend(r.table.to_ids(out_labels[i, : c.num_frames]))
    return [np.stack(r.out) if r.out else np.zeros((0, *size), np.uint8) for r in rows]
