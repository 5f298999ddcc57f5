"""Static-image pseudo-videos for pretraining: one image + mask -> a few deformed frames.

Each frame is the image seen through its own random backward warp
``source = A(tps(p))``: a thin-plate spline that moves a jittered 4x4 grid of
control points (non-rigid), then an affine map (rotation, scale, shear,
translation about the image centre). The warp is evaluated exactly at the
corners of 16 x 16 pixel cells and bilinearly in between (a spline is smooth;
this is Pillow's MESH transform, fast enough for training pipelines). Image
samples are bilinear, the label map nearest-neighbour with the very same
coordinates, so masks stay aligned; pixels that map outside the image are
black and background.

Image/mask pairs are found in a folder as either ``images/`` (or ``JPEGImages``,
``imgs``, ``image``) + ``masks/`` (or ``Annotations``, ``gt``, ``mask``,
``labels``) subfolders, or side by side as ``<stem>.jpg`` + ``<stem>.png``,
matched by file stem. Binary 0/255 masks become object 1; palette masks keep
their ids.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings

import numpy as np
from jaxtyping import UInt8

from vosjax.data.geometry import crop_affine, mesh_points, tps_eval, tps_fit, warp_mesh
from vosjax.data.io import DataWarning, davis_palette, fit_mask_to_frame, read_image, read_label_png
from vosjax.data.video import Video
from vosjax.errors import VosjaxError

__all__ = ["DeformConfig", "make_pseudo_video", "find_image_mask_pairs", "StaticImageSource"]

_CELL = 16  # the spline is evaluated exactly at the corners of 16 x 16 cells, bilinear in between
_IMAGE_DIRS = ("images", "JPEGImages", "imgs", "image", "Images")
_MASK_DIRS = ("masks", "Annotations", "gt", "mask", "labels", "GT")


@dataclasses.dataclass(frozen=True)
class DeformConfig:
    """Ranges of the per-frame random warp (uniform draws, symmetric about 0 where signed)."""

    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    shear_deg: float = 10.0
    translate: float = 0.08  # fraction of the image size
    tps_jitter: float = 0.05  # control-point displacement, fraction of the image size
    tps_grid: int = 4


def make_pseudo_video(
    image: UInt8[np.ndarray, "H W 3"],
    labels: UInt8[np.ndarray, "H W"],
    num_frames: int,
    rng: np.random.Generator,
    cfg: DeformConfig = DeformConfig(),
) -> tuple[UInt8[np.ndarray, "T H W 3"], UInt8[np.ndarray, "T H W"]]:
    """``num_frames`` independently warped copies of ``(image, labels)`` (see the module doc)."""
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim != 3 or img.shape[-1] != 3 or lab.shape != img.shape[:2]:
        raise VosjaxError(
            "make_pseudo_video: need image [H, W, 3] and labels [H, W] of one size, got "
            f"{img.shape} and {lab.shape}."
        )
    if num_frames < 1:
        raise VosjaxError(f"make_pseudo_video: 'num_frames' must be >= 1, got {num_frames}.")
    H, W = lab.shape
    g = cfg.tps_grid
    gy, gx = np.meshgrid(np.linspace(0, H, g), np.linspace(0, W, g), indexing="ij")
    ctrl = np.stack([gx.ravel(), gy.ravel()], -1)
    xs, ys = mesh_points((H, W), _CELL)
    mx, my = np.meshgrid(xs, ys)
    corners = np.stack([mx.ravel(), my.ravel()], -1)
    frames, masks = [], []
    for _ in range(num_frames):
        jitter = rng.uniform(-1, 1, ctrl.shape) * cfg.tps_jitter * np.array([W, H])
        params = tps_fit(ctrl, ctrl + jitter)
        src = tps_eval(params, corners)
        sx, sy = src[:, 0].reshape(mx.shape), src[:, 1].reshape(mx.shape)
        s = rng.uniform(*cfg.scale)
        centre = (
            W / 2 + rng.uniform(-1, 1) * cfg.translate * W,
            H / 2 + rng.uniform(-1, 1) * cfg.translate * H,
        )
        m = crop_affine(
            (H, W),
            centre,
            (W / s, H / s),
            rng.uniform(-1, 1) * cfg.rotation_deg,
            rng.uniform(-1, 1) * cfg.shear_deg,
        )
        # crop_affine maps output pixels; here it is applied to the TPS output coordinates.
        ax = m[0, 0] * sx + m[0, 1] * sy + m[0, 2]
        ay = m[1, 0] * sx + m[1, 1] * sy + m[1, 2]
        frames.append(warp_mesh(img, ax, ay, (H, W), _CELL))
        masks.append(warp_mesh(lab, ax, ay, (H, W), _CELL, nearest=True))
    return np.stack(frames), np.stack(masks)


def find_image_mask_pairs(folder: os.PathLike) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """(image, mask) file pairs of a folder, matched by stem (see the module docstring)."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise VosjaxError(f"find_image_mask_pairs: folder not found: {root}.")
    img_dir = next((root / d for d in _IMAGE_DIRS if (root / d).is_dir()), None)
    msk_dir = next((root / d for d in _MASK_DIRS if (root / d).is_dir()), None)
    if img_dir is not None and msk_dir is not None:
        imgs = {
            p.stem: p
            for p in sorted(img_dir.iterdir())
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        }
        msks = {
            p.stem: p
            for p in sorted(msk_dir.iterdir())
            if p.suffix.lower() in (".png", ".bmp", ".gif")
        }
    else:
        files = sorted(p for p in root.iterdir() if p.is_file())
        imgs = {p.stem: p for p in files if p.suffix.lower() in (".jpg", ".jpeg")}
        msks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
    stems = sorted(set(imgs) & set(msks))
    unmatched = sorted(set(imgs) ^ set(msks))
    if not stems:
        raise VosjaxError(
            f"find_image_mask_pairs: no image/mask pairs in {root}; expected images/ + masks/ "
            "subfolders or "
            "<stem>.jpg next to <stem>.png."
        )
    if unmatched:
        warnings.warn(
            f"{root}: {len(unmatched)} file(s) without a partner were skipped (e.g. "
            f"{unmatched[0]!r}).",
            DataWarning,
            stacklevel=2,
        )
    return [(imgs[s], msks[s]) for s in stems]


