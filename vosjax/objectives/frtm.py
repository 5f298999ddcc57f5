"""FRTM's training objective (FRTM sec. 3.3).

A sample is one reference frame and ``T - 1`` validation frames of the same
video. Inside the step the target model ``D(x; w)`` is fitted on the
reference frame alone (the model's ``memorize`` runs the Gauss-Newton / CG
learner on the reference's features and ground truth; no memory update
afterwards), then the full network segments the validation frames with that
target model, and the loss is the binary cross entropy of each object's
logits ``z`` against its ground-truth mask ``y``::

    L = mean over valid objects, validation frames and pixels of
        -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]

Only the segmentation network learns: the backbone is frozen (the model stops
its gradient; the configs also freeze it in the optimizer).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from vosjax.errors import VosjaxError
from vosjax.objectives.common import (
    TRAIN_OPTIONS,
    Batch,
    hard_iou,
    prepare_batch,
    rollout,
    take_frames,
)

__all__ = ["FRTMOptions", "frtm_objective"]


@dataclasses.dataclass(frozen=True)
class FRTMOptions:
    """FRTM has no loss options (BCE); the class exists so that typos are caught."""


def frtm_objective(
    model: Any, variables: Any, batch: Batch, rng: Array, step: Int[Array, ""] | int, *,
    options: FRTMOptions = FRTMOptions(),
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """FRTM: target model fitted on the reference, BCE on the validation frames."""
    del rng, step, options
    prep = prepare_batch(batch)
    T = prep.frames.shape[1]
    if T < 2:
        raise VosjaxError(f"frtm objective: needs a reference and >= 1 validation frame, got {T} frames.")
    r = rollout(model, variables, prep, [list(range(1, T))], refit=True, update_memory=False,
                options=TRAIN_OPTIONS)
    masks = take_frames(prep.masks, r.frames, 2)
    bce = optax.sigmoid_binary_cross_entropy(r.logits, masks)  # [B, O, T-1, H, W]
    per_obj = jnp.mean(bce, axis=(2, 3, 4))
    valid = prep.obj_valid
    loss = jnp.sum(jnp.where(valid, per_obj, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    probs = jnp.where(valid[:, :, None, None, None], jnp.asarray(r.logits > 0, jnp.float32), 0.0)
    return loss, {"bce": loss, "iou": hard_iou(probs, masks, valid)}
