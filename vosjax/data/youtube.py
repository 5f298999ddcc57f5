"""YouTube-VOS layout: reading (:class:`YouTubeVOSSource`), writing (:func:`write_youtube_layout`).

Layout::

    root/<split>/JPEGImages/<video>/<frame>.jpg
    root/<split>/Annotations/<video>/<frame>.png     (palette PNGs)
    root/<split>/meta.json
        {"videos": {<video>: {"objects": {"<id>": {"category": ..., "frames": [<frame>, ...]}}}}}

In ``train`` every annotated frame (every 5th frame in the 2018/2019
releases) labels all objects. In ``valid`` / ``test`` a mask exists only on
the frame where an object first appears, and it carries only the objects that
first appear there; an object's first frame is the first entry of its
``frames`` list in ``meta.json``. Without ``meta.json`` ids and first frames
are read from the mask files.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from vosjax.data._files import ImageLoader, MaskLoader, frame_size, list_frames, scan_masks
from vosjax.data.io import davis_palette, read_label_png, write_image, write_label_png
from vosjax.data.video import LazyFrames, Video
from vosjax.errors import VosjaxError

__all__ = ["YouTubeVOSSource", "write_youtube_layout"]


class YouTubeVOSSource:
    """Random-access source over a YouTube-VOS split folder: ``len(src)``, ``src[i] -> Video``.

    Args:
      root: dataset root holding ``<split>/JPEGImages``.
      split: "train", "valid", "test" (any folder name).
      videos: explicit video names (default: those of ``meta.json``, else all folders).
      complete: whether annotated frames label every object (default: True for
        splits whose name starts with "train", False otherwise).
    """

    def __init__(
        self,
        root: os.PathLike,
        split: str = "train",
        videos: list[str] | None = None,
        complete: bool | None = None,
    ):
        self.root = pathlib.Path(root)
        self.split = str(split)
        base = self.root / self.split
        self.image_dir = base / "JPEGImages"
        self.mask_dir = base / "Annotations"
        if not self.image_dir.is_dir():
            raise VosjaxError(
                f"YouTubeVOSSource: {self.image_dir} not found; 'root' must hold "
                "<split>/JPEGImages."
            )
        self.meta_path = base / "meta.json"
        self.meta: dict[str, Any] | None = None
        if self.meta_path.is_file():
            try:
                meta = json.loads(self.meta_path.read_text())
                self.meta = dict(meta["videos"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise VosjaxError(
                    f"YouTubeVOSSource: {self.meta_path} is not a YouTube-VOS meta file ({e!r}); "
                    "expected {'videos': {name: {'objects': {id: {'frames': [...]}}}}}."
                ) from e
        if videos is None:
            if self.meta is not None:
                videos = sorted(self.meta)
            else:
                videos = sorted(
                    p.name
                    for p in self.image_dir.iterdir()
                    if p.is_dir() and not p.name.startswith(".")
                )
        self.videos = [str(v) for v in videos]
        self.complete = self.split.startswith("train") if complete is None else bool(complete)
        self._cache: dict[str, tuple] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def _video_meta(self, name: str):
        if name in self._cache:
            return self._cache[name]
        frames = list_frames(self.image_dir / name, "YouTubeVOSSource")
        hw = frame_size(frames)
        stems = [p.stem for p in frames]
        mask_paths = [self.mask_dir / name / f"{s}.png" for s in stems]
        mask_paths = [p if p.is_file() else None for p in mask_paths]
        annotated = np.array([p is not None for p in mask_paths])
        loader = MaskLoader(mask_paths, hw)
        if self.meta is not None and name in self.meta:
            first = {}
            for oid, obj in dict(self.meta[name].get("objects", {})).items():
                listed = obj.get("frames") or []
                if not listed:
                    continue
                if listed[0] not in stems:
                    raise VosjaxError(
                        f"YouTubeVOSSource: {self.meta_path}: object {oid} of video {name!r} "
                        "first appears in frame "
                        f"{listed[0]!r}, which is not in {self.image_dir / name}."
                    )
                first[int(oid)] = stems.index(listed[0])
            ids = tuple(sorted(first))
        else:
            ids, first = scan_masks(loader, annotated)
        for o, t in first.items():
            if not annotated[t]:
                raise VosjaxError(
                    f"YouTubeVOSSource: missing mask {self.mask_dir / name / (stems[t] + '.png')} "
                    f"where object {o} "
                    "first appears; restore the annotation file."
                )
        ann = [p for p in mask_paths if p is not None]
        palette = read_label_png(ann[0])[1] if ann else davis_palette()
        meta = (frames, hw, loader, annotated, ids, first, palette)
        self._cache[name] = meta
        return meta

    def __getitem__(self, index: int) -> Video:
        name = self.videos[int(index)]
        frames, hw, loader, annotated, ids, first, palette = self._video_meta(name)
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
            complete=self.complete,
        )

    def __repr__(self) -> str:
        return (
            f"YouTubeVOSSource(root={str(self.root)!r}, split={self.split!r}, videos={len(self)})"
        )


def write_youtube_layout(
    source: Any,
    out_dir: os.PathLike,
    *,
    split: str = "valid",
    annotate_every: int = 5,
    max_videos: int | None = None,
    image_format: str = "jpg",
    quality: int = 95,
) -> pathlib.Path:
    """Write a source in the YouTube-VOS layout; returns ``out_dir``.

    ``split`` names starting with "train" get masks on every ``annotate_every``-th
    frame (all objects) plus each object's first frame; other splits get a mask
    only where objects first appear, holding only those objects (the valid /
    test convention). ``meta.json`` lists, per object, the frames where it is
    visible (its first entry is the first-appearance frame).
    """
    if image_format not in ("jpg", "png"):
        raise VosjaxError(
            f"write_youtube_layout: 'image_format' must be 'jpg' or 'png', got {image_format!r}."
        )
    if annotate_every < 1:
        raise VosjaxError(
            f"write_youtube_layout: 'annotate_every' must be >= 1, got {annotate_every}."
        )
    base = pathlib.Path(out_dir) / split
    train = split.startswith("train")
    count = len(source) if max_videos is None else min(len(source), max_videos)
    meta: dict[str, Any] = {}
    for i in range(count):
        video = source[i]
        objects: dict[str, dict] = {
            str(o): {"category": "object", "frames": []} for o in video.object_ids
        }
        for t in range(video.num_frames):
            stem = video.frame_names[t]
            write_image(
                base / "JPEGImages" / video.name / f"{stem}.{image_format}",
                np.asarray(video.frames[t]),
                quality,
            )
            labels = np.asarray(video.masks[t])
            present = set(np.unique(labels).tolist()) if video.annotated[t] else set()
            for o in video.object_ids:
                if o in present or video.first_frame[o] == t:
                    objects[str(o)]["frames"].append(stem)
            new = video.objects_first_appearing(t)
            if train and video.annotated[t] and (t % annotate_every == 0 or new):
                write_label_png(
                    base / "Annotations" / video.name / f"{stem}.png", labels, video.palette
                )
            elif not train and new:
                write_label_png(
                    base / "Annotations" / video.name / f"{stem}.png",
                    video.first_appearance_mask(t),
                    video.palette,
                )
        meta[video.name] = {"objects": objects}
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / "meta.json.tmp"
    tmp.write_text(json.dumps({"videos": meta}, indent=1))
    os.replace(tmp, base / "meta.json")
    return pathlib.Path(out_dir)
