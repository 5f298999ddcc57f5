"""Optimizers of a training stage from its ``optim`` config section.

============== ==============================================================
field          meaning
============== ==============================================================
name           ``"adam"``: Adam with PyTorch-style (coupled) L2 weight decay,
               ``g <- g + wd * p`` before the moments (what the papers' PyTorch
               code does with ``torch.optim.Adam(weight_decay=wd)``);
               ``"adamw"``: decoupled decay, ``p <- p - lr (adam(g) + wd p)``
lr             peak learning rate
weight_decay   wd above (0: none)
b1, b2, eps    Adam's moment decays and epsilon
schedule       ``"constant"``, ``"cosine"`` (to ``lr * final_lr_fraction``),
               ``"linear"`` (likewise), ``"piecewise"`` (``lr`` times
               ``decay_factor`` at each of ``decay_steps``)
warmup_steps   linear warm-up from 0 before the schedule (0: none)
decay_steps    piecewise boundaries, in steps of the stage
decay_factor   piecewise multiplier per boundary
final_lr_fraction  end value of cosine / linear schedules, as a fraction of lr
clip_norm      clip the global gradient norm (over trained parameters) to this
               value (0: off)
freeze         regexes over parameter paths (``"key_encoder/backbone/conv1/kernel"``):
               matching parameters are not trained (``re.search``)
freeze_until   > 0: the frozen parameters start training at this step of the
               stage with a fresh optimizer state (JOINT trains its backbone
               after 90k of 180k iterations); <= 0: frozen for the whole stage
============== ==============================================================

Frozen groups are an ``optax.multi_transform`` over the labels ``"train"``,
``"frozen"`` and ``"delayed"``: frozen parameters get ``optax.set_to_zero()``
(no update, no weight decay, no optimizer moments), delayed ones an optimizer
that outputs zeros and keeps its state untouched until ``freeze_until``. The
gradients of frozen parameters are removed before clipping, so they do not
count in the global norm.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vosjax.config_utils import check_fields
from vosjax.errors import VosjaxError

__all__ = ["OPTIM_FIELDS", "default_optim", "frozen_until", "make_optimizer", "make_schedule", "param_labels"]

OPTIM_FIELDS = {
    "name": "adam",
    "lr": 1e-5,
    "weight_decay": 0.0,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "schedule": "constant",
    "warmup_steps": 0,
    "decay_steps": (),
    "decay_factor": 0.1,
    "final_lr_fraction": 0.0,
    "clip_norm": 0.0,
    "freeze": (),
    "freeze_until": 0,
}

SCHEDULES = ("constant", "cosine", "linear", "piecewise")


def default_optim(**overrides: Any) -> dict[str, Any]:
    """The optim section with every field (defaults above), updated by ``overrides``."""
    check_fields(overrides, OPTIM_FIELDS, "optim")
    return {**OPTIM_FIELDS, **overrides}


def _get(cfg: Any, where: str) -> dict[str, Any]:
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    check_fields(d, OPTIM_FIELDS, where)
    return {**OPTIM_FIELDS, **d}


def make_schedule(cfg: Any, total_steps: int, where: str = "optim") -> optax.Schedule:
    """Learning rate as a function of the stage's step (see the module docstring)."""
    c = _get(cfg, where)
    lr = float(c["lr"])
    if not lr > 0:
        raise VosjaxError(f"config: '{where}.lr' must be positive, got {lr}.")
    warm = int(c["warmup_steps"])
    if warm < 0:
        raise VosjaxError(f"config: '{where}.warmup_steps' must be >= 0, got {warm}.")
    rest = max(int(total_steps) - warm, 1)
    kind = c["schedule"]
    end = lr * float(c["final_lr_fraction"])
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(lr, rest, alpha=float(c["final_lr_fraction"]))
    elif kind == "linear":
        main = optax.linear_schedule(lr, end, rest)
    elif kind == "piecewise":
        bounds = [int(b) - warm for b in c["decay_steps"]]
        if any(b <= 0 for b in bounds) or bounds != sorted(bounds):
            raise VosjaxError(
                f"config: '{where}.decay_steps' must be increasing steps after warmup_steps, got "
                f"{tuple(c['decay_steps'])}."
            )
        main = optax.piecewise_constant_schedule(lr, {b: float(c["decay_factor"]) for b in bounds})
    else:
        raise VosjaxError(f"config: '{where}.schedule' must be one of {SCHEDULES}, got {kind!r}.")
    if warm:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])
    return main


