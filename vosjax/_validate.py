"""Static (trace-time) checks of array arguments for public functions.

These run on shapes and dtypes only, so they cost nothing under ``jit`` and
fail before XLA sees a malformed program. Each raises :class:`VosjaxError`
naming the function and argument.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vosjax.errors import VosjaxError


def check_rank(fn: str, name: str, x: Any, rank: int | Sequence[int], layout: str = "") -> None:
    """Raise unless ``x`` has the given rank (or one of the given ranks)."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    nd = np.ndim(x)
    if nd not in ranks:
        want = " or ".join(str(r) for r in ranks)
        hint = f" laid out as {layout}" if layout else ""
        raise VosjaxError(
            f"{fn}: argument '{name}' must have rank {want}{hint}, got shape {tuple(np.shape(x))}."
        )


def check_dims_match(fn: str, what: str, **dims: int) -> None:
    """Raise unless all named dimension sizes are equal, e.g. channel counts."""
    values = set(int(v) for v in dims.values())
    if len(values) > 1:
        listed = ", ".join(f"{k}={int(v)}" for k, v in dims.items())
        raise VosjaxError(f"{fn}: {what} must agree, got {listed}.")


def check_floating(fn: str, name: str, x: Any) -> None:
    """Raise unless ``x`` has a floating dtype."""
    dtype = np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype
    if not np.issubdtype(np.dtype(dtype), np.floating) and str(dtype) != "bfloat16":
        raise VosjaxError(f"{fn}: argument '{name}' must be floating point, got dtype {dtype}.")


def check_positive_int(fn: str, name: str, value: Any, *, allow_none: bool) -> None:
    """A positive Python int (``None`` too with ``allow_none``), else VosjaxError."""
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise VosjaxError(f"{fn}: argument '{name}' must be a positive Python int, got {value!r}.")
    if value <= 0:
        raise VosjaxError(f"{fn}: argument '{name}' must be a positive int, got {value}.")
