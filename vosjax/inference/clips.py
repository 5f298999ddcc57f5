"""Where a video's clips end, in one place: :class:`ClipBuffer` and :func:`plan_clips`.

The rule (:func:`clip_ends`): a clip holds at most ``clip_length`` frames
and ends at every frame that carries given masks, so those masks are written
to memory before any later frame is read (the engine writes the last valid
frame of a clip). Per-frame mode (``clip_length = 1``) gives one clip per
frame. :class:`ClipBuffer` applies it frame by frame for the streaming
drivers (:class:`~vosjax.inference.VideoSegmenter`,
:func:`~vosjax.inference.run_batch`, one buffer per video);
:func:`plan_clips` applies it to the given-mask flags of a whole video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from jaxtyping import Bool, UInt8

from vosjax.errors import VosjaxError

__all__ = ["Clip", "ClipBuffer", "clip_ends", "plan_clips"]


def clip_ends(num_frames: int, given: bool, clip_length: int) -> bool:
    """Does a clip of ``num_frames`` frames end at its last frame (``given``: it carries masks)?"""
    return bool(given) or num_frames >= clip_length


def _check_length(fn: str, clip_length: int) -> None:
    if isinstance(clip_length, bool) or not isinstance(clip_length, (int, np.integer)):
        raise VosjaxError(f"{fn}: 'clip_length' must be an int >= 1, got {clip_length!r}.")
    if clip_length < 1:
        raise VosjaxError(f"{fn}: 'clip_length' must be >= 1, got {clip_length}.")


class Clip(NamedTuple):
    """One clip as the engine takes it (one row of ``Engine.step``'s inputs).

    Attributes:
      frames: ``uint8[L, H, W, 3]``; after the clip's frames, copies of its
        last frame (zeros for an empty clip).
      valid: ``bool[L]``, True for the first ``num_frames`` frames.
      given: what was pushed with the clip's last frame (its masks), or None.
      num_frames: the number of frames of the clip.
    """

    frames: UInt8[np.ndarray, "L H W 3"]
    valid: Bool[np.ndarray, " L"]
    given: Any
    num_frames: int


class ClipBuffer:
    """The frames of one video's current clip, until :func:`clip_ends` says it is complete.

    Args:
      clip_length: ``L``, the most frames of a clip (``EngineConfig.clip_length``).
      frame_size: ``(H, W)`` of the frames (the drivers check the frames).

    ``push(frame, given)`` adds a frame (``given``: the masks it carries, any
    object, or None) and says whether the clip is complete; ``take()``
    returns the padded :class:`Clip` and empties the buffer (also for an
    incomplete clip: the end of a video).
    """

    def __init__(self, clip_length: int, frame_size: tuple[int, int]):
        _check_length("ClipBuffer", clip_length)
        self.clip_length = int(clip_length)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self._frames: list[np.ndarray] = []
        self._given: Any = None

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def complete(self) -> bool:
        """True when the buffered frames form a whole clip (``take()`` it before the next push)."""
        return bool(self._frames) and clip_ends(
            len(self._frames), self._given is not None, self.clip_length
        )

    def push(self, frame: UInt8[np.ndarray, "H W 3"], given: Any = None) -> bool:
        """Add ``frame`` (and the masks ``given`` for it, or None); return :attr:`complete`."""
        if self.complete:
            raise VosjaxError("ClipBuffer.push: the clip is complete; take() it first.")
        self._frames.append(frame)
        if given is not None:
            self._given = given
        return self.complete

    def take(self) -> Clip:
        """The buffered clip, padded to ``clip_length`` frames; the buffer is empty afterwards."""
        n = len(self._frames)
        frames = np.zeros((self.clip_length, *self.frame_size, 3), np.uint8)
        valid = np.zeros((self.clip_length,), bool)
        if n:
            frames[:n] = np.stack(self._frames)
            frames[n:] = self._frames[-1]
            valid[:n] = True
        clip = Clip(frames, valid, self._given, n)
        self._frames, self._given = [], None
        return clip


def plan_clips(given: Sequence[bool], clip_length: int) -> list[tuple[int, int]]:
    """Host-side clip boundaries ``[(start, stop), ...]`` of a video (:func:`clip_ends`).

    ``given[t]``: frame ``t`` carries given masks. A clip holds at most
    ``clip_length`` frames and ends at every frame that carries given masks;
    this is what :class:`ClipBuffer` gives the streaming drivers frame by frame.
    """
    if clip_length < 1:
        raise VosjaxError(f"plan_clips: 'clip_length' must be >= 1, got {clip_length}.")
    clips, start = [], 0
    for t, g in enumerate(given):
        if clip_ends(t + 1 - start, g, clip_length):
            clips.append((start, t + 1))
            start = t + 1
    if start < len(given):
        clips.append((start, len(given)))
    return clips
