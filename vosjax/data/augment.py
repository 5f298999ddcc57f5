"""Clip-consistent augmentation: one random geometry and colour change for all frames of a sample.

Geometry: a random crop (area fraction and aspect ratio of the source frame),
rotated, sheared and optionally mirrored, resampled to the output size in ONE
backward affine warp per frame (bilinear for frames, nearest for label maps:
the same coordinates, so masks stay aligned; corners outside the frame are
black background). Colour: a linear map per clip,
``x' = b * (c * M x + (1 - c) * mean_gray(M x))`` with ``M`` = hue rotation about
the gray axis and saturation blend towards gray, ``c`` contrast and ``b``
brightness, plus optional Gaussian noise.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from jaxtyping import UInt8
from PIL import Image, ImageStat

from vosjax.data.geometry import crop_affine, warp_affine
from vosjax.errors import VosjaxError

__all__ = ["AugmentConfig", "ClipTransform", "sample_clip_transform", "apply_clip_transform"]

_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the clip-level augmentation (uniform draws; 0 disables a term)."""

    crop_scale: tuple[float, float] = (0.36, 1.0)  # crop area / frame area
    crop_aspect: tuple[float, float] = (0.75, 1.333)  # crop aspect / output aspect (log-uniform)
    rotation_deg: float = 15.0
    shear_deg: float = 10.0
    flip_prob: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.15
    hue_deg: float = 5.0
    noise_std: float = 0.0  # in 0..255 units

    def __post_init__(self):
        a, b = self.crop_scale
        if not 0 < a <= b <= 1:
            raise VosjaxError(
                "AugmentConfig: 'crop_scale' must satisfy 0 < min <= max <= 1, got "
                f"{self.crop_scale}."
            )
        a, b = self.crop_aspect
        if not 0 < a <= b:
            raise VosjaxError(
                f"AugmentConfig: 'crop_aspect' must satisfy 0 < min <= max, got {self.crop_aspect}."
            )
        if not 0 <= self.flip_prob <= 1:
            raise VosjaxError(
                f"AugmentConfig: 'flip_prob' must lie in [0, 1], got {self.flip_prob}."
            )
        for f in (
            "rotation_deg",
            "shear_deg",
            "brightness",
            "contrast",
            "saturation",
            "hue_deg",
            "noise_std",
        ):
            if getattr(self, f) < 0:
                raise VosjaxError(f"AugmentConfig: '{f}' must be >= 0, got {getattr(self, f)}.")
        for f in ("brightness", "contrast", "saturation"):
            if getattr(self, f) >= 1:
                raise VosjaxError(f"AugmentConfig: '{f}' must be < 1, got {getattr(self, f)}.")


@dataclasses.dataclass(frozen=True)
class ClipTransform:
    """One draw of :class:`AugmentConfig`, shared by all frames of a clip."""

    out_hw: tuple[int, int]
    matrix: np.ndarray  # [3, 3] backward affine, output -> source coordinates
    colour: np.ndarray  # [3, 3] = saturation blend @ hue rotation
    saturation: float
    hue_deg: float
    contrast: float
    brightness: float
    noise_std: float
    flip: bool


def _hue_rotation(deg: float) -> np.ndarray:
    """Rotation of RGB about the gray axis (1, 1, 1) / sqrt(3) by ``deg`` (Rodrigues)."""
    a = math.radians(deg)
    k = np.ones(3) / math.sqrt(3.0)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * (K @ K)


