"""Engines shared across calls: :func:`get_engine` keeps the last few :class:`Engine` s.

An :class:`~vosjax.inference.engine.Engine` compiles its step once per input
shape; the drivers that build engines from a model and a config
(:func:`vosjax.inference.evaluate_source`, periodic evaluation during
training, :func:`vosjax.inference.engine_from_bundle`) ask this cache, so
repeated calls with an equal (model config, engine config) reuse its
compilations. Engines with a ``motion_fn`` (PT box filter) are not cached.
"""

from __future__ import annotations

import collections
import json
from typing import Any

from vosjax.inference.config import EngineConfig
from vosjax.inference.engine import Engine
from vosjax.models.base import VOSModel

__all__ = ["get_engine"]

_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 4


def _config_key(config: Any) -> str:
    d = config.to_dict() if hasattr(config, "to_dict") else config
    try:
        return json.dumps(d, sort_keys=True, default=repr)
    except TypeError:
        return repr(d)


def get_engine(model: VOSModel, config: EngineConfig) -> Engine:
    """An :class:`Engine` for ``(model, config)``, reused across calls (its compilations too)."""
    key = (type(model), _config_key(model.config), config)
    engine = _CACHE.get(key)
    if engine is None:
        engine = Engine(model, config)
        _CACHE[key] = engine
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return engine
