"""Grain training pipelines: source -> sample frames -> augment -> batch; deterministic, resumable.

Global sample ``n`` (0, 1, 2, ...) is a pure function of ``(seed, n)``:
its video is position ``n mod L`` of a per-epoch permutation of the ``L``
videos (epoch ``n // L``), and all its randomness comes from
``np.random.default_rng([seed, 1, n])``. Global batch ``k`` holds samples
``k * B .. k * B + B - 1``; host ``p`` of ``P`` gets the contiguous block
``p * B/P .. (p + 1) * B/P - 1`` of it. Hence the data depends on neither the
worker count nor the thread count, the hosts' blocks always assemble to the
same global batch, and the position in the stream is one integer: the
iterator state is ``{"next_batch": k, ...}`` (JSON), restored by
:meth:`TrainIterator.set_state` by restarting the grain pipeline at batch
``k``. Gap schedules read ``progress = k / total_steps`` (batch ``k`` is
training step ``k``).

Batches are dicts of NumPy arrays (``B`` = per-host batch, ``T`` = frames,
``O`` = ``max_objects``):

- ``frames`` uint8[B, T, H, W, 3]: RGB, not normalised (see
  :func:`vosjax.data.normalize_frames`);
- ``labels`` int32[B, T, H, W]: 0 background, objects as slots 1..O in random
  order; objects are those with >= ``min_object_pixels`` pixels in the reference
  frame (frame 0) after augmentation, at most ``max_objects`` drawn at random;
  other objects are background;
- ``obj_valid`` bool[B, O]: which slots hold an object;
- ``object_ids`` int32[B, O]: source id of each slot (0 if empty);
- ``frame_indices`` int32[B, T]: source frame numbers;
- ``video_index`` int32[B]: source video index;
- ``max_gap`` int32[B]: the gap-schedule value used (stcn, trickvos, cyclic, pcvos);
- ``clip_id`` int32[B, T]: 0 for the reference, 1 / 2 for the two clips (pcvos).

If no object survives ``max_tries`` crops on each of 3 frame draws the sample
has ``obj_valid`` all False (the trainer should weight it out).

With a search-region crop (``augment.search_area_factor`` > 0, JOINT; see
:mod:`vosjax.data.search_crop`) each sample has ONE target, drawn uniformly
among the objects present in the source reference frame (before the crop) at
every frame draw; the frames are cropped around its per-frame boxes (a frame
where it is absent takes the box of the nearest earlier frame that shows it,
see :func:`~vosjax.data.search_crop.target_boxes`), and a crop counts as a
success only if the target keeps ``min_object_pixels`` in the reference frame.
The target is slot 1; further slots (``max_objects`` > 1) hold other objects
that the crop keeps, in random order. If the target never survives, the slots
fall back to the rule above.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from vosjax.config_utils import read_section
from vosjax.data.augment import AugmentConfig, apply_clip_transform, sample_clip_transform
from vosjax.data.samplers import (
    SamplerOptions,
    check_schedule,
    default_num_frames,
    sample_frame_indices,
    sampler_names,
    sampler_spec,
)
from vosjax.data.search_crop import pick_target, target_boxes
from vosjax.data.static import DeformConfig, make_pseudo_video
from vosjax.data.video import remap_to_slots
from vosjax.errors import VosjaxError

__all__ = ["TrainDataConfig", "make_train_pipeline", "TrainIterator", "make_sample"]

_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TrainDataConfig:
    """Fields of the ``config_like`` given to :func:`make_train_pipeline` (all optional).

    ``batch_size`` is the GLOBAL batch (split evenly over hosts). ``augment``
    and ``deform`` take mappings of :class:`AugmentConfig` /
    :class:`~vosjax.data.static.DeformConfig` fields. ``num_workers`` > 0 runs
    the pipeline in that many processes (grain ``mp_prefetch``); ``num_threads``
    / ``prefetch`` set grain's read threads and buffer. None of the last three
    changes the data.
    """

    sampler: str = "stcn"
    batch_size: int = 8
    num_frames: int | None = None
    crop_size: tuple[int, int] = (384, 384)
    max_objects: int = 3
    total_steps: int = 100_000
    gap_schedule: tuple[tuple[float, int], ...] | None = None
    intra_clip_gap: int = 5
    clip_length: int = 3
    window: int = 100
    max_gap: int | None = None
    reverse_prob: float | None = None
    min_object_pixels: int = 16
    max_tries: int = 5
    augment: AugmentConfig = AugmentConfig()
    deform: DeformConfig = DeformConfig()
    num_workers: int = 0
    num_threads: int = 2
    prefetch: int = 2

    def __post_init__(self):
        def bad(f, why):
            raise VosjaxError(f"make_train_pipeline: config field '{f}' {why}.")

        if self.sampler not in sampler_names():
            bad("sampler", f"must be one of {list(sampler_names())}, got {self.sampler!r}")
        if self.batch_size < 1:
            bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 8:
            bad("crop_size", f"must be (height, width) >= 8, got {self.crop_size}")
        if self.max_objects < 1:
            bad("max_objects", f"must be >= 1, got {self.max_objects}")
        if self.total_steps < 1:
            bad("total_steps", f"must be >= 1, got {self.total_steps}")
        if self.gap_schedule is not None:
            check_schedule(self.gap_schedule, "make_train_pipeline: config field 'gap_schedule'")
        for f in ("intra_clip_gap", "clip_length", "window", "max_tries"):
            if getattr(self, f) < 1:
                bad(f, f"must be >= 1, got {getattr(self, f)}")
        if self.reverse_prob is not None and not 0 <= self.reverse_prob <= 1:
            bad("reverse_prob", f"must lie in [0, 1], got {self.reverse_prob}")
        if self.num_workers < 0 or self.num_threads < 0 or self.prefetch < 0:
            bad("num_workers/num_threads/prefetch", "must be >= 0")
        default_num_frames(self.sampler, self.sampler_options())

    def sampler_options(self) -> SamplerOptions:
        return SamplerOptions(
            num_frames=self.num_frames,
            gap_schedule=self.gap_schedule,
            reverse_prob=self.reverse_prob,
            intra_clip_gap=self.intra_clip_gap,
            clip_length=self.clip_length,
            window=self.window,
            max_gap=self.max_gap,
        )

    @property
    def frames_per_sample(self) -> int:
        return default_num_frames(self.sampler, self.sampler_options())

    @classmethod
    def from_config(cls, config_like: Any) -> "TrainDataConfig":
        """Build from a mapping, ``ml_collections.ConfigDict``, dataclass, or None (defaults).

        :func:`vosjax.config_utils.read_section` (``augment`` / ``deform`` are
        sections of their own); ``crop_size`` entries become ints.
        """
        cfg = read_section(cls, config_like, "make_train_pipeline")
        if any(type(x) is not int for x in cfg.crop_size):
            cfg = dataclasses.replace(cfg, crop_size=tuple(int(x) for x in cfg.crop_size))
        return cfg


def _pick_static_pair(source: Any, video_index: int, rng: np.random.Generator):
    """(image, labels) to deform: a static source's pair, or a random annotated frame of a video."""
    if hasattr(source, "pair"):
        img, lab, _ = source.pair(video_index)
        return img, lab
    video = source[video_index]
    t = int(rng.choice(np.flatnonzero(video.annotated)))
    return np.asarray(video.frames[t]), np.asarray(video.masks[t])


