"""The parametric box tracker of TrickVOS (Trick 3, "PT" variant).

TrickVOS filters predicted masks with a box that follows the object
(Algorithm 1, :func:`vosjax.ops.boxes.filter_masks`). The PT variant predicts
the next box motion from the last one with a 5-layer MLP with GELU between
layers:

    T  = BB(t-1) - BB(t-2)                  (over [x, y, w, h], pixels)
    T' = s * MLP(T / s)                     (MLP: 4 -> d -> d -> d -> d -> 4)
    BB(t) = BB(t-1) + T'

``s = motion_scale`` (32 px) only conditions the network input and output (box
motions are tens of pixels; the MLP works on order-one numbers); the paper
does not fix the hidden width, ``hidden = 64`` here.

Training (TrickVOS sec. 4.1) uses boxes of ground-truth masks and weighs up
predicted boxes that are smaller than the ground truth (a box that is too small
cuts the object when it filters the mask): :func:`tracker_loss`.
:func:`predict_boxes` gives the one-step predictions of a ground-truth box
track, the inputs of that loss.

Use at inference::

    params = init_tracker(key)            # or trained / restored params
    filtered = filter_masks(masks, mode="pt", motion_fn=make_motion_fn(params))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jaxtyping import Array, Bool, Float

from vosjax import _validate
from vosjax.errors import VosjaxError

MotionFn = Callable[[Float[Array, "*batch 4"]], Float[Array, "*batch 4"]]


def default_config() -> ml_collections.ConfigDict:
    """Tracker config: ``num_layers`` (5 Dense layers), ``hidden`` (64), ``motion_scale`` (32 px)."""
    c = ml_collections.ConfigDict()
    c.num_layers = 5
    c.hidden = 64
    c.motion_scale = 32.0
    return c


def _settings(config: Any | None) -> tuple[int, int, float]:
    c = default_config() if config is None else config
    fn = "tracker"
    try:
        layers, hidden, scale = c["num_layers"], c["hidden"], c["motion_scale"]
    except (KeyError, TypeError) as err:
        raise VosjaxError(
            f"{fn}: the tracker config needs num_layers, hidden and motion_scale; start from "
            "vosjax.models.tracker.default_config()."
        ) from err
    for name, v in (("num_layers", layers), ("hidden", hidden)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise VosjaxError(f"{fn}: config field '{name}' must be a positive int, got {v!r}.")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise VosjaxError(f"{fn}: config field 'motion_scale' must be > 0, got {scale!r}.")
    return layers, hidden, float(scale)


class BoxTrackerMLP(nn.Module):
    """``T' = s * MLP(T / s)``: ``num_layers`` Dense layers, exact GELU between them."""

    num_layers: int = 5
    hidden: int = 64
    motion_scale: float = 32.0

    @nn.compact
    def __call__(self, motion: Float[Array, "*batch 4"]) -> Float[Array, "*batch 4"]:
        x = motion.astype(jnp.float32) / self.motion_scale
        for i in range(self.num_layers - 1):
            x = nn.gelu(nn.Dense(self.hidden, name=f"dense{i}")(x), approximate=False)
        x = nn.Dense(4, name=f"dense{self.num_layers - 1}")(x)
        return x * self.motion_scale


def _module(config: Any | None) -> BoxTrackerMLP:
    layers, hidden, scale = _settings(config)
    return BoxTrackerMLP(layers, hidden, scale)


def init_tracker(rng: jax.Array, config: Any | None = None) -> dict[str, Any]:
    """Fresh tracker variables ``{"params": ...}`` (Flax default initialisers)."""
    return dict(jax.jit(_module(config).init)(rng, jnp.zeros((1, 4), jnp.float32)))


def make_motion_fn(variables: Any, config: Any | None = None) -> MotionFn:
    """The pure function ``T[..., 4] -> T'[..., 4]`` of the tracker bound to ``variables``.

    ``variables`` is ``{"params": p}`` from :func:`init_tracker` (or a restored
    checkpoint of it); the bare parameter tree ``p`` (``{"dense0": ...}``) is
    accepted too. Plugs into :func:`vosjax.ops.boxes.filter_masks` /
    ``box_filter_step`` (``mode="pt", motion_fn=...``); it closes over the
    parameters and is jit-able, vmap-able and differentiable.
    """
    if isinstance(variables, Mapping) and "params" not in variables and "dense0" in variables:
        variables = {"params": variables}
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise VosjaxError(
            "make_motion_fn: 'variables' must be the dict {'params': ...} from init_tracker "
            f"(or a restored checkpoint of it), got {type(variables).__name__}"
            f"{' with keys ' + ', '.join(map(str, variables)) if isinstance(variables, Mapping) else ''}."
        )
    module = _module(config)
    layers = sorted(variables["params"])
    want = sorted(f"dense{i}" for i in range(module.num_layers))
    if layers != want:
        raise VosjaxError(
            f"make_motion_fn: the parameters hold layers {', '.join(map(str, layers))} but the "
            f"config asks for {module.num_layers} layers ({', '.join(want)}); pass the config "
            "the tracker was trained with."
        )

    def motion_fn(motion: Float[Array, "*batch 4"]) -> Float[Array, "*batch 4"]:
        motion = jnp.asarray(motion)
        if motion.ndim < 1 or motion.shape[-1] != 4:
            raise VosjaxError(
                f"motion_fn: the box motion must be [..., 4] (dx, dy, dw, dh), got shape "
                f"{tuple(motion.shape)}."
            )
        return module.apply(variables, motion)

    return motion_fn


