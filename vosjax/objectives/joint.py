"""JOINT's training objective (JOINT sec. 3.4, 3.6, eq. 8-10).

A mini-sequence of ``N`` frames (N = 4) is processed as at inference, with
the memory updated EVERY frame (sec. 3.6): frame 0 and its ground truth form
the first template (the induction learner is fitted inside the step, by the
model's differentiable steepest descent), then each frame ``t = 1 .. N-1`` is
segmented and added as a template with its predicted mask (the learner is
refitted). The loss is eq. 10::

    L = 1 / (N - 1) sum_{t=1}^{N-1} L_lovasz(Y_t*, Y_t)  +  lambda / N sum_{t=0}^{N-1} L_cos^t

with ``L_lovasz`` as in the authors' code (``lovasz="sigmoid_fg"``, default): JOINT
``ltr/models/loss/segmentation.py`` ``LovaszSegLoss(classes=[1], per_image=False)``
= ``lovasz_softmax(sigmoid(logits), mask, classes=[1])``: the Lovasz extension of
the foreground class on each object's sigmoid, all pixels of the batch and of
the N - 1 frames in one sort (``SegActor`` flattens the frames and sequences);
``lovasz="softmax_present"`` keeps the paper-reading variant (Lovasz-softmax of
the aggregated class probabilities over the present classes, background
included, per frame). ``L_cos^t`` the cosine similarity of the
two label-encoder heads' encodings ``E_tra``, ``E_ind`` of the mask of frame
``t`` (the ground truth for t = 0, the prediction otherwise; eq. 8, one
cosine per (video, object), averaged over valid objects) and lambda = 0.01.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from vosjax import losses
from vosjax.errors import VosjaxError
from vosjax.objectives.common import (
    TRAIN_OPTIONS,
    Batch,
    hard_iou,
    prepare_batch,
    rollout,
    take_frames,
)

__all__ = ["JOINTOptions", "joint_objective", "lovasz_sigmoid_fg"]


@dataclasses.dataclass(frozen=True)
class JOINTOptions:
    """``cosine_weight`` = lambda of eq. 10 (0.01; the code's loss weights segm 100, diff 1);
    ``lovasz``: ``"sigmoid_fg"`` (the code) or ``"softmax_present"`` (paper reading)."""

    cosine_weight: float = 0.01
    lovasz: str = "sigmoid_fg"


def lovasz_sigmoid_fg(
    logits: Float[Array, "B O T H W"], masks: Float[Array, "B O T H W"], obj_valid: Array
) -> Float[Array, ""]:
    """The authors' segmentation loss: Lovasz of the foreground class on ``sigmoid(logits)``
    over every valid object's pixels of all frames at once (``classes=[1]``, ``per_image=False``)."""
    p = jax.nn.sigmoid(logits.astype(jnp.float32))
    fg = (masks > 0.5).astype(jnp.int32)
    valid = obj_valid[:, :, None, None, None]
    # invalid objects: zero error (p = 0 on background), they add nothing to the sum
    p = jnp.where(valid, p, 0.0)
    fg = jnp.where(valid, fg, 0)
    probs = jnp.stack([1.0 - p, p], axis=0).reshape((1, 2, -1))  # one image of all pixels
    return losses.lovasz_softmax(probs, fg.reshape((1, -1)), classes=[1])


def joint_objective(
    model: Any, variables: Any, batch: Batch, rng: Array, step: Int[Array, ""] | int, *,
    options: JOINTOptions = JOINTOptions(),
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """JOINT: per-frame rollout with a template per frame, Lovasz + cosine decoupling."""
    del rng, step
    prep = prepare_batch(batch)
    T = prep.frames.shape[1]
    if T < 2:
        raise VosjaxError(f"joint objective: needs at least 2 frames per sample, the batch has {T}.")
    r = rollout(model, variables, prep, [[t] for t in range(1, T)], refit=True, options=TRAIN_OPTIONS)
    labels = take_frames(prep.labels, r.frames, 1)
    masks = take_frames(prep.masks, r.frames, 2)
    if options.lovasz == "sigmoid_fg":
        seg = lovasz_sigmoid_fg(r.logits, masks, prep.obj_valid)
    elif options.lovasz == "softmax_present":
        seg = 0.0
        for i in range(len(r.frames)):
            probs = jax.nn.softmax(r.agg[:, :, i], axis=1)  # [B, O + 1, H, W]
            seg += losses.lovasz_softmax(probs, labels[:, i], classes="present")
        seg = seg / len(r.frames)
    else:
        raise VosjaxError(
            f"joint objective: option 'lovasz' must be 'sigmoid_fg' or 'softmax_present', got "
            f"{options.lovasz!r}."
        )
    # eq. 8 on every frame's mask: ground truth for frame 0, predictions for the others
    all_masks = jnp.concatenate([prep.masks[:, :, :1], r.probs], axis=2)
    order = [0] + list(r.frames)
    frames = take_frames(prep.frames, order, 1)
    feats = {k: take_frames(v, order, 1) for k, v in r.feats.items()}
    enc = model.encode_value(variables, frames, all_masks, prep.obj_valid, feats, train=True)
    B, O = prep.obj_valid.shape
    valid = prep.obj_valid.reshape(B * O)
    cos = 0.0
    for t in range(len(order)):
        e1 = enc["e_tra"][:, :, t].reshape((B * O,) + enc["e_tra"].shape[3:])
        e2 = enc["e_ind"][:, :, t].reshape((B * O,) + enc["e_ind"].shape[3:])
        cos += losses.cosine_decoupling(e1, e2, valid)
    cos = cos / len(order)
    loss = seg + options.cosine_weight * cos
    return loss, {"lovasz": seg, "cosine": cos, "iou": hard_iou(r.probs, masks, prep.obj_valid)}
