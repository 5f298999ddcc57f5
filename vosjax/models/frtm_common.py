"""Small helpers of the :class:`~vosjax.models.base.VOSModel` interface shared by the
learner-based methods (FRTM, JOINT); their argument checks are :mod:`vosjax.models.checks`.

The input resolution travels in the query features as a zero-channel array
``feats["frame_hw"]: f32[B, T, H, W, 0]`` (:func:`size_marker`; no data, only
a shape; the memory networks use the same key), so ``segment`` can return
logits at full resolution for any H x W, including sizes that are not
multiples of the stride (480 x 854).

Initialisation (:func:`init_variables`). A Flax ``init`` draws every
parameter with its own random call, and XLA on CPU compiles each such call
separately (tens of seconds for a ResNet). The models here instead take the
variable shapes from ``jax.eval_shape`` of the Flax init and fill them from
ONE stream of standard normals (a NumPy generator seeded with the bits of the
given key, so nothing is compiled; ``jax.random.normal`` when the key is
traced), leaf by leaf, with the distribution each module declares:

=========================================  ==========================================
leaf                                        value
=========================================  ==========================================
``params/<torch-initialised>/.../kernel``   N(0, 2 / fan_out)  (torchvision, the backbones)
other ``kernel`` (conv HWIO, dense IO)       N(0, 1 / fan_in)   (:data:`KERNEL_INIT`, LeCun normal)
``bias``                                    0
``scale`` (batch norm gamma)                1
``batch_stats/.../mean`` / ``var``          0 / 1
named constants (e.g. ``learner_reg``)      the given value
=========================================  ==========================================

with ``fan_in = prod(shape[:-1])`` and ``fan_out = prod(shape[:-2]) * shape[-1]``
(Flax's variance-scaling fans). Every module of these models declares exactly
these initialisers, so ``model.init`` and the Flax ``init`` draw from the same
distributions (values differ: one stream instead of many); a leaf outside the
table raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vosjax.errors import VosjaxError


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def parse_dtype(fn: str, name: Any) -> Any:
    """Config ``dtype`` ("float32", "bfloat16", "float16") -> a jnp dtype."""
    key = str(getattr(name, "__name__", name))
    if key not in _DTYPES:
        raise VosjaxError(
            f"{fn}: config field 'dtype' is {name!r}; use one of {', '.join(_DTYPES)}."
        )
    return _DTYPES[key]


def size_marker(b: int, t: int, h: int, w: int) -> Any:
    """The zero-channel array whose shape carries the input resolution."""
    return jnp.zeros((b, t, h, w, 0), jnp.float32)


def select_rows(mask: Any, new: Any, old: Any) -> Any:
    """Per-row pytree select: leaves ``[B, O, ...]`` (or ``[B, ...]`` with ``mask [B]``)
    take ``new`` where ``mask`` is True and ``old`` elsewhere."""

    def pick(n, o):
        m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(pick, new, old)


#: The initialiser of every conv / dense kernel of FRTM's S and JOINT's own modules.
KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def _leaf_plan(path: tuple[str, ...], shape: tuple[int, ...], torch_roots, constants):
    """(kind, value) of one variable leaf per the module docstring's table."""
    collection, leaf = path[0], path[-1]
    if collection == "batch_stats":
        if leaf in ("mean", "var"):
            return "const", 0.0 if leaf == "mean" else 1.0
    elif collection == "params":
        if leaf == "kernel" and len(shape) >= 2:
            if len(path) > 1 and path[1] in torch_roots:
                fan = math.prod(shape[:-2]) * shape[-1]
                return "normal", math.sqrt(2.0 / fan)
            return "normal", math.sqrt(1.0 / math.prod(shape[:-1]))
        if leaf == "bias":
            return "const", 0.0
        if leaf == "scale":
            return "const", 1.0
        if leaf in constants:
            return "const", float(constants[leaf])
    raise VosjaxError(
        f"init_variables: no initialisation rule for variable {'/'.join(path)} of shape {shape}; "
        "add it to the rules of vosjax.models.frtm_common."
    )


def init_variables(
    init_fn: Callable[..., Any],
    rng: Any,
    *args: Any,
    torch_roots: Sequence[str] = ("backbone",),
    constants: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Variables of ``init_fn(rng, *args)`` (a Flax ``init``) filled from one normal stream.

    Shapes and structure come from ``jax.eval_shape(init_fn, rng, *args)``;
    values follow the table of the module docstring. ``torch_roots`` names the
    top-level param subtrees initialised the torchvision way, ``constants``
    fixed scalar parameters by leaf name.
    """
    constants = dict(constants or {})
    abstract = jax.eval_shape(init_fn, rng, *args)
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    plan = []
    for path, leaf in flat:
        names = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        plan.append((*_leaf_plan(names, tuple(leaf.shape), set(torch_roots), constants), leaf))
    total = max(sum(math.prod(leaf.shape) for kind, _, leaf in plan if kind == "normal"), 1)

    if isinstance(rng, jax.core.Tracer):  # traced (e.g. under jax.eval_shape): JAX draw
        z = jax.random.normal(rng, (total,), jnp.float32)
        xp = jnp
    else:  # concrete key: a NumPy generator seeded with the key's bits (nothing to compile)
        data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
        seed = [int(v) for v in np.asarray(data).astype(np.uint32).ravel()]
        z = np.random.default_rng(seed).standard_normal(total, dtype=np.float32)
        xp = np
    out, start = [], 0
    for kind, value, leaf in plan:
        n = math.prod(leaf.shape)
        if kind == "normal":
            x = z[start : start + n].reshape(leaf.shape) * np.float32(value)
            start += n
        else:
            x = xp.full(leaf.shape, value, np.float32)
        out.append(jnp.asarray(x, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)
