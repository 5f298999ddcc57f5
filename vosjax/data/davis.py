"""DAVIS 2016 / 2017 layout: reading (:class:`DavisSource`), writing (:func:`write_davis_layout`).

Layout::

    root/JPEGImages/<resolution>/<sequence>/00000.jpg ...
    root/Annotations/<resolution>/<sequence>/00000.png ...   (palette PNGs)
    root/ImageSets/<year>/<split>.txt                          (one sequence per line)

Handling of irregular folders (the DAVIS tools would crash or misread them):

- no ``ImageSets/<year>/<split>.txt``: every folder of ``JPEGImages/<resolution>``
  is a sequence (the demo data ships without ImageSets);
- a listed sequence without a frame folder, or a folder without frames
  (empty sequence): :class:`VosjaxError` naming the folder;
- no mask for the first frame: :class:`VosjaxError` naming the missing file
  (semi-supervised VOS is defined by that mask); masks on only some later
  frames are fine: ``annotated`` marks them, and a sequence whose frames are
  not all annotated is treated as first-appearance annotation
  (``complete=False``, YouTube-VOS valid style) unless ``complete`` is given;
- year "2016": all objects merge into one (ids > 0 -> 1), as the DAVIS 2016
  evaluation does;
- masks of another size, RGB / grayscale masks, corrupt files: see
  :mod:`vosjax.data.io`.

Object ids and first-appearance frames come from reading the sequence's mask
files once (cached per source object).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np

from vosjax.data._files import ImageLoader, MaskLoader, frame_size, list_frames, scan_masks
from vosjax.data.io import davis_palette, read_label_png, write_image, write_label_png
from vosjax.data.video import LazyFrames, Video
from vosjax.errors import VosjaxError

__all__ = ["DavisSource", "write_davis_layout", "read_sequence_list"]


def read_sequence_list(path: os.PathLike) -> list[str]:
    """Sequence names of an ``ImageSets`` list file (blank lines and ``#`` comments skipped)."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise VosjaxError(f"read_sequence_list: list file not found: {p}.")
    names = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


class DavisSource:
    """Random-access source over a DAVIS-layout folder: ``len(src)``, ``src[i] -> Video``.

    Args:
      root: dataset root (holding ``JPEGImages``, ``Annotations``, ``ImageSets``).
      year: "2016" (single object: ids merged) or "2017"; picks ``ImageSets/<year>``.
      split: list file name, e.g. "train", "val".
      resolution: "480p", "Full-Resolution", or any folder name under ``JPEGImages``.
      sequences: explicit sequence names (overrides the list file).
      complete: whether annotated frames label every object (default: True iff
        every frame of the sequence has a mask file).
    """

    def __init__(
        self,
        root: os.PathLike,
        year: str | int = "2017",
        split: str = "train",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
        complete: bool | None = None,
    ):
        self.root = pathlib.Path(root)
        self.year, self.split, self.resolution = str(year), str(split), str(resolution)
        if self.year not in ("2016", "2017"):
            raise VosjaxError(f"DavisSource: 'year' must be '2016' or '2017', got {year!r}.")
        self.image_dir = self.root / "JPEGImages" / self.resolution
        self.mask_dir = self.root / "Annotations" / self.resolution
        if not self.image_dir.is_dir():
            raise VosjaxError(
                f"DavisSource: {self.image_dir} not found; 'root' must hold "
                "JPEGImages/<resolution> "
                f"(resolution={self.resolution!r})."
            )
        if sequences is None:
            lst = self.root / "ImageSets" / self.year / f"{self.split}.txt"
            if lst.is_file():
                sequences = read_sequence_list(lst)
            else:
                sequences = sorted(
                    p.name
                    for p in self.image_dir.iterdir()
                    if p.is_dir() and not p.name.startswith(".")
                )
        self.sequences = [str(s) for s in sequences]
        for s in self.sequences:
            if not (self.image_dir / s).is_dir():
                raise VosjaxError(
                    f"DavisSource: sequence {s!r} has no frame folder {self.image_dir / s}."
                )
        self.complete = complete
        self._meta: dict[str, tuple] = {}

    def __len__(self) -> int:
        return len(self.sequences)

    def index_of(self, name: str) -> int:
        try:
            return self.sequences.index(name)
        except ValueError:
            raise VosjaxError(
                f"DavisSource: no sequence named {name!r}; known: {self.sequences[:10]}..."
            ) from None

    def _sequence_meta(self, name: str):
        if name in self._meta:
            return self._meta[name]
        frames = list_frames(self.image_dir / name, "DavisSource")
        hw = frame_size(frames)
        mask_paths = [self.mask_dir / name / f"{p.stem}.png" for p in frames]
        mask_paths = [p if p.is_file() else None for p in mask_paths]
        if mask_paths[0] is None:
            raise VosjaxError(
                "DavisSource: missing first-frame mask "
                f"{self.mask_dir / name / (frames[0].stem + '.png')}; "
                "semi-supervised VOS needs the mask of the first frame (it may be empty if "
                "objects appear later)."
            )
        annotated = np.array([p is not None for p in mask_paths])
        loader = MaskLoader(mask_paths, hw, binarize=self.year == "2016")
        ids, first = scan_masks(loader, annotated)
        _, palette = read_label_png(mask_paths[0])
        if self.year == "2016":
            palette = davis_palette()
        meta = (frames, hw, loader, annotated, ids, first, palette)
        self._meta[name] = meta
        return meta

    def files(self, index: int) -> tuple[list[pathlib.Path], list[pathlib.Path | None]]:
        """Frame files and mask files (None where a frame has no mask) of sequence ``index``."""
        frames, _, loader, *_ = self._sequence_meta(self.sequences[int(index)])
        return list(frames), [None if p is None else pathlib.Path(p) for p in loader.paths]

    def __getitem__(self, index: int) -> Video:
        name = self.sequences[int(index)]
        frames, hw, loader, annotated, ids, first, palette = self._sequence_meta(name)
        complete = bool(annotated.all()) if self.complete is None else bool(self.complete)
        T = len(frames)
        return Video(
            name=name,
            frames=LazyFrames(T, ImageLoader(frames, hw), (*hw, 3), np.uint8),
            masks=LazyFrames(T, loader, hw, np.uint8),
            annotated=annotated.copy(),
            object_ids=ids,
            first_frame=dict(first),
            palette=palette,
            frame_names=tuple(p.stem for p in frames),
            complete=complete,
        )

    def __repr__(self) -> str:
        return (
            f"DavisSource(root={str(self.root)!r}, year={self.year!r}, split={self.split!r}, "
            f"sequences={len(self)})"
        )


def write_davis_layout(
    source: Iterable[Video] | Any,
    out_dir: os.PathLike,
    *,
    year: str = "2017",
    split: str = "train",
    resolution: str | None = None,
    image_format: str = "jpg",
    quality: int = 95,
    max_videos: int | None = None,
) -> pathlib.Path:
    """Write any source (a sequence of :class:`Video`) as a DAVIS folder; returns ``out_dir``.

    Frames go to ``JPEGImages/<resolution>/<name>/<frame>.<image_format>``
    (``resolution`` defaults to ``"<H>p"`` of the first video), masks of the
    annotated frames to ``Annotations/<resolution>/<name>/<frame>.png`` as
    palette PNGs with the video's palette, and the names to
    ``ImageSets/<year>/<split>.txt``. Videos are streamed frame by frame;
    every file is written atomically. ``image_format="png"`` keeps frames
    lossless (JPEG is what DAVIS ships).
    """
    if image_format not in ("jpg", "png"):
        raise VosjaxError(
            f"write_davis_layout: 'image_format' must be 'jpg' or 'png', got {image_format!r}."
        )
    out = pathlib.Path(out_dir)
    n = len(source) if hasattr(source, "__len__") else None
    count = n if max_videos is None or n is None else min(n, max_videos)
    names = []
    it = (source[i] for i in range(count)) if count is not None else iter(source)
    for k, video in enumerate(it):
        if max_videos is not None and k >= max_videos:
            break
        if resolution is None:
            resolution = f"{video.height}p"
        if video.name in names:
            raise VosjaxError(
                f"write_davis_layout: two videos are named {video.name!r}; names must be unique."
            )
        names.append(video.name)
        img_dir = out / "JPEGImages" / resolution / video.name
        ann_dir = out / "Annotations" / resolution / video.name
        for t in range(video.num_frames):
            stem = video.frame_names[t]
            write_image(
                img_dir / f"{stem}.{image_format}", np.asarray(video.frames[t]), quality=quality
            )
            if video.annotated[t]:
                write_label_png(ann_dir / f"{stem}.png", np.asarray(video.masks[t]), video.palette)
    lst = out / "ImageSets" / str(year) / f"{split}.txt"
    lst.parent.mkdir(parents=True, exist_ok=True)
    tmp = lst.with_suffix(".txt.tmp")
    tmp.write_text("".join(f"{s}\n" for s in names))
    os.replace(tmp, lst)
    return out
