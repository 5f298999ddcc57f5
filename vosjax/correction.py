"""Inference-time refinement of masks by gradients (cyclic VOS sec. 3.3-3.4, 4.3.4).

Any segmentation model plugs in through ``loss_fn: mask -> scalar`` (for the
cyclic paper: predict the first frame's mask back from the current frame and
its mask ``Y_t``, and score it against the given ``Y_1`` with eq. 4; build it
as a closure over the model, its params and the frames):

- :func:`gradient_correction` (eq. 7-8, 10-11): N steps of
  ``Y <- Y - alpha * d/dY [loss_fn(Y) + lambda * L_smooth(Y)]``, unclipped.
- :func:`correction_criterion`: the authors' reconstruction loss ``L`` of eq. 7
  on an aggregated back-prediction (bootstrapped CE over background + objects
  plus the mean IoU loss over objects, both means), the loss on which their
  ``alpha = 150`` acts (module ``vosjax.inference.cycle``).
- :func:`cycle_erf` (eq. 12): the same from an empty mask for M = 50 steps, then ReLU.
- :func:`fgsm`, :func:`mi_fgsm`: adversarial perturbations of reference masks
  that MAXIMISE ``loss_fn`` within an L-inf ball of radius eps (on the 0-255
  scale), for the robustness suite (sec. 4.3.4).

Masks are float arrays of any shape ``[..., H, W]`` (values nominally in
[0, 1]); the smoothness term acts on the last two axes. All loops are
``lax.scan`` with static trip counts, so everything jits, vmaps and is itself
differentiable.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float

from vosjax._validate import check_floating, check_rank
from vosjax.errors import VosjaxError

__all__ = [
    "ERF_ITERS",
    "NUM_ITERS",
    "SMOOTH_WEIGHT",
    "CORRECTION_RATE",
    "CORRECTION_TOP_P",
    "correction_criterion",
    "cycle_erf",
    "fgsm",
    "gradient_correction",
    "mi_fgsm",
    "smoothness_loss",
    "sobel",
]

NUM_ITERS = 10  # N (sec. 4.1; authors' code: libs/config/default.py:43 ``loop = 10``)
SMOOTH_WEIGHT = 0.75  # lambda of eq. 10 in the paper (sec. 4.1); the authors' test.py has no smooth term
ERF_ITERS = 50  # M of eq. 12
#: alpha of eq. 8 on the mean loss of :func:`correction_criterion` (authors' code:
#: libs/config/default.py:41 ``correction_rate = 150``; their config.yaml:28 and
#: demo/demo.yaml:7 override it with 180).
CORRECTION_RATE = 150.0
#: fraction of pixels the correction's CE keeps (libs/utils/loss.py:16 ``bootstrap=0.4``).
CORRECTION_TOP_P = 0.4

LossFn = Callable[[Array], Array]


def _static_count(fn: str, name: str, value: Any) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise VosjaxError(f"{fn}: '{name}' must be a static Python int, got {value!r}.") from None
    if n < 0:
        raise VosjaxError(f"{fn}: '{name}' must be >= 0, got {n}.")
    return n


def _check_mask(fn: str, mask: Any) -> None:
    check_rank(fn, "mask", mask, (2, 3, 4, 5, 6), "[..., H, W]")
    check_floating(fn, "mask", mask)


def _check_loss_fn(fn: str, loss_fn: Any, mask: Array) -> None:
    if not callable(loss_fn):
        raise VosjaxError(
            f"{fn}: 'loss_fn' must be a callable mask -> scalar loss, got {loss_fn!r}."
        )
    out = jax.eval_shape(loss_fn, mask)
    if getattr(out, "shape", None) != ():
        raise VosjaxError(
            f"{fn}: 'loss_fn' must return a scalar, got {getattr(out, 'shape', type(out).__name__)}; "
            "reduce it (e.g. mean over pixels and objects)."
        )


# -- Sobel smoothness (eq. 11) ----------------------------------------------------------------


def sobel(
    mask: Float[Array, "*batch H W"],
) -> tuple[Float[Array, "*batch H W"], Float[Array, "*batch H W"]]:
    """Sobel derivatives ``(d/dx, d/dy)`` of a mask over its last two axes (replicated border).

    ``Gx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` (x = width axis) and
    ``Gy = Gx^T`` (y = height axis), applied as a cross-correlation. The border
    is padded by replication, so a constant mask has zero gradient everywhere
    (with zero padding an object touching the frame edge would be penalised).
    """
    _check_mask("sobel", mask)
    pad = [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)]
    p = jnp.pad(mask, pad, mode="edge")
    h, w = mask.shape[-2:]

    def at(di: int, dj: int) -> Array:  # p[i + di, j + dj] for di, dj in {0, 1, 2}
        return p[..., di : di + h, dj : dj + w]

    gx = (at(0, 2) + 2 * at(1, 2) + at(2, 2)) - (at(0, 0) + 2 * at(1, 0) + at(2, 0))
    gy = (at(2, 0) + 2 * at(2, 1) + at(2, 2)) - (at(0, 0) + 2 * at(0, 1) + at(0, 2))
    return gx, gy


def smoothness_loss(mask: Float[Array, "*batch H W"]) -> Float[Array, ""]:
    """L_smooth of eq. 11: ``mean_u (grad_x Y_u)^2 + (grad_y Y_u)^2`` over all pixels (Sobel derivatives)."""
    gx, gy = sobel(mask)
    return jnp.mean(jnp.square(gx.astype(jnp.float32)) + jnp.square(gy.astype(jnp.float32)))


# -- the reconstruction loss of eq. 7 (the authors' test-time criterion) ----------------------


def correction_criterion(
    probs: Float[Array, "B K H W"],
    target: Float[Array, "B K H W"],
    obj_valid: Bool[Array, "B O"],
    gamma: float | Float[Array, ""] = 1.0,
    top_p: float = CORRECTION_TOP_P,
) -> Float[Array, " B"]:
    """``L = L_IoU + gamma * CE_top`` per video on aggregated probabilities (eq. 4-6).

    ``probs`` / ``target`` have channel 0 = background and channel ``o + 1`` =
    object slot ``o``, ``K = O + 1``; ``obj_valid`` selects the objects (the
    background always counts). With ``n = int(H * W * top_p)``:

    - ``c_u = -sum_{k valid} target_k,u log probs_k,u``; ``CE_top`` = the mean of
      the ``n`` largest ``c_u`` (bootstrapped cross entropy);
    - ``L_IoU = mean_{o valid} (1 - sum_u min(p_o, y_o) / sum_u max(p_o, y_o))``
      (0 for a video without objects; an empty pair scores 0).

    The authors' ``cross_entropy_loss + mask_iou_loss`` (libs/utils/loss.py:16-57,
    test.py:104) with ``gamma = 1``; there the top-``n`` pixels and the object
    mean are taken per sample as here.
    """
    fn = "correction_criterion"
    check_rank(fn, "probs", probs, (4,), "[B, K, H, W]")
    if target.shape != probs.shape:
        raise VosjaxError(f"{fn}: 'target' must have the shape of 'probs' {probs.shape}, got {target.shape}.")
    b, k, h, w = probs.shape
    if tuple(obj_valid.shape) != (b, k - 1):
        raise VosjaxError(f"{fn}: 'obj_valid' must be bool[B={b}, O={k - 1}], got {obj_valid.shape}.")
    if not 0.0 < top_p <= 1.0:
        raise VosjaxError(f"{fn}: 'top_p' must be in (0, 1], got {top_p}.")
    n = max(int(h * w * top_p), 1)
    p = probs.astype(jnp.float32)
    y = target.astype(jnp.float32)
    valid = jnp.concatenate([jnp.ones((b, 1), bool), obj_valid], axis=1)[:, :, None, None]
    use = valid & (y > 0)
    nll = jnp.where(use, -y * jnp.log(jnp.where(use, p, 1.0)), 0.0)
    per_pixel = jnp.sum(nll, axis=1).reshape(b, h * w)
    ce = jnp.mean(lax.top_k(per_pixel, n)[0], axis=-1)
    po, yo = p[:, 1:], y[:, 1:]
    inter = jnp.sum(jnp.minimum(po, yo), axis=(-2, -1))
    union = jnp.sum(jnp.maximum(po, yo), axis=(-2, -1))
    iou = jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 1.0)
    count = jnp.sum(obj_valid, axis=1)
    iou_loss = jnp.sum(jnp.where(obj_valid, 1.0 - iou, 0.0), axis=1) / jnp.maximum(count, 1)
    return iou_loss + gamma * ce


# -- gradient correction (eq. 7-8, 10) and cycle-ERF (eq. 12) --------------------------------


def gradient_correction(
    loss_fn: LossFn,
    mask: Float[Array, "*batch H W"],
    num_iters: int,
    rate: float | Float[Array, ""],
    smooth_weight: float | Float[Array, ""] = 0.0,
    *,
    clip: bool = False,
    return_losses: bool = False,
) -> Float[Array, "*batch H W"] | tuple[Float[Array, "*batch H W"], Float[Array, " steps"]]:
    """Refine a mask by gradient descent on a reconstruction loss (eq. 8 on eq. 10).

    ``num_iters`` times::

        Y <- Y - rate * d/dY [ loss_fn(Y) + smooth_weight * L_smooth(Y) ]

    Args:
      loss_fn: ``mask -> scalar`` (eq. 7's ``L(S(X_t, Y, X_1), Y_1)`` as a closure,
        or any differentiable objective of the mask).
      mask: the initial mask ``Y_t^0``.
      num_iters: N (static int; the paper uses 10).
      rate: the correction rate alpha (the paper does not print its value and
        reports results insensitive to it; it depends on the scale of
        ``loss_fn``: the authors use 150 on the mean loss of
        :func:`correction_criterion`, :data:`CORRECTION_RATE`).
      smooth_weight: lambda of eq. 10 (0 disables the Sobel term; the paper
        states 0.75, the authors' test.py:184 has no smooth term).
      clip: clip the mask to [0, 1] after every step. Off by default, as in
        the paper, whose update is unconstrained.
      return_losses: also return the objective (eq. 10) before each step and after the last.

    Returns:
      The corrected mask (same shape and dtype), and the losses if asked.
    """
    fn = "gradient_correction"
    n = _static_count(fn, "num_iters", num_iters)
    _check_mask(fn, mask)
    _check_loss_fn(fn, loss_fn, mask)

    smooth = not (isinstance(smooth_weight, (int, float)) and smooth_weight == 0)

    def objective(y: Array) -> Array:
        value = loss_fn(y).astype(jnp.float32)
        return value + smooth_weight * smoothness_loss(y) if smooth else value

    def step(y, _):
        value, g = jax.value_and_grad(objective)(y)
        y = (y - rate * g).astype(mask.dtype)
        if clip:
            y = jnp.clip(y, 0.0, 1.0)
        return y, value

    y, losses = lax.scan(step, mask, None, length=n)
    if return_losses:
        return y, jnp.concatenate([losses, objective(y)[None]])
    return y


def cycle_erf(
    loss_fn: LossFn,
    shape: Sequence[int],
    num_iters: int = ERF_ITERS,
    rate: float | Float[Array, ""] = 1.0,
    smooth_weight: float | Float[Array, ""] = 0.0,
    *,
    dtype: Any = jnp.float32,
) -> Float[Array, "*batch H W"]:
    """cycle-ERF (eq. 12): ``ReLU(Y^M)`` where Y^M is gradient correction of the empty mask for M steps.

    ``loss_fn`` scores a reference mask of the given ``shape`` (the paper: the
    prediction loss of frame t with ``{X_l}, {Y}`` as the reference set); the
    positive part of the corrected empty mask shows the region the model relies on.
    ``rate`` defaults to 1 (no value in the paper); scale it to the loss.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise VosjaxError(
            f"cycle_erf: 'shape' must be [..., H, W] with at least two axes, got {shape}."
        )
    y = gradient_correction(
        loss_fn, jnp.zeros(shape, dtype), num_iters, rate, smooth_weight=smooth_weight
    )
    return jax.nn.relu(y)


# -- adversarial masks (sec. 4.3.4) -----------------------------------------------------------


def _eps01(fn: str, eps: Any) -> Any:
    if isinstance(eps, (int, float)) and not 0 <= eps <= 255:
        raise VosjaxError(f"{fn}: 'eps' is on the 0-255 scale and must be in [0, 255], got {eps}.")
    return eps / 255.0


def fgsm(
    loss_fn: LossFn, mask: Float[Array, "*batch H W"], eps: float = 20.0
) -> Float[Array, "*batch H W"]:
    """FGSM on a mask in [0, 1]: ``clip(Y + eps/255 * sign(d loss_fn / dY), 0, 1)`` (one ascent step).

    ``eps`` is on the 0-255 scale (the paper's robustness test uses eps <= 20).
    """
    fn = "fgsm"
    _check_mask(fn, mask)
    _check_loss_fn(fn, loss_fn, mask)
    e = _eps01(fn, eps)
    g = jax.grad(lambda y: loss_fn(y).astype(jnp.float32))(mask)
    return jnp.clip(mask + e * jnp.sign(g), 0.0, 1.0).astype(mask.dtype)


def mi_fgsm(
    loss_fn: LossFn,
    mask: Float[Array, "*batch H W"],
    eps: float = 20.0,
    num_iters: int = 10,
    decay: float = 1.0,
) -> Float[Array, "*batch H W"]:
    """Momentum iterative FGSM (Dong et al. 2018) on a mask in [0, 1], maximising ``loss_fn``.

    With step ``a = eps / 255 / num_iters`` and ``g_0 = 0``, for t = 0..T-1::

        g_{t+1} = decay * g_t + grad / mean|grad|     (L1-normalised gradient)
        Y_{t+1} = clip(clip(Y_t + a sign(g_{t+1}), Y_0 - eps/255, Y_0 + eps/255), 0, 1)

    The whole ``mask`` array is one example (one L1 norm); a mean instead of a
    sum only rescales every term alike, so the signs are unchanged.
    """
    fn = "mi_fgsm"
    n = _static_count(fn, "num_iters", num_iters)
    if n == 0:
        raise VosjaxError(f"{fn}: 'num_iters' must be >= 1.")
    _check_mask(fn, mask)
    _check_loss_fn(fn, loss_fn, mask)
    e = _eps01(fn, eps)
    a = e / n
    grad = jax.grad(lambda y: loss_fn(y).astype(jnp.float32))
    lo, hi = mask - e, mask + e

    def step(state, _):
        y, g = state
        d = grad(y).astype(jnp.float32)
        l1 = jnp.mean(jnp.abs(d))
        g = decay * g + jnp.where(l1 > 0, d / jnp.where(l1 > 0, l1, 1.0), 0.0)
        y = jnp.clip(jnp.clip(y + a * jnp.sign(g), lo, hi), 0.0, 1.0).astype(mask.dtype)
        return (y, g), None

    (y, _), _ = lax.scan(step, (mask, jnp.zeros(mask.shape, jnp.float32)), None, length=n)
    return y
