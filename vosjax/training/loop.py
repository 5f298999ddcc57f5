"""The training loop behind ``python -m vosjax.train``: stages, steps, logging, evaluation, checkpoints.

:class:`Run` holds what lives for the whole run (mesh, model, checkpoint
manager, metric writer) and goes through it in three phases:

1. :meth:`Run.start`: resume from the newest checkpoint of the workdir if
   there is one (its ``meta`` names the stage the optimizer state belongs
   to), else initialise the variables (ImageNet backbones, partial init from
   another run: :mod:`vosjax.training.state`).
2. :meth:`Run.stage` for every stage in order: a fresh optimizer and data
   pipeline (the stage's schedule restarts at 0), or those restored from the
   checkpoint; then the steps. After each step: metrics averaged over the
   logging window (JSONL + TensorBoard + tqdm), evaluation every
   ``eval.every_steps`` and at the end, a checkpoint every
   ``checkpoint.every_steps``, at the end of each stage and with every
   evaluation (so the best-by-metric retention sees them).
3. :meth:`Run.finish`: final evaluation and baseline, the bundle, and a
   one-screen summary.

The global step counts across stages; the RNG key lives in the state and
is carried from stage to stage, so a resumed run draws exactly the numbers
the uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from vosjax import methods, parallel
from vosjax.checkpoint import TrainCheckpointer, export_bundle, load_variables
from vosjax.config_utils import to_plain
from vosjax.data import make_source, make_train_pipeline
from vosjax.errors import VosjaxError
from vosjax.objectives import make_objective
from vosjax.training import evaluation
from vosjax.training.metric_writer import MetricWriter
from vosjax.training.optim import make_optimizer
from vosjax.training.schema import data_pipeline_config, stage_list
from vosjax.training.weights import check_backbones
from vosjax.training.state import (
    abstract_state,
    build_model,
    example_inputs,
    init_state,
    init_variables,
    make_train_step,
)

__all__ = ["Run", "bundle_variables"]

_EVAL_KEYS = ("J&F-Mean", "J-Mean", "F-Mean")


def _fmt(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


def bundle_variables(model: Any, variables: Any, config: Any) -> dict:
    """What the bundle holds: the model's variables, plus ``"tracker"`` (the PT box tracker's
    ``{"params"}``) from ``config.export.tracker``. A method whose record sets ``bundle_key``
    (an add-on such as the tracker) stores its variables under that key instead: a tracker
    run's bundle is ``{"tracker": {"params"}}``, the layout the inference engine reads."""
    key = methods.get_method(model.name, "model.name").bundle_key
    if key is not None:
        return {key: dict(variables)}
    out = dict(variables)
    if config.export.get("tracker"):
        tracker, _ = load_variables(config.export.tracker)
        if "tracker" not in tracker:
            raise VosjaxError(
                f"config: export.tracker={config.export.tracker!r} is not the bundle of a tracker "
                "run (configs/tracker.py); it has no 'tracker' variables."
            )
        out["tracker"] = tracker["tracker"]
    return out