def make_sample(
    source: Any, video_index: int, rng: np.random.Generator, progress: float, cfg: TrainDataConfig
) -> dict:
    """One training sample (the per-sample fields of the batch, without the leading B axis)."""
    T = cfg.frames_per_sample
    num_slots = cfg.max_objects
    opts = cfg.sampler_options()
    video = None if (cfg.sampler == "static" and hasattr(source, "pair")) else source[video_index]
    if video is not None and not video.complete:
        raise VosjaxError(
            f"make_train_pipeline: video {video.name!r} has first-appearance annotations only "
            "(complete=False, e.g. "
            "YouTube-VOS valid); train on fully annotated splits."
        )
    extra: dict[str, np.ndarray] = {}
    search = cfg.augment.search_area_factor > 0
    target, boxes = 0, None
    best = None
    for _ in range(3):
        if cfg.sampler == "static":
            img, lab = _pick_static_pair(source, video_index, rng)
            frames, labels = make_pseudo_video(img, lab, T, rng, cfg.deform)
            idx = np.zeros(T, np.int32)
        else:
            cand = np.flatnonzero(video.annotated)
            idx, extra = sample_frame_indices(cfg.sampler, rng, cand, progress, opts)
            frames = video.frames[idx]
            labels = video.masks[idx]
        if search:
            target = pick_target(labels[0], rng)
            boxes = target_boxes(labels, target)
        for _ in range(cfg.max_tries):
            tf = sample_clip_transform(
                rng, frames.shape[1:3], cfg.crop_size, cfg.augment, frames.shape[0], boxes
            )
            f_aug, l_aug = apply_clip_transform(tf, frames, labels, rng)
            counts = np.bincount(l_aug[0].ravel(), minlength=256)  # uint8 ids: O(pixels)
            counts[0] = 0
            keep = np.flatnonzero(counts >= cfg.min_object_pixels)
            ok = bool(keep.size) and (not search or target in keep)
            best = (f_aug, l_aug, keep, idx, target, ok)
            if ok:
                break
        if best[5]:
            break
    f_aug, l_aug, keep, idx, target, ok = best
    if search and ok:
        rest = rng.permutation(keep[keep != target])[: num_slots - 1]
        chosen = np.concatenate([[target], rest]).astype(np.int64)
    else:
        chosen = rng.permutation(keep)[:num_slots] if keep.size else np.zeros(0, np.int64)
    if chosen.size:
        slots, _ = remap_to_slots(l_aug, [int(c) for c in chosen])
    else:
        slots = np.zeros(l_aug.shape, np.int32)
    obj_valid = np.zeros(num_slots, bool)
    obj_valid[: chosen.size] = True
    object_ids = np.zeros(num_slots, np.int32)
    object_ids[: chosen.size] = chosen
    out = {
        "frames": f_aug,
        "labels": slots.astype(np.int32),
        "obj_valid": obj_valid,
        "object_ids": object_ids,
        "frame_indices": np.asarray(idx, np.int32),
        "video_index": np.int32(video_index),
    }
    kind = sampler_spec(cfg.sampler).kind
    if kind in ("chain", "clips"):
        out["max_gap"] = np.int32(extra.get("max_gap", 0))
    if kind == "clips":
        out["clip_id"] = extra["clip_id"]
    return out


