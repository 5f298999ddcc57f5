"""Orbax checkpoints of training runs, and params-only bundles for inference.

Training checkpoints (:class:`TrainCheckpointer`) live in ``WORKDIR/checkpoints/<step>/``,
one Orbax ``CheckpointManager`` step per save, with four items:

=========  ==================  ====================================================
item       handler             content
=========  ==================  ====================================================
state      StandardSave        ``{"step", "variables", "opt_state", "rng"}``: every
                               array of the run (sharded arrays are written by the
                               processes that own them)
data       JsonSave            the data iterator state (``TrainIterator.get_state()``)
config     JsonSave            the run config (``ConfigDict.to_dict()``)
meta       JsonSave            ``{"stage", "stage_step", ...}`` (which training stage
                               the optimizer state belongs to)
=========  ==================  ====================================================

Saves are atomic (Orbax writes a temporary directory and renames it when
complete; unfinished ones are removed at the next start), so a run killed at
any moment resumes from its last complete step. Retention keeps the last
``keep`` steps AND the ``keep_best`` steps with the best ``best_metric``
(steps saved with evaluation metrics).

Bundles (:func:`export_bundle` / :func:`load_bundle`) are what inference
needs and nothing else: ``DIR/variables`` (an Orbax checkpoint of the model
variables as float32 NumPy arrays), ``DIR/config.json`` (the run config) and
``DIR/bundle.json`` (format, model name, parameter count). ``load_bundle``
rebuilds the model with ``vosjax.models.get_model(config.model)``. A bundle
may also carry the PT box tracker as ``variables["tracker"] = {"params": ...}``
(TrickVOS Trick 3); a tracker run's own bundle holds only that entry and is
read with :func:`load_variables`.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Mapping
from typing import Any, Self

import jax
import ml_collections
import numpy as np

from vosjax.config_utils import to_plain
from vosjax.errors import VosjaxError

__all__ = [
    "BUNDLE_FORMAT",
    "TrainCheckpointer",
    "config_from_json",
    "export_bundle",
    "load_bundle",
    "load_variables",
]

BUNDLE_FORMAT = "vosjax_bundle"
BUNDLE_VERSION = 1
_ITEMS = ("state", "data", "config", "meta")


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _tuples(x: Any) -> Any:
    """JSON lists back to tuples (configs use tuples for fixed-length fields)."""
    if isinstance(x, Mapping):
        return {k: _tuples(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def config_from_json(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A ConfigDict from its JSON form (lists become tuples)."""
    return ml_collections.ConfigDict(_tuples(dict(d)))