class StaticImageSource:
    """Image/mask pairs as pseudo-videos: ``len(src)``, ``src[i] -> Video``.

    ``src[i]`` is a deterministic pseudo-video of ``num_frames`` frames drawn
    with ``np.random.default_rng([seed, i])``; :meth:`pair` returns the
    original image and label map (the "static" training sampler draws fresh
    deformations from it for every sample).
    """

    def __init__(
        self,
        folder: os.PathLike,
        num_frames: int = 3,
        seed: int = 0,
        deform: DeformConfig = DeformConfig(),
    ):
        self.folder = pathlib.Path(folder)
        self.pairs = find_image_mask_pairs(self.folder)
        if num_frames < 1:
            raise VosjaxError(f"StaticImageSource: 'num_frames' must be >= 1, got {num_frames}.")
        self.num_frames, self.seed, self.deform = int(num_frames), int(seed), deform

    def __len__(self) -> int:
        return len(self.pairs)

    def pair(
        self, index: int
    ) -> tuple[UInt8[np.ndarray, "H W 3"], UInt8[np.ndarray, "H W"], np.ndarray]:
        """``(image, labels, palette)`` of pair ``index``."""
        ip, mp = self.pairs[int(index)]
        img = read_image(ip)
        lab, pal = read_label_png(mp)
        lab = fit_mask_to_frame(lab, img.shape[:2], mp)
        return img, lab, pal

    def __getitem__(self, index: int) -> Video:
        index = int(index)
        img, lab, pal = self.pair(index)
        frames, masks = make_pseudo_video(
            img, lab, self.num_frames, np.random.default_rng([self.seed, index]), self.deform
        )
        ids = tuple(int(o) for o in np.unique(lab) if o != 0)
        first = {}
        for o in ids:
            present = np.flatnonzero((masks == o).any(axis=(1, 2)))
            if present.size:
                first[o] = int(present[0])
        ids = tuple(sorted(first))
        T = self.num_frames
        return Video(
            name=self.pairs[index][0].stem,
            frames=frames,
            masks=masks,
            annotated=np.ones(T, bool),
            object_ids=ids,
            first_frame=first,
            palette=pal if pal is not None else davis_palette(),
            frame_names=tuple(f"{t:05d}" for t in range(T)),
            complete=True,
        )

    def __repr__(self) -> str:
        return (
            f"StaticImageSource(folder={str(self.folder)!r}, pairs={len(self)}, "
            f"num_frames={self.num_frames})"
        )
