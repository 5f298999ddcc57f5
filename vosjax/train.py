"""``python -m vosjax.train --config configs/X.py[:variant] --workdir DIR [--config.a.b=value ...]``.

Trains a method from a run config (sections: :mod:`vosjax.training.schema`)
through its stages (e.g. static-image pretraining, then video training):
grain pipeline -> sharded jitted train step (model, objective, optax) ->
Orbax checkpoints (params, optimizer state, step, RNG, data-iterator state,
config) -> periodic evaluation with the inference engine and the DAVIS
metrics -> a params-only bundle in ``DIR/bundle`` for ``vosjax.segment`` /
``vosjax.evaluate``. Metrics go to ``DIR/metrics.jsonl`` and TensorBoard event
files in ``DIR/tensorboard``.

Re-running the same command on a workdir with checkpoints resumes from the
latest one and continues exactly as the uninterrupted run would have (same
batches, same RNG, same numbers). Multi-host: start one process per host with
``--coordinator_address host:port --num_processes N --process_id i`` (or the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``
environment variables); the global batch is split over the processes.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["build_config", "main", "parse_args", "train"]


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """``(known flags, --config.* overrides)``; anything else is an error naming the flag."""
    p = argparse.ArgumentParser(
        prog="python -m vosjax.train",
        description="Train a vosjax method from a config file (see vosjax/train.py).",
    )
    p.add_argument("--config", required=True, help="configs/X.py[:variant]")
    p.add_argument("--workdir", required=True, help="run folder: checkpoints, logs, bundle")
    p.add_argument("--coordinator_address", default=None, help="host:port of process 0 (multi-host)")
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)
    args, rest = p.parse_known_args(list(argv))
    overrides, bad = [], []
    for a in rest:
        (overrides if a.startswith("--config.") else bad).append(a)
    if bad:
        from vosjax.errors import VosjaxError

        raise VosjaxError(
            f"vosjax.train: unknown argument(s) {bad}; config fields are set as "
            "--config.<field>=<value> (e.g. --config.stages.video.steps=100)."
        )
    return args, overrides


def build_config(spec: str, overrides: Sequence[str] = ()) -> Any:
    """Load ``spec``, apply ``overrides``, fill defaults and validate every trainer field."""
    from vosjax.config_utils import apply_overrides, load_config
    from vosjax.training.schema import validate_config, with_defaults

    config = load_config(spec)
    config = apply_overrides(config, overrides)
    validate_config(config)
    config = with_defaults(config)
    # fail before any work on typos in the sections that other modules own
    from vosjax.objectives import make_objective
    from vosjax.training.schema import stage_list
    from vosjax.training.state import build_model

    build_model(config.model)
    make_objective(config.objective)
    for _, stage in stage_list(config):
        if stage.get("objective"):
            make_objective(stage.objective)
    if config.eval.source or config.inference:
        from vosjax.inference import EngineConfig

        EngineConfig.from_config(config.inference)
    return config


def _fmt(metrics: dict[str, float], keys: Sequence[str] = ()) -> str:
    keys = keys or sorted(metrics)
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


def train(config: Any, workdir: str | pathlib.Path, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training of ``config`` in ``workdir``; returns the final summary dict."""
    import jax
    import numpy as np
    from tqdm import tqdm

    from vosjax import parallel
    from vosjax.checkpoint import TrainCheckpointer, export_bundle
    from vosjax.config_utils import to_plain
    from vosjax.data import make_source, make_train_pipeline
    from vosjax.errors import VosjaxError
    from vosjax.objectives import make_objective
    from vosjax.training import evaluation
    from vosjax.training.metric_writer import MetricWriter
    from vosjax.training.optim import make_optimizer
    from vosjax.training.schema import data_pipeline_config, stage_list
    from vosjax.training.state import (
        abstract_state,
        build_model,
        example_inputs,
        init_state,
        init_variables,
        make_train_step,
    )

    is_main = jax.process_index() == 0
    if log is None:
        log = (lambda msg: tqdm.write(msg, file=sys.stdout)) if is_main else (lambda msg: None)
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    n_dev = int(config.parallel.num_devices)
    if n_dev and jax.process_count() > 1:
        raise VosjaxError("config: parallel.num_devices applies to single-process runs only; use 0.")
    mesh = parallel.make_mesh(jax.local_devices()[:n_dev] if n_dev else None)
    model = build_model(config.model)
    stages = stage_list(config)
    bounds, total = [], 0
    for _, st in stages:
        bounds.append((total, total + int(st.steps)))
        total += int(st.steps)
    log(
        f"vosjax.train: {config.model.name} / objective {config.objective.name}, stages "
        f"{', '.join(f'{n}({s.steps})' for n, s in stages)}, {mesh.devices.size} device(s) on "
        f"{jax.process_count()} process(es) -> {workdir}"
    )
    if is_main:
        (workdir / "config.json").write_text(json.dumps(to_plain(config), indent=1, sort_keys=True) + "\n")

    ck = config.checkpoint
    ckpt = TrainCheckpointer(workdir / "checkpoints", keep=int(ck.keep), keep_best=int(ck.keep_best),
                             best_metric=str(ck.best_metric))
    writer = MetricWriter(workdir, enabled=is_main)
    fsdp = bool(config.parallel.fsdp)
    metrics_sharding = parallel.replicated_sharding(mesh)
    batch_sharding = parallel.batch_sharding(mesh)

    # ---- where to start -----------------------------------------------------------------------
    latest = ckpt.latest_step()
    resume_stage, resume_json = None, None
    if latest is not None:
        resume_json = ckpt.restore_json(latest)
        saved_stage = resume_json["meta"].get("stage")
        names = [n for n, _ in stages]
        if saved_stage not in names:
            raise VosjaxError(
                f"vosjax.train: the checkpoint at step {latest} in {workdir} belongs to stage "
                f"{saved_stage!r}, which this config does not run ({names}); use a new workdir."
            )
        resume_stage = names.index(saved_stage)
        log(f"resume: step {latest} (stage {saved_stage!r}) from {ckpt.directory}")

    first_data = data_pipeline_config(stages[0][1], stages[0][1].steps)
    if latest is None:
        variables = init_variables(model, config, first_data, log)
    else:  # shapes only: the checkpoint provides the values
        variables = jax.eval_shape(model.init, jax.random.key(0), *example_inputs(first_data))
    n_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(variables["params"])))
    log(f"model: {n_params:,} parameters")

    state = None
    rng_carry = None
    last_metrics: dict[str, float] = {}
    last_eval: dict[str, float] | None = None
    last_eval_step = -1
    t_start = time.time()
    steps_run = 0

    def save(step: int, stage_name: str, stage_step: int, pipeline, metrics=None):
        ckpt.save(step, state, pipeline.get_state(), config,
                  {"stage": stage_name, "stage_step": stage_step, "total_steps": total}, metrics)

    for s_idx, ((stage_name, stage), (start, end)) in enumerate(zip(stages, bounds)):
        if resume_stage is not None and s_idx < resume_stage:
            continue
        data_cfg = data_pipeline_config(stage, stage.steps)
        parallel.local_batch_size(data_cfg.batch_size, mesh)
        tx, schedule = make_optimizer(stage.optim, variables["params"], int(stage.steps),
                                      f"stages.{stage_name}.optim")
        objective = make_objective(stage.get("objective") or config.objective)
        shapes = jax.eval_shape(lambda v, tx=tx: init_state(v, tx, 0), variables)
        state_sharding = parallel.param_sharding(shapes, mesh, fsdp, int(config.parallel.fsdp_min_size))
        pipeline = make_train_pipeline(data_cfg, make_source(stage.data.source),
                                       seed=int(config.seed) + 1000 * s_idx)
        if resume_stage == s_idx:
            state = ckpt.restore_state(latest, abstract_state(variables, tx, state_sharding))
            pipeline.set_state(resume_json["data"])
            step = int(latest)
            resume_stage = None
        else:
            fresh = init_state(jax.tree_util.tree_map(np.asarray, parallel.to_host(variables)), tx,
                               int(config.seed), start)
            if rng_carry is not None:
                fresh["rng"] = rng_carry
            state = parallel.put(fresh, state_sharding)
            step = start
        if step >= end:  # the checkpoint closed this stage
            variables, rng_carry = state["variables"], state["rng"]
            pipeline.close()
            continue
        train_step = make_train_step(model, objective, tx, schedule, start, state_sharding,
                                     batch_sharding, metrics_sharding)
        bar = tqdm(total=end - start, initial=step - start, desc=stage_name, unit="step",
                   disable=not (is_main and config.log.progress), file=sys.stdout, dynamic_ncols=True)
        window: list[Any] = []
        t_window = time.time()
        log_every = int(config.log.every_steps)
        with pipeline:
            while step < end:
                batch = parallel.shard_batch(next(pipeline), mesh)
                state, metrics = train_step(state, batch)
                step += 1
                steps_run += 1
                window.append(metrics)
                bar.update(1)
                stage_step = step - start
                if step % log_every == 0 or step == end:
                    host = parallel.to_host(window)
                    mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                    dt = time.time() - t_window
                    mean["steps_per_sec"] = len(window) / max(dt, 1e-9)
                    mean["clips_per_sec"] = mean["steps_per_sec"] * data_cfg.batch_size
                    window, t_window = [], time.time()
                    if not math.isfinite(mean["loss"]):
                        raise VosjaxError(
                            f"vosjax.train: the loss became {mean['loss']} at step {step} (stage "
                            f"{stage_name!r}); lower stages.{stage_name}.optim.lr or set clip_norm."
                        )
                    writer.write(step, {f"train/{k}": v for k, v in mean.items()})
                    bar.set_postfix(loss=f"{mean['loss']:.4f}")
                    last_metrics = mean
                every = int(config.eval.every_steps)
                eval_now = (every and step % every == 0) or (step == total and config.eval.at_end)
                eval_metrics = None
                if eval_now:
                    eval_metrics = evaluation.evaluate(model, state["variables"], config, log)
                    if eval_metrics is not None:
                        writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
                        log(f"eval @ {step}: {_fmt(eval_metrics, ('J&F-Mean', 'J-Mean', 'F-Mean'))}")
                        last_eval, last_eval_step = eval_metrics, step
                ck_every = int(config.checkpoint.every_steps)
                if (ck_every and step % ck_every == 0) or step == end or eval_metrics is not None:
                    save(step, stage_name, stage_step, pipeline,
                         {k: v for k, v in eval_metrics.items()} if eval_metrics else None)
        bar.close()
        variables, rng_carry = state["variables"], state["rng"]

    # ---- the end: evaluation, baseline, bundle, summary ------------------------------------
    final_eval = last_eval
    if config.eval.at_end and last_eval_step != total:  # e.g. resumed with nothing left to train
        final_eval = evaluation.evaluate(model, variables, config, log) or last_eval
    base = evaluation.baseline(config) if final_eval is not None else None
    bundle = None
    if config.export.bundle:
        bundle = export_bundle(workdir / "bundle", config, bundle_variables(model, variables, config))
    writer.close()
    ckpt.close()
    elapsed = time.time() - t_start
    summary = {
        "workdir": str(workdir),
        "steps": total,
        "steps_run": steps_run,
        "seconds": elapsed,
        "final_train": last_metrics,
        "eval": final_eval,
        "baseline": base,
        "bundle": str(bundle) if bundle else None,
    }
    if is_main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        lines = [f"vosjax.train: {total} steps ({steps_run} in this run) in {elapsed:.0f} s -> {workdir}"]
        if last_metrics:
            lines.append(f"  train: {_fmt(last_metrics, ('loss', 'iou', 'steps_per_sec', 'clips_per_sec'))}")
        if final_eval is not None:
            jf = final_eval["J&F-Mean"]
            line = f"  J&F-Mean on the eval split: {jf:.3f} (J {final_eval['J-Mean']:.3f}, F {final_eval['F-Mean']:.3f})"
            if base is not None:
                b = base["J&F-Mean"]
                line += f" | copy the first mask: {b:.3f} | difference {100 * (jf - b):+.1f} points"
            lines.append(line)
        elif config.eval.get("source"):
            lines.append("  evaluation skipped (the inference engine is not installed)")
        if bundle:
            lines.append(f"  bundle: {bundle}")
        log("\n".join(lines))
    return summary


def bundle_variables(model: Any, variables: Any, config: Any) -> dict:
    """What the bundle holds: the model's variables, plus ``"tracker"`` (the PT box tracker's
    ``{"params"}``) from ``config.export.tracker``; a tracker run's own bundle is
    ``{"tracker": {"params"}}``, the layout the inference engine reads."""
    if model.name == "tracker":
        return {"tracker": dict(variables)}
    out = dict(variables)
    if config.export.get("tracker"):
        from vosjax.checkpoint import load_variables

        tracker, _ = load_variables(config.export.tracker)
        if "tracker" not in tracker:
            from vosjax.errors import VosjaxError

            raise VosjaxError(
                f"config: export.tracker={config.export.tracker!r} is not the bundle of a tracker "
                "run (configs/tracker.py); it has no 'tracker' variables."
            )
        out["tracker"] = tracker["tracker"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from vosjax.errors import VosjaxError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
        from vosjax.parallel import initialize_distributed

        initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
        config = build_config(args.config, overrides)
        train(config, args.workdir)
    except VosjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
