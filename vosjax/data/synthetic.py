"""Deterministic synthetic VOS videos with exact ground truth.

A video is a pure function of ``(spec, split seed, index)``: the scene (a
textured, panning / zooming background and a stack of textured objects with
closed-form trajectories) is drawn from ``np.random.default_rng([seed, index,
attempt])`` and every frame is rendered on demand from it, so any frame of any
video costs the same and nothing is stored.

Rendering is a backward map per object layer: each pixel centre ``p`` of the
object's box goes to object coordinates ``q0 = R(-theta_t) (p - c_t) / (r s_t)``,
then through the non-rigid warp ``q = q0 + A (sin(k_y q0_y + w t + phi_1),
sin(k_x q0_x + w t + phi_2))``; the pixel is inside the object iff ``|q| <=
rho(angle(q))`` (the shape's radial profile, max 1) and takes the object's
texture colour at ``q``. Layers are painted back to front in depth order, so
a pixel's label is the id of the front-most object covering it (0 for
background, occluders and distractors) and its colour is that object's colour:
labels and frames agree exactly. Frames are then multiplied by a global
illumination gain.

Targets are numbered 1..K by the frame where they appear. A drawn scene is
kept only if every target shows ``min_visible_fraction`` of its area on that
frame (so the first-appearance frame of target ``k`` is exactly its
appearance time) and every target meant to leave the view is, after
appearing, fully out of view in some frame and back in view later;
otherwise the next attempt is drawn (deterministically).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from typing import Any

import numpy as np
from PIL import Image

from vosjax.data.io import davis_palette
from vosjax.data.synthetic_spec import SyntheticSpec, load_spec
from vosjax.data.video import LazyFrames, Video
from vosjax.errors import VosjaxError

__all__ = ["Scene", "build_scene", "SyntheticSource", "generate_video"]

_LUT = 512  # samples of the radial profile over [-pi, pi]
_MAX_ATTEMPTS = 200


@dataclasses.dataclass(frozen=True)
class _Layer:
    kind: str  # "target" | "distractor" | "occluder"
    label: int
    depth: float
    t_appear: int
    radius: float  # pixels, at scale 1
    profile: np.ndarray  # [_LUT + 1] radial profile rho(angle), max 1
    texture: tuple  # (kind, params dict, colour_a, colour_b)
    p0: np.ndarray  # [2] (x, y) start, pixels
    vel: np.ndarray  # [2] pixels / frame
    wob_amp: np.ndarray  # [2]
    wob_freq: np.ndarray  # [2] rad / frame
    wob_phase: np.ndarray  # [2]
    lo: np.ndarray  # [2] reflection bounds of the centre
    hi: np.ndarray  # [2]
    angle0: float
    ang_vel: float  # rad / frame
    scale_amp: float
    scale_freq: float
    scale_phase: float
    deform_amp: float
    deform_k: np.ndarray  # [2]
    deform_freq: float
    deform_phase: np.ndarray  # [2]
    leaves_view: bool = False

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        """Centre (x, y), rotation angle and scale at frame ``t`` (closed form)."""
        raw = self.p0 + self.vel * t + self.wob_amp * np.sin(self.wob_freq * t + self.wob_phase)
        span = self.hi - self.lo
        u = np.mod(raw - self.lo, 2 * span)
        centre = self.lo + np.where(u <= span, u, 2 * span - u)  # reflect into [lo, hi]
        angle = self.angle0 + self.ang_vel * t
        scale = math.exp(self.scale_amp * math.sin(self.scale_freq * t + self.scale_phase))
        return centre, angle, scale

    def extent(self, t: float) -> float:
        """Radius (pixels) of a disc around the centre that contains the object at ``t``."""
        _, _, s = self.pose(t)
        return self.radius * s * (1.0 + self.deform_amp * math.sqrt(2.0)) + 1.0


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything needed to render any frame of one synthetic video."""

    name: str
    height: int
    width: int
    num_frames: int
    layers: tuple[_Layer, ...]  # sorted back to front
    canvas: np.ndarray  # uint8 [Hc, Wc, 3] background texture
    pad: int
    bg_vel: np.ndarray  # [2]
    bg_zoom: float
    bg_zoom_freq: float
    bg_zoom_phase: float
    illum: float
    illum_freq: float
    illum_phase: float

    @property
    def num_targets(self) -> int:
        return sum(1 for lay in self.layers if lay.kind == "target")

    def appear_frames(self) -> dict[int, int]:
        return {lay.label: lay.t_appear for lay in self.layers if lay.kind == "target"}

    def background(self, t: int) -> np.ndarray:
        H, W = self.height, self.width
        z = 1.0 + self.bg_zoom * math.sin(self.bg_zoom_freq * t + self.bg_zoom_phase)
        ox, oy = self.bg_vel * t
        data = (z, 0.0, W / 2 * (1 - z) + self.pad + ox, 0.0, z, H / 2 * (1 - z) + self.pad + oy)
        out = Image.fromarray(self.canvas).transform(
            (W, H), Image.AFFINE, data, resample=Image.BILINEAR
        )
        return np.asarray(out)

    def gain(self, t: int) -> float:
        return 1.0 + self.illum * math.sin(self.illum_freq * t + self.illum_phase)

    def _layer_coords(self, lay: _Layer, t: int, clip: bool = True):
        """Object coordinates q [h, w, 2] of the pixel centres in the layer's box (or None)."""
        (cx, cy), angle, s = lay.pose(t)
        ext = lay.extent(t)
        x0, x1 = math.floor(cx - ext), math.ceil(cx + ext)
        y0, y1 = math.floor(cy - ext), math.ceil(cy + ext)
        if clip:
            x0, x1 = max(x0, 0), min(x1, self.width)
            y0, y1 = max(y0, 0), min(y1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        xs = np.arange(x0, x1, dtype=np.float64) + 0.5 - cx
        ys = np.arange(y0, y1, dtype=np.float64) + 0.5 - cy
        ca, sa = math.cos(angle), math.sin(angle)
        rs = lay.radius * s
        # q0 = R(-angle) (p - c) / (r s)
        qx = (ca * xs[None, :] + sa * ys[:, None]) / rs
        qy = (-sa * xs[None, :] + ca * ys[:, None]) / rs
        if lay.deform_amp > 0:
            ph = lay.deform_freq * t
            dx = lay.deform_amp * np.sin(lay.deform_k[1] * qy + ph + lay.deform_phase[0])
            dy = lay.deform_amp * np.sin(lay.deform_k[0] * qx + ph + lay.deform_phase[1])
            qx, qy = qx + dx, qy + dy
        return (y0, y1, x0, x1), qx, qy

    @staticmethod
    def _inside(lay: _Layer, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        r2 = qx * qx + qy * qy
        pos = (np.arctan2(qy, qx) + math.pi) * (_LUT / (2 * math.pi))
        i0 = np.minimum(pos.astype(np.int64), _LUT - 1)
        frac = pos - i0
        rho = lay.profile[i0] * (1 - frac) + lay.profile[i0 + 1] * frac
        return r2 <= rho * rho

    def layer_mask(self, index: int, t: int) -> np.ndarray:
        """bool[H, W]: pixels covered by layer ``index`` at frame ``t``, ignoring all others."""
        lay = self.layers[index]
        out = np.zeros((self.height, self.width), bool)
        if t < lay.t_appear:
            return out
        got = self._layer_coords(lay, t)
        if got is not None:
            (y0, y1, x0, x1), qx, qy = got
            out[y0:y1, x0:x1] = self._inside(lay, qx, qy)
        return out

    def layer_colour(self, index: int, t: int) -> np.ndarray:
        """float[H, W, 3]: layer ``index``'s colour over its box (0 elsewhere), before the gain."""
        lay = self.layers[index]
        out = np.zeros((self.height, self.width, 3), np.float32)
        got = self._layer_coords(lay, t)
        if got is not None and t >= lay.t_appear:
            (y0, y1, x0, x1), qx, qy = got
            out[y0:y1, x0:x1] = _texture(lay.texture, qx, qy)
        return out

    def full_area(self, index: int, t: int) -> int:
        """Pixel count of layer ``index`` at ``t`` if the frame were unbounded."""
        got = self._layer_coords(self.layers[index], t, clip=False)
        if got is None:
            return 0
        _, qx, qy = got
        return int(self._inside(self.layers[index], qx, qy).sum())

    def render(self, t: int, rgb: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """Render frame ``t``: ``(uint8[H, W, 3] or None, uint8[H, W] labels)``."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range for {self.num_frames} frames")
        labels = np.zeros((self.height, self.width), np.uint8)
        img = self.background(t).astype(np.float32) if rgb else None
        for lay in self.layers:
            if t < lay.t_appear:
                continue
            got = self._layer_coords(lay, t)
            if got is None:
                continue
            (y0, y1, x0, x1), qx, qy = got
            inside = self._inside(lay, qx, qy)
            if not inside.any():
                continue
            labels[y0:y1, x0:x1][inside] = lay.label
            if rgb:
                img[y0:y1, x0:x1][inside] = _texture(lay.texture, qx[inside], qy[inside])
        if rgb:
            img = np.clip(np.rint(img * self.gain(t)), 0, 255).astype(np.uint8)
        return img, labels


# ----------------------------------------------------------------------------- drawing a scene


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255.0


def _texture(tex: tuple, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Colour [..., 3] of a texture at object coordinates (qx, qy)."""
    kind, p, ca, cb = tex
    if kind == "stripes":
        w = (
            np.sin(2 * math.pi * p["freq"] * (qx * p["dx"] + qy * p["dy"]) + p["phase"]) > 0
        ).astype(np.float32)
    elif kind == "checker":
        w = (
            np.sin(2 * math.pi * p["freq"] * qx + p["phase"])
            * np.sin(2 * math.pi * p["freq"] * qy + p["phase2"])
            > 0
        ).astype(np.float32)
    elif kind == "dots":
        fx = np.mod(qx * p["freq"] + p["phase"], 1.0) - 0.5
        fy = np.mod(qy * p["freq"] + p["phase2"], 1.0) - 0.5
        w = (fx * fx + fy * fy < p["dot"] ** 2).astype(np.float32)
    elif kind == "rings":
        w = (np.sin(2 * math.pi * p["freq"] * np.sqrt(qx * qx + qy * qy) + p["phase"]) > 0).astype(
            np.float32
        )
    else:  # "noise": bilinear lookup in a small random grid spanning [-1.5, 1.5]^2
        g = p["grid"]
        n = g.shape[0] - 1
        u = np.clip((qx + 1.5) / 3.0 * n, 0, n - 1e-6)
        v = np.clip((qy + 1.5) / 3.0 * n, 0, n - 1e-6)
        i, j = v.astype(np.int64), u.astype(np.int64)
        fu, fv = u - j, v - i
        w = (g[i, j] * (1 - fu) + g[i, j + 1] * fu) * (1 - fv) + (
            g[i + 1, j] * (1 - fu) + g[i + 1, j + 1] * fu
        ) * fv
        w = w.astype(np.float32)
    shade = 1.0 - p["shade"] * np.minimum(qx * qx + qy * qy, 1.0)
    w = w[..., None]
    return ((ca * (1 - w) + cb * w) * shade[..., None]).astype(np.float32)


def _profile(rng: np.random.Generator, kind: str) -> np.ndarray:
    phi = np.linspace(-math.pi, math.pi, _LUT + 1)
    if kind == "ellipse":
        a, b = 1.0, rng.uniform(0.45, 1.0)
        rot = rng.uniform(0, math.pi)
        c, s = np.cos(phi - rot), np.sin(phi - rot)
        r = a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)
    elif kind == "star":
        k = int(rng.integers(4, 8))
        r = 1.0 + rng.uniform(0.2, 0.45) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    elif kind == "blob":
        r = np.ones_like(phi)
        for m in range(2, 6):
            r += rng.uniform(0.0, 0.22 / m * 2) * np.cos(m * phi + rng.uniform(0, 2 * math.pi))
    else:  # star-shaped polygon: distance along each ray to the edge between neighbouring vertices
        k = int(rng.integers(3, 8))
        step = 2 * math.pi / k
        ang = -math.pi + step * (np.arange(k) + 0.5 + rng.uniform(-0.3, 0.3, k))
        rad = rng.uniform(0.65, 1.0, k)
        vx, vy = rad * np.cos(ang), rad * np.sin(ang)
        a_ext = np.r_[ang, ang[0] + 2 * math.pi]
        vx_e, vy_e = np.r_[vx, vx[0]], np.r_[vy, vy[0]]
        ph = np.where(phi < ang[0], phi + 2 * math.pi, phi)
        seg = np.clip(np.searchsorted(a_ext, ph, side="right") - 1, 0, k - 1)
        ax, ay, bx, by = vx_e[seg], vy_e[seg], vx_e[seg + 1], vy_e[seg + 1]
        dx, dy = np.cos(phi), np.sin(phi)
        # ray t (dx, dy) meets segment a + u (b - a): t = cross(a, b - a) / cross(d, b - a)
        ex, ey = bx - ax, by - ay
        r = (ax * ey - ay * ex) / (dx * ey - dy * ex)
    r = np.maximum(r, 0.05)
    return (r / r.max()).astype(np.float64)


def _draw_texture(rng: np.random.Generator, kinds, sat_range, hue: float | None = None) -> tuple:
    kind = str(rng.choice(list(kinds)))
    h = rng.uniform(0, 1) if hue is None else hue
    s = rng.uniform(*sat_range)
    ca = _hsv(h, s, rng.uniform(0.6, 1.0))
    cb = _hsv(h + rng.uniform(0.12, 0.5) * rng.choice([-1, 1]), s, rng.uniform(0.3, 0.9))
    ang = rng.uniform(0, math.pi)
    p = {
        "freq": float(rng.uniform(0.8, 2.2)),
        "phase": float(rng.uniform(0, 2 * math.pi)),
        "phase2": float(rng.uniform(0, 2 * math.pi)),
        "dx": math.cos(ang),
        "dy": math.sin(ang),
        "dot": float(rng.uniform(0.2, 0.35)),
        "shade": float(rng.uniform(0.0, 0.3)),
        "grid": rng.uniform(0, 1, (6, 6)),
    }
    return (kind, p, ca, cb)


def _jitter_colour(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    return np.clip(c + rng.uniform(-10, 10, 3), 0, 255).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-octave value noise in [0, 1], float32 [h, w]."""
    acc = np.zeros((h, w), np.float32)
    total = 0.0
    for cells, weight in ((3, 1.0), (8, 0.6), (24, 0.35), (64, 0.2)):
        gh, gw = max(2, cells * h // max(h, w) + 1), max(2, cells * w // max(h, w) + 1)
        small = Image.fromarray(rng.uniform(0, 1, (gh, gw)).astype(np.float32), mode="F")
        acc += weight * np.asarray(small.resize((w, h), resample=Image.BICUBIC), np.float32)
        total += weight
    acc /= total
    lo, hi = acc.min(), acc.max()
    return (acc - lo) / max(hi - lo, 1e-6)


def _motion(
    rng,
    spec: SyntheticSpec,
    H: int,
    W: int,
    radius: float,
    deform: float,
    speed_mult: float = 1.0,
    leave: bool = False,
    t_appear: int = 0,
):
    """Start, velocity, wobble and reflection bounds of one object's centre."""
    m = min(H, W)
    ext = radius * math.exp(spec.scale_change) * (1 + deform * math.sqrt(2)) + 1
    lo = np.array([min(ext, W / 2), min(ext, H / 2)])
    hi = np.array([max(W - ext, W / 2), max(H - ext, H / 2)]) + 1.0  # a non-empty range
    speed = rng.uniform(*spec.speed) * m * speed_mult
    heading = rng.uniform(0, 2 * math.pi)
    vel = speed * np.array([math.cos(heading), math.sin(heading)])
    p0 = rng.uniform(lo, hi)
    if leave:
        # Head for one side, starting 1-2 extents from it; that wall of the reflection box
        # lies 1.6 extents beyond the frame, so the object leaves the view completely,
        # bounces there and comes back. The speed covers out-and-back in the frames left.
        axis = int(rng.integers(0, 2))
        side = int(rng.integers(0, 2))
        size = (W, H)[axis]
        d0 = min(rng.uniform(1.0, 2.0) * ext, size / 2)
        frames_left = max(spec.num_frames - 1 - t_appear, 1)
        speed = max(speed, (d0 + 3.7 * ext) / (0.85 * frames_left))
        vel = np.zeros(2)
        vel[axis] = speed if side else -speed
        vel[1 - axis] = rng.uniform(-0.2, 0.2) * speed
        p0 = np.asarray(p0, np.float64).copy()
        lo, hi = lo.copy(), hi.copy()
        if side:
            hi[axis] = size + 1.6 * ext
            p0[axis] = size - d0
        else:
            lo[axis] = -1.6 * ext
            p0[axis] = d0
        p0 = p0 - vel * t_appear  # at that start point when appearing
    wob = rng.uniform(0, spec.wobble, 2) * m
    return dict(
        p0=np.asarray(p0, np.float64),
        vel=np.asarray(vel, np.float64),
        wob_amp=wob,
        wob_freq=rng.uniform(0.15, 0.5, 2),
        wob_phase=rng.uniform(0, 2 * math.pi, 2),
        lo=np.asarray(lo, np.float64),
        hi=np.asarray(hi, np.float64),
    )


def _draw_layer(
    rng,
    spec: SyntheticSpec,
    kind: str,
    label: int,
    t_appear: int,
    radius: float,
    profile,
    texture,
    leave: bool = False,
    speed_mult: float = 1.0,
) -> _Layer:
    H, W = spec.height, spec.width
    deform = spec.deformation * rng.uniform(0.5, 1.0) if spec.deformation > 0 else 0.0
    rot = rng.uniform(*spec.rotation_speed) * rng.choice([-1.0, 1.0])
    return _Layer(
        kind=kind,
        label=label,
        depth=0.0,
        t_appear=t_appear,
        radius=radius,
        profile=profile,
        texture=texture,
        **_motion(rng, spec, H, W, radius, deform, speed_mult, leave, t_appear),
        angle0=float(rng.uniform(0, 2 * math.pi)),
        ang_vel=math.radians(rot),
        scale_amp=float(rng.uniform(0, spec.scale_change)),
        scale_freq=float(rng.uniform(0.1, 0.35)),
        scale_phase=float(rng.uniform(0, 2 * math.pi)),
        deform_amp=deform,
        deform_k=rng.uniform(1.5, 3.5, 2),
        deform_freq=float(rng.uniform(0.15, 0.4)),
        deform_phase=rng.uniform(0, 2 * math.pi, 2),
        leaves_view=leave,
    )


def _draw_scene(spec: SyntheticSpec, rng: np.random.Generator, name: str) -> Scene:
    H, W, T = spec.height, spec.width, spec.num_frames
    m = min(H, W)
    n_targets = int(rng.integers(spec.num_objects[0], spec.num_objects[1] + 1))
    appear = [0]
    for _ in range(n_targets - 1):
        if rng.uniform() < spec.late_appearance:
            a, b = spec.late_window
            appear.append(int(rng.integers(max(1, round(a * T)), max(1, round(b * T)) + 1)))
        else:
            appear.append(0)
    appear = sorted(min(a, T - 1) for a in appear)
    hue0 = rng.uniform(0, 1)
    layers: list[_Layer] = []
    looks = []
    for k, t0 in enumerate(appear):
        radius = rng.uniform(*spec.object_size) * m
        profile = _profile(rng, str(rng.choice(list(spec.shapes))))
        # Spread the hues of the targets of one video so they are distinguishable.
        tex = _draw_texture(
            rng,
            spec.textures,
            spec.colour_saturation,
            hue=hue0 + k / n_targets + rng.uniform(-0.05, 0.05),
        )
        leave = bool(rng.uniform() < spec.leave_view)
        layers.append(
            _draw_layer(rng, spec, "target", k + 1, t0, radius, profile, tex, leave=leave)
        )
        looks.append((radius, profile, tex))
    for _ in range(int(rng.integers(spec.distractors[0], spec.distractors[1] + 1))):
        radius, profile, (kind, p, ca, cb) = looks[int(rng.integers(0, len(looks)))]
        tex = (kind, p, _jitter_colour(rng, ca), _jitter_colour(rng, cb))
        layers.append(
            _draw_layer(
                rng, spec, "distractor", 0, 0, radius * rng.uniform(0.85, 1.15), profile, tex
            )
        )
    for _ in range(int(rng.integers(spec.occluders[0], spec.occluders[1] + 1))):
        radius = rng.uniform(0.8, 1.3) * spec.object_size[1] * m
        profile = _profile(rng, str(rng.choice(["ellipse", "polygon", "blob"])))
        tex = _draw_texture(rng, spec.textures, (0.0, 0.6))
        layers.append(
            _draw_layer(
                rng, spec, "occluder", 0, 0, radius, profile, tex, leave=True, speed_mult=1.3
            )
        )
    depths = rng.permutation(len(layers)).astype(np.float64)
    for i, lay in enumerate(layers):
        d = depths[i] + (len(layers) if lay.kind == "occluder" and rng.uniform() < 0.7 else 0)
        layers[i] = dataclasses.replace(lay, depth=float(d))
    layers.sort(key=lambda lay: lay.depth)

    return Scene(
        name=name,
        height=H,
        width=W,
        num_frames=T,
        layers=tuple(layers),
        canvas=np.zeros((1, 1, 3), np.uint8),
        pad=0,
        bg_vel=np.zeros(2),
        bg_zoom=0.0,
        bg_zoom_freq=0.0,
        bg_zoom_phase=0.0,
        illum=spec.illumination,
        illum_freq=float(rng.uniform(0.2, 0.6)),
        illum_phase=float(rng.uniform(0, 6.28)),
    )


def _with_background(scene: Scene, spec: SyntheticSpec, rng: np.random.Generator) -> Scene:
    """Draw the background (noise between two low-saturation colours) and the camera motion."""
    H, W, T = spec.height, spec.width, spec.num_frames
    m = min(H, W)
    bg_speed = rng.uniform(*spec.background_speed) * m
    heading = rng.uniform(0, 2 * math.pi)
    bg_vel = bg_speed * np.array([math.cos(heading), math.sin(heading)])
    pad = int(math.ceil(bg_speed * T + spec.background_zoom * max(H, W) / 2 + 4))
    Hc, Wc = H + 2 * pad, W + 2 * pad
    n1 = _smooth_noise(rng, Hc, Wc)[..., None]
    n2 = _smooth_noise(rng, Hc, Wc)[..., None]
    h = rng.uniform(0, 1)
    base = _hsv(h, spec.background_saturation, rng.uniform(0.35, 0.65))
    other = _hsv(h + rng.uniform(0.1, 0.4), spec.background_saturation, rng.uniform(0.35, 0.65))
    canvas = base + (other - base) * n2 + np.float32(spec.background_contrast * 255.0) * (n1 - 0.5)
    canvas = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return dataclasses.replace(
        scene,
        canvas=canvas,
        pad=pad,
        bg_vel=bg_vel,
        bg_zoom=spec.background_zoom,
        bg_zoom_freq=float(rng.uniform(0.1, 0.3)),
        bg_zoom_phase=float(rng.uniform(0, 6.28)),
    )


def _acceptable(scene: Scene, spec: SyntheticSpec) -> bool:
    H, W = scene.height, scene.width
    by_time: dict[int, np.ndarray] = {}
    for i, lay in enumerate(scene.layers):
        if lay.kind != "target":
            continue
        t0 = lay.t_appear
        if t0 not in by_time:
            by_time[t0] = scene.render(t0, rgb=False)[1]
        visible = int((by_time[t0] == lay.label).sum())
        if visible < max(4, spec.min_visible_fraction * scene.full_area(i, t0)):
            return False
        if lay.leaves_view:
            out_at = None
            for t in range(t0 + 1, scene.num_frames):
                (cx, cy), _, _ = lay.pose(t)
                e = lay.extent(t)
                out = cx + e <= 0 or cx - e >= W or cy + e <= 0 or cy - e >= H
                if out and out_at is None:
                    out_at = t
                elif out_at is not None and 0.5 <= cx < W - 0.5 and 0.5 <= cy < H - 0.5:
                    break
            else:
                return False
    return True


def build_scene(spec: "SyntheticSpec | str", split: str, index: int) -> Scene:
    """The scene of video ``index`` of ``split`` (deterministic)."""
    spec = load_spec(spec)
    if split not in spec.splits:
        raise VosjaxError(
            f"build_scene: split {split!r} is not in spec {spec.name!r}; choose one of "
            f"{sorted(spec.splits)}."
        )
    n = spec.splits[split]["num_videos"]
    if not 0 <= index < n:
        raise IndexError(f"video index {index} out of range for split {split!r} with {n} videos")
    seed = spec.splits[split]["seed"]
    name = f"{spec.name}-{split}-{index:05d}"
    for attempt in range(_MAX_ATTEMPTS):
        scene = _draw_scene(spec, np.random.default_rng([seed, index, attempt]), name)
        if _acceptable(scene, spec):
            # The background cannot make a scene unacceptable: draw it once, from its own stream.
            return _with_background(scene, spec, np.random.default_rng([seed, index, attempt, 1]))
    raise VosjaxError(
        f"build_scene: spec {spec.name!r} produced no acceptable scene for {split}[{index}] in "
        f"{_MAX_ATTEMPTS} "
        "attempts; lower 'min_visible_fraction', 'object_size' or the occluder / distractor counts."
    )


class _SceneItem:
    """Picklable per-frame loader: renders frame ``t`` (small cache shared by rgb / labels)."""

    def __init__(self, scene: Scene, cache: dict, what: str):
        self.scene, self.cache, self.what = scene, cache, what

    def __call__(self, t: int) -> np.ndarray:
        if t not in self.cache:
            if len(self.cache) >= 4:
                self.cache.pop(next(iter(self.cache)))
            self.cache[t] = self.scene.render(t)
        img, lab = self.cache[t]
        return img if self.what == "rgb" else lab


def _video_of(scene: Scene) -> Video:
    T, H, W = scene.num_frames, scene.height, scene.width
    cache: dict = {}
    first = scene.appear_frames()
    return Video(
        name=scene.name,
        frames=LazyFrames(T, _SceneItem(scene, cache, "rgb"), (H, W, 3), np.uint8),
        masks=LazyFrames(T, _SceneItem(scene, cache, "labels"), (H, W), np.uint8),
        annotated=np.ones(T, bool),
        object_ids=tuple(sorted(first)),
        first_frame=first,
        palette=davis_palette(),
        frame_names=tuple(f"{t:05d}" for t in range(T)),
        complete=True,
    )


class SyntheticSource:
    """Random-access source of synthetic videos: ``len(src)``, ``src[i] -> Video``.

    ``spec`` is a preset name ("demo", "default"), a JSON path, a mapping or a
    :class:`SyntheticSpec`; ``split`` one of the spec's splits. Videos are
    rendered lazily frame by frame (``Video.frames`` / ``masks`` are
    :class:`LazyFrames`); ``video.load()`` materialises one. All frames are
    annotated and ``first_frame`` is each target's appearance frame.
    """

    def __init__(self, spec: Any = "demo", split: str = "train"):
        self.spec = load_spec(spec)
        if split not in self.spec.splits:
            raise VosjaxError(
                f"SyntheticSource: split {split!r} is not in spec {self.spec.name!r}; choose one "
                f"of {sorted(self.spec.splits)}."
            )
        self.split = split

    def __len__(self) -> int:
        return int(self.spec.splits[self.split]["num_videos"])

    def __getitem__(self, index: int) -> Video:
        index = int(index)
        if index < 0:
            index += len(self)
        return _video_of(build_scene(self.spec, self.split, index))

    def __repr__(self) -> str:
        return f"SyntheticSource(spec={self.spec.name!r}, split={self.split!r}, videos={len(self)})"


def generate_video(spec: Any, split: str, index: int) -> Video:
    """Video ``index`` of ``split`` as arrays: frames ``uint8[T,H,W,3]``, masks ``uint8[T,H,W]``."""
    return SyntheticSource(spec, split)[index].load()
