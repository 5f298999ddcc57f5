"""Training objectives of the methods vosjax implements.

Every loss is a pure ``jnp`` function: jit-, vmap- and grad-able, computed in
(at least) float32, returning a scalar. Values and gradients are finite for
all-background and all-foreground targets, probabilities at exactly 0 and 1,
and empty objects; where a ratio is 0/0 its value is fixed by a documented
convention (and its gradient there is 0).

Layouts. Class scores are ``[B, C, ...]`` with the class axis 1 (class 0 is
background, class i the object in slot i - 1), label maps ``int[B, ...]``.
Per-map losses take ``[..., H, W]`` with free leading axes, compute one value
per ``H x W`` map and average the maps; their optional ``valid`` is a boolean
over the leading axes or a prefix of them (``obj_valid bool[B, O]`` for maps
``[B, O, T, H, W]``), and invalid maps (padded or not-yet-present object slots)
contribute nothing: the mean runs over valid maps only (0 if there are none).

Contents: :func:`bootstrapped_ce` and :func:`bootstrap_p_schedule` (STCN);
:func:`ssim_loss`, :func:`iou_loss`, :func:`hybrid_loss` (TrickVOS Trick 1);
:func:`dice_loss_clip` (PCVOS eq. 5); :func:`lovasz_hinge`,
:func:`lovasz_softmax` and :func:`cosine_decoupling` (JOINT eq. 8-9);
:func:`cycle_mask_loss`, :func:`cycle_loss` (cyclic VOS eq. 3-6).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Shaped

from vosjax._validate import check_dims_match, check_floating, check_rank
from vosjax.errors import VosjaxError

__all__ = [
    "bootstrap_p_schedule", "bootstrapped_ce", "cosine_decoupling", "cycle_loss",
    "cycle_mask_loss", "dice_loss_clip", "hybrid_loss", "hybrid_loss_terms", "iou_loss",
    "lovasz_hinge", "lovasz_softmax", "ssim_loss",
]

Scalar = Float[Array, ""]


# ----------------------------------------------------------------------------- helpers


def _float(fn: str, name: str, x: ArrayLike) -> Array:
    """``x`` as a JAX array of at least float32 precision (bf16 / f16 are upcast)."""
    x = jnp.asarray(x)
    check_floating(fn, name, x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _labels(fn: str, name: str, x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_):
        raise VosjaxError(f"{fn}: argument '{name}' must be an integer label map, got dtype "
                          f"{x.dtype}; cast it with .astype(jnp.int32).")
    return x.astype(jnp.int32)


def _same_shape(fn: str, a_name: str, a: Array, b_name: str, b: Array) -> None:
    if a.shape != b.shape:
        raise VosjaxError(f"{fn}: '{a_name}' and '{b_name}' must have the same shape, "
                          f"got {a.shape} and {b.shape}.")


def _map_pair(fn: str, names: tuple[str, str], pred, target, valid):
    """Checked (pred, target as pred's dtype, valid broadcast over the leading axes)."""
    pred, target = _float(fn, names[0], pred), jnp.asarray(target)
    if pred.ndim < 2:
        raise VosjaxError(f"{fn}: argument '{names[0]}' must be maps laid out as [..., H, W], "
                          f"got shape {pred.shape}.")
    _same_shape(fn, names[0], pred, names[1], target)
    return pred, target.astype(pred.dtype), _valid_weights(fn, valid, pred.shape[:-2])


def _valid_weights(fn: str, valid: ArrayLike | None, lead: tuple[int, ...]) -> Array | None:
    """Broadcast a validity mask over a prefix of ``lead`` to the whole of ``lead``."""
    if valid is None:
        return None
    valid = jnp.asarray(valid)
    if valid.dtype != jnp.bool_:
        raise VosjaxError(f"{fn}: argument 'valid' must be boolean, got dtype {valid.dtype}.")
    if valid.shape != lead[: valid.ndim]:
        raise VosjaxError(f"{fn}: argument 'valid' of shape {valid.shape} must match the leading "
                          f"axes {lead} of the maps (or a prefix of them, e.g. [B, O]).")
    return jnp.broadcast_to(valid.reshape(valid.shape + (1,) * (len(lead) - valid.ndim)), lead)


def _masked_mean(values: Array, valid: Array | None) -> Array:
    """Mean of ``values`` over entries where ``valid`` holds (0 when none does)."""
    if valid is None:
        return jnp.mean(values)
    total = jnp.sum(jnp.where(valid, values, 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(values.dtype)


def _safe_ratio(num: Array, den: Array, empty_value: float) -> Array:
    """``num / den`` where ``den > 0``, else ``empty_value`` with zero gradient."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), empty_value)


def _mask_classes(fn: str, logits: Array, obj_valid: ArrayLike | None) -> Array:
    """Logits with padded object classes (``obj_valid`` False; class i + 1 is slot i) at -inf."""
    if obj_valid is None:
        return logits
    obj_valid = jnp.asarray(obj_valid)
    if obj_valid.dtype != jnp.bool_:
        raise VosjaxError(f"{fn}: argument 'obj_valid' must be boolean, got {obj_valid.dtype}.")
    check_rank(fn, "obj_valid", obj_valid, 2, "[B, O]")
    check_dims_match(fn, "batch sizes of logits and obj_valid", logits=logits.shape[0],
                     obj_valid=obj_valid.shape[0])
    check_dims_match(fn, "object counts (O = C - 1, class 0 is background)",
                     logits_objects=logits.shape[1] - 1, obj_valid=obj_valid.shape[1])
    keep = jnp.concatenate([jnp.ones((logits.shape[0], 1), bool), obj_valid], axis=1)
    return jnp.where(keep.reshape(keep.shape + (1,) * (logits.ndim - 2)), logits, -jnp.inf)


def _check_logits_labels(fn: str, logits: Array, labels: Array, min_spatial: int = 0) -> None:
    if logits.ndim < 2 + min_spatial:
        raise VosjaxError(f"{fn}: argument 'logits' must be laid out as [B, C, ...] with at "
                          f"least {min_spatial} spatial axes, got shape {logits.shape}.")
    want = logits.shape[:1] + logits.shape[2:]
    if labels.shape != want:
        raise VosjaxError(f"{fn}: 'labels' must have shape {want} (logits {logits.shape} "
                          f"without the class axis 1), got {labels.shape}.")


def _static_fraction(fn: str, name: str, p) -> float | None:
    """A Python/NumPy number in (0, 1] as float, None for a traced / array value."""
    if isinstance(p, numbers.Real) and not isinstance(p, (jax.Array, np.ndarray)):
        p = float(p)
        if not 0.0 < p <= 1.0:
            raise VosjaxError(f"{fn}: '{name}' must lie in (0, 1], got {p}.")
        return p
    return None


# ----------------------------------------------------------------------------- cross entropy


def _pixel_ce(fn: str, logits, labels, obj_valid) -> Array:
    logits, labels = _float(fn, "logits", logits), _labels(fn, "labels", labels)
    _check_logits_labels(fn, logits, labels)
    logp = jax.nn.log_softmax(_mask_classes(fn, logits, obj_valid), axis=1)
    ids = jnp.arange(logits.shape[1]).reshape((1, -1) + (1,) * (labels.ndim - 1))
    # a select, not a product with a one-hot: masked classes hold -inf (0 * -inf = nan)
    return -jnp.sum(jnp.where(labels[:, None] == ids, logp, 0.0), axis=1)


def bootstrapped_ce(
    logits: Float[Array, "B C *spatial"],
    labels: Int[Array, "B *spatial"],
    top_p: float | Float[Array, ""] = 1.0,
    obj_valid: Bool[Array, "B O"] | None = None,
    per_sample: bool = False,
) -> Scalar:
    """Bootstrapped cross entropy (STCN): mean of the hardest ``top_p`` of pixels.

    Per pixel ``l_u = -log softmax(logits)_{labels_u}`` over the class axis 1.
    ``per_sample=False``: with ``N`` pixels in the WHOLE batch and
    ``k = clip(round(top_p * N), 1, N)``, the loss is the mean of the ``k``
    largest ``l_u``. ``per_sample=True`` (STCN, model/losses.py: the loss is
    computed for each sample ``j`` and frame on its own and averaged over the
    batch): with ``N`` pixels per sample, ``L = mean_b mean(top-k of l_{b,u})``.
    ``top_p = 1`` is the plain mean cross entropy either way. ``top_p`` may be
    a traced scalar (e.g. from :func:`bootstrap_p_schedule` inside a jitted
    step); then the losses are sorted once instead of ``lax.top_k`` with a
    static ``k``, same result.

    ``obj_valid`` (``O = C - 1``) removes padded object classes from the softmax
    (their logits are treated as -inf); labels must not name such a class.
    """
    fn = "bootstrapped_ce"
    pix = _pixel_ce(fn, logits, labels, obj_valid)
    losses = pix.reshape(pix.shape[0], -1) if per_sample else pix.reshape(1, -1)
    n = losses.shape[1]
    p = _static_fraction(fn, "top_p", top_p)
    if p is not None:
        k = min(max(int(round(p * n)), 1), n)
        return jnp.mean(losses) if k == n else jnp.mean(lax.top_k(losses, k)[0])
    top_p = jnp.asarray(top_p, losses.dtype)
    k = jnp.clip(jnp.round(top_p * n), 1, n)
    ranked = -jnp.sort(-losses, axis=1)
    keep = jnp.arange(n) < k
    return jnp.mean(jnp.sum(jnp.where(keep, ranked, 0.0), axis=1) / k)


def bootstrap_p_schedule(
    step: int | Int[Array, ""],
    start_warm: int,
    end_warm: int,
    top_p: float = 0.15,
) -> Float[Array, ""]:
    """Fraction of pixels kept by :func:`bootstrapped_ce` at training ``step``.

    ``1`` for ``step < start_warm``, then linear from ``1`` at ``start_warm`` down
    to ``top_p`` at ``end_warm``, ``top_p`` afterwards:
    ``p = 1 - (1 - top_p) * clip((step - start_warm) / (end_warm - start_warm), 0, 1)``.
    STCN uses ``start_warm = 20k``, ``end_warm = 70k``, ``top_p = 0.15``; the
    cyclic paper keeps 40 %. ``step`` may be traced.
    """
    fn = "bootstrap_p_schedule"
    p = _static_fraction(fn, "top_p", top_p)
    if p is None:
        raise VosjaxError(f"{fn}: 'top_p' must be a Python number in (0, 1], got {top_p!r}.")
    if not (isinstance(start_warm, numbers.Integral) and isinstance(end_warm, numbers.Integral)):
        raise VosjaxError(f"{fn}: 'start_warm' and 'end_warm' must be Python ints (steps).")
    if not 0 <= start_warm <= end_warm:
        raise VosjaxError(f"{fn}: need 0 <= start_warm <= end_warm, got start_warm="
                          f"{start_warm}, end_warm={end_warm}.")
    step = jnp.asarray(step, jnp.float32)
    span = max(end_warm - start_warm, 1)
    frac = jnp.clip((step - start_warm) / span, 0.0, 1.0)
    frac = jnp.where(step >= end_warm, 1.0, frac)
    return 1.0 - (1.0 - p) * frac


# ----------------------------------------------------------------------------- region losses


def _gaussian_band(n: int, window: int, sigma: float) -> np.ndarray:
    """[n, n] matrix of the 'same' zero-padded filtering by the normalised Gaussian window.

    ``(G @ x)_i = sum_j g[j - i + window // 2] x_j`` over the ``j`` inside the map:
    the taps that would read the zero padding are simply absent from the band.
    """
    r = window // 2
    g = np.exp(-((np.arange(window) - r) ** 2) / (2.0 * sigma**2))
    g = g / g.sum()
    offset = np.arange(n)[None, :] - np.arange(n)[:, None] + r  # j - i + r
    return np.where((offset >= 0) & (offset < window), g[np.clip(offset, 0, window - 1)], 0.0)


def _blur(x: Float[Array, "M H W"], window: int, sigma: float) -> Float[Array, "M H W"]:
    """Separable Gaussian filtering as two banded matrix products (``G_H x G_W^T``).

    Exactly the zero-padded 'same' convolution; matrix products beat a
    single-channel convolution on CPU and run on the matrix units of accelerators.
    """
    hp = lax.Precision.HIGHEST
    gh = jnp.asarray(_gaussian_band(x.shape[-2], window, sigma), x.dtype)
    gw = jnp.asarray(_gaussian_band(x.shape[-1], window, sigma), x.dtype)
    x = jnp.einsum("ij,mjw->miw", gh, x, precision=hp)
    return jnp.einsum("mhj,wj->mhw", x, gw, precision=hp)


def ssim_loss(
    pred: Float[Array, "*lead H W"],
    target: Float[Array, "*lead H W"],
    window: int = 11,
    sigma: float = 1.5,
    valid: Bool[Array, "*prefix"] | None = None,
) -> Scalar:
    """``1 - mean SSIM`` (BASNet hybrid loss, TrickVOS eq. 1) of maps in [0, 1].

    With ``G`` the normalised Gaussian window (``window`` taps, std ``sigma``,
    ``g_i ∝ exp(-(i - window // 2)^2 / (2 sigma^2))``) applied separably with
    zero padding ``window // 2`` ("same" size),
    ``mu_x = G*x``, ``s_x = G*x^2 - mu_x^2``, ``s_xy = G*(xy) - mu_x mu_y``:

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x + s_y + C2))

    with ``C1 = 0.01^2``, ``C2 = 0.03^2``; averaged per map, then over (valid) maps.
    """
    fn = "ssim_loss"
    pred, target, weights = _map_pair(fn, ("pred", "target"), pred, target, valid)
    if not (isinstance(window, numbers.Integral) and window >= 1 and window % 2 == 1):
        raise VosjaxError(f"{fn}: 'window' must be a positive odd int, got {window!r}.")
    if not sigma > 0:
        raise VosjaxError(f"{fn}: 'sigma' must be positive, got {sigma!r}.")
    lead, (h, w) = pred.shape[:-2], pred.shape[-2:]
    x, y = pred.reshape(-1, h, w), target.reshape(-1, h, w)
    m = x.shape[0]
    stats = _blur(jnp.concatenate([x, y, x * x, y * y, x * y]), window, sigma)
    mu_x, mu_y, xx, yy, xy = (stats[i * m:(i + 1) * m] for i in range(5))
    c1, c2 = 0.01**2, 0.03**2
    s_x, s_y, s_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * s_xy + c2)
    ssim = num / ((mu_x**2 + mu_y**2 + c1) * (s_x + s_y + c2))
    return 1.0 - _masked_mean(jnp.mean(ssim, axis=(-2, -1)).reshape(lead), weights)


def iou_loss(
    pred: Float[Array, "*lead H W"],
    target: Float[Array, "*lead H W"],
    valid: Bool[Array, "*prefix"] | None = None,
) -> Scalar:
    """Soft IoU loss per map, averaged: ``1 - sum(p g) / (sum p + sum g - sum p g)``.

    Inputs are probabilities / masks in [0, 1]. A map whose union is 0 (both
    empty) counts as a perfect match: loss 0, gradient 0.
    """
    pred, target, weights = _map_pair("iou_loss", ("pred", "target"), pred, target, valid)
    inter = jnp.sum(pred * target, axis=(-2, -1))
    union = jnp.sum(pred, axis=(-2, -1)) + jnp.sum(target, axis=(-2, -1)) - inter
    return _masked_mean(1.0 - _safe_ratio(inter, union, 1.0), weights)


def dice_loss_clip(
    pred: Float[Array, "B O T H W"],
    target: Float[Array, "B O T H W"],
    obj_valid: Bool[Array, "B O"] | None = None,
    smooth: float = 1.0,
) -> Scalar:
    """Clip-level Dice loss (PCVOS eq. 5): ``mean_b sum_k [1 - Dice_k]``.

    Per sample ``b`` and object ``k``, over the whole clip (all T, H, W):
    ``Dice_k = (2 sum p g + smooth) / (sum p + sum g + smooth)`` with
    ``smooth = 1`` (one pixel), so an empty prediction of an empty object has
    Dice 1. Objects with ``obj_valid`` False are left out of the sum. Also
    accepts single frames ``[B, O, H, W]``.
    """
    fn = "dice_loss_clip"
    pred, target = _float(fn, "pred", pred), jnp.asarray(target)
    check_rank(fn, "pred", pred, (4, 5), "[B, O, T, H, W] or [B, O, H, W]")
    _same_shape(fn, "pred", pred, "target", target)
    if not smooth > 0:
        raise VosjaxError(f"{fn}: 'smooth' must be positive, got {smooth!r}.")
    target = target.astype(pred.dtype)
    axes = tuple(range(2, pred.ndim))
    inter = jnp.sum(pred * target, axis=axes)
    dice = (2.0 * inter + smooth) / (jnp.sum(pred, axis=axes) + jnp.sum(target, axis=axes) + smooth)
    per_obj = 1.0 - dice
    if obj_valid is not None:
        per_obj = jnp.where(_valid_weights(fn, obj_valid, pred.shape[:2]), per_obj, 0.0)
    return jnp.mean(jnp.sum(per_obj, axis=1))


# ----------------------------------------------------------------------------- Lovasz


def _lovasz_grad(gt_sorted: Int[Array, "... N"], dtype) -> Float[Array, "... N"]:
    """Jaccard-loss increments along a sorted prefix (Berman et al. 2018, Alg. 1).

    For the prefix ``S_i`` of the first ``i`` pixels, ``Delta(S_i) = 1 - |y \\ S_i| / |y ∪ S_i|``;
    returns ``Delta(S_i) - Delta(S_{i-1})``. The union is never 0 (it holds the
    first pixel). Counts are integer cumulative sums, exact at any size.
    """
    gts = jnp.sum(gt_sorted, axis=-1, keepdims=True)
    inter = gts - jnp.cumsum(gt_sorted, axis=-1)
    union = gts + jnp.cumsum(1 - gt_sorted, axis=-1)
    jac = 1.0 - inter.astype(dtype) / union.astype(dtype)
    return jnp.concatenate([jac[..., :1], jac[..., 1:] - jac[..., :-1]], axis=-1)


def _lovasz_flat(errors: Float[Array, "... N"], fg: Int[Array, "... N"]) -> Float[Array, "..."]:
    """Lovasz extension of the Jaccard loss at ``errors`` (per row)."""
    order = jnp.argsort(-errors, axis=-1)
    e_sorted = jnp.take_along_axis(errors, order, axis=-1)
    grad = lax.stop_gradient(_lovasz_grad(jnp.take_along_axis(fg, order, axis=-1), errors.dtype))
    return jnp.sum(e_sorted * grad, axis=-1)


def lovasz_hinge(
    logits: Float[Array, "*lead H W"],
    labels: Shaped[Array, "*lead H W"],
    valid: Bool[Array, "*prefix"] | None = None,
) -> Scalar:
    """Binary Lovasz hinge loss (Berman et al. 2018), one value per map, averaged.

    With signs ``s = 2 y - 1`` and hinge errors ``e = relu(1 - logits * s)``,
    the loss of a map is the Lovasz extension of the Jaccard loss,
    ``sum_i e_(i) (Delta(S_i) - Delta(S_(i-1)))`` with errors sorted in
    decreasing order and ``S_i`` the first ``i`` pixels. ``labels`` is a
    {0, 1} map (bool / int / float).
    """
    labels = jnp.asarray(labels)
    logits, _, weights = _map_pair("lovasz_hinge", ("logits", "labels"), logits, labels, valid)
    lead, n = logits.shape[:-2], logits.shape[-2] * logits.shape[-1]
    fg = (labels > 0.5 if jnp.issubdtype(labels.dtype, jnp.floating) else labels > 0)
    fg = fg.astype(jnp.int32).reshape(-1, n)
    errors = jax.nn.relu(1.0 - logits.reshape(-1, n) * (2 * fg - 1).astype(logits.dtype))
    return _masked_mean(_lovasz_flat(errors, fg).reshape(lead), weights)


def lovasz_softmax(
    probs: Float[Array, "B C *spatial"],
    labels: Int[Array, "B *spatial"],
    classes: str | Sequence[int] = "present",
    per_image: bool = False,
) -> Scalar:
    """Multi-class Lovasz-softmax loss (Berman et al. 2018; JOINT eq. 9).

    For class ``c`` with foreground ``f_c = [labels == c]`` and errors
    ``e_c = |f_c - probs_c|`` over all pixels of the batch (of each image when
    ``per_image``), the class loss is the Lovasz extension of the Jaccard loss
    at ``e_c``; the loss is the mean over ``classes``: ``"all"``, ``"present"``
    (classes that occur in ``labels``; 0 if none) or an explicit list of ids.
    ``probs`` are class probabilities (a softmax over axis 1). Padded object
    classes are never present, so with ``"present"`` they drop out by themselves.
    """
    fn = "lovasz_softmax"
    probs, labels = _float(fn, "probs", probs), _labels(fn, "labels", labels)
    _check_logits_labels(fn, probs, labels)
    c = probs.shape[1]
    present = isinstance(classes, str) and classes == "present"
    if isinstance(classes, str):
        if classes not in ("all", "present"):
            raise VosjaxError(f"{fn}: 'classes' must be 'all', 'present' or a list of class ids.")
        chosen = np.ones(c, bool)
    else:
        ids = [int(i) for i in classes]
        if not ids or min(ids) < 0 or max(ids) >= c:
            raise VosjaxError(f"{fn}: 'classes' {ids} must be non-empty ids in [0, {c}).")
        chosen = np.zeros(c, bool)
        chosen[ids] = True
    groups = probs.shape[0] if per_image else 1
    p = jnp.moveaxis(probs, 1, 0).reshape(c, groups, -1).swapaxes(0, 1)  # [G, C, N]
    lab = labels.reshape(groups, 1, -1)
    fg = (lab == jnp.arange(c)[None, :, None]).astype(jnp.int32)
    per_class = _lovasz_flat(jnp.abs(fg.astype(p.dtype) - p), fg)  # [G, C]
    use = jnp.asarray(chosen)[None, :]
    if present:
        use = use & (jnp.sum(fg, axis=-1) > 0)
    count = jnp.maximum(jnp.sum(use, axis=1), 1).astype(p.dtype)
    return jnp.mean(jnp.sum(jnp.where(use, per_class, 0.0), axis=1) / count)


# ----------------------------------------------------------------------------- JOINT / cyclic


def cosine_decoupling(
    e1: Float[Array, "B *rest"],
    e2: Float[Array, "B *rest"],
    valid: Bool[Array, "B"] | None = None,
) -> Scalar:
    """JOINT eq. 8: ``mean_b cos(vec(e1_b), vec(e2_b))``, ``cos(a, b) = a.b / (|a| |b|)``.

    The two label-encoder heads' encodings of each sample ``b`` (leading axis)
    are flattened and compared; the mean runs over samples with ``valid``. A
    zero vector has cosine 0 with anything (and zero gradient there).
    """
    fn = "cosine_decoupling"
    e1, e2 = _float(fn, "e1", e1), _float(fn, "e2", e2)
    if e1.ndim < 1:
        raise VosjaxError(f"{fn}: 'e1' and 'e2' must be laid out as [B, ...], got a scalar.")
    _same_shape(fn, "e1", e1, "e2", e2)
    a, b = e1.reshape(e1.shape[0], -1), e2.reshape(e2.shape[0], -1)
    den2 = jnp.sum(a * a, axis=1) * jnp.sum(b * b, axis=1)
    ok = den2 > 0  # guard before the sqrt: its derivative at 0 is infinite
    cos = jnp.where(ok, jnp.sum(a * b, axis=1) / jnp.sqrt(jnp.where(ok, den2, 1.0)), 0.0)
    return _masked_mean(cos, _valid_weights(fn, valid, e1.shape[:1]))


def cycle_mask_loss(
    pred_probs: Float[Array, "*lead H W"],
    target: Float[Array, "*lead H W"],
    gamma: float = 1.0,
    valid: Bool[Array, "*prefix"] | None = None,
    eps: float = 1e-6,
) -> Scalar:
    """Cyclic VOS eq. 4-6 per map, averaged: ``L_IoU + gamma * L_CE``.

    ``L_IoU = 1 - sum_u min(p_u, y_u) / sum_u max(p_u, y_u)`` (0 when both maps
    are empty) and the binary cross entropy
    ``L_CE = -mean_u [y_u log max(p_u, eps) + (1 - y_u) log max(1 - p_u, eps)]``
    (eq. 6 as a mean negative log-likelihood; the clipping of each log argument
    at ``eps`` keeps p = 0 / 1 finite, and a perfect hard prediction scores 0).
    """
    p, y, weights = _map_pair("cycle_mask_loss", ("pred_probs", "target"), pred_probs, target,
                              valid)
    ratio = _safe_ratio(jnp.sum(jnp.minimum(p, y), axis=(-2, -1)),
                        jnp.sum(jnp.maximum(p, y), axis=(-2, -1)), 1.0)
    log_p, log_q = jnp.log(jnp.maximum(p, eps)), jnp.log(jnp.maximum(1.0 - p, eps))
    bce = -jnp.mean(y * log_p + (1.0 - y) * log_q, axis=(-2, -1))
    return _masked_mean((1.0 - ratio) + gamma * bce, weights)


def cycle_loss(
    pred_t: Float[Array, "*lead H W"],
    target_t: Float[Array, "*lead H W"],
    pred_1: Float[Array, "*lead H W"],
    target_1: Float[Array, "*lead H W"],
    gamma: float = 1.0,
    valid: Bool[Array, "*prefix"] | None = None,
) -> Scalar:
    """Cycle-consistency loss (cyclic VOS eq. 3): ``L(Y_t_hat, Y_t) + L(Y_1_hat, Y_1)``.

    ``Y_1_hat`` is the first-frame mask predicted back from the predicted frame
    t; ``L`` is :func:`cycle_mask_loss`.
    """
    forward = cycle_mask_loss(pred_t, target_t, gamma, valid)
    return forward + cycle_mask_loss(pred_1, target_1, gamma, valid)


# ----------------------------------------------------------------------------- TrickVOS


def hybrid_loss_terms(
    logits: Float[Array, "B C *spatial"],
    labels: Int[Array, "B *spatial"],
    top_p: float | Float[Array, ""] = 1.0,
    obj_valid: Bool[Array, "B O"] | None = None,
    per_sample: bool = False,
) -> dict[str, Scalar]:
    """The three terms of :func:`hybrid_loss`, ``{"ce", "ssim", "iou"}``, for logging."""
    fn = "hybrid_loss"
    logits, labels = _float(fn, "logits", logits), _labels(fn, "labels", labels)
    _check_logits_labels(fn, logits, labels, min_spatial=2)
    c = logits.shape[1]
    logits = _mask_classes(fn, logits, obj_valid)
    probs = jax.nn.softmax(logits, axis=1)[:, 1:]
    ids = jnp.arange(1, c).reshape((1, c - 1) + (1,) * (labels.ndim - 1))
    gt = (labels[:, None] == ids).astype(probs.dtype)
    return {
        "ce": bootstrapped_ce(logits, labels, top_p, per_sample=per_sample),
        "ssim": ssim_loss(probs, gt, valid=obj_valid),
        "iou": iou_loss(probs, gt, valid=obj_valid),
    }


def hybrid_loss(
    logits: Float[Array, "B C *spatial"],
    labels: Int[Array, "B *spatial"],
    top_p: float | Float[Array, ""] = 1.0,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    obj_valid: Bool[Array, "B O"] | None = None,
    per_sample: bool = False,
) -> Scalar:
    """TrickVOS Trick 1 (eq. 1): ``l1 CE + l2 SSIM + l3 IoU``, all weights 1 by default.

    CE is :func:`bootstrapped_ce` over the ``C = O + 1`` classes (plain CE when
    ``top_p = 1``; ``per_sample`` as there); SSIM (:func:`ssim_loss`) and IoU (:func:`iou_loss`) compare
    each object's softmax probability map (background excluded) with its
    binary ground truth ``[labels == k]``, per ``H x W`` map, averaged over the
    valid objects (``obj_valid``, ``O = C - 1``) and all other leading axes.
    ``spatial`` must end in ``H, W`` (e.g. ``[B, C, H, W]`` or ``[B, C, T, H, W]``).
    """
    if len(weights) != 3:
        raise VosjaxError(f"hybrid_loss: 'weights' must be (ce, ssim, iou), got {weights!r}.")
    terms = hybrid_loss_terms(logits, labels, top_p, obj_valid, per_sample)
    return weights[0] * terms["ce"] + weights[1] * terms["ssim"] + weights[2] * terms["iou"]
