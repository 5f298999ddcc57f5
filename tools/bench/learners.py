"""Learners benchmark: FRTM's target-model fit and update at paper sizes, jitted.

    python tools/benchmark.py learners [--repeats 5] [--labels 16 1] [--quick] [--lwl]

FRTM (sec. 3.5) on a 854 x 480 frame: stride-16 features [30, 54, 1024]
(ResNet conv4_x), 96 hidden channels, a 3 x 3 second layer. Timed, each jitted
and compiled before timing (median of repeats):

- initial fit: 5 augmented samples, 5 GN steps with 5, 10, 10, 10, 10 CG
  iterations, both layers, from random weights;
- update: the full sample memory (80 slots), 1 GN step with 10 CG iterations
  on w2 (w1 frozen), from stored features and from stored projections
  ``w1 * x`` (``frtm.project``; 96 channels, the projection not redone);
- memory_add into the 80-slot memory, with the memory buffers donated (in
  place) and not donated (a copy of the ~530 MB feature buffer per call);

for labels on the feature grid (``--labels 16``: U is the identity) and at
the full frame size (``--labels 1``: U upsamples 16x to 480 x 854). Baseline
of the same run: one evaluation of the eq. 2 residuals on the same samples
(target model + upsampling + weighting), so "x residual" is the cost of a fit
in forward-pass equivalents. ``--lwl`` adds JOINT's induction learner (512
channels, D = 16, 3 x 3 filter, 20 templates of 30 x 52, 5 steepest-descent steps).
"""

from __future__ import annotations

import argparse
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import fmt_ms, machine_line, time_fn
from vosjax.learners import frtm, lwl

H_IMG, W_IMG, STRIDE, C, HIDDEN = 480, 854, 16, 1024, 96


def _line(name: str, t: dict, base: float | None = None) -> str:
    ratio = f"  = {t['median'] / base:6.1f}x residual" if base else ""
    return f"  {name:44s}{fmt_ms(t['median'])}  (min {t['min'] * 1e3:.1f}, max {t['max'] * 1e3:.1f}){ratio}"


