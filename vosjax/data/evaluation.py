"""Evaluation readers: stream whole videos frame by frame, with first-appearance masks.

``iter_eval_videos(source)`` yields one :class:`EvalVideo` per video; iterating
an :class:`EvalVideo` decodes one frame at a time (memory stays at one frame
whatever the video length) and yields :class:`EvalFrame` records. A frame
where objects first appear carries ``first_mask``: the label map restricted to
those objects, which is what a semi-supervised method is given (the DAVIS
first-frame mask; YouTube-VOS masks of late objects).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
from jaxtyping import UInt8

from vosjax.data.video import Video

__all__ = ["EvalFrame", "EvalVideo", "iter_eval_videos"]


@dataclasses.dataclass(frozen=True)
class EvalFrame:
    """One frame of a streamed video.

    Attributes:
      index: frame number in the video.
      name: file stem of the frame (use it for the output PNG).
      image: ``uint8[H, W, 3]`` RGB.
      new_object_ids: ids first appearing in this frame (may be empty).
      first_mask: ``uint8[H, W]`` label map of just those objects, or None.
      gt: ``uint8[H, W]`` full ground truth of this frame when the video is
        completely annotated and this frame has a mask, else None.
    """

    index: int
    name: str
    image: UInt8[np.ndarray, "H W 3"]
    new_object_ids: tuple[int, ...]
    first_mask: UInt8[np.ndarray, "H W"] | None
    gt: UInt8[np.ndarray, "H W"] | None


@dataclasses.dataclass(frozen=True)
class EvalVideo:
    """Metadata of a video plus a frame-by-frame iterator (``for frame in ev: ...``)."""

    video: Video

    @property
    def name(self) -> str:
        return self.video.name

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    @property
    def size(self) -> tuple[int, int]:
        return self.video.height, self.video.width

    @property
    def palette(self) -> np.ndarray:
        return self.video.palette

    @property
    def object_ids(self) -> tuple[int, ...]:
        return self.video.object_ids

    @property
    def first_frame(self) -> dict[int, int]:
        return dict(self.video.first_frame)

    @property
    def frame_names(self) -> tuple[str, ...]:
        return self.video.frame_names

    def __len__(self) -> int:
        return self.video.num_frames

    def __iter__(self) -> Iterator[EvalFrame]:
        v = self.video
        for t in range(v.num_frames):
            new = v.objects_first_appearing(t)
            mask = None
            if new or (v.complete and v.annotated[t]):
                mask = np.asarray(v.masks[t])
            first = np.where(np.isin(mask, new), mask, 0).astype(np.uint8) if new else None
            gt = mask if (v.complete and v.annotated[t]) else None
            yield EvalFrame(t, v.frame_names[t], np.asarray(v.frames[t]), new, first, gt)


def iter_eval_videos(source: Any, max_videos: int | None = None) -> Iterator[EvalVideo]:
    """Yield an :class:`EvalVideo` for each video of ``source`` (at most ``max_videos``)."""
    n = len(source)
    if max_videos is not None:
        n = min(n, int(max_videos))
    for i in range(n):
        yield EvalVideo(source[i])