def predict_boxes(
    variables: Any, boxes: Float[Array, "*batch T 4"], config: Any | None = None
) -> Float[Array, "*batch Tm2 4"]:
    """One-step predictions along a box track (teacher forcing, the PT training input).

    ``pred[t] = BB(t+1) + T'(BB(t+1) - BB(t))`` for ``t = 0 .. T-3``, i.e. the
    prediction of ``BB(t+2)``; compare with ``boxes[..., 2:, :]``.
    """
    boxes = jnp.asarray(boxes)
    _validate.check_floating("predict_boxes", "boxes", boxes)
    if boxes.ndim < 2 or boxes.shape[-1] != 4 or boxes.shape[-2] < 3:
        raise VosjaxError(
            f"predict_boxes: 'boxes' must be [..., T, 4] with T >= 3 frames, got shape "
            f"{tuple(boxes.shape)}."
        )
    motion = boxes[..., 1:-1, :] - boxes[..., :-2, :]
    return boxes[..., 1:-1, :] + make_motion_fn(variables, config)(motion)


def tracker_loss(
    pred_boxes: Float[Array, "*batch 4"],
    gt_boxes: Float[Array, "*batch 4"],
    under_weight: float = 2.0,
    valid: Bool[Array, "*batch"] | None = None,
) -> Float[Array, ""]:
    """Weighted L1 box regression loss that penalises boxes smaller than the ground truth.

    Per box ``i``: ``l_i = sum_c |p_ic - g_ic|`` over ``c in (x, y, w, h)`` and
    ``a_i = under_weight`` if the prediction is smaller than the ground truth
    (``p_w < g_w`` or ``p_h < g_h``), else 1 (the weight is a constant of the
    prediction: no gradient flows through the comparison). The loss is
    ``sum_i m_i a_i l_i / max(1, sum_i m_i)``, ``m_i`` = ``valid`` (all ones
    by default; use it to drop frames whose ground-truth box is empty).

    Args:
      pred_boxes, gt_boxes: ``[..., 4]`` as ``[x, y, w, h]`` in pixels.
      under_weight: weight of under-sized predictions, ``>= 1``.
      valid: optional ``bool[...]`` mask of the boxes that count.
    """
    fn = "tracker_loss"
    pred_boxes, gt_boxes = jnp.asarray(pred_boxes), jnp.asarray(gt_boxes)
    for name, x in (("pred_boxes", pred_boxes), ("gt_boxes", gt_boxes)):
        _validate.check_floating(fn, name, x)
        if x.ndim < 1 or x.shape[-1] != 4:
            raise VosjaxError(f"{fn}: '{name}' must be [..., 4] boxes, got {tuple(x.shape)}.")
    if pred_boxes.shape != gt_boxes.shape:
        raise VosjaxError(
            f"{fn}: 'pred_boxes' {tuple(pred_boxes.shape)} and 'gt_boxes' "
            f"{tuple(gt_boxes.shape)} must have the same shape."
        )
    try:
        uw = float(under_weight)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise VosjaxError(
            f"{fn}: 'under_weight' must be a Python float, got {under_weight!r}."
        ) from err
    if not uw >= 1.0:
        raise VosjaxError(f"{fn}: 'under_weight' must be >= 1 (extra weight), got {uw}.")
    if valid is None:
        m = jnp.ones(pred_boxes.shape[:-1], jnp.float32)
    else:
        valid = jnp.asarray(valid)
        if valid.dtype != jnp.bool_ or tuple(valid.shape) != tuple(pred_boxes.shape[:-1]):
            raise VosjaxError(
                f"{fn}: 'valid' must be bool{list(pred_boxes.shape[:-1])}, got "
                f"{valid.dtype}{list(valid.shape)}."
            )
        m = valid.astype(jnp.float32)
    under = (pred_boxes[..., 2] < gt_boxes[..., 2]) | (pred_boxes[..., 3] < gt_boxes[..., 3])
    weight = jax.lax.stop_gradient(jnp.where(under, uw, 1.0))
    l1 = jnp.sum(jnp.abs(pred_boxes - gt_boxes), axis=-1).astype(jnp.float32)
    return jnp.sum(m * weight * l1) / jnp.maximum(1.0, jnp.sum(m))


__all__ = [
    "BoxTrackerMLP",
    "default_config",
    "init_tracker",
    "make_motion_fn",
    "predict_boxes",
    "tracker_loss",
]
