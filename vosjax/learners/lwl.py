"""The LWL few-shot learner of JOINT's induction branch (JOINT sec. 3.3, eq. 6).

A conv kernel ``omega`` (HWIO ``[k, k, C, D]``) maps template features Z_i to
D-channel mask encodings; it is fitted at inference time by minimising

    L(omega) = 0.5 sum_i |W_i . (T_omega(Z_i) - E_i)|^2 + 0.5 lambda |omega|^2      (eq. 6)

with element-wise importance weights W_i and a learned regularisation
``lambda = reg^2`` (the square keeps lambda >= 0 for any learned scalar ``reg``
and is smooth at 0). The minimiser is :func:`vosjax.learners.steepest_descent`
with the Gauss-Newton step length, whose residuals are
``[W_i (T_omega(Z_i) - E_i), reg * omega]``. The whole fit is differentiable
w.r.t. the features, encodings, weights, ``reg`` and the initial filter, so the
networks producing them are trained through it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from vosjax._validate import check_dims_match, check_floating, check_rank
from vosjax.errors import VosjaxError
from vosjax.learners._conv import conv_same
from vosjax.learners.optimizers import steepest_descent

__all__ = ["apply", "fit", "loss", "residuals"]


def _check_filter(fn: str, filt: Array) -> None:
    check_rank(fn, "filter", filt, 4, "HWIO [k, k, C, D]")
    check_floating(fn, "filter", filt)
    if filt.shape[0] != filt.shape[1] or filt.shape[0] % 2 == 0:
        raise VosjaxError(
            f"{fn}: 'filter' must have a square odd kernel [k, k, C, D], got shape {filt.shape}."
        )


def apply(
    filter: Float[Array, "k k C D"], features: Float[Array, "*batch h w C"]
) -> Float[Array, "*batch h w D"]:
    """T_omega(Z): stride-1 'SAME' (zero-padded) convolution (cross-correlation) of the features with the filter."""
    fn = "lwl.apply"
    _check_filter(fn, filter)
    check_rank(fn, "features", features, (3, 4, 5), "[..., h, w, C]")
    check_dims_match(
        fn,
        "feature channels and filter input channels",
        features=features.shape[-1],
        filter=filter.shape[2],
    )
    lead = features.shape[:-3]
    x = features.reshape((-1,) + features.shape[-3:])
    out = conv_same(x, filter.astype(x.dtype))
    return out.reshape(lead + out.shape[1:])


def _check_samples(fn: str, features: Array, encodings: Array, weights: Array, filt: Array) -> None:
    _check_filter(fn, filt)
    check_rank(fn, "features", features, 4, "[N, h, w, C]")
    check_rank(fn, "encodings", encodings, 4, "[N, h, w, D]")
    check_floating(fn, "features", features)
    check_floating(fn, "encodings", encodings)
    if encodings.shape[:3] != features.shape[:3]:
        raise VosjaxError(
            f"{fn}: 'encodings' {encodings.shape} must match 'features' {features.shape} in [N, h, w]."
        )
    try:
        np.broadcast_shapes(np.shape(weights), encodings.shape)
    except ValueError:
        raise VosjaxError(
            f"{fn}: 'weights' of shape {np.shape(weights)} must broadcast to the encodings {encodings.shape}."
        ) from None
    check_dims_match(
        fn,
        "feature channels and filter input channels",
        features=features.shape[-1],
        filter=filt.shape[2],
    )
    check_dims_match(
        fn,
        "encoding channels and filter output channels",
        encodings=encodings.shape[-1],
        filter=filt.shape[3],
    )


def _residual_fn(features, encodings, weights, reg):
    def residual(filt):
        return {"data": weights * (apply(filt, features) - encodings), "reg": reg * filt}

    return residual


def residuals(
    filter: Float[Array, "k k C D"],
    features: Float[Array, "N h w C"],
    encodings: Float[Array, "N h w D"],
    weights: Float[Array, "N h w D"],
    reg: Float[Array, ""] | float,
) -> dict[str, Array]:
    """Residuals of eq. 6: ``{"data": W . (T_omega(Z) - E), "reg": reg * omega}`` (lambda = reg^2)."""
    _check_samples("lwl.residuals", features, encodings, weights, filter)
    return _residual_fn(features, encodings, weights, jnp.asarray(reg))(filter)


def loss(
    filter: Float[Array, "k k C D"],
    features: Float[Array, "N h w C"],
    encodings: Float[Array, "N h w D"],
    weights: Float[Array, "N h w D"],
    reg: Float[Array, ""] | float,
) -> Float[Array, ""]:
    """L(omega) of eq. 6: ``0.5 sum |W (T_omega(Z) - E)|^2 + 0.5 reg^2 |omega|^2``."""
    r = residuals(filter, features, encodings, weights, reg)
    return 0.5 * sum(
        jnp.sum(jnp.square(v.astype(jnp.float32))) for v in jax.tree_util.tree_leaves(r)
    )


def fit(
    features: Float[Array, "N h w C"],
    encodings: Float[Array, "N h w D"],
    weights: Float[Array, "N h w D"],
    reg: Float[Array, ""] | float,
    init_filter: Float[Array, "k k C D"],
    num_iters: int,
    *,
    return_losses: bool = False,
) -> Float[Array, "k k C D"] | tuple[Float[Array, "k k C D"], Float[Array, " steps"]]:
    """Fit the induction filter by ``num_iters`` steepest-descent steps on eq. 6.

    Each step: ``g = grad L(omega)``, ``alpha = |g|^2 / (|W . T_g(Z)|^2 + reg^2 |g|^2)``,
    ``omega <- omega - alpha g`` (the exact minimiser of L along -g, since the
    residuals are affine in omega).

    Args:
      features: template features Z_i ``[N, h, w, C]``.
      encodings: target mask encodings E_i ``[N, h, w, D]``.
      weights: importance weights W_i, broadcastable to ``[N, h, w, D]``.
      reg: the learned regularisation scalar (lambda = reg^2).
      init_filter: the starting kernel ``[k, k, C, D]`` (e.g. from a learned initialiser).
      num_iters: steepest-descent steps (static int).
      return_losses: also return L (eq. 6) before each step and at the end.

    Returns:
      The fitted filter (and the losses if asked). Use :func:`apply` to map new features.
    """
    fn = "lwl.fit"
    _check_samples(fn, features, encodings, weights, init_filter)
    reg = jnp.asarray(reg)
    if reg.ndim != 0:
        raise VosjaxError(f"{fn}: 'reg' must be a scalar, got shape {reg.shape}.")
    res = _residual_fn(features, encodings, jnp.asarray(weights), reg)
    return steepest_descent(res, init_filter, num_iters, return_losses=return_losses)
