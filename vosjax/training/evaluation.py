"""Periodic evaluation: the inference engine on a validation split, scored with the DAVIS metrics.

``evaluate(model, variables, config)`` builds ``config.eval.source`` with
:func:`vosjax.data.make_source`, the engine options with
``EngineConfig.from_config(config.inference)``, and calls
``vosjax.inference.evaluate_source`` (first and last frames excluded,
J&F-Mean = mean of J-Mean and F-Mean over all objects). Every process runs
it on its own copy of the variables, so all of them see the same numbers (the
checkpoint manager needs them on every process).
"""

from __future__ import annotations

import time
from typing import Any

import jax

from vosjax.data import copy_first_mask_baseline, make_source
from vosjax.errors import VosjaxError
from vosjax.inference import EngineConfig, evaluate_source
from vosjax.parallel import to_host

__all__ = ["baseline", "evaluate"]


def _max_videos(config: Any) -> int | None:
    n = int(config.eval.get("max_videos", 0) or 0)
    return n if n > 0 else None


def evaluate(model: Any, variables: Any, config: Any) -> dict[str, float] | None:
    """DAVIS global metrics (``"J&F-Mean"``, ``"J-Mean"``, ...) on the eval split, or None
    without ``config.eval.source``."""
    if not config.eval.get("source"):
        return None
    engine_cfg = EngineConfig.from_config(config.get("inference", {}))
    source = make_source(config.eval.source)
    host = to_host(variables)
    local = jax.device_put(host, jax.local_devices()[0])
    t0 = time.time()
    summary = evaluate_source(model, local, source, engine_cfg, max_videos=_max_videos(config))
    out = {k: float(v) for k, v in summary.global_metrics.items()}
    out["eval_seconds"] = time.time() - t0
    return out


def baseline(config: Any) -> dict[str, float] | None:
    """Copy-the-first-mask scores of the eval split (None without an eval source)."""
    if not config.eval.get("source") or not config.eval.get("baseline", True):
        return None
    try:
        return copy_first_mask_baseline(make_source(config.eval.source), max_videos=_max_videos(config))
    except VosjaxError:
        return None