class _BatchFn:
    """Picklable map from local batch number ``k`` to the batch (runs in grain threads/workers)."""

    def __init__(
        self, source: Any, cfg: TrainDataConfig, seed: int, process_index: int, process_count: int
    ):
        self.source, self.cfg, self.seed = source, cfg, int(seed)
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.num_videos = len(source)
        self._perms: dict[int, np.ndarray] = {}

    def video_index(self, n: int) -> int:
        L = self.num_videos
        epoch, pos = divmod(n, L)
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, 0, epoch]).permutation(L)
            self._perms = {epoch: perm}
        return int(perm[pos])

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        B = self.cfg.batch_size
        Bl = B // self.process_count
        progress = k / self.cfg.total_steps
        samples = []
        for j in range(Bl):
            n = k * B + self.process_index * Bl + j
            rng = np.random.default_rng([self.seed, 1, n])
            samples.append(make_sample(self.source, self.video_index(n), rng, progress, self.cfg))
        return {key: np.stack([s[key] for s in samples]) for key in samples[0]}


class TrainIterator:
    """Iterator over training batches with a JSON-serialisable, resumable position.

    ``get_state()`` -> ``{"version", "next_batch", "seed", "sampler", "batch_size",
    "process_index", "process_count"}``; save it with the model checkpoint and
    pass it to ``set_state`` to continue with exactly the batch that would have
    come next. ``close()`` stops grain workers (also on ``with`` exit).
    """

    def __init__(self, batch_fn: _BatchFn, cfg: TrainDataConfig, start_batch: int = 0):
        self._fn, self._cfg = batch_fn, cfg
        self._next = int(start_batch)
        self._it = None

    def _build(self):
        import grain

        ds = grain.MapDataset.range(self._next, 2**62).map(self._fn)
        ds = ds.to_iter_dataset(
            grain.ReadOptions(
                num_threads=max(self._cfg.num_threads, 1),
                prefetch_buffer_size=max(self._cfg.prefetch, 1),
            )
        )
        if self._cfg.num_workers > 0:
            from absl import flags

            # grain's multiprocess prefetch reads an absl flag without a fallback; in a
            # program that never parsed absl flags (a notebook, pytest) use the defaults.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self._cfg.num_workers, per_worker_buffer_size=1
                )
            )
        return iter(ds)

    def __iter__(self) -> "TrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            self._it = self._build()
        batch = next(self._it)
        if self._cfg.num_workers > 0:
            # Own the memory: grain hands out views of shared-memory blocks it may recycle.
            batch = {k: np.array(v, copy=True) for k, v in batch.items()}
        self._next += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "next_batch": self._next,
            "seed": self._fn.seed,
            "sampler": self._cfg.sampler,
            "batch_size": self._cfg.batch_size,
            "process_index": self._fn.process_index,
            "process_count": self._fn.process_count,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        want = self.get_state()
        if not isinstance(state, Mapping) or "next_batch" not in state:
            raise VosjaxError(
                f"TrainIterator.set_state: expected a state from get_state(), got {state!r}."
            )
        for key in ("version", "seed", "sampler", "batch_size"):
            if key in state and state[key] != want[key]:
                raise VosjaxError(
                    f"TrainIterator.set_state: saved {key}={state[key]!r} differs from this "
                    f"pipeline's {want[key]!r}; "
                    "resume with the configuration the state was saved with."
                )
        self.close()
        self._next = int(state["next_batch"])

    def close(self) -> None:
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
            self._it = None

    def __enter__(self) -> "TrainIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass


def make_train_pipeline(
    config_like: Any,
    source: Any,
    seed: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainIterator:
    """The training batch iterator for ``source`` (see the module docstring for the batch fields).

    ``config_like``: fields of :class:`TrainDataConfig` (mapping, ConfigDict,
    dataclass or None). ``process_index`` / ``process_count`` default to
    ``jax.process_index()`` / ``jax.process_count()``; the global
    ``batch_size`` must divide by the process count.
    """
    cfg = TrainDataConfig.from_config(config_like)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise VosjaxError(
            f"make_train_pipeline: need 0 <= process_index < process_count, got {process_index} "
            f"and {process_count}."
        )
    if cfg.batch_size % process_count:
        raise VosjaxError(
            f"make_train_pipeline: global batch_size {cfg.batch_size} must divide by "
            f"process_count {process_count}."
        )
    try:
        n = len(source)
    except TypeError as e:
        raise VosjaxError(
            "make_train_pipeline: 'source' must be a random-access sequence of videos (len + "
            "getitem)."
        ) from e
    if n == 0:
        raise VosjaxError("make_train_pipeline: 'source' holds no videos.")
    return TrainIterator(_BatchFn(source, cfg, seed, process_index, process_count), cfg)
