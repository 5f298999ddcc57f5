"""Clip-consistent augmentation: one random geometry and colour change for all frames of a sample.

Geometry: a random crop (area fraction and aspect ratio of the source frame),
rotated, sheared and optionally mirrored, resampled to the output size in ONE
backward affine warp per frame (bilinear for frames, nearest for label maps:
the same coordinates, so masks stay aligned; corners outside the frame are
black background). Optionally (``frame_rotation_deg`` / ``frame_shear_deg`` >
0, off by default) every frame gets its own random rotation and shear about
the centre of the output on top of the clip's (STCN's per-frame
``RandomAffine(degrees=15, shear=10)``, dataset/vos_dataset.py:53-59, applied
after the clip-level crop), optionally with a per-frame zoom ``exp(U[-z, z])``
(``frame_scale``); it is folded into the same single warp. Optionally
(``search_area_factor`` > 0, off by default) the clip's random crop is replaced
by a crop per frame around the target, JOINT's search region
(:mod:`vosjax.data.search_crop`): each frame's target box is jittered with the
reference frame's factors (frame 0) or the other frames' and the region is
fitted to the frame and resized to the output; the clip's rotation, shear and
mirroring act about each region's centre, the per-frame affine on top, still
one warp per frame. Colour: a linear map per clip,
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
from vosjax.data.search_crop import CROP_MODES, jitter_box, search_region
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
    frame_scale: float = 0.0  # per-frame zoom exp(U[-z, z]) about the output centre (0: off)
    # Target-centred search region per frame instead of the clip's random crop (0: off;
    # JOINT: 5). The crop_scale / crop_aspect ranges are then unused.
    search_area_factor: float = 0.0
    search_scale_jitter: tuple[float, float] = (0.25, 0.5)  # log-size std: reference, other frames
    search_center_jitter: tuple[tuple[float, float], tuple[float, float]] = ((3.0, 3.0), (5.5, 4.5))  # (x, y)
    search_crop: str = "inside_major"  # or "inside" (see vosjax.data.search_crop)
    reference_own_flip: bool = False  # mirror frame 0 by a draw of its own (JOINT), the rest by the clip's

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
            "frame_scale",
            "search_area_factor",
        ):
            if getattr(self, f) < 0:
                raise VosjaxError(f"AugmentConfig: '{f}' must be >= 0, got {getattr(self, f)}.")
        for f in ("brightness", "contrast", "saturation"):
            if getattr(self, f) >= 1:
                raise VosjaxError(f"AugmentConfig: '{f}' must be < 1, got {getattr(self, f)}.")
        sj = self.search_scale_jitter
        if len(sj) != 2 or min(sj) < 0:
            raise VosjaxError(
                "AugmentConfig: 'search_scale_jitter' must be (reference, other frames) >= 0, got "
                f"{sj}."
            )
        cj = self.search_center_jitter
        if len(cj) != 2 or any(len(p) != 2 or min(p) < 0 for p in cj):
            raise VosjaxError(
                "AugmentConfig: 'search_center_jitter' must be ((x, y) of the reference, (x, y) of "
                f"the other frames), all >= 0, got {cj}."
            )
        if self.search_crop not in CROP_MODES:
            raise VosjaxError(
                f"AugmentConfig: 'search_crop' must be one of {list(CROP_MODES)}, got "
                f"{self.search_crop!r}."
            )


@dataclasses.dataclass(frozen=True)
class ClipTransform:
    """One draw of :class:`AugmentConfig`, shared by all frames of a clip."""

    out_hw: tuple[int, int]
    matrix: np.ndarray  # [3, 3] backward affine, output -> source (with crop_matrices: frame 0's)
    colour: np.ndarray  # [3, 3] = saturation blend @ hue rotation
    saturation: float
    hue_deg: float
    contrast: float
    brightness: float
    noise_std: float
    flip: bool  # the clip's mirror (with reference_own_flip, frame 0 has its own in crop_matrices)
    frame_matrices: np.ndarray | None = None  # [T, 3, 3] per-frame backward affines (output -> output)
    crop_matrices: np.ndarray | None = None  # [T, 3, 3] search crop / own reference flip: output -> source
    search_regions: np.ndarray | None = None  # [T, 4] search crop: integer (x1, y1, w, h) per frame


def _hue_rotation(deg: float) -> np.ndarray:
    """Rotation of RGB about the gray axis (1, 1, 1) / sqrt(3) by ``deg`` (Rodrigues)."""
    a = math.radians(deg)
    k = np.ones(3) / math.sqrt(3.0)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * (K @ K)


def frame_affine(
    out_hw: tuple[int, int], angle_deg: float, shear_deg: float, scale: float = 1.0
) -> np.ndarray:
    """Backward map (output -> output coordinates) of ``x' = c + s R(angle) Shear_x(shear) (x - c)``.

    ``c`` is the centre of the ``out_hw`` image, ``Shear_x = [[1, tan(shear)], [0, 1]]``,
    ``s = scale``; the forward map is built and inverted, so the frame is rotated /
    sheared / zoomed by exactly the drawn values (as torchvision's ``RandomAffine``
    does about the centre).
    """
    H, W = out_hw
    c = np.array([[1.0, 0.0, W / 2.0], [0.0, 1.0, H / 2.0], [0, 0, 1]])
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0, 0, 1]])
    sh = np.array([[1.0, math.tan(math.radians(shear_deg)), 0.0], [0.0, 1.0, 0.0], [0, 0, 1]])
    zoom = np.diag([float(scale), float(scale), 1.0])
    forward = c @ zoom @ rot @ sh @ np.linalg.inv(c)
    return np.linalg.inv(forward)


def sample_clip_transform(
    rng: np.random.Generator,
    src_hw: tuple[int, int],
    out_hw: tuple[int, int],
    cfg: AugmentConfig = AugmentConfig(),
    num_frames: int | None = None,
    target_boxes: np.ndarray | None = None,
) -> ClipTransform:
    """Draw one clip transform for frames of size ``src_hw`` resampled to ``out_hw``.

    With a per-frame affine in ``cfg`` (``frame_rotation_deg`` / ``frame_shear_deg``
    / ``frame_scale``), ``num_frames`` per-frame rotations and shears are drawn
    after the clip's (uniform in ``[-r, r]`` / ``[-s, s]``), then, with
    ``frame_scale``, the zooms; without one nothing more is drawn, so the random
    stream is the clip-only one.

    With ``cfg.search_area_factor`` > 0, ``target_boxes`` (``[T, 4]`` ``(x, y, w, h)``
    of the target per frame, frame 0 the reference; see
    :func:`vosjax.data.search_crop.target_boxes`) is required: instead of the
    clip's crop, ``T`` normal size draws and ``T`` uniform centre draws (each
    ``[T, 2]``) jitter the boxes, and each frame gets its own search region.
    With ``cfg.reference_own_flip`` one more uniform, right after the clip's
    mirror draw, mirrors frame 0 on its own (then ``num_frames`` is required
    without a search crop).
    """
    Hs, Ws = float(src_hw[0]), float(src_hw[1])
    Ho, Wo = int(out_hw[0]), int(out_hw[1])
    search = cfg.search_area_factor > 0
    if search:
        boxes = None if target_boxes is None else np.asarray(target_boxes, np.float64)
        if boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) < 1 or (
            num_frames is not None and len(boxes) != num_frames
        ):
            raise VosjaxError(
                "sample_clip_transform: 'search_area_factor' > 0 needs 'target_boxes' [T, 4] "
                f"(one box per frame), got {None if boxes is None else boxes.shape}."
            )
        normal = rng.standard_normal((len(boxes), 2))
        uniform = rng.uniform(size=(len(boxes), 2))
        regions = np.stack([
            search_region(
                jitter_box(b, n, u, cfg.search_scale_jitter[t > 0], cfg.search_center_jitter[t > 0]),
                (Ho, Wo), cfg.search_area_factor, (int(Hs), int(Ws)), cfg.search_crop,
            )
            for t, (b, n, u) in enumerate(zip(boxes, normal, uniform))
        ])
    else:
        area = rng.uniform(*cfg.crop_scale) * Hs * Ws
        aspect = (Wo / Ho) * math.exp(
            rng.uniform(math.log(cfg.crop_aspect[0]), math.log(cfg.crop_aspect[1]))
        )
        cw, ch = math.sqrt(area * aspect), math.sqrt(area / aspect)
        shrink = min(1.0, Ws / cw, Hs / ch)
        cw, ch = cw * shrink, ch * shrink
        cx = rng.uniform(cw / 2, Ws - cw / 2) if Ws > cw else Ws / 2
        cy = rng.uniform(ch / 2, Hs - ch / 2) if Hs > ch else Hs / 2
    if cfg.reference_own_flip and not search and num_frames is None:
        raise VosjaxError(
            "sample_clip_transform: 'reference_own_flip' needs num_frames (one crop per frame)."
        )
    flip = bool(rng.uniform() < cfg.flip_prob)
    flips = [flip] * (len(regions) if search else int(num_frames or 1))
    if cfg.reference_own_flip:
        flips[0] = bool(rng.uniform() < cfg.flip_prob)
    angle = rng.uniform(-1, 1) * cfg.rotation_deg
    shear = rng.uniform(-1, 1) * cfg.shear_deg
    crop_m = None
    if search:
        crop_m = np.stack([
            crop_affine((Ho, Wo), (x + w / 2, y + h / 2), (w, h), angle, shear, f)
            for (x, y, w, h), f in zip(regions, flips)
        ])
    elif cfg.reference_own_flip:
        crop_m = np.stack([crop_affine((Ho, Wo), (cx, cy), (cw, ch), angle, shear, f) for f in flips])
    m = crop_m[0] if crop_m is not None else crop_affine((Ho, Wo), (cx, cy), (cw, ch), angle, shear, flip)
    s = 1.0 + rng.uniform(-1, 1) * cfg.saturation
    hue = rng.uniform(-1, 1) * cfg.hue_deg
    sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _GRAY)
    colour = (sat @ _hue_rotation(hue)).astype(np.float32)
    frame_m = None
    if num_frames is not None and (
        cfg.frame_rotation_deg > 0 or cfg.frame_shear_deg > 0 or cfg.frame_scale > 0
    ):
        draws = rng.uniform(-1, 1, size=(int(num_frames), 2))
        zooms = np.ones(int(num_frames))
        if cfg.frame_scale > 0:
            zooms = np.exp(rng.uniform(-1, 1, size=int(num_frames)) * cfg.frame_scale)
        frame_m = np.stack([
            frame_affine((Ho, Wo), a * cfg.frame_rotation_deg, s_ * cfg.frame_shear_deg, z)
            for (a, s_), z in zip(draws, zooms)
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
        crop_matrices=crop_m,
        search_regions=None if not search else regions,
    )


def apply_clip_transform(
    tf: ClipTransform,
    frames: UInt8[np.ndarray, "T H W 3"],
    labels: UInt8[np.ndarray, "T H W"],
    rng: np.random.Generator | None = None,
) -> tuple[UInt8[np.ndarray, "T h w 3"], UInt8[np.ndarray, "T h w"]]:
    """Warp and recolour every frame of a clip with one transform; labels are warped nearest.

    Frame ``t`` is sampled at ``C_t @ frame_matrices[t]`` where the transform has
    per-frame affines, with ``C_t = crop_matrices[t]`` for a search crop and
    ``matrix`` otherwise (one warp: the crop and the frame's rotation / shear / zoom).
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
    for name in ("frame_matrices", "crop_matrices"):
        per_frame = getattr(tf, name)
        if per_frame is not None and len(per_frame) != fr.shape[0]:
            raise VosjaxError(
                f"apply_clip_transform: the transform has {len(per_frame)} per-frame affines "
                f"('{name}') for {fr.shape[0]} frames; draw it with num_frames={fr.shape[0]}."
            )
    size = (int(tf.out_hw[1]), int(tf.out_hw[0]))
    gain = tf.brightness * tf.contrast * tf.colour.astype(np.float64)  # [3, 3]
    for t in range(fr.shape[0]):
        m = tf.matrix if tf.crop_matrices is None else tf.crop_matrices[t]
        if tf.frame_matrices is not None:
            m = m @ tf.frame_matrices[t]
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
