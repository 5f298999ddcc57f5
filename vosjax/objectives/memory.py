"""Training objectives of the memory networks: STCN, TrickVOS, cyclic VOS and PCVOS.

All four run the model's own inference path (:func:`~vosjax.objectives.common.rollout`):
the reference frame (frame 0) is memorised with its ground truth, the other
frames are segmented in order, each reading a memory that holds the
reference and the previous prediction(s). With ``p(step)`` the bootstrapping
fraction of :func:`vosjax.losses.bootstrap_p_schedule` (1 before
``start_warm``, linear to ``top_p`` at ``end_warm``), ``C_t`` the aggregated
class logits and ``y_t`` the label map of frame ``t``, and ``Q`` the query
frames:

``stcn``
    ``L = mean_{t in Q} BCE_p(C_t, y_t)`` (bootstrapped cross entropy, STCN;
    the hardest pixels are kept per sample and frame as in STCN's
    model/losses.py, ``bootstrap="batch"`` ranks the whole batch; the same
    option holds for ``trickvos`` and ``pcvos``).
``trickvos``
    ``L = mean_{t in Q} [w_ce BCE_p + w_ssim (1 - SSIM) + w_iou L_IoU]``
    (TrickVOS Trick 1, eq. 1, all weights 1), SSIM / IoU on each object's
    aggregated probability map.
``cyclic``
    forward ``mean_{t in Q} [L_IoU(P_t, Y_t) + gamma BCE_p(C_t, y_t)]`` plus the
    cycle term: EVERY query frame ``t`` and its prediction (alone) form a
    cyclic reference set from which frame 0 is predicted back,
    ``(1/|Q|) sum_{t in Q} g_t [L_IoU(P_1^t, Y_1) + gamma BCE_p(C_1^t, y_1)]``
    (cyclic VOS eq. 2-6, ``L_IoU = 1 - sum min / sum max``, gamma = 1, top 40 %
    bootstrapping), as the authors' train.py:320-341 (lyxok1/STM-Training,
    branch cycle): ``g_t`` = 1 where the sample's highest object is in frame
    t's ground truth, and objects absent from frame t leave its IoU term; both
    sums are divided by T - 1 per sample, then averaged over the batch.
``pcvos``
    the query frames form ``num_clips`` clips of ``N`` frames (1 + 2N frames,
    N = 3); each clip is segmented at once (intra-clip refinement sees the
    whole clip) and the LAST frame of each clip is memorised for the next
    one (the memory update of per-clip inference). ``L = mean_clips
    L_clip + mean_{t in Q} BCE_p`` with ``L_clip = mean_b sum_k (1 - Dice_k)``
    over the clip (PCVOS eq. 5).

Gradients flow through the predicted masks into the memory (no stop-gradient),
as in STCN / STM training. The memory capacity of the model must hold the
reference plus one frame (the models' configs do).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from vosjax import losses
from vosjax.errors import VosjaxError
from vosjax.objectives.common import (
    TRAIN_OPTIONS,
    Batch,
    aggregate,
    hard_iou,
    prepare_batch,
    rollout,
    slice_feats,
    take_frames,
)

__all__ = [
    "CyclicOptions",
    "PCVOSOptions",
    "STCNOptions",
    "TrickVOSOptions",
    "cyclic_objective",
    "pcvos_objective",
    "stcn_objective",
    "trickvos_objective",
]



@dataclasses.dataclass(frozen=True)
class STCNOptions:
    """Bootstrapped CE (STCN): ``top_p`` of the pixels after ``end_warm`` steps.

    ``bootstrap``: ``"sample"`` keeps the top pixels of each sample and frame
    (STCN model/losses.py, LossComputer.compute: one BootstrappedCE call per
    sample ``j`` and frame ``i``); ``"batch"`` ranks the pixels of the whole batch.
    """

    top_p: float = 0.15
    start_warm: int = 20_000
    end_warm: int = 70_000
    bootstrap: str = "sample"

    def __post_init__(self) -> None:
        if self.bootstrap not in ("sample", "batch"):
            raise VosjaxError(
                f"objective: 'bootstrap' must be 'sample' (per sample and frame, STCN) or 'batch' "
                f"(whole batch), got {self.bootstrap!r}."
            )


@dataclasses.dataclass(frozen=True)
class TrickVOSOptions(STCNOptions):
    """Hybrid loss weights ``(ce, ssim, iou)`` on top of the bootstrapped CE."""

    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class CyclicOptions:
    """Cyclic VOS: gamma (CE weight) and the top-40 % bootstrapping from the start."""

    gamma: float = 1.0
    top_p: float = 0.4
    start_warm: int = 0
    end_warm: int = 0


@dataclasses.dataclass(frozen=True)
class PCVOSOptions(STCNOptions):
    """PCVOS per-clip training: ``num_clips`` clips after the reference, Dice weight."""

    num_clips: int = 2
    dice_weight: float = 1.0


def _p(o: Any, step: Array) -> Array:
    return losses.bootstrap_p_schedule(step, o.start_warm, o.end_warm, o.top_p)


def _gt(prep, frames: list[int]):
    """(labels [B, Tq, H, W], masks [B, O, Tq, H, W]) of the query frames in order."""
    return take_frames(prep.labels, frames, 1), take_frames(prep.masks, frames, 2)


def _per_frame_ce(agg: Array, labels: Array, p: Array, obj_valid: Array, per_sample: bool = False) -> Array:
    n = agg.shape[2]
    return sum(losses.bootstrapped_ce(agg[:, :, i], labels[:, i], p, obj_valid, per_sample)
               for i in range(n)) / n


def _check_frames(fn: str, prep, minimum: int) -> int:
    T = prep.frames.shape[1]
    if T < minimum:
        raise VosjaxError(f"{fn}: needs at least {minimum} frames per sample, the batch has {T}.")
    return T


def stcn_objective(
    model: Any, variables: Any, batch: Batch, rng: Array, step: Int[Array, ""] | int, *,
    options: STCNOptions = STCNOptions(),
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """STCN: per-frame propagation, bootstrapped cross entropy (module docstring)."""
    del rng
    prep = prepare_batch(batch)
    T = _check_frames("stcn objective", prep, 2)
    r = rollout(model, variables, prep, [[t] for t in range(1, T)], options=TRAIN_OPTIONS)
    labels, masks = _gt(prep, r.frames)
    p = _p(options, step)
    ce = _per_frame_ce(r.agg, labels, p, prep.obj_valid, options.bootstrap == "sample")
    return ce, {"ce": ce, "top_p": p, "iou": hard_iou(r.probs, masks, prep.obj_valid)}


def trickvos_objective(
    model: Any, variables: Any, batch: Batch, rng: Array, step: Int[Array, ""] | int, *,
    options: TrickVOSOptions = TrickVOSOptions(),
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """TrickVOS: per-frame propagation, hybrid loss CE + SSIM + IoU (module docstring)."""
    del rng
    prep = prepare_batch(batch)
    T = _check_frames("trickvos objective", prep, 2)
    r = rollout(model, variables, prep, [[t] for t in range(1, T)], options=TRAIN_OPTIONS)
    labels, masks = _gt(prep, r.frames)
    p = _p(options, step)
    terms = {"ce": 0.0, "ssim": 0.0, "iou_loss": 0.0}
    n = len(r.frames)
    for i in range(n):
        t = losses.hybrid_loss_terms(r.agg[:, :, i], labels[:, i], p, prep.obj_valid,
                                     options.bootstrap == "sample")
        terms["ce"] += t["ce"] / n
        terms["ssim"] += t["ssim"] / n
        terms["iou_loss"] += t["iou"] / n
    w = options.weights
    loss = w[0] * terms["ce"] + w[1] * terms["ssim"] + w[2] * terms["iou_loss"]
    return loss, {**terms, "top_p": p, "iou": hard_iou(r.probs, masks, prep.obj_valid)}


def _cycle_term(agg, probs, labels, masks, p, gamma, obj_valid, iou_valid=None):
    """``L_IoU + gamma * BCE_p`` of one frame (cyclic VOS eq. 4-5, CE bootstrapped)."""
    iou_valid = obj_valid if iou_valid is None else iou_valid
    iou = losses.cycle_mask_loss(probs, masks, gamma=0.0, valid=iou_valid)
    return iou + gamma * losses.bootstrapped_ce(agg, labels, p, obj_valid), iou


def cyclic_objective(
    model: Any, variables: Any, batch: Batch, rng: Array, step: Int[Array, ""] | int, *,
    options: CyclicOptions = CyclicOptions(),
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """Cyclic VOS: forward propagation, then frame 0 predicted back from every query frame."""
    del rng
    prep = prepare_batch(batch)
    T = _check_frames("cyclic objective", prep, 2)
    r = rollout(model, variables, prep, [[t] for t in range(1, T)], options=TRAIN_OPTIONS)
    labels, masks = _gt(prep, r.frames)
    p = _p(options, step)
    forward, fwd_iou = 0.0, 0.0
    n = len(r.frames)
    for i in range(n):
        term, iou = _cycle_term(r.agg[:, :, i], r.probs[:, :, i], labels[:, i], masks[:, :, i],
                                p, options.gamma, prep.obj_valid)
        forward += term / n
        fwd_iou += iou / n
    # every query frame t with its prediction forms a cyclic reference set {X_t, Y_t^} that
    # predicts frame 0 back (authors' train.py:320-341)
    B, O = prep.obj_valid.shape
    h, w = r.feats["key"].shape[2:4]
    present = jnp.any(masks > 0.5, axis=(-2, -1))  # [B, O, Tq]
    last_obj = jnp.max(jnp.where(prep.obj_valid, jnp.arange(O)[None], -1), axis=1)  # [B]
    backward, back_probs_all = 0.0, []
    for i, t in enumerate(r.frames):
        memory = model.init_memory(variables, B, O, (h, w))
        memory = model.memorize(
            variables, memory, take_frames(prep.frames, [t], 1), r.probs[:, :, i:i + 1],
            prep.obj_valid, slice_feats(r.feats, [t]), jnp.ones((B,), bool), None, train=True,
        )
        back_logits = model.segment(variables, memory, slice_feats(r.feats, [0]), prep.obj_valid,
                                    TRAIN_OPTIONS)
        back_agg, back_probs = aggregate(back_logits, prep.obj_valid)
        back_probs_all.append(back_probs)
        pres = present[:, :, i]
        # counted where the sample's highest object is in frame t's ground truth
        # (train.py:328); objects absent from frame t leave the IoU term (ref=mask[t])
        gate = jnp.take_along_axis(pres, jnp.maximum(last_obj, 0)[:, None], axis=1)[:, 0]
        for b in range(B):
            term, _ = _cycle_term(
                back_agg[b:b + 1, :, 0], back_probs[b:b + 1, :, 0], prep.labels[b:b + 1, 0],
                prep.masks[b:b + 1, :, 0], p, options.gamma, prep.obj_valid[b:b + 1],
                iou_valid=prep.obj_valid[b:b + 1] & pres[b:b + 1],
            )
            backward += jnp.where(gate[b], term, 0.0) / (B * n)
    back_probs = jnp.concatenate(back_probs_all, axis=2)
    loss = forward + backward
    return loss, {
        "forward": forward,
        "backward": backward,
        "iou_loss": fwd_iou,
        "top_p": p,
        "iou": hard_iou(r.probs, masks, prep.obj_valid),
        "cycle_iou": hard_iou(back_probs, jnp.repeat(prep.masks[:, :, :1], n, axis=2),
                              prep.obj_valid),
    }


def pcvos_objective(
    model: Any, variables: Any, batch: Batch, rng: Array, step: Int[Array, ""] | int, *,
    options: PCVOSOptions = PCVOSOptions(),
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """PCVOS per-clip training: clip-by-clip with its own predictions as memory, Dice + CE."""
    del rng
    prep = prepare_batch(batch)
    T = _check_frames("pcvos objective", prep, 1 + options.num_clips)
    if (T - 1) % options.num_clips:
        raise VosjaxError(
            f"pcvos objective: {T} frames do not form a reference + {options.num_clips} clips of "
            f"equal length; set the data's clip_length / num_frames so that T = 1 + "
            f"{options.num_clips} * N."
        )
    n = (T - 1) // options.num_clips
    groups = [list(range(1 + c * n, 1 + (c + 1) * n)) for c in range(options.num_clips)]
    r = rollout(model, variables, prep, groups, options=TRAIN_OPTIONS)
    labels, masks = _gt(prep, r.frames)
    p = _p(options, step)
    ce = _per_frame_ce(r.agg, labels, p, prep.obj_valid, options.bootstrap == "sample")
    dice = 0.0
    for c in range(options.num_clips):
        sl = slice(c * n, (c + 1) * n)
        dice += losses.dice_loss_clip(r.probs[:, :, sl], masks[:, :, sl], prep.obj_valid) / options.num_clips
    loss = options.dice_weight * dice + ce
    return loss, {"ce": ce, "dice": dice, "top_p": p, "iou": hard_iou(r.probs, masks, prep.obj_valid)}
