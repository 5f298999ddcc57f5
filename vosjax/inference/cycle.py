"""Gradient correction of predicted masks inside the engine (cyclic VOS sec. 3.3, eq. 7-11).

For every (video b, object o) selected, the predicted mask ``Y_t`` of the
current frame is refined by ``N`` steps of

    Y <- clip(Y - alpha * n * dE/dY, 0, 1),   n = h * w (pixels of the mask),

    E(Y) = sum_(b, o) [ L(S({X_t}, {Y_bo}, X_ref(b, o)), Y_ref(b, o)) + lambda * L_smooth(Y_bo) ]

where ``S({X_t}, {Y}, X_ref)`` predicts the object's REFERENCE frame (the frame
where its mask was given, ``Y_1`` of eq. 7; objects that appear mid-video
have their own) from a memory holding only the current frame and ``Y``;
``L = L_IoU + gamma L_CE`` is :func:`vosjax.losses.cycle_mask_loss` (eq. 4-6,
per-pixel mean) and ``L_smooth`` the mean squared Sobel gradient (eq. 11).
The factor ``n`` makes ``alpha`` the step of the pixel-summed objective (eq. 6
sums over pixels), so one ``alpha`` serves every resolution.

Objects are folded into the batch (``B * O`` one-object memories), so each
object's back-prediction depends on its own mask only and the objects are
corrected independently, in one pass of the model.

The same objective with the roles of the frames swapped gives cycle-ERF
(eq. 12, :func:`cycle_erf_map`): starting from an EMPTY mask on a reference
frame ``X_l``, ``M`` correction steps of the loss of predicting a target frame
``X_t``'s mask ``Y_t`` from ``{X_l, Y}``, then ``ReLU``: where the model looks
on ``X_l`` to find the object in ``X_t``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from vosjax.correction import ERF_ITERS, gradient_correction, sobel
from vosjax.inference.state import CorrectionRefs
from vosjax.losses import cycle_mask_loss
from vosjax.models.base import Feats, SegmentOptions, VOSModel

__all__ = ["correct_masks", "cycle_erf_map", "reconstruction_objective"]


def _per_object(x: Array, num_objects: int) -> Array:
    """``[B, ...] -> [B * O, ...]``, row ``b * O + o`` holding ``x[b]``."""
    return jnp.repeat(x, num_objects, axis=0)


def reconstruction_objective(
    model: VOSModel,
    variables: Any,
    frame: Float[Array, "B h w 3"],
    feats: Feats,
    refs: CorrectionRefs,
    ref_feats: Feats,
    rows: Bool[Array, "B O"],
    feat_shape: tuple[int, int],
    *,
    gamma: float = 1.0,
    smooth: float = 0.0,
    top_k: int | None = None,
):
    """``E(Y)`` of the module docstring as a function of ``Y f32[B, O, h, w]``.

    ``feats`` are the current frame's features with a time axis of 1;
    ``ref_feats`` the features of ``refs.frames`` folded to ``[B * O, 1, ...]``.
    """
    b, o = rows.shape
    h, w = frame.shape[1:3]
    frames_bo = _per_object(frame[:, None], o)  # [B*O, 1, h, w, 3]
    feats_bo = jax.tree_util.tree_map(lambda x: _per_object(x, o), feats)
    ones = jnp.ones((b * o, 1), bool)
    write = jnp.ones((b * o,), bool)
    fresh = model.init_memory(variables, b * o, 1, feat_shape)
    options = SegmentOptions(top_k=top_k, segment_len=None)
    count = jnp.maximum(jnp.sum(rows), 1).astype(jnp.float32)

    def objective(y: Float[Array, "B O h w"]) -> Float[Array, ""]:
        masks = y.reshape(b * o, 1, 1, h, w)
        memory = model.memorize(variables, fresh, frames_bo, masks, ones, feats_bo, write, write)
        logits = model.segment(variables, memory, ref_feats, ones, options)
        pred = jax.nn.sigmoid(logits[:, 0, 0].astype(jnp.float32)).reshape(b, o, h, w)
        rec = cycle_mask_loss(pred, refs.masks, gamma, valid=rows) * count
        if smooth:
            gx, gy = sobel(y)
            per_map = jnp.mean(jnp.square(gx) + jnp.square(gy), axis=(-2, -1))
            rec = rec + smooth * jnp.sum(jnp.where(rows, per_map, 0.0))
        return rec

    return objective


def correct_masks(
    model: VOSModel,
    variables: Any,
    frame: Float[Array, "B h w 3"],
    feats: Feats,
    probs: Float[Array, "B O h w"],
    refs: CorrectionRefs,
    rows: Bool[Array, "B O"],
    feat_shape: tuple[int, int],
    *,
    num_iters: int,
    rate: float,
    gamma: float,
    smooth: float,
    top_k: int | None,
) -> Float[Array, "B O h w"]:
    """Corrected per-object probabilities; rows not in ``rows`` are returned unchanged."""
    b, o = rows.shape
    h, w = frame.shape[1:3]
    ref_feats = model.encode_key(variables, refs.frames.reshape(b * o, 1, h, w, 3))
    ref_feats = jax.lax.stop_gradient(ref_feats)
    objective = reconstruction_objective(
        model,
        variables,
        frame,
        feats,
        refs,
        ref_feats,
        rows,
        feat_shape,
        gamma=gamma,
        smooth=smooth,
        top_k=top_k,
    )
    y = gradient_correction(
        objective, probs.astype(jnp.float32), num_iters, rate * h * w, clip=True
    )
    return jnp.where(rows[:, :, None, None], y, probs)


def cycle_erf_map(
    model: VOSModel,
    variables: Any,
    reference: Float[Array, "B h w 3"],
    target: Float[Array, "B h w 3"],
    target_masks: Float[Array, "B O h w"],
    feat_shape: tuple[int, int],
    *,
    num_iters: int = ERF_ITERS,
    rate: float = 1.0,
    gamma: float = 1.0,
    smooth: float = 0.0,
    top_k: int | None = None,
) -> Float[Array, "B O h w"]:
    """cycle-ERF of each object (cyclic VOS eq. 12) on the ``reference`` frame.

    ``ReLU(Y^M)``, ``Y^0 = 0``, ``Y^(i+1) = Y^i - rate * n * dE/dY`` with ``E``
    the loss of predicting ``target_masks`` on ``target`` from the memory
    ``{(reference, Y)}`` (:func:`reconstruction_objective` with the frames
    swapped; ``n = h * w``). Frames are ImageNet-normalised, at one size.
    """
    b, o = target_masks.shape[:2]
    h, w = reference.shape[1:3]
    feats = model.encode_key(variables, reference[:, None])
    refs = CorrectionRefs(
        jnp.broadcast_to(target[:, None], (b, o, h, w, 3)),
        target_masks.astype(jnp.float32),
        jnp.ones((b, o), bool),
    )
    ref_feats = jax.lax.stop_gradient(
        model.encode_key(variables, refs.frames.reshape(b * o, 1, h, w, 3))
    )
    objective = reconstruction_objective(
        model,
        variables,
        reference,
        feats,
        refs,
        ref_feats,
        refs.valid,
        feat_shape,
        gamma=gamma,
        smooth=smooth,
        top_k=top_k,
    )
    y = gradient_correction(
        objective, jnp.zeros((b, o, h, w), jnp.float32), num_iters, rate * h * w
    )
    return jax.nn.relu(y)
