"""Jitted propagation engine over fixed-shape state: memory, objects, per-frame and per-clip stepping.

- :class:`EngineConfig`: every inference option (static under ``jit``).
"""

from vosjax.inference.config import BOX_FILTERS, MEMORY_POLICIES, EngineConfig

__all__ = ["BOX_FILTERS", "MEMORY_POLICIES", "EngineConfig"]
