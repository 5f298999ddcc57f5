"""The declarative description of a synthetic VOS benchmark (``data_specs/synthetic_*.json``).

A spec is a JSON object; every field below may be given, missing ones take
the defaults of :class:`SyntheticSpec`. Lengths and speeds are fractions of
``min(height, width)`` so a preset keeps its difficulty at another resolution.

=====================  ===========================================================
field                  meaning
=====================  ===========================================================
name                   preset name
height, width          frame size in pixels
num_frames             frames per video
splits                 ``{split: {"seed": int, "num_videos": int}}``; a video is a
                       pure function of (spec, split seed, index)
num_objects            ``[min, max]`` target objects per video (1..5 in presets)
object_size            ``[min, max]`` object radius, fraction of min(H, W)
shapes                 any of "ellipse", "polygon", "star", "blob"
textures               any of "stripes", "checker", "dots", "rings", "noise"
late_appearance        probability that a target other than the first appears
                       after frame 0 (YouTube-VOS style)
late_window            ``[a, b]``: late targets appear in frames ``[a*T, b*T]``
speed                  ``[min, max]`` object speed per frame, fraction of min(H, W)
wobble                 amplitude of the smooth (sinusoidal) deviation of the path,
                       fraction of min(H, W)
rotation_speed         ``[min, max]`` rotation in degrees per frame (random sign)
scale_change           amplitude of the log-scale oscillation (0: constant size)
deformation            non-rigid warp amplitude, fraction of the object radius
leave_view             probability that a target's path leaves the frame and
                       comes back (checked: such a target is fully out of view in
                       some frame after it appears and visible again later)
occluders              ``[min, max]`` untracked objects, mostly in front of targets
distractors            ``[min, max]`` untracked look-alikes of the targets (same
                       texture and colours, similar shape and size; label 0)
colour_saturation      ``[min, max]`` saturation of object colours (HSV)
background_contrast    0..1 contrast of the background texture
background_saturation  saturation of the background colours
background_speed       ``[min, max]`` camera pan per frame, fraction of min(H, W)
background_zoom        amplitude of the camera zoom oscillation (0: none)
illumination           amplitude of the global brightness flicker (0: none)
min_visible_fraction   each target must show at least this fraction of its area
                       on the frame where it first appears
=====================  ===========================================================
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Mapping

from vosjax.errors import VosjaxError

__all__ = ["SyntheticSpec", "load_spec", "SPEC_DIR", "available_presets"]

# Presets live in the repository's data_specs/ folder (the package is installed editable).
SPEC_DIR = pathlib.Path(__file__).resolve().parents[2] / "data_specs"

SHAPES = ("ellipse", "polygon", "star", "blob")
TEXTURES = ("stripes", "checker", "dots", "rings", "noise")


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """All knobs of the synthetic video generator (see the module docstring)."""

    name: str = "custom"
    height: int = 64
    width: int = 64
    num_frames: int = 16
    splits: Mapping[str, Mapping[str, int]] = dataclasses.field(
        default_factory=lambda: {
            "train": {"seed": 1, "num_videos": 1000},
            "val": {"seed": 2, "num_videos": 20},
        }
    )
    num_objects: tuple[int, int] = (1, 2)
    object_size: tuple[float, float] = (0.15, 0.22)
    shapes: tuple[str, ...] = SHAPES
    textures: tuple[str, ...] = TEXTURES
    late_appearance: float = 0.0
    late_window: tuple[float, float] = (0.1, 0.6)
    speed: tuple[float, float] = (0.03, 0.06)
    wobble: float = 0.0
    rotation_speed: tuple[float, float] = (0.0, 3.0)
    scale_change: float = 0.0
    deformation: float = 0.0
    leave_view: float = 0.0
    occluders: tuple[int, int] = (0, 0)
    distractors: tuple[int, int] = (0, 0)
    colour_saturation: tuple[float, float] = (0.6, 1.0)
    background_contrast: float = 0.3
    background_saturation: float = 0.2
    background_speed: tuple[float, float] = (0.0, 0.005)
    background_zoom: float = 0.0
    illumination: float = 0.0
    min_visible_fraction: float = 0.5

    def __post_init__(self):
        def bad(field: str, why: str):
            raise VosjaxError(f"SyntheticSpec {self.name!r}: field '{field}' {why}.")

        if self.height < 16 or self.width < 16:
            bad("height/width", f"must be at least 16 pixels, got {self.height}x{self.width}")
        if self.num_frames < 2:
            bad("num_frames", f"must be at least 2, got {self.num_frames}")
        lo, hi = self.num_objects
        if not 1 <= lo <= hi <= 20:
            bad(
                "num_objects",
                f"must be [min, max] with 1 <= min <= max <= 20, got {list(self.num_objects)}",
            )
        for f in (
            "object_size",
            "speed",
            "rotation_speed",
            "late_window",
            "colour_saturation",
            "background_speed",
        ):
            a, b = getattr(self, f)
            if not (0 <= a <= b):
                bad(f, f"must be [min, max] with 0 <= min <= max, got {[a, b]}")
        if self.object_size[1] <= 0 or self.object_size[1] > 0.5:
            bad("object_size", f"max must lie in (0, 0.5], got {self.object_size[1]}")
        if self.late_window[1] > 1:
            bad("late_window", "must lie within [0, 1]")
        for f in (
            "late_appearance",
            "leave_view",
            "background_contrast",
            "background_saturation",
            "min_visible_fraction",
        ):
            v = getattr(self, f)
            if not 0 <= v <= 1:
                bad(f, f"must lie in [0, 1], got {v}")
        for f in ("wobble", "scale_change", "deformation", "background_zoom", "illumination"):
            if getattr(self, f) < 0:
                bad(f, "must be >= 0")
        for f in ("occluders", "distractors"):
            a, b = getattr(self, f)
            if not 0 <= a <= b:
                bad(f, f"must be [min, max] with 0 <= min <= max, got {[a, b]}")
        if not self.shapes or any(s not in SHAPES for s in self.shapes):
            bad("shapes", f"must be a non-empty subset of {list(SHAPES)}, got {list(self.shapes)}")
        if not self.textures or any(t not in TEXTURES for t in self.textures):
            bad(
                "textures",
                f"must be a non-empty subset of {list(TEXTURES)}, got {list(self.textures)}",
            )
        if not self.splits:
            bad("splits", "must name at least one split")
        for split, cfg in self.splits.items():
            if set(cfg) != {"seed", "num_videos"} or int(cfg["num_videos"]) < 1:
                bad(
                    "splits",
                    f"entry {split!r} must be {{'seed': int, 'num_videos': int >= 1}}, got "
                    f"{dict(cfg)}",
                )

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps(d, indent=2)


_TUPLE_FIELDS = {
    f.name for f in dataclasses.fields(SyntheticSpec) if str(f.type).startswith("tuple")
}


def available_presets() -> tuple[str, ...]:
    """Names of the presets shipped in ``data_specs/`` (``synthetic_<name>.json``)."""
    return tuple(sorted(p.stem[len("synthetic_") :] for p in SPEC_DIR.glob("synthetic_*.json")))


def _from_mapping(d: Mapping[str, Any], origin: str) -> SyntheticSpec:
    names = {f.name for f in dataclasses.fields(SyntheticSpec)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise VosjaxError(
            f"{origin}: unknown synthetic spec field(s) {unknown}; valid fields: {sorted(names)}."
        )
    kw = {}
    for k, v in d.items():
        if k in _TUPLE_FIELDS:
            v = tuple(v)
        elif k == "splits":
            v = {
                str(s): {"seed": int(c["seed"]), "num_videos": int(c["num_videos"])}
                if isinstance(c, Mapping) and {"seed", "num_videos"} <= set(c)
                else c
                for s, c in v.items()
            }
        kw[k] = v
    return SyntheticSpec(**kw)


def load_spec(
    spec: "str | pathlib.Path | Mapping[str, Any] | SyntheticSpec", **overrides: Any
) -> SyntheticSpec:
    """Resolve a spec: a :class:`SyntheticSpec`, a mapping, a JSON path, or a preset name.

    Preset names (``"demo"``, ``"default"``) are looked up as
    ``data_specs/synthetic_<name>.json``. ``overrides`` replace fields, e.g.
    ``load_spec("default", height=48, width=64)`` for a quick test.
    """
    if isinstance(spec, SyntheticSpec):
        base = spec
    elif isinstance(spec, Mapping):
        base = _from_mapping(spec, "load_spec")
    else:
        p = pathlib.Path(spec)
        if not p.suffix:
            p = SPEC_DIR / f"synthetic_{spec}.json"
            if not p.is_file():
                raise VosjaxError(
                    f"load_spec: no synthetic preset named {str(spec)!r}; available: "
                    f"{list(available_presets())}, "
                    "or pass a path to a JSON spec."
                )
        if not p.is_file():
            raise VosjaxError(f"load_spec: spec file not found: {p}.")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise VosjaxError(f"load_spec: {p} is not valid JSON ({e}).") from e
        if not isinstance(d, Mapping):
            raise VosjaxError(f"load_spec: {p} must hold a JSON object.")
        d = {
            k: v for k, v in d.items() if not k.startswith("_")
        }  # "_comment" keys are documentation
        base = _from_mapping(d, str(p))
    if overrides:
        base = _from_mapping({**dataclasses.asdict(base), **overrides}, "load_spec(overrides)")
    return base