def _frtm(label_stride: int, repeats: int) -> None:
    h, w = -(-H_IMG // STRIDE), -(-W_IMG // STRIDE)
    lh, lw = (
        (h, w) if label_stride == STRIDE else (-(-H_IMG // label_stride), -(-W_IMG // label_stride))
    )
    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    params = frtm.init_params(key, C, HIDDEN)

    def labels(n):
        yy, xx = np.mgrid[:lh, :lw]
        return np.stack(
            [
                ((yy - lh * (0.4 + 0.02 * i)) ** 2 + (xx - lw * 0.5) ** 2 < (0.2 * lh) ** 2)
                for i in range(n)
            ]
        ).astype(np.float32)

    x5 = jnp.asarray(rng.standard_normal((5, h, w, C), np.float32))
    y5 = jnp.asarray(labels(5))
    mem = frtm.memory_init(x5, y5, capacity=frtm.CAPACITY)
    x80 = jnp.asarray(rng.standard_normal((frtm.CAPACITY, h, w, C), np.float32))
    mem = mem._replace(
        features=x80,
        labels=jnp.asarray(labels(frtm.CAPACITY)),
        weights=jnp.full((frtm.CAPACITY,), 1.0 / frtm.CAPACITY),
        count=jnp.asarray(frtm.CAPACITY),
    )
    print(
        f"FRTM target model: features [K, {h}, {w}, {C}], hidden {HIDDEN}, labels [K, {lh}, {lw}] "
        f"({'feature grid, U = identity' if (lh, lw) == (h, w) else f'stride {label_stride}, U bilinear'})"
    )

    res5 = jax.jit(lambda p, x, y: frtm.residuals(p, x, y)["data"])
    res80 = jax.jit(lambda p, m: frtm.residuals(p, m.features, m.labels, m.weights)["data"])
    fit = jax.jit(frtm.initial_fit)
    upd = jax.jit(frtm.update)
    t_res5 = time_fn(lambda: res5(params, x5, y5), repeats=repeats)
    t_fit = time_fn(lambda: fit(params, x5, y5), repeats=repeats)
    fitted = fit(params, x5, y5)
    t_res80 = time_fn(lambda: res80(fitted, mem), repeats=repeats)
    t_upd = time_fn(lambda: upd(fitted, mem), repeats=repeats)
    print(_line("baseline: residuals, 5 samples", t_res5))
    print(_line("initial fit: 5 samples, 5 GN (5,10,10,10,10 CG)", t_fit, t_res5["median"]))
    print(_line("baseline: residuals, 80 samples", t_res80))
    print(_line("update: 80 samples, w2 only, 1 GN x 10 CG", t_upd, t_res80["median"]))
    mem_h = mem._replace(features=jax.jit(frtm.project)(fitted, mem.features))
    upd_h = jax.jit(functools.partial(frtm.update, projected=True))
    t_upd_h = time_fn(lambda: upd_h(fitted, mem_h), repeats=repeats)
    print(_line(f"update, memory of w1 * x ({HIDDEN} channels)", t_upd_h, t_res80["median"]))

    add_copy = jax.jit(frtm.memory_add)
    add_donate = jax.jit(frtm.memory_add, donate_argnums=0)
    xn, yn = x5[0], y5[0]
    t_copy = time_fn(lambda: add_copy(mem, xn, yn), repeats=repeats)
    state = {"mem": jax.tree_util.tree_map(jnp.copy, mem)}

    def add_in_place():
        state["mem"] = add_donate(state["mem"], xn, yn)
        return state["mem"]

    t_donate = time_fn(add_in_place, repeats=repeats)
    print(_line("memory_add, 80 slots, buffers donated", t_donate))
    print(_line("memory_add, 80 slots, not donated (copies)", t_copy))


def _lwl(repeats: int) -> None:
    n, h, w, c, d, k = 20, 30, 52, 512, 16, 3
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.standard_normal((n, h, w, c), np.float32))
    e = jnp.asarray(rng.standard_normal((n, h, w, d), np.float32))
    wts = jnp.asarray(rng.uniform(size=(n, h, w, d)).astype(np.float32))
    f0 = jnp.asarray(0.01 * rng.standard_normal((k, k, c, d), np.float32))
    print(f"LWL induction learner: features [{n}, {h}, {w}, {c}], D = {d}, {k}x{k} filter")
    res = jax.jit(lambda f: lwl.residuals(f, z, e, wts, 0.1)["data"])
    fit = jax.jit(functools.partial(lwl.fit, num_iters=5))
    t_res = time_fn(lambda: res(f0), repeats=repeats)
    t_fit = time_fn(lambda: fit(z, e, wts, 0.1, f0), repeats=repeats)
    print(_line("baseline: residuals", t_res))
    print(_line("fit: 5 steepest-descent steps", t_fit, t_res["median"]))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="benchmark.py learners", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement (median reported)"
    )
    ap.add_argument(
        "--labels",
        type=int,
        nargs="+",
        default=[16, 1],
        choices=[16, 8, 4, 2, 1],
        help="label stride(s): 16 = feature grid, 1 = full 480 x 854",
    )
    ap.add_argument("--lwl", action="store_true", help="also time JOINT's LWL induction learner")
    ap.add_argument(
        "--quick", action="store_true", help="3 repeats, feature-grid labels only (smoke run)"
    )
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    strides = [16] if args.quick else args.labels
    print(machine_line())
    print(
        f"cpu cores: {os.cpu_count()}  |  jitted, median of {repeats} runs after 2 warm-up runs (compile excluded)"
    )
    print()
    for s in strides:
        _frtm(s, repeats)
        print()
    if args.lwl:
        _lwl(repeats)
    return 0