class Run:
    """One training run of ``config`` in ``workdir`` (see the module docstring)."""

    def __init__(self, config: Any, workdir: str | pathlib.Path, log: Callable[[str], None] | None = None):
        from tqdm import tqdm

        self.config = config
        self.is_main = jax.process_index() == 0
        if log is None:
            log = (lambda msg: tqdm.write(msg, file=sys.stdout)) if self.is_main else (lambda msg: None)
        self.log = log
        self.workdir = pathlib.Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        n_dev = int(config.parallel.num_devices)
        if n_dev and jax.process_count() > 1:
            raise VosjaxError("config: parallel.num_devices applies to single-process runs only; use 0.")
        self.mesh = parallel.make_mesh(jax.local_devices()[:n_dev] if n_dev else None)
        self.model = build_model(config.model)
        self.stages = stage_list(config)
        self.bounds, total = [], 0
        for _, st in self.stages:
            self.bounds.append((total, total + int(st.steps)))
            total += int(st.steps)
        self.total = total
        ck = config.checkpoint
        self.ckpt = TrainCheckpointer(self.workdir / "checkpoints", keep=int(ck.keep),
                                      keep_best=int(ck.keep_best), best_metric=str(ck.best_metric))
        self.writer = MetricWriter(self.workdir, enabled=self.is_main)
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] | None = None
        self.last_eval_step = -1
        self.steps_run = 0
        self.t_start = time.time()
        self.resume_stage: int | None = None
        self.resume_step: int | None = None
        self.resume_json: dict | None = None
        log(
            f"vosjax.train: {config.model.name} / objective {config.objective.name}, stages "
            f"{', '.join(f'{n}({s.steps})' for n, s in self.stages)}, {self.mesh.devices.size} "
            f"device(s) on {jax.process_count()} process(es) -> {self.workdir}"
        )
        if self.is_main:
            (self.workdir / "config.json").write_text(json.dumps(to_plain(config), indent=1, sort_keys=True) + "\n")

    # -- phase 1 ---------------------------------------------------------------------------
    def start(self) -> Any:
        """The variables to start from: fresh, or abstract shapes when a checkpoint will be restored."""
        latest = self.ckpt.latest_step()
        first = data_pipeline_config(self.stages[0][1], self.stages[0][1].steps)
        if latest is None:
            check_backbones(self.config, self.model)  # before any data is read or compiled
            variables = init_variables(self.model, self.config, first, self.log)
        else:
            self.resume_json = self.ckpt.restore_json(latest)
            saved = self.resume_json["meta"].get("stage")
            names = [n for n, _ in self.stages]
            if saved not in names:
                raise VosjaxError(
                    f"vosjax.train: the checkpoint at step {latest} in {self.workdir} belongs to "
                    f"stage {saved!r}, which this config does not run ({names}); use a new workdir."
                )
            self.resume_stage, self.resume_step = names.index(saved), int(latest)
            self.log(f"resume: step {latest} (stage {saved!r}) from {self.ckpt.directory}")
            # shapes only: the checkpoint provides the values
            variables = jax.eval_shape(self.model.init, jax.random.key(0), *example_inputs(first))
        n = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(variables["params"])))
        self.log(f"model: {n:,} parameters")
        return variables

    # -- phase 2 ---------------------------------------------------------------------------
    def stage(self, index: int, variables: Any, rng: Any) -> tuple[Any, Any]:
        """Run stage ``index`` (or what is left of it); returns ``(variables, rng)`` after it."""
        from tqdm import tqdm

        config, mesh = self.config, self.mesh
        name, stage = self.stages[index]
        start, end = self.bounds[index]
        data_cfg = data_pipeline_config(stage, stage.steps)
        parallel.local_batch_size(data_cfg.batch_size, mesh)
        tx, schedule = make_optimizer(stage.optim, variables["params"], int(stage.steps),
                                      f"stages.{name}.optim")
        objective = make_objective(stage.get("objective") or config.objective)
        shapes = jax.eval_shape(lambda v: init_state(v, tx, 0), variables)
        sharding = parallel.param_sharding(shapes, mesh, bool(config.parallel.fsdp),
                                           int(config.parallel.fsdp_min_size))
        pipeline = make_train_pipeline(data_cfg, make_source(stage.data.source),
                                       seed=int(config.seed) + 1000 * index)
        if self.resume_stage == index:
            state = self.ckpt.restore_state(self.resume_step, abstract_state(variables, tx, sharding))
            pipeline.set_state(self.resume_json["data"])
            step = self.resume_step
            self.resume_stage = None
        else:
            fresh = init_state(jax.tree_util.tree_map(np.asarray, parallel.to_host(variables)), tx,
                               int(config.seed), start)
            if rng is not None:
                fresh["rng"] = rng
            state = parallel.put(fresh, sharding)
            step = start
        if step >= end:  # the checkpoint closed this stage
            pipeline.close()
            return state["variables"], state["rng"]
        train_step = make_train_step(self.model, objective, tx, schedule, start, sharding,
                                     parallel.batch_sharding(mesh), parallel.replicated_sharding(mesh))
        bar = tqdm(total=end - start, initial=step - start, desc=name, unit="step", file=sys.stdout,
                   disable=not (self.is_main and config.log.progress), dynamic_ncols=True)
        window: list[Any] = []
        t_window = time.time()
        with pipeline:
            while step < end:
                state, metrics = train_step(state, parallel.shard_batch(next(pipeline), mesh))
                step += 1
                self.steps_run += 1
                window.append(metrics)
                bar.update(1)
                if step % int(config.log.every_steps) == 0 or step == end:
                    mean = self._log_train(step, name, window, t_window, data_cfg.batch_size)
                    bar.set_postfix(loss=f"{mean['loss']:.4f}")
                    window, t_window = [], time.time()
                eval_metrics = self._maybe_evaluate(step, state["variables"])
                every = int(config.checkpoint.every_steps)
                if (every and step % every == 0) or step == end or eval_metrics is not None:
                    meta = {"stage": name, "stage_step": step - start, "total_steps": self.total}
                    self.ckpt.save(step, state, pipeline.get_state(), config, meta, eval_metrics)
        bar.close()
        return state["variables"], state["rng"]

    def _log_train(self, step: int, stage: str, window: list, t_window: float, batch: int) -> dict:
        # Steps are dispatched asynchronously: time the window only once its metrics are on
        # the host, i.e. once every step in it has finished computing.
        host = parallel.to_host(window)
        seconds = time.time() - t_window
        mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        mean["steps_per_sec"] = len(window) / max(seconds, 1e-9)
        mean["clips_per_sec"] = mean["steps_per_sec"] * batch
        if not math.isfinite(mean["loss"]):
            raise VosjaxError(
                f"vosjax.train: the loss became {mean['loss']} at step {step} (stage {stage!r}); "
                f"lower stages.{stage}.optim.lr or set stages.{stage}.optim.clip_norm."
            )
        self.writer.write(step, {f"train/{k}": v for k, v in mean.items()})
        self.last_train = mean
        return mean

    def _maybe_evaluate(self, step: int, variables: Any) -> dict | None:
        every = int(self.config.eval.every_steps)
        due = (every and step % every == 0) or (step == self.total and self.config.eval.at_end)
        if not due:
            return None
        out = evaluation.evaluate(self.model, variables, self.config)
        if out is not None:
            self.writer.write(step, {f"eval/{k}": v for k, v in out.items()})
            self.log(f"eval @ {step}: {_fmt(out, _EVAL_KEYS)}")
            self.last_eval, self.last_eval_step = out, step
        return out

    # -- phase 3 ---------------------------------------------------------------------------
    def finish(self, variables: Any) -> dict[str, Any]:
        """Final evaluation (unless done at the last step), baseline, bundle, summary."""
        config = self.config
        final = self.last_eval
        if config.eval.at_end and self.last_eval_step != self.total:  # e.g. resumed with nothing left
            final = evaluation.evaluate(self.model, variables, config) or final
        base = evaluation.baseline(config) if final is not None else None
        bundle = None
        if config.export.bundle:
            bundle = export_bundle(self.workdir / "bundle", config,
                                   bundle_variables(self.model, variables, config))
        self.writer.close()
        self.ckpt.close()
        elapsed = time.time() - self.t_start
        summary = {
            "workdir": str(self.workdir), "steps": self.total, "steps_run": self.steps_run,
            "seconds": elapsed, "final_train": self.last_train, "eval": final, "baseline": base,
            "bundle": str(bundle) if bundle else None,
        }
        if self.is_main:
            (self.workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
            self.log(self._summary_lines(summary))
        return summary

    def _summary_lines(self, s: dict) -> str:
        lines = [(f"vosjax.train: {s['steps']} steps ({s['steps_run']} in this run) in "
                 f"{s['seconds']:.0f} s -> {s['workdir']}")]
        if s["final_train"]:
            lines.append("  train: " + _fmt(s["final_train"], ("loss", "iou", "steps_per_sec", "clips_per_sec")))
        ev, base = s["eval"], s["baseline"]
        if ev is not None:
            line = f"  J&F-Mean on the eval split: {ev['J&F-Mean']:.3f} (J {ev['J-Mean']:.3f}, F {ev['F-Mean']:.3f})"
            if base is not None:
                line += (f" | copy the first mask: {base['J&F-Mean']:.3f} | difference "
                         f"{100 * (ev['J&F-Mean'] - base['J&F-Mean']):+.1f} points")
            lines.append(line)
        elif self.config.eval.get("source"):
            lines.append("  no evaluation ran (eval.every_steps is 0 and eval.at_end is False)")
        if s["bundle"]:
            lines.append(f"  bundle: {s['bundle']}")
        return "\n".join(lines)
