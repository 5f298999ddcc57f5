"""Soft aggregation of per-object probabilities (STM / STCN multi-object merge).

A memory network segments each object independently, giving per-object
foreground probabilities ``p_i`` that need not be mutually exclusive. Soft
aggregation turns them into one distribution over {background, object 1..O}
per pixel:

    p_bg  = prod_i (1 - p_i)
    q     = clip([p_bg, p_1, ..., p_O], eps, 1 - eps)
    l_j   = log(q_j / (1 - q_j))              (logits, returned)
    P_j   = softmax_j(l)                      (aggregated probabilities)

Slot/object-id convention, used by every function here: the object axis comes
right after the batch axis; object slot ``i`` (0-based) holds object id
``object_ids[i]``, which is ``i + 1`` by default; in tensors WITH background,
channel 0 is the background (label 0) and channel ``i + 1`` is slot ``i``.
Label maps use 0 for background.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from vosjax._validate import check_floating
from vosjax.errors import VosjaxError

__all__ = [
    "INVALID_LOGIT",
    "soft_aggregate",
    "logits_to_probs",
    "probs_to_logits",
    "labels_to_one_hot",
    "probs_to_labels",
]

#: Logit given to invalid (absent / padding) object slots. Finite, so sums and
#: losses stay finite, yet ~1e4 below any real logit (|l| <= log(1/eps) ~ 16 for
#: eps = 1e-7): its softmax weight is exactly 0 in float32 and it never wins an argmax.
INVALID_LOGIT = -1e4


def _check_min_rank(fn: str, name: str, x: Any, rank: int, layout: str) -> None:
    if np.ndim(x) < rank:
        raise VosjaxError(
            f"{fn}: argument '{name}' must have at least {rank} dims laid out as {layout}, "
            f"got shape {tuple(np.shape(x))}."
        )


def _check_eps(fn: str, eps: float) -> float:
    try:
        e = float(eps)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise VosjaxError(f"{fn}: 'eps' must be a Python float, got {eps!r}.") from err
    if not 0.0 < e < 0.5:
        raise VosjaxError(f"{fn}: 'eps' must lie in (0, 0.5), got {e}; the default is 1e-7.")
    return e


def _broadcast_objects(x: Array, ndim: int) -> Array:
    """[B, O] -> [B, O, 1, ..., 1] with ``ndim`` dims in total."""
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def soft_aggregate(
    probs: Float[Array, "B O *S"],
    obj_valid: Bool[Array, "B O"] | None = None,
    eps: float = 1e-7,
) -> Float[Array, "B O+1 *S"]:
    """Merge per-object foreground probabilities with the background.

    ``p_bg = prod_i (1 - p_i)``; ``q = clip([p_bg, p_1..p_O], eps, 1 - eps)``;
    returns ``log(q / (1 - q))``. ``softmax`` over axis 1 of the result
    (:func:`logits_to_probs`) gives the aggregated probabilities. Gradients are
    finite everywhere, including ``p in {0, 1}`` (the clip zeroes them there).

    Args:
      probs: per-object foreground probabilities ``[B, O, ...]`` in [0, 1]
        (any trailing spatial/time axes, e.g. ``[B, O, T, H, W]``).
      obj_valid: optional ``bool[B, O]``; False marks a slot that holds no object
        (absent yet, or padding to a fixed O). Such a slot is treated as
        ``p = 0`` in the background product, so it influences neither the
        background nor the other objects, and its logit is
        :data:`INVALID_LOGIT` so it never wins an argmax.
      eps: clipping margin, in (0, 0.5).

    Returns:
      logits ``[B, O + 1, ...]``, channel 0 = background, channel ``i + 1`` = slot ``i``.
    """
    fn = "soft_aggregate"
    _check_min_rank(fn, "probs", probs, 2, "[B, O, ...]")
    check_floating(fn, "probs", probs)
    eps = _check_eps(fn, eps)
    p = jnp.asarray(probs)
    valid = None
    if obj_valid is not None:
        if tuple(np.shape(obj_valid)) != tuple(p.shape[:2]):
            raise VosjaxError(
                f"{fn}: 'obj_valid' must have shape [B, O] = {tuple(p.shape[:2])}, "
                f"got {tuple(np.shape(obj_valid))}."
            )
        if jnp.asarray(obj_valid).dtype != jnp.bool_:
            raise VosjaxError(
                f"{fn}: 'obj_valid' must be boolean, got {jnp.asarray(obj_valid).dtype}."
            )
        valid = _broadcast_objects(jnp.asarray(obj_valid), p.ndim)
        p = jnp.where(valid, p, jnp.zeros((), p.dtype))
    bg = jnp.prod(1 - p, axis=1, keepdims=True)
    q = jnp.clip(jnp.concatenate([bg, p], axis=1), eps, 1 - eps)
    logits = jnp.log(q) - jnp.log1p(-q)
    if valid is not None:
        obj = jnp.where(valid, logits[:, 1:], jnp.asarray(INVALID_LOGIT, logits.dtype))
        logits = jnp.concatenate([logits[:, :1], obj], axis=1)
    return logits


def logits_to_probs(logits: Float[Array, "B K *S"]) -> Float[Array, "B K *S"]:
    """``softmax`` over the object axis (axis 1): ``P_j = exp(l_j) / sum_k exp(l_k)``."""
    fn = "logits_to_probs"
    _check_min_rank(fn, "logits", logits, 2, "[B, O+1, ...]")
    check_floating(fn, "logits", logits)
    return jax.nn.softmax(logits, axis=1)


def probs_to_logits(probs: Float[Array, "B K *S"], eps: float = 1e-7) -> Float[Array, "B K *S"]:
    """Inverse of :func:`logits_to_probs`: ``l_j = log(max(P_j, eps))``.

    For ``P`` that sums to 1 over axis 1 with entries ``>= eps``,
    ``logits_to_probs(probs_to_logits(P)) == P`` (logits are defined up to a
    per-pixel constant; this picks the one with ``logsumexp = 0``). Use it to
    feed probabilities (e.g. a label map's one-hot) to code that expects
    logits. These are NOT the per-object odds of :func:`soft_aggregate`.
    """
    fn = "probs_to_logits"
    _check_min_rank(fn, "probs", probs, 2, "[B, O+1, ...]")
    check_floating(fn, "probs", probs)
    eps = _check_eps(fn, eps)
    return jnp.log(jnp.maximum(probs, eps))


def _object_ids(fn: str, object_ids: Any, batch: int, num: int) -> Array:
    ids = jnp.asarray(object_ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise VosjaxError(f"{fn}: 'object_ids' must be integers, got dtype {ids.dtype}.")
    if ids.shape not in ((num,), (batch, num)):
        raise VosjaxError(
            f"{fn}: 'object_ids' must have shape [O] = ({num},) or [B, O] = ({batch}, {num}), "
            f"got {tuple(ids.shape)}."
        )
    return jnp.broadcast_to(ids, (batch, num))


def labels_to_one_hot(
    labels: Int[Array, "B *S"],
    num_objects: int,
    object_ids: Int[Array, "O"] | Int[Array, "B O"] | None = None,
) -> Float[Array, "B O *S"]:
    """Per-object binary masks from a label map (background excluded).

    ``out[b, i, ...] = 1.0 if labels[b, ...] == object_ids[b, i] else 0.0``,
    with ``object_ids[i] = i + 1`` by default (slot ``i`` = object id ``i + 1``,
    label 0 = background, which gets no slot). Labels not in ``object_ids``
    (e.g. ids above ``num_objects``) map to no slot.

    Args:
      labels: integer label map ``[B, ...]`` (e.g. ``[B, T, H, W]``).
      num_objects: ``O``, the number of object slots.
      object_ids: optional ids per slot, ``[O]`` or ``[B, O]`` (per video).

    Returns:
      ``f32[B, O, ...]``.
    """
    fn = "labels_to_one_hot"
    _check_min_rank(fn, "labels", labels, 1, "[B, ...]")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise VosjaxError(f"{fn}: 'labels' must be an integer label map, got dtype {labels.dtype}.")
    if (
        not isinstance(num_objects, (int, np.integer))
        or isinstance(num_objects, bool)
        or num_objects < 1
    ):
        raise VosjaxError(f"{fn}: 'num_objects' must be a positive int, got {num_objects!r}.")
    B = labels.shape[0]
    if object_ids is None:
        ids = jnp.broadcast_to(jnp.arange(1, num_objects + 1, dtype=labels.dtype), (B, num_objects))
    else:
        ids = _object_ids(fn, object_ids, B, int(num_objects))
    ids = _broadcast_objects(ids, labels.ndim + 1)
    return (labels[:, None] == ids).astype(jnp.float32)


def probs_to_labels(
    probs_with_bg: Float[Array, "B K *S"],
    object_ids: Int[Array, "O"] | Int[Array, "B O"] | None = None,
) -> Int[Array, "B *S"]:
    """Label map by argmax over {background, objects} (axis 1).

    ``label = 0`` where channel 0 (background) wins, else ``object_ids[j - 1]``
    for the winning channel ``j >= 1`` (``= j`` by default, matching
    :func:`labels_to_one_hot`). Works on probabilities or logits alike; ties go
    to the lower channel.

    Args:
      probs_with_bg: ``[B, O + 1, ...]``.
      object_ids: optional ids per slot, ``[O]`` or ``[B, O]``.

    Returns:
      ``int32[B, ...]``.
    """
    fn = "probs_to_labels"
    _check_min_rank(fn, "probs_with_bg", probs_with_bg, 2, "[B, O+1, ...]")
    idx = jnp.argmax(jnp.asarray(probs_with_bg), axis=1).astype(jnp.int32)
    if object_ids is None:
        return idx
    B, K = probs_with_bg.shape[:2]
    ids = _object_ids(fn, object_ids, B, K - 1).astype(jnp.int32)
    table = jnp.concatenate([jnp.zeros((B, 1), jnp.int32), ids], axis=1)  # [B, O + 1]
    return jax.vmap(jnp.take)(table, idx)
