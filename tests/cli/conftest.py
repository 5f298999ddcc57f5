"""Fixtures of the CLI tests: a tiny TrickVOS model exported as a bundle."""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest


def random_variables(model, seed: int = 0, size: int = 64):
    """Random variables of ``model`` without compiling its ``init``.

    Shapes come from ``jax.eval_shape(model.init, ...)``; weights are drawn
    ``N(0, 1 / fan_in)``, biases are zero, batch-norm scales and running
    variances one and running means zero (a well-conditioned random network).
    """
    abstract = jax.eval_shape(
        model.init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 2, size, size, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 1, 2, size, size), jnp.float32),
        jax.ShapeDtypeStruct((1, 1), jnp.bool_),
    )
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        shape = tuple(leaf.shape)
        if name in ("var", "scale"):
            return jnp.ones(shape, leaf.dtype)
        if name in ("mean", "bias") or len(shape) <= 1:
            return jnp.zeros(shape, leaf.dtype)
        fan_in = math.prod(shape[:-1])
        return jnp.asarray(rng.normal(0.0, 1.0 / math.sqrt(fan_in), shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, dict(abstract))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> pathlib.Path:
    """A randomly initialised tiny TrickVOS exported as a bundle (engine defaults inside)."""
    from vosjax.checkpoint import export_bundle
    from vosjax.models import get_model
    from vosjax.models.stcn import default_config

    cfg = default_config("trickvos", tiny=True)
    model = get_model(cfg)
    run = ml_collections.ConfigDict({"model": cfg.to_dict(), "inference": {"max_objects": 4}})
    return export_bundle(tmp_path_factory.mktemp("bundle") / "b", run, random_variables(model))
