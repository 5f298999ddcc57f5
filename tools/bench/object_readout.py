"""Readout when objects appear later: the per-object masking against the shared readout.

`python tools/benchmark.py object_readout [--repeats R] [--frames S] [--objects O]`

Problem (480p sizes): one query frame (N = 30 x 54 = 1620 positions), a memory of
S = 20 frames of 1620 positions, key dim 64, value dim 512 per object, O = 2
objects, top-k 20, float32, batch 1. Rows, all jitted:

- shared: ``vosjax.ops.memory.readout`` (every object over every valid entry;
  what a memory without late objects reads, the baseline);
- same validity: ``vosjax.ops.object_memory.read_objects`` where every object
  reads the same entries (no late object): ``lax.cond`` takes the shared readout
  (results bit-for-bit equal, checked);
- late object: ``read_objects`` where the last object appeared half-way (reads
  the second half of the memory): the affinity matmul shared, top-k and softmax
  per object.

Prints medians with the ratio to the shared row and the machine line.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import fmt_ms, machine_line, time_fn
from vosjax.ops import memory as mem
from vosjax.ops import object_memory as om

FRAME = 30 * 54
CK, CV, TOP_K = 64, 512, 20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--objects", type=int, default=2)
    args = p.parse_args(argv)
    s, o = args.frames, args.objects
    m = s * FRAME
    rng = np.random.default_rng(0)
    mk = jnp.asarray(rng.normal(size=(1, m, CK)), jnp.float32)
    mv = jnp.asarray(rng.normal(size=(1, m, o * CV)), jnp.float32)
    qk = jnp.asarray(rng.normal(size=(1, FRAME, CK)), jnp.float32)
    valid = jnp.ones((1, m), bool)
    same = jnp.ones((1, m, o), bool)
    late = same.at[:, : (s // 2) * FRAME, o - 1].set(False)
    rows = {
        "shared": jax.jit(lambda a, b, c: mem.readout(a, b, c, TOP_K, valid)),
        "same validity": jax.jit(lambda a, b, c: om.read_objects(a, b, c, same, valid, TOP_K)),
        "late object": jax.jit(lambda a, b, c: om.read_objects(a, b, c, late, valid, TOP_K)),
    }
    base = np.asarray(rows["shared"](mk, mv, qk))
    exact = bool(np.array_equal(np.asarray(rows["same validity"](mk, mv, qk)), base))
    print(machine_line())
    print(f"N = {FRAME}, memory {s} frames (M = {m}), {o} objects, Ck {CK}, Cv {CV}, top-k {TOP_K}")
    ref = None
    for name, fn in rows.items():
        t = time_fn(lambda fn=fn: fn(mk, mv, qk), repeats=args.repeats)["median"]
        ref = t if ref is None else ref
        print(f"{name:>14}: {fmt_ms(t):>10}  x{t / ref:.2f}")
    print(f"same validity equals shared bit for bit: {exact}")
    return 0
