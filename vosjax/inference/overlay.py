"""Colour overlays of label maps on frames (for ``vosjax.segment --overlay`` and tools/visualize.py)."""

from __future__ import annotations

import numpy as np
from jaxtyping import UInt8

from vosjax.errors import VosjaxError

__all__ = ["boundary", "overlay"]


def boundary(labels: UInt8[np.ndarray, "H W"]) -> np.ndarray:
    """``bool[H, W]``: pixels whose label differs from a 4-neighbour (inner object contours)."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[1:] |= lab[1:] != lab[:-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return edge & (lab > 0)


def overlay(
    image: UInt8[np.ndarray, "H W 3"],
    labels: UInt8[np.ndarray, "H W"],
    palette: UInt8[np.ndarray, "256 3"],
    alpha: float = 0.5,
    contour: bool = True,
) -> UInt8[np.ndarray, "H W 3"]:
    """Blend each object's palette colour over the frame: ``(1 - alpha) * image + alpha * colour``.

    Background pixels (label 0) keep the frame; with ``contour`` the object
    boundaries are drawn in the full colour.
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    pal = np.asarray(palette, np.uint8).reshape(-1, 3)
    if img.ndim != 3 or img.shape[-1] != 3 or lab.shape != img.shape[:2]:
        raise VosjaxError(
            f"overlay: need image [H, W, 3] and labels [H, W] of the same size, got "
            f"{img.shape} and {lab.shape}."
        )
    if not 0.0 <= alpha <= 1.0:
        raise VosjaxError(f"overlay: 'alpha' must lie in [0, 1], got {alpha}.")
    colour = pal[lab].astype(np.float32)
    fg = (lab > 0)[..., None]
    out = np.where(fg, (1.0 - alpha) * img.astype(np.float32) + alpha * colour, img)
    if contour:
        out = np.where(boundary(lab)[..., None], colour, out)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
