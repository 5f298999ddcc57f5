"""Building sources from configs, and combining them.

``make_source(cfg)`` turns a small mapping (e.g. ``config.data.source`` of a
``configs/*.py`` file) into a source; ``kind`` selects the class and the other
keys are its constructor arguments:

- ``{"kind": "synthetic", "spec": "demo", "split": "train"}``
- ``{"kind": "davis", "root": ..., "year": "2017", "split": "train", "resolution": "480p",
  "sequences": None}``
- ``{"kind": "youtube", "root": ..., "split": "train"}``
- ``{"kind": "static", "folder": ..., "num_frames": 3}``
- ``{"kind": "tfds", "split": "train", "data_dir": ..., "year": "2017", "resolution": "480p"}``
- ``{"kind": "concat", "sources": [cfg, cfg, ...], "repeats": [1, 5]}``
"""

from __future__ import annotations

import bisect
from typing import Any, Mapping, Sequence

from vosjax.data.video import Video
from vosjax.errors import VosjaxError

__all__ = ["ConcatSource", "make_source"]


class ConcatSource:
    """Several sources as one: ``repeats[i]`` copies of source ``i`` (e.g. DAVIS x5, YouTube)."""

    def __init__(self, sources: Sequence[Any], repeats: Sequence[int] | None = None):
        self.sources = list(sources)
        if not self.sources:
            raise VosjaxError("ConcatSource: 'sources' is empty.")
        self.repeats = [1] * len(self.sources) if repeats is None else [int(r) for r in repeats]
        if len(self.repeats) != len(self.sources) or min(self.repeats) < 1:
            raise VosjaxError(
                "ConcatSource: 'repeats' needs one integer >= 1 per source, got "
                f"{list(self.repeats)} for "
                f"{len(self.sources)} sources."
            )
        self._ends = []
        total = 0
        for s, r in zip(self.sources, self.repeats):
            total += len(s) * r
            self._ends.append(total)

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> Video:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"video index {index} out of range for {len(self)} videos")
        k = bisect.bisect_right(self._ends, index)
        start = self._ends[k - 1] if k else 0
        return self.sources[k][(index - start) % len(self.sources[k])]


def make_source(cfg: Mapping[str, Any] | Any) -> Any:
    """Build a source from a mapping / ConfigDict with a ``kind`` key (see the module docstring)."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    kind = d.pop("kind", None)
    try:
        if kind == "synthetic":
            from vosjax.data.synthetic import SyntheticSource

            return SyntheticSource(**d)
        if kind == "davis":
            from vosjax.data.davis import DavisSource

            return DavisSource(**d)
        if kind == "youtube":
            from vosjax.data.youtube import YouTubeVOSSource

            return YouTubeVOSSource(**d)
        if kind == "static":
            from vosjax.data.static import StaticImageSource

            return StaticImageSource(**d)
        if kind == "tfds":
            from vosjax.data.tfds_builder import TfdsSource

            return TfdsSource(**d)
        if kind == "concat":
            return ConcatSource([make_source(c) for c in d.pop("sources", [])], **d)
    except TypeError as e:
        raise VosjaxError(f"make_source: bad arguments for a {kind!r} source: {e}.") from e
    raise VosjaxError(
        f"make_source: unknown 'kind' {kind!r}; choose one of 'synthetic', 'davis', 'youtube', "
        "'static', 'tfds', 'concat'."
    )
