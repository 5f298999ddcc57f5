"""TFDS builder for DAVIS-layout folders (ArrayRecord) and a grain source that reads it.

Needs the ``tfds`` extra (tensorflow-datasets, array_record). The builder
reads a DAVIS-layout folder from the TFDS *manual dir* and writes one example
per sequence, holding the ORIGINAL encoded files (JPEG frames, palette PNG
masks; no re-encoding, so nothing is lost) plus the metadata the readers
otherwise scan for (object ids, first frames, annotated frames, palette).
Splits are the ``ImageSets/<year>/<split>.txt`` lists of the folder (or one
split "all" holding every sequence when there are none).

:class:`TfdsSource` opens the prepared dataset with ``tfds.data_source``
(random access into ArrayRecord, no TensorFlow graph) and returns the same
:class:`~vosjax.data.Video` records as the folder sources; frames are decoded
lazily one at a time, so the training pipelines and streaming evaluation work
unchanged. Example::

    build_tfds_dataset("/data/DAVIS", data_dir="/data/tfds", year="2017", resolution="480p")
    source = TfdsSource("train", data_dir="/data/tfds", year="2017", resolution="480p")
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import numpy as np

try:
    import tensorflow_datasets as tfds
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "vosjax.data.tfds_builder needs the 'tfds' extra: pip install -e '.[tfds]'"
    ) from e

from vosjax.data.davis import DavisSource
from vosjax.data.io import fit_mask_to_frame, read_image, read_label_png
from vosjax.data.video import LazyFrames, Video
from vosjax.errors import VosjaxError

__all__ = ["DavisLayoutConfig", "VosjaxDavis", "build_tfds_dataset", "TfdsSource", "config_name"]


def config_name(year: str, resolution: str) -> str:
    """Builder config name of a (year, resolution) pair, e.g. ``"2017-480p"``."""
    return f"{year}-{resolution}"


@dataclasses.dataclass
class DavisLayoutConfig(tfds.core.BuilderConfig):
    """Which DAVIS year (list files, 2016 = merged objects) and resolution folder to convert."""

    year: str = "2017"
    resolution: str = "480p"


def _make_config(year: str, resolution: str) -> DavisLayoutConfig:
    return DavisLayoutConfig(
        name=config_name(str(year), str(resolution)),
        year=str(year),
        resolution=str(resolution),
        description=f"DAVIS-layout folder, year {year}, resolution {resolution}",
    )


class VosjaxDavis(tfds.core.GeneratorBasedBuilder):
    """A DAVIS-layout folder (manual dir) as one example per sequence."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "One example per sequence with the original JPEG / PNG files and metadata."
    }
    BUILDER_CONFIGS = [_make_config("2017", "480p"), _make_config("2016", "480p")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put a DAVIS-layout folder in the manual dir: JPEGImages/<resolution>/<sequence>/*.jpg, "
        "Annotations/<resolution>/<sequence>/*.png and ImageSets/<year>/<split>.txt "
        "(vosjax.data.write_davis_layout writes one from any source)."
    )

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS derives this from package resources through `importlib_resources`,
        # which tensorflow-datasets does not declare as a dependency; this module's
        # own file is the answer it is looking for.
        return tfds.core.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        seq = tfds.features.Sequence
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "name": tfds.features.Text(),
                    "frame_names": seq(tfds.features.Text()),
                    "frames": seq(tfds.features.Tensor(shape=(), dtype=np.object_)),
                    "masks": seq(tfds.features.Tensor(shape=(), dtype=np.object_)),
                    "annotated": seq(tfds.features.Tensor(shape=(), dtype=np.bool_)),
                    "object_ids": seq(tfds.features.Tensor(shape=(), dtype=np.int32)),
                    "first_frame": seq(tfds.features.Tensor(shape=(), dtype=np.int32)),
                    "palette": tfds.features.Tensor(shape=(256, 3), dtype=np.uint8),
                    "height": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "width": tfds.features.Tensor(shape=(), dtype=np.int32),
                    "complete": tfds.features.Tensor(shape=(), dtype=np.bool_),
                    "binarize": tfds.features.Tensor(shape=(), dtype=np.bool_),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        root = pathlib.Path(dl_manager.manual_dir)
        cfg = self.builder_config
        lists = root / "ImageSets" / cfg.year
        splits = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
        if not splits:
            return {"all": self._generate_examples(root, None)}
        return {s: self._generate_examples(root, s) for s in splits}

    def _generate_examples(self, root: pathlib.Path, split: str | None):
        cfg = self.builder_config
        src = DavisSource(root, year=cfg.year, split=split or "all", resolution=cfg.resolution)
        for i in range(len(src)):
            v = src[i]
            frame_files, mask_files = src.files(i)
            frames = [p.read_bytes() for p in frame_files]
            masks = [b"" if p is None else p.read_bytes() for p in mask_files]
            yield (
                v.name,
                {
                    "name": v.name,
                    "frame_names": list(v.frame_names),
                    "frames": frames,
                    "masks": masks,
                    "annotated": v.annotated.astype(bool),
                    "object_ids": np.asarray(v.object_ids, np.int32),
                    "first_frame": np.asarray([v.first_frame[o] for o in v.object_ids], np.int32),
                    "palette": np.asarray(v.palette, np.uint8),
                    "height": np.int32(v.height),
                    "width": np.int32(v.width),
                    "complete": bool(v.complete),
                    "binarize": cfg.year == "2016",
                },
            )


def build_tfds_dataset(
    manual_dir: os.PathLike, data_dir: os.PathLike, year: str = "2017", resolution: str = "480p"
) -> VosjaxDavis:
    """Convert DAVIS folder ``manual_dir`` to ArrayRecord in ``data_dir``; returns the builder."""
    manual = pathlib.Path(manual_dir)
    if not (manual / "JPEGImages" / str(resolution)).is_dir():
        raise VosjaxError(
            f"build_tfds_dataset: {manual} has no JPEGImages/{resolution}; 'manual_dir' must be a "
            "DAVIS-layout folder."
        )
    builder = VosjaxDavis(
        config=_make_config(year, resolution),
        data_dir=os.fspath(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual))
    )
    return builder


def _as_bytes(x: Any) -> bytes:
    return x if isinstance(x, bytes) else bytes(x)


class _BytesImages:
    def __init__(self, blobs: list[bytes], names: list[str], hw: tuple[int, int]):
        self.blobs, self.names, self.hw = blobs, names, hw

    def __call__(self, i: int) -> np.ndarray:
        img = read_image(self.blobs[i], name=self.names[i])
        if img.shape[:2] != self.hw:
            raise VosjaxError(
                f"{self.names[i]}: frame is {img.shape[1]}x{img.shape[0]}, expected "
                f"{self.hw[1]}x{self.hw[0]}."
            )
        return img


class _BytesMasks:
    def __init__(self, blobs: list[bytes], names: list[str], hw: tuple[int, int], binarize: bool):
        self.blobs, self.names, self.hw, self.binarize = blobs, names, hw, binarize

    def __call__(self, i: int) -> np.ndarray:
        if not self.blobs[i]:
            return np.zeros(self.hw, np.uint8)
        lab, _ = read_label_png(self.blobs[i], name=self.names[i])
        lab = fit_mask_to_frame(lab, self.hw, self.names[i])
        return (lab > 0).astype(np.uint8) if self.binarize else lab


class TfdsSource:
    """Random-access source over a prepared :class:`VosjaxDavis` split: ``len(src)``, ``src[i]``.

    Opens the data with ``tfds.data_source`` (lazily, so the object pickles
    into grain workers and reopens there).
    """

    def __init__(
        self, split: str, data_dir: os.PathLike, year: str = "2017", resolution: str = "480p"
    ):
        self.split, self.data_dir = str(split), os.fspath(data_dir)
        self.year, self.resolution = str(year), str(resolution)
        self._ds = None
        self._len = len(self._source())

    def _source(self):
        if self._ds is None:
            try:
                self._ds = tfds.data_source(
                    "vosjax_davis",
                    split=self.split,
                    data_dir=self.data_dir,
                    download=False,
                    builder_kwargs={"config": _make_config(self.year, self.resolution)},
                )
            except Exception as e:  # tfds raises several types for a missing dataset / split
                raise VosjaxError(
                    f"TfdsSource: cannot open split {self.split!r} of "
                    f"vosjax_davis/{config_name(self.year, self.resolution)} "
                    f"in {self.data_dir} ({e}); build it first with build_tfds_dataset."
                ) from e
        return self._ds

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ds"] = None
        return d

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Video:
        ex = self._source()[int(index)]
        name = ex["name"].decode() if isinstance(ex["name"], bytes) else str(ex["name"])
        stems = [s.decode() if isinstance(s, bytes) else str(s) for s in ex["frame_names"]]
        hw = (int(ex["height"]), int(ex["width"]))
        frames = [_as_bytes(b) for b in ex["frames"]]
        masks = [_as_bytes(b) for b in ex["masks"]]
        T = len(frames)
        ids = tuple(int(o) for o in ex["object_ids"])
        first = {int(o): int(t) for o, t in zip(ex["object_ids"], ex["first_frame"])}
        where = f"tfds:vosjax_davis/{config_name(self.year, self.resolution)}/{self.split}/{name}"
        return Video(
            name=name,
            frames=LazyFrames(
                T, _BytesImages(frames, [f"{where}/{s}.jpg" for s in stems], hw), (*hw, 3), np.uint8
            ),
            masks=LazyFrames(
                T,
                _BytesMasks(masks, [f"{where}/{s}.png" for s in stems], hw, bool(ex["binarize"])),
                hw,
                np.uint8,
            ),
            annotated=np.asarray(ex["annotated"], bool),
            object_ids=ids,
            first_frame=first,
            palette=np.asarray(ex["palette"], np.uint8),
            frame_names=tuple(stems),
            complete=bool(ex["complete"]),
        )

    def __repr__(self) -> str:
        return f"TfdsSource(split={self.split!r}, data_dir={self.data_dir!r}, videos={len(self)})"
