"""Inference engine throughput: per-frame vs per-clip, objects, gradient correction, FRTM updates.

`python tools/benchmark.py engine [--frames N] [--size H W] [--quick] [--no-frtm]
                                 [--parts [--parts-model stcn] [--parts-objects 2]]`

Model: the TrickVOS lightweight network (``stcn.default_config("trickvos")``:
MobileNetV2 encoders, key dim 32, memory = first + last frame, mask-only
value encoder) with random weights, at 480 x 854, batch 1, float32, on
whatever JAX backend is present. Every configuration runs the engine's
compiled step; the first step (the given masks; it compiles) and one more
are warm-up, then ``N`` frames are timed (``N / L`` steps of ``L`` frames,
each step synchronised). Reported: frames per second (median over steps of
``L / step time``; for schedules with periodic extra work, correction and
FRTM updates, the MEAN over whole periods, which is what a long video sees)
and the ratio to per-frame inference with the same number of objects,
measured in this run.

Rows:
- per-frame (L = 1) and per-clip (L = 5, 10; PCVOS inference: one memory
  write per clip, the clip's frames encoded, read and decoded together) with
  1 and 3 objects; target: per-clip L = 5 >= 1.5 x per-frame;
- gradient correction every 5 frames (cyclic VOS; N = 10 steps), 1 object;
- FRTM (``frtm.default_config("fast")``, ResNet-18) with its target-model
  updates every t_s = 8 frames (GN + CG inside the step), 1 object.

``--parts`` adds a per-part profile of a full-size STCN step (key encoder,
value encoder + write, readout with 1 and many stored frames, decoder per
object) with XLA's FLOP counts and the fraction of a matmul peak measured in
the same run (``bench/engine_parts.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import machine_line
from vosjax.inference import Engine, EngineConfig

TARGET_L5 = 1.5


def random_variables(model, seed: int = 0):
    """Random variables without compiling ``model.init`` (shapes from ``jax.eval_shape``)."""
    abstract = jax.eval_shape(
        model.init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 2, 64, 64, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 1, 2, 64, 64), jnp.float32),
        jax.ShapeDtypeStruct((1, 1), jnp.bool_),
    )
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        shape = tuple(leaf.shape)
        if name in ("var", "scale"):
            return jnp.ones(shape, leaf.dtype)
        if name in ("mean", "bias") or len(shape) <= 1:
            return jnp.zeros(shape, leaf.dtype)
        return jnp.asarray(rng.normal(0, 1 / math.sqrt(math.prod(shape[:-1])), shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, dict(abstract))


def _inputs(size, objects, frames_needed, seed=0):
    """Random frames and a first mask with ``objects`` rectangles."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = rng.integers(0, 256, (frames_needed, h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for k in range(objects):
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        mask[y : y + h // 4, x : x + w // 4] = k + 1
    return frames, mask


def measure(
    model,
    variables,
    config: EngineConfig,
    size,
    objects: int,
    timed: int,
    mean_over_period: bool = False,
) -> dict:
    """Frames per second of the engine's steady state (module docstring)."""
    engine = Engine(model, config)
    length = config.clip_length
    steps = max(1, timed // length)
    frames, mask = _inputs(size, objects, length * (steps + 2))
    state = engine.init_state(variables, 1, size, objects)
    t0 = time.perf_counter()
    clips = frames.reshape(steps + 2, 1, length, *size, 3)
    first = np.zeros((1, length), bool)
    first[0, 0] = True  # the first clip is the given frame alone (a clip ends at given masks)
    state, out = engine.step(variables, state, clips[0], mask[None], None, first)
    jax.block_until_ready(out.labels)
    compile_s = time.perf_counter() - t0
    state, out = engine.step(variables, state, clips[1])
    jax.block_until_ready(out.labels)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        state, out = engine.step(variables, state, clips[2 + i])
        jax.block_until_ready(out.labels)
        times.append(time.perf_counter() - t)
    per_frame = [t / length for t in times]
    fps = (
        len(per_frame) / sum(per_frame) if mean_over_period else 1.0 / statistics.median(per_frame)
    )
    return {"fps": fps, "compile_s": compile_s, "steps": steps, "traces": engine.num_traces}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="benchmark.py engine", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20, help="timed frames per configuration")
    ap.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    ap.add_argument("--quick", action="store_true", help="10 timed frames, L = 5 only")
    ap.add_argument("--no-frtm", action="store_true", help="skip the FRTM row")
    ap.add_argument("--parts", action="store_true",
                    help="also profile a full-size network's step by part (bench/engine_parts.py)")
    ap.add_argument("--parts-model", default="stcn", help="stcn variant to profile (stcn, cyclic)")
    ap.add_argument("--parts-objects", type=int, default=2)
    ap.add_argument("--parts-memory", type=int, default=16, help="frames stored for the 2nd read")
    args = ap.parse_args(argv)
    size = tuple(args.size)
    timed = 10 if args.quick else args.frames

    from vosjax.models import get_model
    from vosjax.models.stcn import default_config

    print(machine_line())
    if hasattr(os, "getloadavg"):
        print("load average: %.2f %.2f %.2f (other processes share the CPU)" % os.getloadavg())
    print(f"TrickVOS lightweight, {size[0]} x {size[1]}, batch 1, float32, {timed} timed frames\n")
    model = get_model(default_config("trickvos"))
    variables = random_variables(model)
    print(f"{'configuration':<34} {'objects':>7} {'fps':>8} {'vs per-frame':>13} {'compile':>9}")
    base: dict[int, float] = {}
    ok = True
    lengths = (1, 5) if args.quick else (1, 5, 10)
    for objects in (1, 3):
        for length in lengths:
            cfg = EngineConfig(max_objects=objects, bucket_objects=False, clip_length=length)
            r = measure(model, variables, cfg, size, objects, max(timed, length))
            if length == 1:
                base[objects] = r["fps"]
            ratio = r["fps"] / base[objects]
            name = "per-frame" if length == 1 else f"per-clip L = {length}"
            flag = ""
            if length == 5:
                flag = "  ok" if ratio >= TARGET_L5 else f"  BELOW {TARGET_L5}x"
                ok &= ratio >= TARGET_L5
            print(
                f"{name:<34} {objects:>7} {r['fps']:>8.2f} {ratio:>12.2f}x {r['compile_s']:>8.1f}s{flag}"
            )
    cfg = EngineConfig(max_objects=1, bucket_objects=False, correction_every=5, correction_iters=10)
    r = measure(model, variables, cfg, size, 1, max(10, timed // 5 * 5), mean_over_period=True)
    print(
        f"{'per-frame + correction every 5':<34} {1:>7} {r['fps']:>8.2f} "
        f"{r['fps'] / base[1]:>12.2f}x {r['compile_s']:>8.1f}s"
    )
    if not args.no_frtm:
        try:
            from vosjax.models.frtm import default_config as frtm_config
        except ImportError:
            print("FRTM: vosjax.models.frtm is not available")
        else:
            fmodel = get_model(frtm_config("fast"))
            fvars = random_variables(fmodel)
            cfg = EngineConfig(max_objects=1, bucket_objects=False)  # policy "auto" -> frtm
            r = measure(fmodel, fvars, cfg, size, 1, max(16, timed // 8 * 8), mean_over_period=True)
            fbase = measure(
                fmodel, fvars, cfg.replace(refit_every=0), size, 1, 16, mean_over_period=True
            )
            print(
                f"{'FRTM fast, no periodic updates':<34} {1:>7} {fbase['fps']:>8.2f} "
                f"{1.0:>12.2f}x {fbase['compile_s']:>8.1f}s"
            )
            print(
                f"{'FRTM fast, updates every 8 frames':<34} {1:>7} {r['fps']:>8.2f} "
                f"{r['fps'] / fbase['fps']:>12.2f}x {r['compile_s']:>8.1f}s"
            )
    print("\n(ratios: TrickVOS rows against TrickVOS per-frame with the same number of objects;")
    print(" FRTM rows against FRTM without periodic updates; all measured in this run)")
    if args.parts:
        from bench.engine_parts import report

        report(args.parts_model, size, args.parts_objects, args.parts_memory)
    return 0 if ok else 1