class TrainCheckpointer:
    """Save / restore complete training states under ``directory`` (see the module docstring).

    Args:
      directory: the checkpoint folder (created).
      keep: how many of the most recent steps to keep.
      keep_best: how many best-by-metric steps to keep in addition (0: none).
      best_metric: the metric name (of the ``metrics`` given to :meth:`save`).
      best_mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        keep: int = 3,
        keep_best: int = 1,
        best_metric: str = "J&F-Mean",
        best_mode: str = "max",
    ):
        ocp = _ocp()
        if keep < 1:
            raise VosjaxError(f"TrainCheckpointer: 'keep' must be >= 1, got {keep}.")
        if keep_best < 0:
            raise VosjaxError(f"TrainCheckpointer: 'keep_best' must be >= 0, got {keep_best}.")
        if best_mode not in ("max", "min"):
            raise VosjaxError(f"TrainCheckpointer: 'best_mode' must be 'max' or 'min', got {best_mode!r}.")
        self.directory = pathlib.Path(directory).resolve()
        self.best_metric = best_metric

        def metric(m):
            return float(m[best_metric])

        policies = [ocp.checkpoint_managers.LatestN(n=keep)]
        if keep_best:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=metric,
                    reverse=best_mode == "min",
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            best_fn=metric,
            best_mode=best_mode,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
        )
        self._mngr = ocp.CheckpointManager(self.directory, item_names=_ITEMS, options=options)
        # Orbax removes unfinished saves in a background thread and only waits for it
        # before the next save; wait now so a restart starts from a clean directory.
        wait = getattr(self._mngr, "_maybe_await_cleanup_tmp_directory", None)
        if wait is not None:
            wait()

    # -- queries -------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """The newest complete step, or None."""
        return self._mngr.latest_step()

    def best_step(self) -> int | None:
        """The saved step with the best metric (None if no step has metrics)."""
        steps = [s for s in self._mngr.all_steps() if self._mngr.metrics(s) is not None]
        return self._mngr.best_step() if steps else None

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def metrics(self, step: int) -> dict | None:
        return self._mngr.metrics(step)

    # -- save / restore ------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: Any,
        data_state: Mapping[str, Any],
        config: ml_collections.ConfigDict | Mapping[str, Any],
        meta: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Write step ``step`` (all processes must call this). False if it already exists."""
        ocp = _ocp()
        if step in self._mngr.all_steps():
            return False
        meta = dict(to_plain(meta), saved_at=time.time())
        if metrics is not None:
            metrics = {k: float(v) for k, v in metrics.items()}
            if self.best_metric not in metrics:
                raise VosjaxError(
                    f"TrainCheckpointer.save: metrics {sorted(metrics)} lack the tracked "
                    f"'{self.best_metric}'."
                )
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(to_plain(dict(data_state))),
            config=ocp.args.JsonSave(to_plain(config)),
            meta=ocp.args.JsonSave(meta),
        )
        saved = self._mngr.save(int(step), args=args, metrics=metrics, force=True)
        self._mngr.wait_until_finished()
        return bool(saved)

    def restore_json(self, step: int) -> dict[str, Any]:
        """The JSON items ``{"data", "config", "meta"}`` of ``step`` (no arrays read)."""
        ocp = _ocp()
        self._check_step(step)
        out = self._mngr.restore(
            int(step),
            args=ocp.args.Composite(
                data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()
            ),
        )
        return {k: out[k] for k in ("data", "config", "meta")}

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """The ``state`` item of ``step``, placed as ``abstract_state`` says.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings
        (``jax.eval_shape`` of the state initialiser plus the run's shardings).
        """
        ocp = _ocp()
        self._check_step(step)
        try:
            out = self._mngr.restore(
                int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except (ValueError, KeyError, TypeError) as e:
            raise VosjaxError(
                f"TrainCheckpointer: step {step} in {self.directory} does not match this run's "
                f"state (model / optimizer config changed?): {type(e).__name__}: {e}"
            ) from e
        return out["state"]

    def _check_step(self, step: int) -> None:
        if step not in self._mngr.all_steps():
            raise VosjaxError(
                f"TrainCheckpointer: no step {step} in {self.directory}; saved steps: "
                f"{self.all_steps()}."
            )

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- bundles


def export_bundle(
    directory: str | pathlib.Path,
    config: ml_collections.ConfigDict | Mapping[str, Any],
    variables: Mapping[str, Any],
    *,
    overwrite: bool = True,
) -> pathlib.Path:
    """Write the params-only bundle ``directory`` (see the module docstring); returns its path.

    ``variables`` are gathered to the host (all processes must call this when
    they are sharded); process 0 writes. ``config`` must hold a ``model``
    section (what :func:`load_bundle` rebuilds the model from).
    """
    from vosjax.parallel import to_host

    ocp = _ocp()
    cfg = to_plain(config)
    if not isinstance(cfg, dict) or "model" not in cfg or "name" not in (cfg.get("model") or {}):
        raise VosjaxError("export_bundle: 'config' needs a model section with a name (config.model.name).")
    out = pathlib.Path(directory).resolve()
    if out.exists() and not out.is_dir():
        raise VosjaxError(f"export_bundle: {out} exists and is not a directory.")
    if (out / "variables").exists() and not overwrite:
        raise VosjaxError(f"export_bundle: {out} already holds a bundle; pass overwrite=True or another directory.")
    host = to_host(dict(variables))
    host = jax.tree_util.tree_map(
        lambda a: np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a),
        host,
    )
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bundle.json").unlink(missing_ok=True)  # written last: marks a complete bundle
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out / "variables", host, force=True)
        ckptr.wait_until_finished()
    if jax.process_index() == 0:
        (out / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
        n_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(host.get("params", {}))))
        meta = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "model": cfg["model"]["name"],
            "num_params": n_params,
            "collections": sorted(host),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (out / "bundle.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def _read_json(path: pathlib.Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise VosjaxError(
            f"load_bundle: {path} not found; {path.parent} is not (or not completely) a vosjax "
            "bundle. Export one with `python -m vosjax.train ... ` (it writes WORKDIR/bundle) or "
            "vosjax.checkpoint.export_bundle."
        ) from e
    except json.JSONDecodeError as e:
        raise VosjaxError(f"load_bundle: {path} ({what}) is not valid JSON: {e}.") from e


