"""Training the parametric box tracker of TrickVOS (Trick 3, PT) on ground-truth boxes.

The tracker is trained separately from any segmentation network (TrickVOS
sec. 4.1), on box tracks read from ground-truth masks: a sample holds ``T``
consecutive frames, ``BB(t) = mask_to_box(Y_t)`` per object, and for every
``t >= 2`` the tracker predicts ``BB^(t) = BB(t-1) + MLP(BB(t-1) - BB(t-2))``
(:func:`vosjax.models.tracker.predict_boxes`). The loss is
:func:`vosjax.models.tracker.tracker_loss`: the L1 distance over ``(x, y, w, h)``
with weight ``under_weight`` (2) on predictions smaller than the ground
truth (``w^ < w`` or ``h^ < h``), averaged over the boxes whose three
ground-truth boxes are non-empty (object present) and whose slot is valid.

:class:`TrackerModel` gives the tracker the small part of the model interface
the trainer uses (``name``, ``config``, ``init``) so that
``python -m vosjax.train --config configs/tracker.py`` trains it like any
method; its bundle holds ``{"params": ...}`` of the MLP.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from vosjax.errors import VosjaxError
from vosjax.models import tracker as tracker_lib
from vosjax.objectives.common import Batch, prepare_batch
from vosjax.ops.boxes import mask_to_box

__all__ = ["TrackerModel", "TrackerOptions", "gt_box_tracks", "tracker_objective"]


class TrackerModel:
    """The box tracker MLP as a trainable "model" (``config``: ``vosjax.models.tracker.default_config``
    fields plus ``name = "tracker"``)."""

    name = "tracker"

    def __init__(self, config: Any):
        self.config = config
        tracker_lib._settings(config)  # validates the fields

    def init(self, rng: jax.Array, frames: Any = None, masks: Any = None, obj_valid: Any = None) -> dict:
        """``{"params": ...}`` of a fresh MLP (the example inputs are not needed)."""
        del frames, masks, obj_valid
        return tracker_lib.init_tracker(rng, self.config)

    def num_params(self, variables: Any) -> int:
        return int(sum(x.size for x in jax.tree_util.tree_leaves(variables.get("params", {}))))


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
    """``under_weight``: the extra weight of predicted boxes smaller than the ground truth."""

    under_weight: float = 2.0


def gt_box_tracks(masks: jax.Array) -> jax.Array:
    """``[B, O, T, 4]`` ground-truth boxes ``[x, y, w, h]`` of per-object masks ``[B, O, T, H, W]``."""
    return mask_to_box(masks > 0.5)


def tracker_objective(
    model: Any, variables: Any, batch: Batch, rng: Array, step: Int[Array, ""] | int, *,
    options: TrackerOptions = TrackerOptions(),
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """PT tracker: one-step box prediction along ground-truth tracks, under-size weighted L1."""
    del rng, step
    prep = prepare_batch(batch)
    T = prep.frames.shape[1]
    if T < 3:
        raise VosjaxError(f"tracker objective: needs >= 3 consecutive frames per sample, got {T}.")
    boxes = gt_box_tracks(prep.masks)  # [B, O, T, 4]
    present = (boxes[..., 2] > 0) & (boxes[..., 3] > 0)  # [B, O, T]
    valid = present[..., 2:] & present[..., 1:-1] & present[..., :-2] & prep.obj_valid[:, :, None]
    pred = tracker_lib.predict_boxes(variables, boxes, model.config)
    gt = boxes[..., 2:, :]
    loss = tracker_lib.tracker_loss(pred, gt, options.under_weight, valid)
    n = jnp.maximum(jnp.sum(valid), 1)
    err = jnp.sum(jnp.where(valid[..., None], jnp.abs(pred - gt), 0.0)) / (4 * n)
    under = (pred[..., 2] < gt[..., 2]) | (pred[..., 3] < gt[..., 3])
    cv = boxes[..., 1:-1, :] + (boxes[..., 1:-1, :] - boxes[..., :-2, :])  # constant velocity
    cv_err = jnp.sum(jnp.where(valid[..., None], jnp.abs(cv - gt), 0.0)) / (4 * n)
    return loss, {
        "l1_px": err,
        "cv_l1_px": cv_err,
        "under_fraction": jnp.sum(under & valid) / n,
        "boxes": jnp.sum(valid).astype(jnp.float32),
    }
