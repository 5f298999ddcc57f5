"""Flax networks of the six methods (and the box tracker) behind one interface (``models/base.py``).

``get_model(config)`` returns the model of the method named by ``config.name``;
which class that is comes from the method's record in :mod:`vosjax.methods`
(the one place methods are registered). TrickVOS and cyclic VOS reuse the
STCN memory network: their differences are config switches, memory policies
and training objectives. Implementations are imported when first asked for,
so importing ``vosjax.models`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from vosjax import methods
from vosjax.models.base import SegmentOptions, VOSModel


def get_model(config: Any) -> VOSModel:
    """Build the model named by ``config.name`` (a model config section)."""
    name = config.get("name") if hasattr(config, "get") else getattr(config, "name", None)
    return methods.get_method(name, "model.name").model_class()(config)


__all__ = ["SegmentOptions", "VOSModel", "get_model"]
