"""Every inference option of the engine in one frozen dataclass (static under ``jit``).

:class:`EngineConfig` is hashable, so the engine keys its compiled step on it.
``EngineConfig.from_config(cfg)`` maps the fields of a config section (an
``ml_collections.ConfigDict`` such as ``config.inference`` of a
``configs/*.py`` file, or any mapping) one to one and names an unknown field
together with the closest valid ones.

The memory policy is a name (``memory_policy``; ``"auto"``, the default, is
the method's own, from its record in :mod:`vosjax.methods`) plus optional
overrides of its write period (``mem_every``), refit period (``refit_every``)
and capacity (``memory_frames``); :func:`vosjax.inference.policies.resolve_policy`
turns them into the :class:`~vosjax.memory_policy.MemoryPolicy` value (its
table of policies and their defaults is in :mod:`vosjax.memory_policy`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vosjax.config_utils import read_section
from vosjax.errors import VosjaxError
from vosjax.memory_policy import POLICIES

__all__ = ["BOX_FILTERS", "MEMORY_POLICIES", "EngineConfig"]

MEMORY_POLICIES = ("auto",) + tuple(POLICIES)
BOX_FILTERS = (None, "cv", "pt")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Inference options of :class:`vosjax.inference.Engine` (all static under ``jit``).

    Attributes:
      max_objects: object slots ``O`` of the engine state (objects present at
        once); a video with more objects is an error. With ``bucket_objects``
        the drivers (``run_video``, ``evaluate_source``, the CLI) size the
        state to the next power of two >= the video's object count instead
        (at most ``max_objects``), so one-object videos do not pay for ten slots.
      bucket_objects: see ``max_objects``.
      clip_length: ``L``; 1 = per-frame inference, L > 1 = per-clip inference
        (PCVOS): the L frames of a clip are read together.
      segment_len: progressive memory matching segment length ``F`` (PCVOS
        eq. 4); None disables it. It only acts when ``F < clip_length`` (a clip
        of one segment reads the memory once, as without it; PCVOS uses F = 5
        for every L, so L = 5 has no PMM).
      top_k: keep the top-k memory entries per query position (None = dense).
      memory_policy: one of :data:`MEMORY_POLICIES` (module docstring).
      mem_every: write period in frames (None = the policy's default; in
        per-clip mode a multiple of ``clip_length``, default ``clip_length``).
      first_write: frames from a frame with given masks to the first periodic write
        after it (None = ``mem_every``); JOINT's tracker stores frames 1, 4, 7, ...
        (``mem_every = 3``, ``first_write = 1``).
      refit_every: learner refit period in frames (None = the policy's
        default; 0 = only on written frames for ``joint``, never for others).
      memory_frames: memory capacity in frames (None = 2 for ``first_last``,
        else the model's own ``memory_frames``).
      late_slots: memory slots added for the first frames of objects that
        appear after the first frame (None = the policy's, 0); see
        :mod:`vosjax.memory_policy`.
      correction_every: gradient correction every K frames (cyclic VOS; 0 = off).
      correction_iters: N, correction steps per corrected frame (paper and
        authors' code: 10).
      correction_rate: alpha, the step size of ``Y <- Y - alpha dL/dY`` on the
        MEAN loss of :func:`vosjax.correction.correction_criterion` (authors'
        libs/config/default.py:41: 150; their config.yaml sets 180).
      correction_smooth: lambda of the Sobel smoothness term (the paper states
        0.75; the authors' test.py has none, hence 0).
      correction_gamma: gamma of the reconstruction loss L_IoU + gamma L_CE (1).
      correction_top_p: fraction of pixels the correction's CE keeps (0.4).
      correction_output: output the corrected masks too (demo/demo.py); by
        default only the memory gets them and the frame's output is the
        uncorrected prediction (the authors' test.py, which gave their numbers).
      box_filter: None, ``"cv"`` (constant velocity) or ``"pt"`` (parametric
        tracker MLP), TrickVOS Algorithm 1.
      box_margin: enlarge the predicted box by this fraction per side.
      tracker: where the PT tracker's params come from: a bundle folder / params
        file path, or None to take ``variables["tracker"]`` of the model bundle.
      resolution: test-time size: frames are resized so that their shorter side
        is this many pixels (None = native size); outputs are resized back.
      pad_to: None, or d: the (resized) frames and given masks are zero-padded
        to a multiple of d in height and width, ``floor(extra / 2)`` rows /
        columns before and the rest after (STM / STCN's test-time handling,
        d = 16, applied after normalisation, so padding is the ImageNet mean
        colour); the model runs on the padded frames, its padded predictions
        go to memory, and outputs are cropped back before any resize.
      return_probs: also return the aggregated probabilities of every frame
        (large: ``f32[B, O+1, L, H, W]``).
    """

    max_objects: int = 10
    bucket_objects: bool = True
    clip_length: int = 1
    segment_len: int | None = None
    top_k: int | None = 20
    memory_policy: str = "auto"
    mem_every: int | None = None
    first_write: int | None = None
    refit_every: int | None = None
    memory_frames: int | None = None
    late_slots: int | None = None
    correction_every: int = 0
    correction_iters: int = 10
    correction_rate: float = 150.0
    correction_smooth: float = 0.0
    correction_gamma: float = 1.0
    correction_top_p: float = 0.4
    correction_output: bool = False
    box_filter: str | None = None
    box_margin: float = 0.0
    tracker: str | None = None
    resolution: int | None = None
    pad_to: int | None = None
    return_probs: bool = False

    def __post_init__(self) -> None:
        def bad(field: str, want: str) -> VosjaxError:
            return VosjaxError(
                f"EngineConfig: field '{field}' must be {want}, got {getattr(self, field)!r}."
            )

        for name in ("max_objects", "clip_length", "correction_iters"):
            v = getattr(self, name)
            if not _is_int(v) or v < (0 if name == "correction_iters" else 1):
                raise bad(name, "a positive int" if name != "correction_iters" else "an int >= 0")
        for name in (
            "segment_len", "top_k", "mem_every", "first_write", "memory_frames", "resolution",
            "pad_to",
        ):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise bad(name, "None or a positive int")
        for name in ("refit_every", "correction_every", "late_slots"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 0):
                raise bad(name, "an int >= 0" + (" or None" if name != "correction_every" else ""))
        if self.correction_every is None:
            raise bad("correction_every", "an int >= 0 (0 disables gradient correction)")
        for name in ("correction_rate", "correction_smooth", "correction_gamma", "box_margin"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                raise bad(name, "a number >= 0")
        if not _is_number(self.correction_top_p) or not 0 < self.correction_top_p <= 1:
            raise bad("correction_top_p", "a number in (0, 1]")
        for name in ("bucket_objects", "return_probs", "correction_output"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "True or False")
        if self.memory_policy not in MEMORY_POLICIES:
            raise bad("memory_policy", "one of " + ", ".join(repr(p) for p in MEMORY_POLICIES))
        if self.box_filter not in BOX_FILTERS:
            raise bad("box_filter", "None, 'cv' (constant velocity) or 'pt' (parametric tracker)")
        if self.tracker is not None and not isinstance(self.tracker, str):
            raise bad("tracker", "None or a path (str) to the tracker params")
        if self.tracker is not None and self.box_filter != "pt":
            raise VosjaxError(
                "EngineConfig: 'tracker' is only used with box_filter='pt'; set box_filter='pt' "
                "or drop tracker."
            )
        if (
            self.clip_length > 1
            and self.mem_every is not None
            and self.mem_every % self.clip_length
        ):
            raise VosjaxError(
                f"EngineConfig: in per-clip mode the memory is written at clip ends, so "
                f"'mem_every' ({self.mem_every}) must be a multiple of clip_length "
                f"({self.clip_length}); use None for every clip."
            )
        if self.memory_policy == "first_last" and self.mem_every not in (None, 1, self.clip_length):
            raise VosjaxError(
                "EngineConfig: memory_policy='first_last' keeps the first and the LAST frame, "
                "so it writes every frame (every clip); drop 'mem_every' or use 'every_k'."
            )

    # -- derived options ---------------------------------------------------------------------
    @property
    def pmm_segment_len(self) -> int | None:
        """``segment_len`` where it splits a clip, else None (same result, less work)."""
        if self.segment_len is None or self.segment_len >= self.clip_length:
            return None
        return self.segment_len

    @property
    def per_clip(self) -> bool:
        return self.clip_length > 1

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | Any | None = None, **overrides: Any
    ) -> EngineConfig:
        """Build from a ConfigDict / mapping whose keys are field names (1:1), plus ``overrides``.

        An unknown key raises :class:`VosjaxError` naming it and the closest
        valid field names (:func:`vosjax.config_utils.read_section`); bad values
        raise from the field checks.
        """
        return read_section(cls, config, "EngineConfig.from_config", **overrides)

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some fields changed (validated like the constructor)."""
        return self.from_config(dataclasses.asdict(self), **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
