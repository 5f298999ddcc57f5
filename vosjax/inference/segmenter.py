"""Streaming inference: :class:`VideoSegmenter` (``step(frame, mask=None, objects=None)``).

A thin stateful wrapper over the functional :class:`~vosjax.inference.engine.Engine`
for one video at a time::

    seg = VideoSegmenter("runs/stcn/bundle")          # or VideoSegmenter((model, variables))
    for t, frame in enumerate(frames):                # uint8[H, W, 3]
        mask = first_masks.get(t)                     # uint8[H, W] ids, or None
        for pred in seg.step(frame, mask):
            save(pred.index, pred.labels)             # uint8[H, W] with the input's ids
    for pred in seg.flush():                          # per-clip mode: the last partial clip
        save(pred.index, pred.labels)

It keeps the object table (palette id <-> engine slot; ids are preserved
exactly, new ids may appear in any frame) and, in per-clip mode, buffers
frames until a clip is complete: ``clip_length`` frames, or a frame that
carries a mask (that frame ends its clip so its mask is in memory before any
later frame is read; the clip is padded): the rule of
:class:`~vosjax.inference.clips.ClipBuffer`, shared with ``run_batch``. In per-frame mode every ``step``
returns exactly the prediction of its frame: ``labels = seg.step(frame)[0].labels``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from jaxtyping import Float, UInt8

from vosjax.errors import VosjaxError
from vosjax.inference.clips import ClipBuffer
from vosjax.inference.config import EngineConfig
from vosjax.inference.engine import Engine, MotionFn
from vosjax.inference.engine_cache import get_engine

__all__ = ["ObjectTable", "Prediction", "VideoSegmenter", "engine_from_bundle", "object_slots"]


class Prediction(NamedTuple):
    """One segmented frame.

    Attributes:
      index: frame number in the video (0-based, in the order frames were given).
      labels: ``uint8[H, W]`` label map with the input's object ids (0 = background).
      probs: ``f32[K, H, W]`` aggregated probabilities (channel 0 = background,
        channel ``i + 1`` = ``object_ids[i]``) when ``return_probs``, else None.
      object_ids: the id of each probability channel after the background.
    """

    index: int
    labels: UInt8[np.ndarray, "H W"]
    probs: Float[np.ndarray, "K H W"] | None
    object_ids: tuple[int, ...]


def object_slots(num_objects: int, config: EngineConfig) -> int:
    """Object slots for a video of ``num_objects`` objects.

    ``max_objects``, or with ``bucket_objects`` the next power of two >=
    ``num_objects`` capped at ``max_objects`` (few distinct shapes, so few
    compilations). More objects than ``max_objects`` is an error.
    """
    n = max(1, int(num_objects))
    if n > config.max_objects:
        raise VosjaxError(
            f"the video has {n} objects but EngineConfig.max_objects is {config.max_objects}; "
            "raise max_objects (e.g. --config.max_objects / EngineConfig(max_objects=...))."
        )
    if not config.bucket_objects:
        return config.max_objects
    return min(config.max_objects, 1 << (n - 1).bit_length())


def _inference_section(config: Any) -> dict[str, Any]:
    """The engine fields of a run config: its ``inference`` section, if any."""
    for name in ("inference", "engine"):
        try:
            sec = config[name]
        except (KeyError, TypeError, AttributeError):
            continue
        if sec is None:
            continue
        return dict(sec.to_dict() if hasattr(sec, "to_dict") else sec)
    return {}


def engine_from_bundle(
    bundle: os.PathLike | str,
    overrides: EngineConfig | dict[str, Any] | None = None,
    *,
    motion_fn: MotionFn | None = None,
) -> tuple[Engine, Any]:
    """``(engine, variables)`` from an exported bundle (``vosjax.checkpoint.export_bundle``).

    The engine options are the bundle's ``config.inference`` section, updated
    by ``overrides`` (field names of :class:`EngineConfig`), built into one
    :class:`EngineConfig` here (an unknown field or a bad value raises,
    naming it); an :class:`EngineConfig` as ``overrides`` sets every field
    and is used as it is.
    """
    from vosjax.checkpoint import load_bundle

    model, variables, run_config = load_bundle(bundle)
    if isinstance(overrides, EngineConfig):
        config = overrides
    else:
        fields = _inference_section(run_config)
        fields = {k: v for k, v in fields.items() if k in EngineConfig.field_names()}
        fields.update(overrides or {})
        config = EngineConfig.from_config(fields)
    if config.box_filter == "pt" and motion_fn is None:
        motion_fn = _tracker_motion_fn(config, variables)
    if motion_fn is None:  # shared with evaluate_source: one compilation per (model, config)
        return get_engine(model, config), variables
    return Engine(model, config, motion_fn=motion_fn), variables


def _tracker_motion_fn(config: EngineConfig, variables: Any) -> MotionFn:
    """The PT tracker from ``config.tracker`` (a bundle folder) or ``variables["tracker"]``.

    A tracker bundle holds the tracker's variables (``{"params": ...}``, or
    under ``"tracker"``); the MLP's shape comes from its run config: the
    ``model`` section of a tracker run (configs/tracker.py, ``model.name ==
    "tracker"``), else a ``tracker`` section, else
    :func:`vosjax.models.tracker.default_config`.
    """
    from vosjax.models import tracker as tracker_mod

    tracker_config = None
    if config.tracker is not None:
        from vosjax.checkpoint import load_variables

        tvars, run_config = load_variables(config.tracker)
        params = tvars.get("tracker", tvars)
        tracker_config = _tracker_shape(run_config)
    elif isinstance(variables, dict) and "tracker" in variables:
        params = variables["tracker"]
    else:
        raise VosjaxError(
            "box_filter='pt' needs the trained tracker: set EngineConfig.tracker to its bundle "
            "folder, or export it with the model as variables['tracker']; or use box_filter='cv'."
        )
    return tracker_mod.make_motion_fn(params, tracker_config)


def _tracker_shape(run_config: Any) -> Any:
    """The tracker section of a tracker bundle's run config (None: the default shape)."""
    for key in ("model", "tracker"):
        try:
            section = run_config[key]
        except (KeyError, TypeError, AttributeError):
            continue
        name = section.get("name", "tracker") if hasattr(section, "get") else None
        if name == "tracker":
            return section
    return None


