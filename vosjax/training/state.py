"""The train state, how its variables are initialised, and the jitted train step.

The state is a plain dict pytree (what Orbax saves and the mesh shards)::

    {"step": int32[], "variables": {"params": ..., "batch_stats": ...},
     "opt_state": optax state of the current stage, "rng": uint32[2] raw key data}

Initialisation (:func:`init_variables`): ``model.init`` on a zero example of
the stage's batch shape (seeded by ``config.seed``), then

1. ImageNet backbones (``config.init.backbones``, unless ``init.from_scratch``;
   :func:`vosjax.training.weights.check_backbones`): for each ``name -> folder``,
   the converted backbone (``tools/convert_torch_weights.py``;
   :func:`vosjax.models.torch_import.load_backbone_checkpoint`) replaces the
   variables at ``model.backbone_paths()[name]`` (``params`` and
   ``batch_stats``); architecture, input channels and every shape must match.
2. Parameters from another run (``config.init.checkpoint``, a bundle): the
   leaves whose path matches one of ``config.init.include`` (all when empty)
   are copied, everything else keeps its fresh initialisation. Patterns
   match ``"collection/module/.../leaf"`` paths; ``"@decoder"`` stands for the
   model's ``decoder_paths()``, so TrickVOS' decoder pretraining (Trick 2) is
   ``include = ("@decoder",)``.

The train step (:func:`make_train_step`) is one ``jax.jit`` with explicit
shardings: state replicated (or FSDP-sharded), batch split over the data
axis. It computes ``(loss, metrics), grads = value_and_grad(objective)``,
applies the optax update, and (for models that train batch-norm statistics)
moves the running statistics with ``model.update_batch_stats``.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vosjax import methods
from vosjax.errors import VosjaxError
from vosjax.objectives.common import prepare_batch
from vosjax.training.weights import check_backbones

__all__ = [
    "abstract_state",
    "build_model",
    "copy_from_bundle",
    "example_inputs",
    "init_state",
    "init_variables",
    "load_backbones",
    "make_train_step",
    "path_str",
]


def build_model(model_config: Any) -> Any:
    """The model of a run: the class the method's record names (:mod:`vosjax.methods`)."""
    name = model_config.get("name") if hasattr(model_config, "get") else None
    return methods.get_method(name, "model.name").model_class()(model_config)


def path_str(path: tuple) -> str:
    """``"key_encoder/conv1/kernel"`` for a pytree key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def example_inputs(data_cfg: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Zero ``(frames [1,T,H,W,3], masks [1,O,T,H,W], obj_valid [1,O])`` shaped like the stage's data."""
    T = data_cfg.frames_per_sample
    H, W = data_cfg.crop_size
    O = data_cfg.max_objects
    return (
        jnp.zeros((1, T, H, W, 3), jnp.float32),
        jnp.zeros((1, O, T, H, W), jnp.float32),
        jnp.ones((1, O), bool),
    )


def _get_path(tree: Mapping[str, Any], path: tuple[str, ...], what: str) -> Any:
    node = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            raise VosjaxError(f"init: the model has no {what} at {'/'.join(path)}.")
        node = node[key]
    return node


def _set_path(tree: dict, path: tuple[str, ...], value: Any) -> dict:
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _set_path(dict(tree.get(path[0], {})), path[1:], value)
    return out