def sample_clip_transform(
    rng: np.random.Generator,
    src_hw: tuple[int, int],
    out_hw: tuple[int, int],
    cfg: AugmentConfig = AugmentConfig(),
) -> ClipTransform:
    """Draw one clip transform for frames of size ``src_hw`` resampled to ``out_hw``."""
    Hs, Ws = float(src_hw[0]), float(src_hw[1])
    Ho, Wo = int(out_hw[0]), int(out_hw[1])
    area = rng.uniform(*cfg.crop_scale) * Hs * Ws
    aspect = (Wo / Ho) * math.exp(
        rng.uniform(math.log(cfg.crop_aspect[0]), math.log(cfg.crop_aspect[1]))
    )
    cw, ch = math.sqrt(area * aspect), math.sqrt(area / aspect)
    shrink = min(1.0, Ws / cw, Hs / ch)
    cw, ch = cw * shrink, ch * shrink
    cx = rng.uniform(cw / 2, Ws - cw / 2) if Ws > cw else Ws / 2
    cy = rng.uniform(ch / 2, Hs - ch / 2) if Hs > ch else Hs / 2
    flip = bool(rng.uniform() < cfg.flip_prob)
    angle = rng.uniform(-1, 1) * cfg.rotation_deg
    shear = rng.uniform(-1, 1) * cfg.shear_deg
    m = crop_affine((Ho, Wo), (cx, cy), (cw, ch), angle, shear, flip)
    s = 1.0 + rng.uniform(-1, 1) * cfg.saturation
    hue = rng.uniform(-1, 1) * cfg.hue_deg
    sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _GRAY)
    colour = (sat @ _hue_rotation(hue)).astype(np.float32)
    return ClipTransform(
        out_hw=(Ho, Wo),
        matrix=m,
        colour=colour,
        saturation=float(s),
        hue_deg=float(hue),
        contrast=float(1.0 + rng.uniform(-1, 1) * cfg.contrast),
        brightness=float(1.0 + rng.uniform(-1, 1) * cfg.brightness),
        noise_std=float(cfg.noise_std),
        flip=flip,
    )


def apply_clip_transform(
    tf: ClipTransform,
    frames: UInt8[np.ndarray, "T H W 3"],
    labels: UInt8[np.ndarray, "T H W"],
    rng: np.random.Generator | None = None,
) -> tuple[UInt8[np.ndarray, "T h w 3"], UInt8[np.ndarray, "T h w"]]:
    """Warp and recolour every frame of a clip with one transform; labels are warped nearest."""
    fr = np.asarray(frames)
    lb = np.asarray(labels)
    if fr.ndim != 4 or fr.shape[-1] != 3 or lb.shape != fr.shape[:3]:
        raise VosjaxError(
            f"apply_clip_transform: need frames [T, H, W, 3] and labels [T, H, W], got {fr.shape} "
            f"and {lb.shape}."
        )
    out_f = np.empty((fr.shape[0], *tf.out_hw, 3), np.uint8)
    out_l = np.empty((fr.shape[0], *tf.out_hw), np.uint8)
    m = tf.matrix
    size = (int(tf.out_hw[1]), int(tf.out_hw[0]))
    data = (m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2])
    gain = tf.brightness * tf.contrast * tf.colour.astype(np.float64)  # [3, 3]
    for t in range(fr.shape[0]):
        im = Image.fromarray(np.ascontiguousarray(fr[t])).transform(
            size, Image.AFFINE, data, resample=Image.BILINEAR
        )
        # The colour map is affine once the frame's mean gray is known:
        # x' = b c M x + b (1 - c) gray . M . mean(x); Pillow applies it in C (rounded, clipped).
        mean_gray = float(_GRAY @ tf.colour @ np.asarray(ImageStat.Stat(im).mean))
        bias = tf.brightness * (1 - tf.contrast) * mean_gray
        im = im.convert("RGB", tuple(np.concatenate([gain, np.full((3, 1), bias)], 1).ravel()))
        x = np.asarray(im)
        if tf.noise_std > 0:
            if rng is None:
                raise VosjaxError("apply_clip_transform: 'rng' is required when noise_std > 0.")
            noisy = x.astype(np.float32) + rng.normal(0, tf.noise_std, x.shape).astype(np.float32)
            x = np.clip(np.rint(noisy), 0, 255)
        out_f[t] = x
        out_l[t] = warp_affine(lb[t], tf.matrix, tf.out_hw, nearest=True)
    return out_f, out_l