class ObjectTable:
    """Object ids of one video <-> engine slots (slot ``i`` = the ``i``-th object given).

    Args:
      slots: number of slots of the engine state.
      frame_size: ``(H, W)`` of the video's frames (masks are fitted to it).
      what: name used in error messages.
    """

    def __init__(self, slots: int, frame_size: tuple[int, int], what: str = "VideoSegmenter.step"):
        self.slots = int(slots)
        self.frame_size = tuple(int(s) for s in frame_size)
        self.ids: list[int] = []
        self.what = what

    def given(
        self, mask: Any, objects: Sequence[int] | None = None
    ) -> tuple[UInt8[np.ndarray, "H W"], np.ndarray]:
        """``(slot label map uint8[H, W], given bool[slots])`` of a mask of object ids.

        New ids get the next free slots. ``objects`` restricts which ids of
        ``mask`` are taken (default: all); a listed id absent from the mask is
        given with an empty mask. A mask of another size is fitted to the frame
        (:func:`vosjax.data.io.fit_mask_to_frame`: resized with a warning when
        the aspect ratio agrees to 1 %, else an error).
        """
        from vosjax.data.io import fit_mask_to_frame

        m = np.asarray(mask)
        if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
            raise VosjaxError(
                f"{self.what}: 'mask' must be an integer label map [H, W] of object ids, got "
                f"{m.dtype}{list(m.shape)}."
            )
        if m.size and (m.min() < 0 or m.max() > 255):
            raise VosjaxError(f"{self.what}: object ids must lie in 1..255 (0 = background).")
        m = fit_mask_to_frame(m.astype(np.uint8), self.frame_size, "mask")
        present = [int(k) for k in np.unique(m) if k != 0]
        ids = present if objects is None else [int(k) for k in objects]
        if any(k < 1 or k > 255 for k in ids) or len(set(ids)) != len(ids):
            raise VosjaxError(f"{self.what}: 'objects' must be distinct ids in 1..255, got {ids}.")
        for k in ids:
            if k not in self.ids:
                if len(self.ids) >= self.slots:
                    raise VosjaxError(
                        f"{self.what}: object {k} would be object number {len(self.ids) + 1} "
                        f"but there are {self.slots} object slots; raise num_objects / "
                        "EngineConfig.max_objects."
                    )
                self.ids.append(k)
        lut = np.zeros(256, np.uint8)
        for k in ids:
            lut[k] = self.ids.index(k) + 1
        given = np.zeros(self.slots, bool)
        given[[self.ids.index(k) for k in ids]] = True
        return lut[m], given

    def to_ids(self, slot_labels: np.ndarray) -> UInt8[np.ndarray, "*shape"]:
        """Slot label maps back to object ids."""
        lut = np.zeros(self.slots + 1, np.uint8)
        lut[1 : len(self.ids) + 1] = self.ids
        return lut[np.asarray(slot_labels)]