def _same_shapes(a: Any, b: Any) -> list[str]:
    fa = {path_str(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(a)}
    fb = {path_str(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(b)}
    bad = sorted(set(fa) ^ set(fb))
    bad += sorted(k for k in set(fa) & set(fb) if fa[k] != fb[k])
    return bad


def load_backbones(model: Any, variables: dict, backbones: Mapping[str, str]) -> dict:
    """``variables`` with the converted ImageNet backbones of ``backbones`` grafted in."""
    if not backbones:
        return variables
    from vosjax.models.torch_import import load_backbone_checkpoint, load_backbone_metadata

    table = model.backbone_paths() if hasattr(model, "backbone_paths") else {}
    for name, folder in backbones.items():
        if name not in table:
            raise VosjaxError(
                f"config: init.backbones names {name!r}, but model {model.name!r} has backbones "
                f"{sorted(table) or '(none)'}."
            )
        path, arch, in_ch = table[name]
        meta = load_backbone_metadata(folder)
        if meta["arch"] != arch or int(meta["in_channels"]) != int(in_ch):
            raise VosjaxError(
                f"init: backbone {name!r} needs a converted {arch} with in_channels={in_ch}, but "
                f"{folder} holds {meta['arch']} with in_channels={meta['in_channels']}; convert it "
                f"with tools/convert_torch_weights.py --arch {arch} --in-channels {in_ch} "
                "--stop-at s16."
            )
        loaded = load_backbone_checkpoint(folder)
        for coll in ("params", "batch_stats"):
            if coll not in variables or coll not in loaded:
                continue
            current = _get_path(variables[coll], tuple(path), f"{coll} of backbone {name!r}")
            bad = _same_shapes(current, loaded[coll])
            if bad:
                raise VosjaxError(
                    f"init: the converted backbone in {folder} does not fit {name!r} "
                    f"({coll}: {bad[:5]}); convert it with --stop-at matching the model (s16)."
                )
            cast = jax.tree_util.tree_map(lambda new, old: jnp.asarray(new, old.dtype), loaded[coll], current)
            variables = {**variables, coll: _set_path(dict(variables[coll]), tuple(path), cast)}
    return variables


def _bundle_dir(path: str) -> pathlib.Path:
    p = pathlib.Path(path)
    if (p / "bundle.json").is_file():
        return p
    if (p / "bundle" / "bundle.json").is_file():
        return p / "bundle"
    raise VosjaxError(
        f"config: init.checkpoint={path!r} is neither a bundle folder nor a run workdir with a "
        "bundle/ (runs export one at the end); point it at WORKDIR/bundle of the earlier run."
    )


def copy_from_bundle(variables: dict, path: str, include: tuple[str, ...]) -> tuple[dict, int]:
    """``variables`` with the leaves matching ``include`` copied from a bundle; ``(new, count)``."""
    from vosjax.checkpoint import load_variables

    source, _ = load_variables(_bundle_dir(path))
    patterns = [re.compile(p) for p in include]
    flat_src = {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(dict(source))}
    copied = 0
    used = [False] * len(patterns)

    def one(p, old):
        nonlocal copied
        key = path_str(p)
        hits = [i for i, pat in enumerate(patterns) if pat.search(key)] if patterns else [0]
        if not hits:
            return old
        for i in hits:
            if patterns:
                used[i] = True
        if key not in flat_src:
            raise VosjaxError(f"init: {key!r} is not in the checkpoint {path}; narrow init.include.")
        new = np.asarray(flat_src[key])
        if new.shape != old.shape:
            raise VosjaxError(
                f"init: {key!r} has shape {new.shape} in {path} but {old.shape} in this model; the "
                "two model configs differ there."
            )
        copied += 1
        return jnp.asarray(new, old.dtype)

    out = jax.tree_util.tree_map_with_path(one, dict(variables))
    for pat, u in zip(patterns, used):
        if not u:
            raise VosjaxError(
                f"init: init.include pattern {pat.pattern!r} matches no variable of the model "
                f"(paths look like {list(flat_src)[:3]})."
            )
    return out, copied


def expand_include(model: Any, include: tuple[str, ...]) -> tuple[str, ...]:
    """``init.include`` with ``"@decoder"`` replaced by regexes of ``model.decoder_paths()``.

    Patterns match variable paths ``"collection/module/.../leaf"`` (e.g.
    ``"params/decoder/up_16_8/conv1/kernel"``).
    """
    out = []
    for pat in include:
        if pat == "@decoder":
            if not hasattr(model, "decoder_paths"):
                raise VosjaxError(f"config: init.include '@decoder': model {model.name!r} names no decoder.")
            out += [f"^[^/]+/{re.escape('/'.join(p))}/" for p in model.decoder_paths()]
        elif pat.startswith("@"):
            raise VosjaxError(f"config: init.include {pat!r}: the only named group is '@decoder'.")
        else:
            out.append(pat)
    return tuple(out)


def init_variables(model: Any, config: Any, data_cfg: Any, log: Callable[[str], None] = print) -> dict:
    """Fresh variables of ``model`` for ``data_cfg``'s batch shape, then the config's inits."""
    rng = jax.random.fold_in(jax.random.key(int(config.seed)), 0)
    frames, masks, valid = example_inputs(data_cfg)
    variables = dict(jax.jit(model.init)(rng, frames, masks, valid))
    init = config.get("init", {}) or {}
    backbones = check_backbones(config, model)  # {} with init.from_scratch
    if backbones:
        variables = load_backbones(model, variables, backbones)
        log(f"init: ImageNet backbones {', '.join(f'{k} <- {v}' for k, v in backbones.items())}")
    if init.get("checkpoint"):
        include = expand_include(model, tuple(init.get("include", ()) or ()))
        variables, n = copy_from_bundle(variables, init["checkpoint"], include)
        log(f"init: {n} arrays from {init['checkpoint']} ({'matching ' + str(include) if include else 'all'})")
    return variables


def init_state(variables: dict, tx: optax.GradientTransformation, seed: int, step: int = 0) -> dict:
    """A new state at global ``step``: ``variables``, a fresh optimizer state, the run's RNG."""
    rng = jax.random.key_data(jax.random.fold_in(jax.random.key(int(seed)), 1 + int(step)))
    return {
        "step": jnp.asarray(step, jnp.int32),
        "variables": variables,
        "opt_state": tx.init(variables["params"]),
        "rng": rng,
    }


def abstract_state(variables: Any, tx: optax.GradientTransformation, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` pytree of the state (for restoring) with ``shardings`` attached."""
    shapes = jax.eval_shape(lambda v: init_state(v, tx, 0), variables)
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )


def make_train_step(
    model: Any,
    objective: Callable[..., Any],
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    stage_start: int,
    state_sharding: Any,
    batch_sharding: Any,
    metrics_sharding: Any,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """The jitted ``step(state, batch) -> (state, metrics)`` of one stage (module docstring)."""
    train_bn = bool(getattr(getattr(model, "spec", None), "train_bn", False))

    def step_fn(state, batch):
        key = jax.random.wrap_key_data(state["rng"])
        key, sub = jax.random.split(key)
        stage_step = state["step"] - stage_start
        variables = state["variables"]
        rest = {k: v for k, v in variables.items() if k != "params"}

        def loss_fn(params):
            return objective(model, {**rest, "params": params}, batch, sub, stage_step)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        new_vars = {**rest, "params": params}
        if train_bn and hasattr(model, "update_batch_stats"):
            prep = prepare_batch(batch)
            new_vars = dict(model.update_batch_stats(new_vars, prep.frames, prep.masks, prep.obj_valid))
        metrics = {
            **metrics,
            "loss": loss,
            "lr": schedule(stage_step),
            "grad_norm": optax.tree.norm(grads),
        }
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new_state = {
            "step": state["step"] + 1,
            "variables": new_vars,
            "opt_state": opt_state,
            "rng": jax.random.key_data(key),
        }
        return new_state, metrics

    return jax.jit(
        step_fn,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, metrics_sharding),
        donate_argnums=(0,),
    )