def load_variables(directory: str | pathlib.Path) -> tuple[dict[str, Any], ml_collections.ConfigDict]:
    """``(variables, config)`` of a bundle, variables as host NumPy arrays (no model built)."""
    ocp = _ocp()
    root = pathlib.Path(directory).resolve()
    meta = _read_json(root / "bundle.json", "bundle description")
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise VosjaxError(f"load_bundle: {root / 'bundle.json'} is not a vosjax bundle description.")
    if meta.get("version") != BUNDLE_VERSION:
        raise VosjaxError(
            f"load_bundle: {root} has bundle version {meta.get('version')!r}; this vosjax reads "
            f"version {BUNDLE_VERSION}. Re-export it."
        )
    config = config_from_json(_read_json(root / "config.json", "run config"))
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(root / "variables")
    return dict(variables), config


def load_bundle(directory: str | pathlib.Path) -> tuple[Any, dict[str, Any], ml_collections.ConfigDict]:
    """``(model, variables, config)`` from a bundle written by :func:`export_bundle`.

    ``model = vosjax.models.get_model(config.model)``; ``variables`` are
    float32 ``jax.Array`` s on the default device. The parameter tree is
    checked against the model's own (``jax.eval_shape`` of ``model.init``);
    a mismatch names the differing entries.
    """
    from vosjax.models import get_model

    variables, config = load_variables(directory)
    model = get_model(config.model)
    _check_against_model(model, variables, directory)
    return model, jax.tree_util.tree_map(jax.numpy.asarray, variables), config


def _check_against_model(model: Any, variables: Mapping[str, Any], directory: Any) -> None:
    expected = abstract_model_variables(model)
    if expected is None:
        return
    own = {k: v for k, v in variables.items() if k != "tracker"}  # the PT tracker rides along
    got = {"/".join(str(getattr(k, "key", k)) for k in p): tuple(np.shape(v))
           for p, v in jax.tree_util.tree_leaves_with_path(own)}
    want = {"/".join(str(getattr(k, "key", k)) for k in p): tuple(v.shape)
            for p, v in jax.tree_util.tree_leaves_with_path(dict(expected))}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + ", ".join(f"{k}: {got[k]} vs {want[k]}" for k in shapes[:5]))
        raise VosjaxError(
            f"load_bundle: the variables in {directory} do not fit model {model.name!r} built from "
            f"its config.json ({'; '.join(parts)}); the bundle and its config disagree."
        )


def abstract_model_variables(model: Any, size: int = 64, num_objects: int = 1) -> Any:
    """``jax.eval_shape`` of ``model.init`` on a small example (shapes only, no compute)."""
    import jax.numpy as jnp

    frames = jax.ShapeDtypeStruct((1, 2, size, size, 3), jnp.float32)
    masks = jax.ShapeDtypeStruct((1, num_objects, 2, size, size), jnp.float32)
    valid = jax.ShapeDtypeStruct((1, num_objects), jnp.bool_)
    return jax.eval_shape(model.init, jax.random.key(0), frames, masks, valid)
