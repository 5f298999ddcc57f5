"""Periodic evaluation: the inference engine on a validation split, scored with the DAVIS metrics.

``evaluate(model, variables, config)`` builds ``config.eval.source`` with
:func:`vosjax.data.make_source`, the engine options with
``EngineConfig.from_config(config.inference)``, and calls
``vosjax.inference.evaluate_source`` (first and last frames excluded,
J&F-Mean = mean of J-Mean and F-Mean over all objects). Every process runs
it on its own copy of the variables, so all of them see the same numbers (the
checkpoint manager needs them on every process). Where the engine is not
installed the evaluation is skipped with a logged message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax

from vosjax.data import copy_first_mask_baseline, make_source
from vosjax.errors import VosjaxError
from vosjax.parallel import to_host

__all__ = ["baseline", "evaluate", "evaluation_available"]


def evaluation_available() -> bool:
    """True when ``vosjax.inference.evaluate_source`` exists."""
    try:
        from vosjax.inference import evaluate_source  # noqa: F401
    except ImportError:
        return False
    return True


def _max_videos(config: Any) -> int | None:
    n = int(config.eval.get("max_videos", 0) or 0)
    return n if n > 0 else None


def evaluate(model: Any, variables: Any, config: Any, log: Callable[[str], None] = print) -> dict[str, float] | None:
    """DAVIS global metrics (``"J&F-Mean"``, ``"J-Mean"``, ...) on the eval split, or None if skipped."""
    if not config.eval.get("source"):
        return None
    if not evaluation_available():
        log("eval: skipped, the inference engine (vosjax.inference.evaluate_source) is not installed")
        return None
    from vosjax.inference import EngineConfig, evaluate_source

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
