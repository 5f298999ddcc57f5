"""Which frames of a video make one training sample, per method.

Every sampler returns frame indices in the order the model consumes them;
position 0 is always the reference frame whose mask the model is given.
Frames are drawn from ``candidates`` (the annotated frames) and gaps are
measured in frame numbers, so sparsely annotated videos (YouTube-VOS train:
every 5th frame) need no special case.

A sampler is named by a method (its record in :mod:`vosjax.methods` holds a
:class:`~vosjax.methods.Sampler`: the kind, frames per sample, gap curriculum,
reverse probability) or is ``static``. The built-in methods' samplers:

==========  =============================================================================
name        frames
==========  =============================================================================
stcn        ``chain``: 3 frames; consecutive gaps <= max_gap(progress) (curriculum,
            default 10 -> 15 -> 20 -> 25 then 5); order reversed with probability 0.5
trickvos    as stcn with 5 frames (TrickVOS trains with sequence length 5)
cyclic      ``chain``: 3 frames; gaps <= max_gap(progress), which grows by 5 every 1/12
            of training (every 20 of 240 epochs); temporal order: the earliest frame is
            the reference
pcvos       ``clips``: 1 reference + 2 clips of N = 3 (7 frames): reference -> clip 1 ->
            clip 2 forward in time; the gap into each clip <= inter-clip gap(progress)
            (5 -> 10 -> 15 -> 10 -> 5), gaps inside a clip <= 5; ``clip_id`` = 0, 1, 2
frtm        ``pool``: 1 reference + 2 validation frames, all drawn from the whole video
            (or a window of ``max_gap`` frames); the reference is any of the three, the
            validation frames follow in temporal order
joint       ``window``: 4 frames, sorted, drawn from a window of 100 consecutive frames
static      1 annotated frame repeated (the pipeline deforms it into a pseudo-video)
==========  =============================================================================

A video with fewer candidate frames than needed gives a sample with repeated
frames (drawn with replacement, in temporal order).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from jaxtyping import Int

from vosjax import methods
from vosjax.errors import VosjaxError
from vosjax.methods import Sampler, Schedule

__all__ = [
    "SamplerOptions",
    "default_num_frames",
    "sample_frame_indices",
    "sampler_names",
    "sampler_spec",
    "schedule_value",
]

_STATIC = Sampler("static", 3)


def sampler_names() -> tuple[str, ...]:
    """Every valid sampler name: the registered methods' and ``static``."""
    return methods.method_names() + ("static",)


def sampler_spec(name: str) -> Sampler:
    """The :class:`~vosjax.methods.Sampler` of method ``name`` (or of ``static``)."""
    _check_name(name)
    return _STATIC if name == "static" else methods.get_method(name).sampler


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """Per-sampler knobs; ``None`` fields take the sampler's default."""

    num_frames: int | None = None
    gap_schedule: Schedule | None = None
    reverse_prob: float | None = None
    intra_clip_gap: int = 5
    clip_length: int = 3
    window: int = 100
    max_gap: int | None = None


def default_num_frames(name: str, opts: SamplerOptions = SamplerOptions()) -> int:
    """Frames per sample of sampler ``name`` (``opts.num_frames`` if set)."""
    spec = sampler_spec(name)
    if spec.kind == "clips":
        if opts.num_frames is not None and opts.num_frames != 1 + 2 * opts.clip_length:
            raise VosjaxError(
                f"sampler {name!r}: num_frames must be 1 + 2 * clip_length = "
                f"{1 + 2 * opts.clip_length}, got {opts.num_frames}."
            )
        return 1 + 2 * opts.clip_length
    if opts.num_frames is not None:
        return int(opts.num_frames)
    return int(spec.num_frames)


def _check_name(name: str) -> None:
    if name not in sampler_names():
        raise VosjaxError(
            f"sampler: unknown sampler {name!r}; choose one of {list(sampler_names())}."
        )


def check_schedule(schedule: Sequence[Sequence[float]], what: str = "gap_schedule") -> Schedule:
    """Validate a piecewise-constant schedule ``((end_fraction, value), ...)``."""
    try:
        sched = tuple((float(e), int(v)) for e, v in schedule)
    except (TypeError, ValueError) as e:
        raise VosjaxError(
            f"{what}: must be a sequence of (end_fraction, value) pairs, got {schedule!r}."
        ) from e
    ends = [e for e, _ in sched]
    if not sched or ends != sorted(ends) or any(v < 1 for _, v in sched):
        raise VosjaxError(
            f"{what}: needs increasing end fractions and values >= 1, got {schedule!r}."
        )
    return sched


