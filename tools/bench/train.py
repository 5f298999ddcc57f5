"""Training benchmark: step time and clips per second of the train step, tiny vs full STCN.

    python tools/benchmark.py train [--configs stcn.py:tiny stcn.py] [--batch 8 2] [--repeats 5]

For each config, the video stage's train step (objective + gradients + optax
update, jitted with the run's shardings on all local devices) runs on a
fixed batch shaped like the stage's data (frames per sample, crop size,
objects; the batch size is overridden by ``--batch`` since the full configs'
batch of 16 at 384 x 384 takes minutes per step on a CPU). Reported: compile
time, median step time (and spread), clips (samples) per second, and the
ratio to the first config of the run (the baseline, measured in the same
process). ``--data`` also times the config's data pipeline alone where its
source is available (synthetic data always is).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from bench.common import fmt_ms, machine_line, time_fn
from vosjax import parallel
from vosjax.data import make_source, make_train_pipeline
from vosjax.objectives import make_objective
from vosjax.train import build_config
from vosjax.training.optim import make_optimizer
from vosjax.training.schema import data_pipeline_config, stage_list
from vosjax.training.state import build_model, init_state, init_variables, make_train_step


def _fake_batch(data_cfg, batch: int, seed: int = 0) -> dict:
    """Random frames and a few elliptical objects per sample (labels moving across frames)."""
    rng = np.random.default_rng(seed)
    T, (H, W), O = data_cfg.frames_per_sample, data_cfg.crop_size, data_cfg.max_objects
    frames = rng.integers(0, 256, (batch, T, H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    labels = np.zeros((batch, T, H, W), np.int32)
    for b in range(batch):
        for o in range(O):
            cy, cx, r = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * W, 0.15 * min(H, W)
            vy, vx = rng.normal(0, 0.02 * H), rng.normal(0, 0.02 * W)
            for t in range(T):
                inside = (yy - cy - vy * t) ** 2 + (xx - cx - vx * t) ** 2 < r**2
                labels[b, t][inside] = o + 1
    return {"frames": frames, "labels": labels, "obj_valid": np.ones((batch, O), bool)}


def bench_config(spec: str, batch: int, repeats: int, data: bool, overrides: tuple = ()) -> dict:
    """Time the last stage's train step of ``spec`` (``overrides``: ``--config.x=y`` flags).

    The weights are random (``init.from_scratch``): full configs would otherwise ask
    for their ImageNet encoder files, which timing does not need.
    """
    config = build_config(f"configs/{spec}" if "/" not in spec else spec,
                          ["--config.init.from_scratch=True", *overrides])
    name, stage = stage_list(config)[-1]
    steps = max(int(stage.steps), 10)
    data_cfg = data_pipeline_config(stage, steps)
    model = build_model(config.model)
    objective = make_objective(stage.get("objective") or config.objective)
    mesh = parallel.make_mesh(jax.local_devices())
    variables = init_variables(model, config, data_cfg, log=lambda *_: None)
    tx, schedule = make_optimizer(stage.optim, variables["params"], steps)
    state = init_state(jax.tree_util.tree_map(np.asarray, variables), tx, 0)
    sh = parallel.param_sharding(jax.eval_shape(lambda: state), mesh)
    state = parallel.put(state, sh)
    step = make_train_step(model, objective, tx, schedule, 0, sh, parallel.batch_sharding(mesh),
                           parallel.replicated_sharding(mesh))
    b = parallel.shard_batch(_fake_batch(data_cfg, batch), mesh)
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], b)
        return metrics["loss"]

    t0 = time.perf_counter()
    jax.block_until_ready(run())
    compile_s = time.perf_counter() - t0
    timing = time_fn(run, repeats=repeats, warmup=1)
    out = {
        "config": spec, "stage": name, "batch": batch, "frames": data_cfg.frames_per_sample,
        "crop": data_cfg.crop_size, "params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(variables["params"]))),
        "compile_s": compile_s, **timing, "clips_per_s": batch / timing["median"],
    }
    if data:
        try:
            pipe = make_train_pipeline(dataclasses.replace(data_cfg, batch_size=batch),
                                       make_source(stage.data.source), seed=0, process_index=0,
                                       process_count=1)
        except Exception as e:  # noqa: BLE001  (real datasets are usually absent here)
            out["data"] = f"unavailable ({type(e).__name__})"
        else:
            with pipe:
                next(pipe)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    next(pipe)
                out["data_clips_per_s"] = batch * repeats / (time.perf_counter() - t0)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="benchmark.py train", description=__doc__)
    p.add_argument("--configs", nargs="+", default=["stcn.py:tiny", "stcn.py"],
                   help="configs/<file>[:variant] to time; the first is the baseline")
    p.add_argument("--batch", nargs="+", type=int, default=[8, 2],
                   help="batch per config (one value for all, or one per config)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data", action="store_true", help="also time the data pipelines")
    args = p.parse_args(argv)
    batches = args.batch * len(args.configs) if len(args.batch) == 1 else args.batch
    if len(batches) != len(args.configs):
        p.error("--batch needs one value or one per config")
    print(machine_line())
    print(f"{'config':<16}{'params':>11}{'T':>3}{'crop':>11}{'batch':>6}{'compile':>10}"
          f"{'step (median)':>15}{'min..max':>21}{'clips/s':>9}{'vs base':>9}")
    base = None
    for spec, batch in zip(args.configs, batches):
        r = bench_config(spec, batch, args.repeats, args.data)
        base = base or r["clips_per_s"]
        crop = "x".join(str(x) for x in r["crop"])
        print(f"{spec:<16}{r['params']:>11,}{r['frames']:>3}{crop:>11}{batch:>6}{r['compile_s']:>9.1f}s"
              f"{fmt_ms(r['median']):>15}{fmt_ms(r['min']).strip():>11}..{fmt_ms(r['max']).strip():<9}"
              f"{r['clips_per_s']:>9.2f}{r['clips_per_s'] / base:>8.3f}x")
        if args.data:
            print(f"{'':<16}data pipeline: " + (f"{r['data_clips_per_s']:.1f} clips/s" if "data_clips_per_s" in r
                                                 else r.get("data", "")))
    return 0
