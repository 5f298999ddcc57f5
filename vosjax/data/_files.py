"""Per-frame file loaders shared by the folder sources (picklable: grain workers carry them)."""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

from vosjax.data.io import fit_mask_to_frame, read_image, read_image_size, read_label_png
from vosjax.errors import VosjaxError

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def list_frames(folder: pathlib.Path, what: str) -> list[pathlib.Path]:
    """Image files of a sequence folder, sorted by name; a clear error when there are none."""
    if not folder.is_dir():
        raise VosjaxError(
            f"{what}: sequence folder not found: {folder}. Check the dataset root, split and "
            "resolution."
        )
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )
    if not files:
        raise VosjaxError(
            f"{what}: empty sequence: no .jpg/.png frames in {folder}. Remove it from the list or "
            "restore its frames."
        )
    return files


def frame_size(paths: Sequence[pathlib.Path]) -> tuple[int, int]:
    return read_image_size(paths[0])


class ImageLoader:
    """Frame ``i`` of a list of image files, checked against the sequence's frame size."""

    def __init__(self, paths: Sequence[os.PathLike], hw: tuple[int, int]):
        self.paths = [str(p) for p in paths]
        self.hw = tuple(hw)

    def __call__(self, i: int) -> np.ndarray:
        img = read_image(self.paths[i])
        if img.shape[:2] != self.hw:
            raise VosjaxError(
                f"{self.paths[i]}: frame is {img.shape[1]}x{img.shape[0]} but the sequence's "
                "first frame is "
                f"{self.hw[1]}x{self.hw[0]}; all frames of a sequence must have one size."
            )
        return img


class MaskLoader:
    """Label map of frame ``i`` (zeros without a mask file), fitted to the frame size."""

    def __init__(
        self,
        paths: Sequence[os.PathLike | None],
        hw: tuple[int, int],
        binarize: bool = False,
        palette: np.ndarray | None = None,
    ):
        self.paths = [None if p is None else str(p) for p in paths]
        self.hw = tuple(hw)
        self.binarize = binarize
        self.palette = palette

    def __call__(self, i: int) -> np.ndarray:
        p = self.paths[i]
        if p is None:
            return np.zeros(self.hw, np.uint8)
        lab, _ = read_label_png(p, self.palette)
        lab = fit_mask_to_frame(lab, self.hw, p)
        if self.binarize:
            lab = (lab > 0).astype(np.uint8)
        return lab


def scan_masks(loader: MaskLoader, annotated: np.ndarray) -> tuple[tuple[int, ...], dict[int, int]]:
    """Object ids present in the annotated frames and the first frame where each appears."""
    first: dict[int, int] = {}
    for t in np.flatnonzero(annotated):
        for o in np.unique(loader(int(t))):
            o = int(o)
            if o != 0 and o not in first:
                first[o] = int(t)
    return tuple(sorted(first)), first