def schedule_value(schedule: Schedule, progress: float) -> int:
    """Value of a piecewise-constant schedule at ``progress`` = step / total_steps.

    Entry ``(end, value)`` holds for progress < end; past the last end the last value holds.
    """
    for end, value in schedule:
        if progress < end:
            return int(value)
    return int(schedule[-1][1])


def _with_replacement(rng, cand: np.ndarray, n: int) -> np.ndarray:
    return np.sort(rng.choice(cand, size=n, replace=True))


def _chain(rng: np.random.Generator, cand: np.ndarray, gaps: Sequence[int]) -> np.ndarray:
    """Increasing frames f_0 < f_1 < ... with f_{i+1} - f_i <= gaps[i] where the annotations allow.

    f_0 is uniform over positions that leave room for the rest; each next frame
    is uniform over later candidates within the gap (and leaving room); when no
    candidate lies within the gap (annotations sparser than the gap) the next
    candidate is taken.
    """
    T = len(gaps) + 1
    n = len(cand)
    if n < T:
        return _with_replacement(rng, cand, T)
    pos = [int(rng.integers(0, n - T + 1))]
    for i, g in enumerate(gaps):
        last_allowed = n - (T - 2 - i)  # exclusive bound leaving room for the frames after this one
        lo = pos[-1] + 1
        hi = int(np.searchsorted(cand, cand[pos[-1]] + g, side="right"))
        hi = min(max(hi, lo + 1), last_allowed)
        pos.append(int(rng.integers(lo, hi)))
    return cand[np.asarray(pos)]


def sample_frame_indices(
    name: str,
    rng: np.random.Generator,
    candidates: Int[np.ndarray, " n"],
    progress: float,
    opts: SamplerOptions = SamplerOptions(),
) -> tuple[Int[np.ndarray, " T"], dict[str, np.ndarray]]:
    """Draw the frames of one sample: ``(indices int32[T], extra fields)``.

    ``candidates`` are the sorted annotated frame indices; ``progress`` in
    [0, 1] is the training progress the gap schedules read. ``extra`` holds
    ``max_gap`` (the schedule value used, ``chain`` and ``clips`` samplers) and
    ``clip_id`` (``clips``).
    """
    spec = sampler_spec(name)
    cand = np.asarray(candidates, np.int64)
    if cand.ndim != 1 or cand.size == 0:
        raise VosjaxError(
            f"sampler {name!r}: needs at least one annotated frame, got candidates {cand.tolist()}."
        )
    T = default_num_frames(name, opts)
    extra: dict[str, np.ndarray] = {}
    sched = check_schedule(opts.gap_schedule) if opts.gap_schedule is not None else spec.gap_schedule
    rev = opts.reverse_prob if opts.reverse_prob is not None else spec.reverse_prob
    if spec.kind == "chain":
        g = schedule_value(sched, progress)
        idx = _chain(rng, cand, [g] * (T - 1))
        if rng.uniform() < rev:
            idx = idx[::-1]
        extra["max_gap"] = np.int32(g)
    elif spec.kind == "clips":
        g = schedule_value(sched, progress)
        N = opts.clip_length
        gaps = [g] + [opts.intra_clip_gap] * (N - 1) + [g] + [opts.intra_clip_gap] * (N - 1)
        idx = _chain(rng, cand, gaps)
        if rng.uniform() < rev:
            idx = idx[::-1]
        extra["max_gap"] = np.int32(g)
        extra["clip_id"] = np.asarray([0] + [1] * N + [2] * N, np.int32)
    elif spec.kind == "pool":
        pool = cand
        if opts.max_gap is not None and cand[-1] - cand[0] > opts.max_gap:
            start = int(rng.integers(cand[0], cand[-1] - opts.max_gap + 1))
            pool = cand[(cand >= start) & (cand <= start + opts.max_gap)]
        picks = np.sort(rng.choice(pool, size=T, replace=len(pool) < T))
        r = int(rng.integers(0, T))
        idx = np.concatenate([picks[r : r + 1], np.delete(picks, r)])
    elif spec.kind == "window":
        W = int(opts.window)
        last_start = max(int(cand[0]), int(cand[-1]) - W + 1)
        start = int(rng.integers(int(cand[0]), last_start + 1))
        pool = cand[(cand >= start) & (cand < start + W)]
        if pool.size == 0:
            pool = cand[:1]
        idx = np.sort(rng.choice(pool, size=T, replace=len(pool) < T))
    else:  # static
        idx = np.full(T, rng.choice(cand))
    return np.asarray(idx, np.int32), extra
