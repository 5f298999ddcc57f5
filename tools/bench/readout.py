"""Memory readout at 480p sizes: vosjax's jitted top-k readout vs a PyTorch baseline.

`python tools/benchmark.py readout [--repeats R] [--quick] [--chunk C]`

Problem: one query frame (N = 30 x 54 = 1620 positions, stride 16 at 480p)
or a 5-frame clip (N = 8100), memories of 2, 5, 10 and 20 frames of 1620
positions, key dim 64, value dim 512, top-k 20, float32, batch 1.

Columns: vosjax = `jax.jit(vosjax.ops.memory.readout)`; torch = the same math
written the way the original PyTorch code does it (bmm affinity, topk over the
memory axis, softmax, scatter into a dense zero matrix, dense bmm with the
values), eager on CPU in this process; ratio = vosjax / torch; floor = the
`[M, N]` affinity matmul alone in JAX (no top-k, no values); temp = the peak
temporary buffer size of the compiled vosjax readout (`memory_analysis`),
next to the dense `M x N` affinity and the `M x N x Cv` product it avoids;
diff = median over query positions of max |vosjax - torch|; ties = query
positions where they differ by more than 1e-3: with random keys a few
queries have a k-th and (k+1)-th affinity closer than float32 rounding
(~1e-6), and the two formulations round differently.
Target: ratio <= 0.3 at 20 memory frames.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import fmt_ms, machine_line, time_fn
from vosjax.ops import memory as mem

FRAME = 30 * 54  # positions of one stride-16 feature map at 480p (480 x 854)
CK, CV, TOP_K = 64, 512, 20
TARGET = 0.3


def torch_readout(torch, mk, mv, qk, top_k):
    """The baseline: mk [B, Ck, M], mv [B, Cv, M], qk [B, Ck, N] -> [B, Cv, N]."""
    ck = mk.shape[1]
    sq = (mk * mk).sum(dim=1).unsqueeze(2)  # [B, M, 1]
    aff = (2.0 * torch.bmm(mk.transpose(1, 2), qk) - sq) / math.sqrt(ck)  # [B, M, N]
    top, idx = torch.topk(aff, top_k, dim=1)
    weights = torch.softmax(top, dim=1)
    dense = torch.zeros_like(aff).scatter_(1, idx, weights)
    return torch.bmm(mv, dense)


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:9.1f} MiB"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="benchmark.py readout", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement (median reported)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="one query frame, memories of 2 and 20 frames, 3 repeats",
    )
    ap.add_argument("--chunk", type=int, default=mem.DEFAULT_CHUNK_SIZE, help="readout chunk_size")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    mem_frames = (2, 20) if args.quick else (2, 5, 10, 20)
    query_frames = (1,) if args.quick else (1, 5)

    try:
        import torch
    except ImportError:
        torch = None

    print(machine_line())
    print(
        f"CPU cores visible: {os.cpu_count()}; torch: "
        + (
            f"{torch.__version__}, {torch.get_num_threads()} threads"
            if torch
            else "not installed: baseline skipped"
        )
    )
    print(
        f"readout: Ck={CK} Cv={CV} top_k={TOP_K} float32 batch 1, chunk_size={args.chunk}, "
        f"median of {repeats} runs (2 warm-up)"
    )
    header = (
        f"{'query':>8} {'memory':>8} {'vosjax':>12} {'torch':>12} {'ratio':>6} {'floor':>12} "
        f"{'temp':>13} {'M x N':>13} {'M x N x Cv':>13} {'diff':>8} {'ties':>5}"
    )
    print(header)
    print("-" * len(header))

    rng = np.random.default_rng(0)
    readout = jax.jit(lambda k, v, q: mem.readout(k, v, q, TOP_K, chunk_size=args.chunk))
    affinity = jax.jit(lambda k, q: jnp.einsum("bmc,bnc->bmn", k, q))
    ratio_at_20 = []
    for qf in query_frames:
        n = qf * FRAME
        qk = rng.standard_normal((1, n, CK), dtype=np.float32)
        for mf in mem_frames:
            m = mf * FRAME
            mk = rng.standard_normal((1, m, CK), dtype=np.float32)
            mv = rng.standard_normal((1, m, CV), dtype=np.float32)
            jk, jv, jq = jnp.asarray(mk), jnp.asarray(mv), jnp.asarray(qk)
            temp = readout.lower(jk, jv, jq).compile().memory_analysis().temp_size_in_bytes
            t_vos = time_fn(functools.partial(readout, jk, jv, jq), repeats=repeats)["median"]
            t_floor = time_fn(functools.partial(affinity, jk, jq), repeats=repeats)["median"]
            t_torch, diff, ties = float("nan"), float("nan"), -1
            if torch is not None:
                tk = torch.from_numpy(mk.transpose(0, 2, 1).copy())
                tv = torch.from_numpy(mv.transpose(0, 2, 1).copy())
                tq = torch.from_numpy(qk.transpose(0, 2, 1).copy())
                with torch.inference_mode():
                    t_torch = time_fn(
                        functools.partial(torch_readout, torch, tk, tv, tq, TOP_K),
                        repeats=repeats,
                        sync=lambda x: x,
                    )["median"]
                    ref = torch_readout(torch, tk, tv, tq, TOP_K).numpy().transpose(0, 2, 1)
                per_query = np.abs(np.asarray(readout(jk, jv, jq)) - ref).max(-1).ravel()
                ties = int((per_query > 1e-3).sum())
                diff = float(np.median(per_query))
            ratio = t_vos / t_torch if torch is not None else float("nan")
            if mf == 20:
                ratio_at_20.append(ratio)
            print(
                f"{n:>8} {m:>8} {fmt_ms(t_vos):>12} {fmt_ms(t_torch):>12} {ratio:6.2f} {fmt_ms(t_floor):>12} "
                f"{_mib(temp):>13} {_mib(m * n * 4):>13} {_mib(m * n * CV * 4):>13} {diff:8.1e} {ties:5d}",
                flush=True,
            )
    if torch is not None and ratio_at_20:
        worst = max(ratio_at_20)
        verdict = "met" if worst <= TARGET else "MISSED"
        print(
            f"target vosjax/torch <= {TARGET} at 20 memory frames: {verdict} (worst ratio {worst:.2f})"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
