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
import pathlib
import sys
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

    config = with_defaults(load_config(spec))  # every optional field exists, so it can be overridden
    config = apply_overrides(config, overrides)
    validate_config(config)
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


def train(config: Any, workdir: str | pathlib.Path, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training of ``config`` in ``workdir``; returns the final summary dict.

    ``config`` is a validated run config (:func:`build_config`); the loop is
    :class:`vosjax.training.loop.Run`.
    """
    from vosjax.training.loop import Run

    run = Run(config, workdir, log)
    variables = run.start()
    rng = None
    for index in range(len(run.stages)):
        if run.resume_stage is not None and index < run.resume_stage:
            continue
        variables, rng = run.stage(index, variables, rng)
    return run.finish(variables)


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
