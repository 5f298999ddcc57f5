"""Flax networks of the five methods behind one interface (see ``models/base.py``).

``get_model(config)`` returns the :class:`~vosjax.models.base.VOSModel` named by
``config.name``; implementations are imported lazily so that importing
``vosjax.models`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from vosjax.errors import VosjaxError
from vosjax.models.base import SegmentOptions, VOSModel

# name -> "module:ClassName". TrickVOS and cyclic VOS reuse the memory network
# (their differences are config switches and training objectives).
REGISTRY: dict[str, str] = {
    "stcn": "vosjax.models.stcn:STCN",
    "trickvos": "vosjax.models.stcn:STCN",
    "cyclic": "vosjax.models.stcn:STCN",
    "pcvos": "vosjax.models.pcvos:PCVOS",
    "joint": "vosjax.models.joint:JOINT",
    "frtm": "vosjax.models.frtm:FRTM",
}


def get_model(config: Any) -> VOSModel:
    """Build the model named by ``config.name`` (a model config section)."""
    name = getattr(config, "name", None)
    if name not in REGISTRY:
        raise VosjaxError(
            f"model.name={name!r} is not a vosjax method; choose one of: {', '.join(sorted(REGISTRY))}."
        )
    module_name, cls_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(config)


__all__ = ["REGISTRY", "SegmentOptions", "VOSModel", "get_model"]
