"""Clip-consistent augmentation: one random geometry and colour change for all frames of a sample.

Geometry: a random crop (area fraction and aspect ratio of the source frame),
rotated, sheared and optionally mirrored, resampled to the output size in ONE
backward affine warp per frame (bilinear for frames, nearest for label maps:
the same coordinates, so masks stay aligned; corners outside the frame are
black background). Optionally (``frame_rotation_deg`` / ``frame_shear_deg`` >
0, off by default) every frame gets its own random rotation and shear about
the centre of the output on top of the clip's (STCN's per-frame
``RandomAffine(degrees=15, shear=10)``, dataset/vos_dataset.py:53-59, applied
after the clip-level crop); it is folded into the same single warp. Colour: a linear map per clip,
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

__all__ = ["AugmentConfig", "ClipTransform", "apply_clip_transform", "frame_affine", "sample_clip_transform"]

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
    frame_rotation_deg: float = 0.0  # per-frame rotation in [-r, r] on top of the clip's (0: off)
    frame_shear_deg: float = 0.0  # per-frame x-shear in [-s, s] on top of the clip's (0: off)

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
            "frame_rotation_deg",
            "frame_shear_deg",
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
    frame_matrices: np.ndarray | None = None  # [T, 3, 3] per-frame backward affines (output -> output)


def _hue_rotation(deg: float) -> np.ndarray:
    """Rotation of RGB about the gray axis (1, 1, 1) / sqrt(3) by ``deg`` (Rodrigues)."""
    a = math.radians(deg)
    k = np.ones(3) / math.sqrt(3.0)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * (K @ K)


def frame_affine(out_hw: tuple[int, int], angle_deg: float, shear_deg: float) -> np.ndarray:
    """Backward map (output -> output coordinates) of ``x' = c + R(angle) Shear_x(shear) (x - c)``.

    ``c`` is the centre of the ``out_hw`` image, ``Shear_x = [[1, tan(shear)], [0, 1]]``;
    the forward map is built and inverted, so the frame is rotated / sheared by
    exactly the drawn angles (as torchvision's ``RandomAffine`` does about the centre).
    """
    H, W = out_hw
    c = np.array([[1.0, 0.0, W / 2.0], [0.0, 1.0, H / 2.0], [0, 0, 1]])
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1]])
    sh = np.array([[1.0, math.tan(math.radians(shear_deg)), 0.0], [0.0, 1.0, 0.0], [0, 0, 1]])
    forward = c @ rot @ sh @ np.linalg.inv(c)
    return np.linalg.inv(forward)


def sample_clip_transform(
    rng: np.random.Generator,
    src_hw: tuple[int, int],
    out_hw: tuple[int, int],
    cfg: AugmentConfig = AugmentConfig(),
    num_frames: int | None = None,
) -> ClipTransform:
    """Draw one clip transform for frames of size ``src_hw`` resampled to ``out_hw``.

    With a per-frame affine in ``cfg`` (``frame_rotation_deg`` / ``frame_shear_deg``),
    ``num_frames`` per-frame rotations and shears are drawn after the clip's
    (uniform in ``[-r, r]`` / ``[-s, s]``); without one nothing more is drawn,
    so the random stream is the clip-only one.
    """
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
    frame_m = None
    if num_frames is not None and (cfg.frame_rotation_deg > 0 or cfg.frame_shear_deg > 0):
        draws = rng.uniform(-1, 1, size=(int(num_frames), 2))
        frame_m = np.stack([
            frame_affine((Ho, Wo), a * cfg.frame_rotation_deg, s_ * cfg.frame_shear_deg) for a, s_ in draws
        ])
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
        frame_matrices=frame_m,
    )


def apply_clip_transform(
    tf: ClipTransform,
    frames: UInt8[np.ndarray, "T H W 3"],
    labels: UInt8[np.ndarray, "T H W"],
    rng: np.random.Generator | None = None,
) -> tuple[UInt8[np.ndarray, "T h w 3"], UInt8[np.ndarray, "T h w"]]:
    """Warp and recolour every frame of a clip with one transform; labels are warped nearest.

    Frame ``t`` is sampled at ``matrix @ frame_matrices[t]`` where the transform has
    per-frame affines (one warp: the clip's crop and the frame's rotation / shear).
    """
    fr = np.asarray(frames)
    lb = np.asarray(labels)
    if fr.ndim != 4 or fr.shape[-1] != 3 or lb.shape != fr.shape[:3]:
        raise VosjaxError(
            f"apply_clip_transform: need frames [T, H, W, 3] and labels [T, H, W], got {fr.shape} "
            f"and {lb.shape}."
        )
    out_f = np.empty((fr.shape[0], *tf.out_hw, 3), np.uint8)
    out_l = np.empty((fr.shape[0], *tf.out_hw), np.uint8)
    if tf.frame_matrices is not None and len(tf.frame_matrices) != fr.shape[0]:
        raise VosjaxError(
            f"apply_clip_transform: the transform has {len(tf.frame_matrices)} per-frame affines for "
            f"{fr.shape[0]} frames; draw it with num_frames={fr.shape[0]}."
        )
    size = (int(tf.out_hw[1]), int(tf.out_hw[0]))
    gain = tf.brightness * tf.contrast * tf.colour.astype(np.float64)  # [3, 3]
    for t in range(fr.shape[0]):
        m = tf.matrix if tf.frame_matrices is None else tf.matrix @ tf.frame_matrices[t]
        data = (m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2])
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
        out_l[t] = warp_affine(lb[t], m, tf.out_hw, nearest=True)
    return out_f, out_l
