"""Gradient correction of predicted masks inside the engine (cyclic VOS sec. 3.3, eq. 7-11).

As the authors' inference (test.py:173-187 of lyxok1/STM-Training, branch
``cycle``): on a corrected frame ``t``, the AGGREGATED probabilities ``P_t``
(softmax over background + objects) are refined by ``N`` plain steps

    Y <- Y - alpha * dE/dY          (alpha = 150, N = 10; no clip, no renormalisation)

of the object channels ``Y = P_t[1:]`` (the background channel gets no
gradient: the memory encoder reads object channels only), with

    E(Y) = sum_b [ L(softmax(soft_aggregate(S({X_t}, {Y_bo}, X_ref(b, o)))), Y_ref(b))
                   + lambda * mean_o L_smooth(Y_bo) ]

``S({X_t}, {Y_bo}, X_ref)`` predicts object ``o`` on its REFERENCE frame (the
frame where its mask was given, ``Y_1`` of eq. 7) from a memory holding only
the current frame and ``Y_bo``; the per-object predictions are soft-aggregated
(the objects are coupled only there, as in the authors' ``Soft_aggregation``)
and ``L`` is :func:`vosjax.correction.correction_criterion` (bootstrapped CE on
the top 40 % pixels + the mean IoU loss, both MEANS, so alpha does not depend
on the resolution). ``lambda`` defaults to 0 (the authors' code has no smooth
term; the paper states 0.75). Where the objects of a video were given on
different frames, each is predicted on its own reference frame and the
aggregation mixes them (the authors keep one reference frame per video).

The corrected masks are what the memory receives; the frame's OUTPUT stays the
uncorrected prediction (test.py:172 keeps ``out`` before the correction
rebinds it; demo/demo.py outputs the corrected one: ``correction_output``).

The per-object objective with the roles of the frames swapped gives cycle-ERF
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

from vosjax.correction import (
    CORRECTION_TOP_P,
    ERF_ITERS,
    correction_criterion,
    gradient_correction,
    sobel,
)
from vosjax.inference.state import CorrectionRefs
from vosjax.losses import cycle_mask_loss
from vosjax.models.base import Feats, SegmentOptions, VOSModel
from vosjax.ops.aggregate import soft_aggregate

__all__ = ["back_predict", "correct_masks", "cycle_erf_map", "reconstruction_objective"]


def _per_object(x: Array, num_objects: int) -> Array:
    """``[B, ...] -> [B * O, ...]``, row ``b * O + o`` holding ``x[b]``."""
    return jnp.repeat(x, num_objects, axis=0)


def back_predict(
    model: VOSModel,
    variables: Any,
    frame: Float[Array, "B h w 3"],
    feats: Feats,
    ref_feats: Feats,
    feat_shape: tuple[int, int],
    num_objects: int,
    top_k: int | None = None,
):
    """``Y f32[B, O, h, w] -> p f32[B, O, h, w]``: each object predicted on its reference frame.

    Object ``(b, o)`` gets a memory of ``(frame[b], Y[b, o])`` only and is
    segmented on ``ref_feats[b * O + o]`` (the object's reference frame).
    """
    o = num_objects
    b = frame.shape[0]
    h, w = frame.shape[1:3]
    frames_bo = _per_object(frame[:, None], o)  # [B*O, 1, h, w, 3]
    feats_bo = jax.tree_util.tree_map(lambda x: _per_object(x, o), feats)
    ones = jnp.ones((b * o, 1), bool)
    write = jnp.ones((b * o,), bool)
    fresh = model.init_memory(variables, b * o, 1, feat_shape)
    options = SegmentOptions(top_k=top_k, segment_len=None)

    def predict(y: Float[Array, "B O h w"]) -> Float[Array, "B O h w"]:
        masks = y.reshape(b * o, 1, 1, h, w)
        memory = model.memorize(variables, fresh, frames_bo, masks, ones, feats_bo, write, write)
        logits = model.segment(variables, memory, ref_feats, ones, options)
        return jax.nn.sigmoid(logits[:, 0, 0].astype(jnp.float32)).reshape(b, o, h, w)

    return predict


def _ref_target(refs: CorrectionRefs, rows: Bool[Array, "B O"]) -> Float[Array, "B K h w"]:
    """``[background, objects]`` of the reference masks of ``rows`` (bg = 1 - sum, clipped)."""
    m = jnp.where(rows[:, :, None, None], refs.masks.astype(jnp.float32), 0.0)
    bg = jnp.clip(1.0 - jnp.sum(m, axis=1, keepdims=True), 0.0, 1.0)
    return jnp.concatenate([bg, m], axis=1)


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
    top_p: float = CORRECTION_TOP_P,
    top_k: int | None = None,
):
    """``E(Y)`` of the module docstring as a function of the object channels ``Y f32[B, O, h, w]``.

    ``feats`` are the current frame's features with a time axis of 1;
    ``ref_feats`` the features of ``refs.frames`` folded to ``[B * O, 1, ...]``.
    Only the objects in ``rows`` enter (and get gradients); a video without
    rows contributes 0.
    """
    predict = back_predict(model, variables, frame, feats, ref_feats, feat_shape, rows.shape[1],
                           top_k)
    target = _ref_target(refs, rows)
    any_row = jnp.any(rows, axis=1)
    n_rows = jnp.maximum(jnp.sum(rows, axis=1), 1).astype(jnp.float32)

    def objective(y: Float[Array, "B O h w"]) -> Float[Array, ""]:
        pred = predict(y)
        agg = jax.nn.softmax(soft_aggregate(pred, rows), axis=1)
        per_video = correction_criterion(agg, target, rows, gamma, top_p)
        if smooth:
            gx, gy = sobel(y)
            per_map = jnp.mean(jnp.square(gx) + jnp.square(gy), axis=(-2, -1))
            per_video = per_video + smooth * jnp.sum(jnp.where(rows, per_map, 0.0), axis=1) / n_rows
        return jnp.sum(jnp.where(any_row, per_video, 0.0))

    return objective


def correct_masks(
    model: VOSModel,
    variables: Any,
    frame: Float[Array, "B h w 3"],
    feats: Feats,
    probs: Float[Array, "B K h w"],
    refs: CorrectionRefs,
    rows: Bool[Array, "B O"],
    feat_shape: tuple[int, int],
    *,
    num_iters: int,
    rate: float,
    gamma: float,
    smooth: float,
    top_p: float = CORRECTION_TOP_P,
    top_k: int | None,
) -> Float[Array, "B K h w"]:
    """Corrected aggregated probabilities ``P`` (channel 0 = background, kept as is).

    Object channels not in ``rows`` are returned unchanged; the corrected ones
    are ``N`` unclipped steps ``Y <- Y - rate * dE/dY`` (module docstring).
    """
    b, o = rows.shape
    h, w = frame.shape[1:3]
    ref_feats = model.encode_key(variables, refs.frames.reshape(b * o, 1, h, w, 3))
    ref_feats = jax.lax.stop_gradient(ref_feats)
    objective = reconstruction_objective(
        model, variables, frame, feats, refs, ref_feats, rows, feat_shape,
        gamma=gamma, smooth=smooth, top_p=top_p, top_k=top_k,
    )
    y0 = probs[:, 1:].astype(jnp.float32)
    y = gradient_correction(objective, y0, num_iters, rate)
    y = jnp.where(rows[:, :, None, None], y, y0).astype(probs.dtype)
    return jnp.concatenate([probs[:, :1], y], axis=1)


def _erf_objective(model, variables, frame, feats, refs, ref_feats, rows, feat_shape, *,
                   gamma, smooth, top_k):
    """cycle-ERF's ``sum_(b, o) [cycle_mask_loss(back-prediction) + lambda L_smooth]`` (per object)."""
    b, o = rows.shape
    predict = back_predict(model, variables, frame, feats, ref_feats, feat_shape, o, top_k)
    count = jnp.maximum(jnp.sum(rows), 1).astype(jnp.float32)

    def objective(y):
        rec = cycle_mask_loss(predict(y), refs.masks, gamma, valid=rows) * count
        if smooth:
            gx, gy = sobel(y)
            per_map = jnp.mean(jnp.square(gx) + jnp.square(gy), axis=(-2, -1))
            rec = rec + smooth * jnp.sum(jnp.where(rows, per_map, 0.0))
        return rec

    return objective


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
    ``{(reference, Y)}`` (the per-object back-prediction loss with the frames
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
    objective = _erf_objective(
        model, variables, reference, feats, refs, ref_feats, refs.valid, feat_shape,
        gamma=gamma, smooth=smooth, top_k=top_k,
    )
    y = gradient_correction(
        objective, jnp.zeros((b, o, h, w), jnp.float32), num_iters, rate * h * w
    )
    return jax.nn.relu(y)
