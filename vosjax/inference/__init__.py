"""Jitted propagation engine over fixed-shape state: memory, objects, per-frame and per-clip stepping."""
