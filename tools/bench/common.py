"""Timing helpers shared by the benchmark suites."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable

import jax


def block(x: Any) -> Any:
    """Wait for every array in a pytree (JAX dispatch is asynchronous)."""
    return jax.block_until_ready(x)


def time_fn(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 2, sync: Callable[[Any], Any] = block) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns the median and the spread (min, max) in seconds. ``sync`` makes the
    call synchronous (``jax.block_until_ready`` by default; pass ``lambda x: x``
    for eager libraries such as PyTorch).
    """
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": repeats}


def machine_line() -> str:
    """One line naming the machine the numbers come from."""
    devs = jax.devices()
    return (
        f"machine: {platform.machine()} {platform.processor() or ''} | python {platform.python_version()} | "
        f"jax {jax.__version__} on {devs[0].platform} x{len(devs)}"
    )


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms"
