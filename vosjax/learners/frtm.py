"""FRTM's target model, learned at inference by Gauss-Newton + CG (FRTM sec. 3.1, 3.4, 3.5).

The target model is a two-layer linear conv net on stride-16 features (eq. 1)::

    s = D(x; w) = w2 * (w1 * x),   w1: 1x1, C -> 96 (HWIO [1, 1, C, 96]),  w2: 3x3, 96 -> 1

fitted to a memory of (features x_k, labels y_k, sample weight gamma_k) by
minimising (eq. 2)::

    L(w) = sum_k gamma_k c sum_pixels v_k (y_k - U(D(x_k; w)))^2 + sum_j r_j^2 |w_j|^2

where U is bilinear upsampling from the feature grid (h, w) to the label grid
(H', W'), v_k are the pixel weights of eq. 4 and ``c = data_scale`` (1 here;
the model passes (image pixels / label pixels) so that a coarser label grid
stands for the full-resolution sum). As in the authors' code (frtm-vos
``model/discriminator.py``: ``DiscriminatorLoss.__call__`` returns
``[w * (s - y), *(filter_regs * parameters)]`` with
``w = sqrt(pixel_weights) * sqrt(sample_weights)``,
``compute_pixel_weights`` ends in ``torch.sqrt(w)``) the residual vector is
``[sqrt(gamma_k c) sqrt(v_k) (U(D(x_k)) - y_k), r_j w_j]``: the pixel weights
enter the residual as sqrt(v) (the squared loss carries v, as eq. 2 reads)
and ``r_j`` (``reg``) are the residual factors of the regulariser
(:data:`DEFAULT_REG` = frtm-vos ``evaluate.py`` ``filter_reg=(1e-4, 1e-2)``;
its ``train.py`` uses ``(1e-5, 1e-4)``). The optimiser is
:func:`vosjax.learners.gauss_newton_cg` (eq. 3) with the code's diagonal
preconditioner (``M1 = x / diag_M``, :data:`DEFAULT_PRECOND` =
``precond=(1e-4, 1e-2)``) and Polak-Ribiere CG. The code keeps the CG
direction across GN steps damped by ``(1 - precond_lr)^CG_forgetting_rate``
= 0.9^750 ~ 5e-35 at inference (0.9^75 ~ 4e-4 in training); CG restarts at
each GN step here, which that factor makes numerically the same.

Schedule (sec. 3.5): first fit from random weights on the 5 augmented samples
of the first frame (the un-augmented one weighted twice: frtm-vos
``model/memory.py`` ``Memory.initialize``; :func:`first_frame_weights`) with 5 GN steps, 5 CG iterations in the first and 10 in the
others (:func:`initial_fit`); every ``t_s = 8`` frames an update with w1 frozen
and 10 CG iterations on w2 (:func:`update`). The sample memory (sec. 3.4) is a
fixed-shape pytree (:class:`SampleMemory`, :func:`memory_add`); it and the
first-frame augmentation live in :mod:`vosjax.learners.frtm_samples` and are
re-exported here.

Everything is pure and batches over objects with ``jax.vmap`` (one target
model and one sample memory per object).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from vosjax._validate import check_dims_match, check_floating, check_rank
from vosjax.errors import VosjaxError
from vosjax.learners._conv import conv_same
from vosjax.learners.frtm_samples import (
    CAPACITY,
    authors_restart,
    ETA,
    FG_ROTATION,
    FG_SCALE,
    MIN_TARGET_PIXELS,
    NUM_AUG,
    SampleMemory,
    augment_first_frame,
    first_frame_weights,
    inpaint_diffusion,
    memory_add,
    memory_empty,
    memory_init,
)
from vosjax.learners.optimizers import gauss_newton_cg

__all__ = [
    "CAPACITY",
    "DEFAULT_PRECOND",
    "DEFAULT_REG",
    "MIN_TARGET_PIXELS",
    "ETA",
    "FG_ROTATION",
    "FG_SCALE",
    "HIDDEN",
    "KAPPA_MIN",
    "NUM_CG_INIT",
    "NUM_AUG",
    "NUM_CG_UPDATE",
    "NUM_GN_INIT",
    "UPDATE_INTERVAL",
    "SampleMemory",
    "apply",
    "authors_restart",
    "augment_first_frame",
    "bilinear_matrix",
    "fit",
    "init_params",
    "initial_fit",
    "inpaint_diffusion",
    "loss",
    "memory_add",
    "memory_empty",
    "memory_init",
    "first_frame_weights",
    "pixel_weights",
    "project",
    "residuals",
    "update",
    "upsample",
]

HIDDEN = 96  # channels of w1 (sec. 3.5)
KAPPA_MIN = 0.1  # minimum target influence (eq. 4)
UPDATE_INTERVAL = 8  # t_s (sec. 3.4)
NUM_GN_INIT = 5  # N_GN
NUM_CG_INIT = (5, 10, 10, 10, 10)  # N_CGi in the first GN step, N_CG after
NUM_CG_UPDATE = 10  # N_CGu
DEFAULT_REG: Mapping[str, float] = {"w1": 1e-4, "w2": 1e-2}
"""Residual factors r_j of the regulariser (loss term r_j^2 |w_j|^2); the paper
does not print them: frtm-vos ``evaluate.py`` ``filter_reg=(1e-4, 1e-2)``."""
DEFAULT_PRECOND: Mapping[str, float] = {"w1": 1e-4, "w2": 1e-2}
"""Diagonal CG preconditioner per weight (z = r / M): frtm-vos ``evaluate.py``
``precond=(1e-4, 1e-2)`` (``train.py``: ``(1e-5, 1e-4)``)."""


Params = dict[str, Array]


# -- the target model ------------------------------------------------------------------------


def _check_params(fn: str, params: Mapping[str, Array]) -> None:
    if not isinstance(params, Mapping) or set(params) != {"w1", "w2"}:
        keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise VosjaxError(
            f"{fn}: 'params' must be a dict with keys 'w1' and 'w2' (see init_params), got {keys}."
        )
    check_rank(fn, "params['w1']", params["w1"], 4, "HWIO [kh, kw, C, hidden]")
    check_rank(fn, "params['w2']", params["w2"], 4, "HWIO [kh, kw, hidden, 1]")
    check_floating(fn, "params['w1']", params["w1"])
    check_floating(fn, "params['w2']", params["w2"])
    check_dims_match(
        fn,
        "hidden channels of w1 (output) and w2 (input)",
        w1_out=params["w1"].shape[3],
        w2_in=params["w2"].shape[2],
    )
    if params["w2"].shape[3] != 1:
        raise VosjaxError(
            f"{fn}: params['w2'] must have one output channel, got shape {params['w2'].shape}."
        )


def init_params(
    key: PRNGKeyArray,
    num_channels: int,
    hidden: int = HIDDEN,
    kernel_size: int = 3,
    dtype: Any = jnp.float32,
) -> Params:
    """Random target-model weights (sec. 3.5: "randomly initialized").

    ``w1 ~ N(0, 1 / C)`` of shape [1, 1, C, hidden] and
    ``w2 ~ N(0, 1 / (k^2 hidden))`` of shape [k, k, hidden, 1], so that unit-variance
    features give unit-variance hidden activations and scores.
    """
    if num_channels < 1 or hidden < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise VosjaxError(
            f"init_params: need num_channels >= 1, hidden >= 1 and an odd kernel_size, got "
            f"{num_channels}, {hidden}, {kernel_size}."
        )
    k1, k2 = jax.random.split(key)
    w1 = jax.random.normal(k1, (1, 1, num_channels, hidden), dtype) / math.sqrt(num_channels)
    w2 = jax.random.normal(k2, (kernel_size, kernel_size, hidden, 1), dtype) / math.sqrt(
        kernel_size**2 * hidden
    )
    return {"w1": w1, "w2": w2}


def apply(params: Params, features: Float[Array, "*batch h w C"]) -> Float[Array, "*batch h w"]:
    """Target scores ``s = w2 * (w1 * x)`` (eq. 1), on the feature grid; convs are zero-padded 'SAME'."""
    _check_params("frtm.apply", params)
    check_rank("frtm.apply", "features", features, (3, 4, 5), "[..., h, w, C]")
    check_dims_match(
        "frtm.apply",
        "feature channels and w1 input channels",
        features=features.shape[-1],
        w1=params["w1"].shape[2],
    )
    lead = features.shape[:-3]
    x = features.reshape((-1,) + features.shape[-3:])
    s = conv_same(conv_same(x, params["w1"]), params["w2"])
    return s[..., 0].reshape(lead + s.shape[1:3])


def project(
    params: Params, features: Float[Array, "*batch h w C"]
) -> Float[Array, "*batch h w hidden"]:
    """The first layer alone, ``w1 * x`` (1x1 conv C -> hidden).

    w1 is frozen after the initial fit (sec. 3.4), so a caller may store
    ``project(params, x)`` in the sample memory instead of x (96 instead of
    1024 channels: ~10x less memory per object) and update with
    ``update(..., projected=True)``, which then skips the projection.
    """
    _check_params("frtm.project", params)
    check_rank("frtm.project", "features", features, (3, 4, 5), "[..., h, w, C]")
    check_dims_match(
        "frtm.project",
        "feature channels and w1 input channels",
        features=features.shape[-1],
        w1=params["w1"].shape[2],
    )
    lead = features.shape[:-3]
    h = conv_same(features.reshape((-1,) + features.shape[-3:]), params["w1"])
    return h.reshape(lead + h.shape[1:])


def _scores(params: Params, features: Array, projected: bool) -> Array:
    """D(x) on [K, h, w, C] features, or w2 * h on projected features h = w1 * x."""
    if projected:
        return conv_same(features, params["w2"])[..., 0]
    return apply(params, features)


@functools.lru_cache(maxsize=64)
def bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Interpolation matrix M [n_out, n_in] of 1-D linear resampling, half-pixel centres.

    Output sample o reads the input at ``c = (o + 0.5) n_in / n_out - 0.5``,
    clamped to [0, n_in - 1], with weights ``1 - (c - floor c)`` and ``c - floor c``
    on its two neighbours (PyTorch ``align_corners=False``; equal to
    ``jax.image.resize(..., "linear")`` when upsampling). ``n_out == n_in`` gives
    the identity.
    """
    m = np.zeros((n_out, n_in), np.float32)
    for o in range(n_out):
        c = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
        i0 = math.floor(c)
        i1 = min(i0 + 1, n_in - 1)
        t = c - i0
        m[o, i0] += 1.0 - t
        m[o, i1] += t
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=64)
def _banded_rows(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """:func:`bilinear_matrix` in block-banded form, for the large (height) axis.

    Output rows are grouped in ``nb`` blocks of ``b = ceil(n_out / n_in)``;
    block ``n`` reads a window of ``k`` consecutive inputs (k = 3 for a 16x
    upsampling). Returns the one-hot window gather ``G [nb * k, n_in]``, the
    weights ``[nb, b, k]`` and ``b, nb``: ``M x = (weights . (G x).reshape(nb, k))``
    summed over k, flattened and cut to ``n_out`` rows. Work and memory scale
    with ``n_out * k`` instead of ``n_out * n_in``.
    """
    m = bilinear_matrix(n_out, n_in)
    b = max(1, math.ceil(n_out / n_in))
    nb = math.ceil(n_out / b)
    mp = np.zeros((nb * b, n_in), np.float32)
    mp[:n_out] = m
    lo, hi = [], []
    for n in range(nb):
        cols = np.nonzero(mp[n * b : (n + 1) * b].any(axis=0))[0]
        lo.append(int(cols.min()) if cols.size else 0)
        hi.append(int(cols.max()) if cols.size else 0)
    k = max(h - lo_n + 1 for lo_n, h in zip(lo, hi))
    gather = np.zeros((nb, k, n_in), np.float32)
    weights = np.zeros((nb, b, k), np.float32)
    for n in range(nb):
        start = min(lo[n], n_in - k)
        for j in range(k):
            gather[n, j, start + j] = 1.0
            weights[n, :, j] = mp[n * b : (n + 1) * b, start + j]
    gather = gather.reshape(nb * k, n_in)
    gather.setflags(write=False)
    weights.setflags(write=False)
    return gather, weights, b, nb


def upsample(scores: Float[Array, "*batch h w"], size: Sequence[int]) -> Float[Array, "*batch H W"]:
    """U: bilinear resampling of ``scores`` to ``size = (H', W')``: ``M_H s M_W^T`` (:func:`bilinear_matrix`).

    The width pass is a dense matmul on the small ``[..., h, w]`` scores; the
    height pass, which produces the large output, uses the banded form of
    ``M_H`` (each output row mixes at most a few input rows), so U and its
    transpose cost O(output size) rather than O(output size x h).
    """
    check_rank("frtm.upsample", "scores", scores, (2, 3, 4, 5), "[..., h, w]")
    out_h, out_w = (int(v) for v in size)
    h, w = scores.shape[-2:]
    if (out_h, out_w) == (h, w):
        return scores
    t = scores
    if out_w != w:
        t = jnp.einsum("...hw,Ww->...hW", t, jnp.asarray(bilinear_matrix(out_w, w), scores.dtype))
    if out_h != h:
        gather, weights, b, nb = _banded_rows(out_h, h)
        k = weights.shape[-1]
        t = jnp.einsum("...hW,qh->...qW", t, jnp.asarray(gather, scores.dtype))
        t = t.reshape(t.shape[:-2] + (nb, k, out_w))
        wts = jnp.asarray(weights, scores.dtype)
        # k explicit multiply-adds of [..., nb, 1, W'] by [nb, b, 1]: XLA fuses them into one
        # loop (a broadcast-multiply-reduce form gets the weights materialised at full size)
        t = sum(wts[:, :, j, None] * t[..., :, None, j, :] for j in range(k))  # [..., nb, b, W']
        t = t.reshape(t.shape[:-3] + (nb * b, out_w))[..., :out_h, :]
    return t


def pixel_weights(
    labels: Float[Array, "*batch H W"], kappa_min: float = KAPPA_MIN
) -> Float[Array, "*batch H W"]:
    """Pixel weights v of eq. 4, per sample.

    ``kappa_hat = mean(y)``, ``kappa = max(kappa_min, kappa_hat)``;
    ``v = kappa / kappa_hat`` on target, ``(1 - kappa) / (1 - kappa_hat)`` on background.
    Soft labels interpolate: ``v = y a + (1 - y) b``. A mask with fewer than
    :data:`MIN_TARGET_PIXELS` (10) foreground pixels (sum of y), empty ones
    included, gets ``v = 1`` (the code's ``too_small`` rule), a full mask ``v = 1``.
    The residuals use ``sqrt(v)`` (see the module docstring).
    """
    check_rank("frtm.pixel_weights", "labels", labels, (2, 3, 4), "[..., H, W]")
    check_floating("frtm.pixel_weights", "labels", labels)
    acc = jnp.promote_types(labels.dtype, jnp.float32)
    y = labels.astype(acc)
    kappa_hat = jnp.mean(y, axis=(-2, -1), keepdims=True)
    too_small = jnp.sum(y, axis=(-2, -1), keepdims=True) < MIN_TARGET_PIXELS
    kappa_hat = jnp.where(too_small, kappa_min, kappa_hat)
    kappa = jnp.maximum(kappa_min, kappa_hat)

    def safe_ratio(n, d):
        ok = d > 0
        return jnp.where(ok, n / jnp.where(ok, d, 1.0), 0.0)

    a = safe_ratio(kappa, kappa_hat)
    b = safe_ratio(1.0 - kappa, 1.0 - kappa_hat)
    return (y * a + (1.0 - y) * b).astype(labels.dtype)


def _safe_sqrt(x: Array) -> Array:
    ok = x > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


def _check_samples(
    fn: str,
    params: Params,
    features: Array,
    labels: Array,
    sample_weights: Array | None,
    projected: bool = False,
) -> None:
    _check_params(fn, params)
    check_rank(fn, "features", features, 4, "[K, h, w, C]")
    check_rank(fn, "labels", labels, 3, "[K, H', W']")
    check_floating(fn, "features", features)
    check_floating(fn, "labels", labels)
    check_dims_match(
        fn,
        "numbers of samples in features and labels",
        features=features.shape[0],
        labels=labels.shape[0],
    )
    if projected:
        check_dims_match(
            fn,
            "projected feature channels and w2 input channels",
            features=features.shape[-1],
            w2=params["w2"].shape[2],
        )
    else:
        check_dims_match(
            fn,
            "feature channels and w1 input channels",
            features=features.shape[-1],
            w1=params["w1"].shape[2],
        )
    if sample_weights is not None:
        check_rank(fn, "sample_weights", sample_weights, 1, "[K]")
        check_dims_match(
            fn,
            "numbers of samples in features and sample_weights",
            features=features.shape[0],
            sample_weights=sample_weights.shape[0],
        )


def _reg_of(fn: str, reg: Mapping[str, Any] | None) -> Mapping[str, Any]:
    reg = DEFAULT_REG if reg is None else reg
    if not isinstance(reg, Mapping) or set(reg) != {"w1", "w2"}:
        raise VosjaxError(f"{fn}: 'reg' must map 'w1' and 'w2' to lambda >= 0, got {reg!r}.")
    return reg


def _residual_fn(features, labels, sample_weights, pix_w, reg, projected=False, data_scale=1.0):
    k = features.shape[0]
    acc = jnp.promote_types(labels.dtype, jnp.float32)
    gamma = (
        jnp.asarray(first_frame_weights(k), acc)
        if sample_weights is None
        else jnp.asarray(sample_weights, acc)
    )
    scale = _safe_sqrt(gamma * data_scale)[:, None, None] * _safe_sqrt(pix_w.astype(acc))
    scale = scale.astype(labels.dtype)

    def residual(params: Params) -> dict[str, Array]:
        pred = upsample(_scores(params, features, projected), labels.shape[-2:])
        out = {"data": scale * (pred - labels)}
        for j in ("w1", "w2"):
            r = jnp.asarray(reg[j], jnp.promote_types(params[j].dtype, jnp.float32))
            out[j] = (r * params[j]).astype(params[j].dtype)
        return out

    return residual


def residuals(
    params: Params,
    features: Float[Array, "K h w C"],
    labels: Float[Array, "K H W"],
    sample_weights: Float[Array, " K"] | None = None,
    *,
    reg: Mapping[str, Any] | None = None,
    kappa_min: float = KAPPA_MIN,
    projected: bool = False,
    data_scale: float = 1.0,
) -> dict[str, Array]:
    """The residuals of eq. 2: ``{"data": sqrt(gamma_k c v_k) (U(D(x_k)) - y_k), "w1": r1 w1, "w2": r2 w2}``.

    ``sample_weights`` default to :func:`first_frame_weights` (``[2, 1, ..] / (K + 1)``);
    empty memory slots have weight 0. ``projected``: the features are ``w1 * x``
    (see :func:`project`). ``c = data_scale``.
    """
    _check_samples("frtm.residuals", params, features, labels, sample_weights, projected)
    reg = _reg_of("frtm.residuals", reg)
    pix_w = pixel_weights(labels, kappa_min)
    return _residual_fn(features, labels, sample_weights, pix_w, reg, projected, data_scale)(params)


def loss(
    params: Params,
    features: Float[Array, "K h w C"],
    labels: Float[Array, "K H W"],
    sample_weights: Float[Array, " K"] | None = None,
    *,
    reg: Mapping[str, Any] | None = None,
    kappa_min: float = KAPPA_MIN,
    projected: bool = False,
    data_scale: float = 1.0,
) -> Float[Array, ""]:
    """L_D of eq. 2: the sum of squares of :func:`residuals`."""
    r = residuals(
        params, features, labels, sample_weights, reg=reg, kappa_min=kappa_min,
        projected=projected, data_scale=data_scale,
    )
    return sum(jnp.sum(jnp.square(v.astype(jnp.float32))) for v in jax.tree_util.tree_leaves(r))


def fit(
    params: Params,
    features: Float[Array, "K h w C"],
    labels: Float[Array, "K H W"],
    sample_weights: Float[Array, " K"] | None = None,
    *,
    num_gn: int,
    num_cg: int | Sequence[int],
    trainable: Mapping[str, bool] | None = None,
    reg: Mapping[str, Any] | None = None,
    precond: Mapping[str, Any] | None = None,
    kappa_min: float = KAPPA_MIN,
    projected: bool = False,
    data_scale: float = 1.0,
    return_losses: bool = False,
    binary_pixel_weights: bool = False,
) -> Params | tuple[Params, Float[Array, " steps"]]:
    """Minimise eq. 2 over the target-model weights with Gauss-Newton + CG (eq. 3).

    Args:
      params: starting weights ``{"w1", "w2"}`` (see :func:`init_params`).
      features: stride-16 features x_k ``[K, h, w, C]``.
      labels: target masks y_k in [0, 1] on the label grid ``[K, H', W']``.
      sample_weights: gamma_k ``[K]`` (default :func:`first_frame_weights`); zero for empty slots.
      num_gn, num_cg: GN steps and CG iterations per step (int or one per step).
      trainable: e.g. ``{"w1": False, "w2": True}`` to keep w1 fixed.
      reg: residual factor r_j per weight (default :data:`DEFAULT_REG`); may be traced.
      precond: diagonal CG preconditioner per weight (default :data:`DEFAULT_PRECOND`).
      kappa_min: of the pixel weights (eq. 4).
      projected: the features are ``w1 * x`` (:func:`project`); only w2 is fitted.
      data_scale: ``c`` of the data term (see the module docstring).
      return_losses: also return L_D (eq. 2) before each GN step and at the end.
      binary_pixel_weights: compute the pixel weights from ``labels > 0.5`` (the authors'
        ``Discriminator.update`` does so for the soft labels it stores).
    """
    fn = "frtm.fit"
    _check_samples(fn, params, features, labels, sample_weights, projected)
    reg = _reg_of(fn, reg)
    if projected:
        if trainable is not None and trainable.get("w1", False):
            raise VosjaxError(
                f"{fn}: with projected=True the features already contain w1, so w1 cannot be "
                "trained; pass trainable=None or {'w1': False, 'w2': True}."
            )
        trainable = {"w1": False, "w2": True}
    precond = DEFAULT_PRECOND if precond is None else precond
    if not isinstance(precond, Mapping) or set(precond) != {"w1", "w2"}:
        raise VosjaxError(f"{fn}: 'precond' must map 'w1' and 'w2' to M > 0, got {precond!r}.")
    pix_w = pixel_weights((labels > 0.5).astype(labels.dtype) if binary_pixel_weights else labels, kappa_min)
    res = _residual_fn(features, labels, sample_weights, pix_w, reg, projected, data_scale)
    out = gauss_newton_cg(
        res, params, num_gn, num_cg, trainable=trainable, return_losses=return_losses,
        precond={"w1": precond["w1"], "w2": precond["w2"]},
    )
    if return_losses:
        fitted, half = out
        return fitted, 2.0 * half
    return out


def initial_fit(
    params: Params,
    features: Float[Array, "K h w C"],
    labels: Float[Array, "K H W"],
    *,
    num_gn: int = NUM_GN_INIT,
    num_cg: int | Sequence[int] = NUM_CG_INIT,
    reg: Mapping[str, Any] | None = None,
    precond: Mapping[str, Any] | None = None,
    kappa_min: float = KAPPA_MIN,
    data_scale: float = 1.0,
    return_losses: bool = False,
):
    """First-frame fit (sec. 3.5): both layers, 5 GN steps with 5, 10, 10, 10, 10 CG, sample
    weights :func:`first_frame_weights` (sample 0, the un-augmented frame, counts twice)."""
    return fit(
        params,
        features,
        labels,
        None,
        num_gn=num_gn,
        num_cg=num_cg,
        reg=reg,
        precond=precond,
        kappa_min=kappa_min,
        data_scale=data_scale,
        return_losses=return_losses,
    )


def update(
    params: Params,
    memory: SampleMemory,
    *,
    num_gn: int = 1,
    num_cg: int | Sequence[int] = NUM_CG_UPDATE,
    reg: Mapping[str, Any] | None = None,
    precond: Mapping[str, Any] | None = None,
    kappa_min: float = KAPPA_MIN,
    projected: bool = False,
    data_scale: float = 1.0,
    return_losses: bool = False,
    binary_pixel_weights: bool = False,
):
    """Periodic update (sec. 3.4-3.5): refit w2 only (w1 frozen) on the whole sample memory.

    One GN step with 10 CG iterations by default: with w1 fixed the residuals
    are affine in w2, so one GN step is the exact problem and CG its solver.
    Empty slots carry weight 0 and do not contribute. ``projected=True`` when
    the memory holds ``w1 * x`` (:func:`project`) rather than x: the same
    update without recomputing the projection of all samples.
    """
    return fit(
        params,
        memory.features,
        memory.labels,
        memory.weights,
        num_gn=num_gn,
        num_cg=num_cg,
        trainable={"w1": False, "w2": True},
        reg=reg,
        precond=precond,
        kappa_min=kappa_min,
        projected=projected,
        data_scale=data_scale,
        return_losses=return_losses,
        binary_pixel_weights=binary_pixel_weights,
    )
