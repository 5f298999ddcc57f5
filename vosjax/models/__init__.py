"""Flax linen networks of the five methods behind one interface (see models/base.py)."""
