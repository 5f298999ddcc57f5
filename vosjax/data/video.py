"""The video record every source returns, lazy frame sequences, and id <-> slot maps.

A :class:`Video` carries frames and label maps either as arrays or as
:class:`LazyFrames` (random access, decoded one frame at a time), so a
training sampler touches only the frames it picks and an evaluation loop
streams a long video without holding it in memory.

Label ids are kept exactly as in the source files (DAVIS palette index, may be
non-contiguous, e.g. {1, 3}); :func:`remap_to_slots` maps them to the
contiguous slots 1..O that models use and returns the mapping so predictions
can be written back with the original ids (:func:`slots_to_labels`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from jaxtyping import Bool, Int, UInt8

from vosjax.errors import VosjaxError

__all__ = ["LazyFrames", "Video", "remap_to_slots", "slots_to_labels", "as_array"]


class LazyFrames:
    """A read-only, random-access sequence of equally shaped per-frame arrays.

    ``load(i)`` (a picklable callable) produces item ``i``. Behaves like an
    array of shape ``(T, *item_shape)`` for the common uses: ``len``,
    ``x[i]`` (one decoded item), ``x[a:b]`` / ``x[[i, j]]`` (stacked array),
    iteration (one item at a time), ``.shape``, ``.dtype`` and
    ``np.asarray(x)`` (decodes everything).
    """

    def __init__(
        self,
        length: int,
        load: Callable[[int], np.ndarray],
        item_shape: tuple[int, ...],
        dtype: Any,
    ):
        self._len = int(length)
        self._load = load
        self.item_shape = tuple(int(s) for s in item_shape)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._len, *self.item_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.item_shape)

    def __len__(self) -> int:
        return self._len

    def _one(self, i: int) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"frame index {i} out of range for a sequence of {self._len} frames")
        item = np.asarray(self._load(i))
        if item.shape != self.item_shape:
            raise VosjaxError(
                f"LazyFrames: frame {i} has shape {item.shape}, expected {self.item_shape}; "
                "all frames of a video must have the same size."
            )
        return item.astype(self.dtype, copy=False)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self._one(idx)
        if isinstance(idx, slice):
            idx = range(*idx.indices(self._len))
        idx = list(np.asarray(idx).reshape(-1)) if not isinstance(idx, range) else list(idx)
        if not idx:
            return np.zeros((0, *self.item_shape), self.dtype)
        return np.stack([self._one(i) for i in idx])

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self._len):
            yield self._one(i)

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyFrames(shape={self.shape}, dtype={self.dtype})"


def as_array(x: np.ndarray | LazyFrames) -> np.ndarray:
    """Materialise frames or masks (array or :class:`LazyFrames`) as a NumPy array."""
    return np.asarray(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Video:
    """One video with its ground truth.

    Attributes:
      name: sequence name (folder name in DAVIS / YouTube-VOS layouts).
      frames: ``uint8[T, H, W, 3]`` RGB, an array or a :class:`LazyFrames`.
      masks: ``uint8[T, H, W]`` label maps (0 = background, ids as in the
        source palette); all zeros on frames that are not annotated.
      annotated: ``bool[T]``: which frames have a ground-truth file.
      object_ids: sorted ids of the objects of the video.
      first_frame: object id -> index of the first frame where it appears.
      palette: ``uint8[256, 3]`` PNG palette of the source masks.
      frame_names: file stems of the frames ("00000", ...).
      complete: True if every annotated frame labels every visible object (DAVIS
        train/val, YouTube-VOS train, synthetic); False if annotated frames only
        carry the objects that first appear there (YouTube-VOS valid/test, or a
        DAVIS-layout folder with masks only on first-appearance frames). Training
        samplers need ``complete`` videos.
    """

    name: str
    frames: Any
    masks: Any
    annotated: Bool[np.ndarray, " T"]
    object_ids: tuple[int, ...]
    first_frame: Mapping[int, int]
    palette: UInt8[np.ndarray, "256 3"]
    frame_names: tuple[str, ...]
    complete: bool = True

    def __post_init__(self):
        T = len(self.frames)
        if len(self.masks) != T or len(self.annotated) != T or len(self.frame_names) != T:
            raise VosjaxError(
                f"Video {self.name!r}: frames ({T}), masks ({len(self.masks)}), annotated "
                f"({len(self.annotated)}) and frame_names ({len(self.frame_names)}) must have one "
                "entry per frame."
            )
        if tuple(sorted(self.object_ids)) != tuple(self.object_ids):
            raise VosjaxError(
                f"Video {self.name!r}: object_ids must be sorted, got {self.object_ids}."
            )
        if set(self.first_frame) != set(self.object_ids):
            raise VosjaxError(
                f"Video {self.name!r}: first_frame keys {sorted(self.first_frame)} must equal "
                "object_ids "
                f"{list(self.object_ids)}."
            )

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def objects_first_appearing(self, t: int) -> tuple[int, ...]:
        """Ids of the objects whose first frame is ``t``."""
        return tuple(o for o in self.object_ids if self.first_frame[o] == t)

    def first_appearance_mask(self, t: int) -> UInt8[np.ndarray, "H W"] | None:
        """The label map of frame ``t`` restricted to objects first appearing at ``t``.

        ``None`` when no object first appears at ``t``. This is the mask a
        semi-supervised method is given (the DAVIS first frame; YouTube-VOS
        masks where each object first appears).
        """
        new = self.objects_first_appearing(t)
        if not new:
            return None
        m = np.asarray(self.masks[t])
        return np.where(np.isin(m, new), m, 0).astype(np.uint8)

    def load(self) -> "Video":
        """A copy with frames and masks decoded into arrays."""
        return dataclasses.replace(self, frames=as_array(self.frames), masks=as_array(self.masks))


def remap_to_slots(
    labels: Int[np.ndarray, "*shape"], object_ids: Sequence[int]
) -> tuple[Int[np.ndarray, "*shape"], tuple[int, ...]]:
    """Map source ids to contiguous slots: ``object_ids[k]`` -> ``k + 1``, others -> 0.

    Returns ``(slots int32[*shape], mapping)`` where ``mapping[k]`` is the
    source id of slot ``k + 1`` (pass it to :func:`slots_to_labels` to undo).
    The order of ``object_ids`` is the slot order (training randomises it).
    """
    ids = [int(i) for i in object_ids]
    if len(set(ids)) != len(ids) or any(i <= 0 for i in ids):
        raise VosjaxError(f"remap_to_slots: 'object_ids' must be distinct positive ids, got {ids}.")
    a = np.asarray(labels)
    if a.size and a.min() < 0:
        raise VosjaxError("remap_to_slots: 'labels' must be non-negative ids.")
    size = max([int(a.max()) if a.size else 0] + ids) + 1
    lut = np.zeros(size, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    # Integer arrays index the table directly (no widening copy of the label map).
    return lut[a if np.issubdtype(a.dtype, np.integer) else a.astype(np.int64)], tuple(ids)


def slots_to_labels(
    slots: Int[np.ndarray, "*shape"], mapping: Sequence[int]
) -> UInt8[np.ndarray, "*shape"]:
    """Inverse of :func:`remap_to_slots`: slot ``k + 1`` -> ``mapping[k]``, 0 -> 0."""
    s = np.asarray(slots)
    lut = np.zeros(len(mapping) + 1, np.int64)
    lut[1:] = np.asarray(mapping, np.int64)
    if s.size and (s.min() < 0 or s.max() > len(mapping)):
        raise VosjaxError(
            f"slots_to_labels: slots must lie in 0..{len(mapping)}, got {s.min()}..{s.max()}."
        )
    if lut.max(initial=0) > 255:
        raise VosjaxError("slots_to_labels: ids above 255 do not fit a palette label map.")
    return lut[s.astype(np.int64)].astype(np.uint8)