def _path(p) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p)


def param_labels(params: Any, freeze: tuple[str, ...], delayed: bool, where: str = "optim") -> Any:
    """``"train"`` / ``"frozen"`` / ``"delayed"`` per leaf of ``params`` (a pytree like them)."""
    patterns = []
    for text in freeze:
        try:
            patterns.append(re.compile(text))
        except re.error as e:
            raise VosjaxError(f"config: '{where}.freeze' entry {text!r} is not a regex: {e}.") from e
    paths = [_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    for pat in patterns:
        if not any(pat.search(p) for p in paths):
            tops = sorted({p.split("/")[0] for p in paths})
            raise VosjaxError(
                f"config: '{where}.freeze' pattern {pat.pattern!r} matches no parameter; parameter "
                f"paths look like {paths[:3]} (top-level modules: {tops})."
            )
    tag = "delayed" if delayed else "frozen"
    return jax.tree_util.tree_map_with_path(
        lambda p, _: tag if any(pat.search(_path(p)) for pat in patterns) else "train", params
    )


class _UntilState(NamedTuple):
    count: jax.Array
    inner: Any


def frozen_until(inner: optax.GradientTransformation, step: int) -> optax.GradientTransformation:
    """``inner`` that outputs zero updates, leaving its state untouched, for the first ``step`` calls."""

    def init(params):
        return _UntilState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        new_updates, new_inner = inner.update(updates, state.inner, params)
        live = state.count >= step
        updates = jax.tree_util.tree_map(lambda u: jnp.where(live, u, jnp.zeros_like(u)), new_updates)
        kept = jax.tree_util.tree_map(lambda n, o: jnp.where(live, n, o), new_inner, state.inner)
        return updates, _UntilState(optax.safe_increment(state.count), kept)

    return optax.GradientTransformation(init, update)


def make_optimizer(
    cfg: Any, params: Any, total_steps: int, where: str = "optim"
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, learning-rate schedule)`` for a stage of ``total_steps`` steps."""
    c = _get(cfg, where)
    schedule = make_schedule(c, total_steps, where)
    name = c["name"]
    wd = float(c["weight_decay"])
    if wd < 0:
        raise VosjaxError(f"config: '{where}.weight_decay' must be >= 0, got {wd}.")
    adam = optax.scale_by_adam(b1=float(c["b1"]), b2=float(c["b2"]), eps=float(c["eps"]))
    if name == "adam":
        parts = ([optax.add_decayed_weights(wd)] if wd else []) + [adam, optax.scale_by_learning_rate(schedule)]
        opt = optax.chain(*parts)
    elif name == "adamw":
        opt = optax.adamw(schedule, b1=float(c["b1"]), b2=float(c["b2"]), eps=float(c["eps"]), weight_decay=wd)
    else:
        raise VosjaxError(f"config: '{where}.name' must be 'adam' or 'adamw', got {name!r}.")
    freeze = tuple(c["freeze"])
    until = int(c["freeze_until"])
    if until >= total_steps:
        raise VosjaxError(
            f"config: '{where}.freeze_until' = {until} is past the end of the stage ({total_steps} "
            "steps); use 0 to freeze for the whole stage."
        )
    labels = param_labels(params, freeze, delayed=until > 0, where=where)
    gate = {"train": optax.identity(), "frozen": optax.set_to_zero()}
    update = {"train": opt, "frozen": optax.set_to_zero()}
    if until > 0:
        gate["delayed"] = frozen_until(optax.identity(), until)
        update["delayed"] = frozen_until(opt, until)
    chain = [optax.multi_transform(gate, labels)]
    clip = float(c["clip_norm"])
    if clip < 0:
        raise VosjaxError(f"config: '{where}.clip_norm' must be >= 0, got {clip}.")
    if clip:
        chain.append(optax.clip_by_global_norm(clip))
    chain.append(optax.multi_transform(update, labels))
    return optax.chain(*chain), schedule