class VideoSegmenter:
    """Segment one video frame by frame (module docstring).

    Args:
      source: a bundle folder, an ``(engine, variables)`` pair, or a
        ``(model, variables)`` pair (then ``config`` applies).
      config: engine options for a ``(model, variables)`` source; for a bundle,
        a dict of overrides of its ``inference`` section or a whole
        :class:`EngineConfig` (:func:`engine_from_bundle`).
      num_objects: object slots (default: ``max_objects``; a video with more
        objects than slots raises).
    """

    def __init__(
        self,
        source: Any,
        config: EngineConfig | dict[str, Any] | None = None,
        *,
        num_objects: int | None = None,
        motion_fn: MotionFn | None = None,
    ):
        if isinstance(source, (str, os.PathLike)):
            self.engine, self.variables = engine_from_bundle(source, config, motion_fn=motion_fn)
        elif isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], Engine):
            if config is not None:
                raise VosjaxError("VideoSegmenter: 'config' is the engine's own; drop it.")
            self.engine, self.variables = source
        elif isinstance(source, tuple) and len(source) == 2:
            cfg = config if isinstance(config, EngineConfig) else EngineConfig.from_config(config)
            self.engine = Engine(source[0], cfg, motion_fn=motion_fn)
            self.variables = source[1]
        else:
            raise VosjaxError(
                "VideoSegmenter: 'source' must be a bundle folder, (model, variables) or "
                f"(engine, variables); got {type(source).__name__}."
            )
        self.num_objects = num_objects
        self.reset()

    @property
    def config(self) -> EngineConfig:
        return self.engine.config

    def reset(self) -> None:
        """Forget the current video (call before the next one)."""
        self._state = None
        self._size: tuple[int, int] | None = None
        self._table: ObjectTable | None = None
        self._clips: ClipBuffer | None = None  # frames of the current clip, given masks
        self._next_index = 0  # index of the first buffered frame

    @property
    def object_ids(self) -> tuple[int, ...]:
        """Ids of the objects seen so far, in slot order."""
        return () if self._table is None else tuple(self._table.ids)

    def _slots(self) -> int:
        return self.config.max_objects if self.num_objects is None else int(self.num_objects)

    def step(
        self,
        frame: UInt8[np.ndarray, "H W 3"],
        mask: UInt8[np.ndarray, "H W"] | None = None,
        objects: Sequence[int] | None = None,
    ) -> list[Prediction]:
        """Add one frame (and the masks given for it); return the frames completed now.

        Args:
          frame: ``uint8[H, W, 3]`` RGB.
          mask: label map of object ids given on this frame (new objects, or
            objects whose mask is replaced), or None.
          objects: the ids of ``mask`` to take (default: every id in it); an id
            listed but absent from ``mask`` is given with an empty mask.

        Returns:
          The predictions completed by this call, in frame order (per-frame
          mode: exactly this frame's; per-clip mode: none, or a whole clip).
        """
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise VosjaxError(
                f"VideoSegmenter.step: 'frame' must be uint8[H, W, 3] RGB, got {f.dtype}{list(f.shape)}."
            )
        if self._size is None:
            self._size = f.shape[:2]
            self._table = ObjectTable(self._slots(), self._size)
            self._clips = ClipBuffer(self.config.clip_length, self._size)
            if mask is None:
                warnings.warn(
                    "VideoSegmenter.step: the first frame has no mask; nothing is tracked until "
                    "a mask is given.",
                    stacklevel=2,
                )
        elif f.shape[:2] != self._size:
            raise VosjaxError(
                f"VideoSegmenter.step: frame is {f.shape[1]}x{f.shape[0]} but this video's frames are "
                f"{self._size[1]}x{self._size[0]}; call reset() before a new video."
            )
        if mask is None and objects is not None:
            raise VosjaxError("VideoSegmenter.step: 'objects' needs a 'mask'.")
        given = None if mask is None else self._table.given(mask, objects)
        if self._clips.push(f, given):  # L frames, or a frame with a mask
            return self._run()
        return []

    def flush(self) -> list[Prediction]:
        """Segment the buffered frames of an incomplete clip (the end of a video)."""
        return self._run() if self._clips is not None and len(self._clips) else []

    def _run(self) -> list[Prediction]:
        engine = self.engine
        if self._state is None:
            self._state = engine.init_state(self.variables, 1, self._size, self._slots())
        clip = self._clips.take()
        n = clip.num_frames
        new_masks, new_objects = None, None
        if clip.given is not None:
            new_masks, new_objects = clip.given[0][None], clip.given[1][None]
        self._state, out = engine.step(
            self.variables, self._state, clip.frames[None], new_masks, new_objects, clip.valid[None]
        )
        labels = self._table.to_ids(np.asarray(out.labels)[0, :n])
        probs = None if out.probs is None else np.asarray(out.probs)[0, :, :n]
        ids = tuple(self._table.ids)
        preds = [
            Prediction(
                self._next_index + i,
                labels[i],
                None if probs is None else probs[: len(ids) + 1, i],
                ids,
            )
            for i in range(n)
        ]
        self._next_index += n
        return preds
