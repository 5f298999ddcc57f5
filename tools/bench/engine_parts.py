"""Per-part profile of a full-size network's engine step, with FLOPs and the fraction of peak.

Used by ``python tools/benchmark.py engine --parts [--parts-model stcn]``. The
parts are the model-interface calls one engine step makes, each jitted alone
on random weights (``bench.engine.random_variables``) at the benchmark's size
with its number of objects:

- ``encode_key``: the key encoder and key projection of one frame;
- ``memorize``: the value encoder of every object and the memory write (a
  memory frame only, every 5th frame in STCN's DAVIS setting);
- ``read_memory``: the memory readout (top-k 20) with the bank holding 1 and
  ``--parts-memory`` frames (the cost grows with what is stored);
- ``segment``: readout plus the decoder of every object.

FLOPs are XLA's own count for the compiled call (``cost_analysis``); the peak
is a float32 2048 x 2048 matmul timed in the same run, so the fraction of peak
says how close each part runs to what this machine's matmul reaches.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.engine import random_variables


def _timed(fn, *args, repeats: int = 3) -> tuple[float, float, object]:
    """(median seconds, GFLOP per call, output) of ``jax.jit(fn)(*args)`` after one warm-up."""
    jf = jax.jit(fn)
    out = jf(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(jf(*args))
        times.append(time.perf_counter() - t)
    cost = jf.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return statistics.median(times), float((cost or {}).get("flops", 0.0)) / 1e9, out


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 ``n x n`` matmul (median of ``repeats``)."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
    seconds, _, _ = _timed(lambda x: x @ x, a, repeats=repeats)
    return 2 * n**3 / 1e9 / seconds


def profile(model_name: str, size: tuple[int, int], objects: int, memory: int) -> list[tuple]:
    """Rows ``(part, seconds, GFLOP)`` of one step of ``model_name``'s full-size network."""
    from vosjax.models import get_model
    from vosjax.models.stcn import default_config

    model = get_model(default_config(model_name))
    v = random_variables(model)
    rng = np.random.default_rng(0)
    h, w = size
    frame = jnp.asarray(rng.normal(size=(1, 1, h, w, 3)).astype(np.float32))
    masks = jnp.asarray((rng.random((1, objects, 1, h, w)) > 0.7).astype(np.float32))
    ov = jnp.ones((1, objects), bool)
    write = jnp.ones((1,), bool)
    rows = []
    s, g, feats = _timed(lambda v, f: model.encode_key(v, f), v, frame)
    rows.append(("encode_key", s, g))
    bank = model.init_memory(v, 1, objects, feats["key"].shape[2:4])

    def mem(v, bank, f, m, fe):
        return model.memorize(v, bank, f, m, ov, fe, write)

    s, g, one = _timed(mem, v, bank, frame, masks, feats)
    rows.append((f"memorize ({objects} objects)", s, g))
    full = one
    for _ in range(min(memory, model.memory_frames) - 1):
        full = jax.jit(mem)(v, full, frame, masks, feats)
    for name, b in (("read_memory, 1 frame stored", one),
                    (f"read_memory, {min(memory, model.memory_frames)} stored", full)):
        s, g, _ = _timed(lambda b, fe: model.read_memory(b, fe, objects), b, feats)
        rows.append((name, s, g))
    s, g, _ = _timed(lambda v, b, fe: model.segment(v, b, fe, ov), v, one, feats)
    rows.append((f"segment ({objects} objects)", s, g))
    return rows


def report(model_name: str, size: tuple[int, int], objects: int, memory: int) -> None:
    peak = matmul_peak()
    print(f"\nper-part profile: {model_name} full size, {size[0]} x {size[1]}, {objects} objects, "
          f"float32; matmul peak in this run {peak:.0f} GFLOP/s")
    print(f"{'part':<34}{'time':>10}{'GFLOP':>9}{'GFLOP/s':>9}{'of peak':>9}")
    for name, s, g in profile(model_name, size, objects, memory):
        rate = g / s if s > 0 else 0.0
        print(f"{name:<34}{s * 1e3:>8.0f}ms{g:>9.1f}{rate:>9.0f}{rate / peak:>8.0%}", flush=True)
