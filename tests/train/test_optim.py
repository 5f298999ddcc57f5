"""Optimizers, schedules and frozen groups (vosjax.training.optim) vs NumPy references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vosjax.errors import VosjaxError
from vosjax.training.optim import default_optim, make_optimizer, make_schedule

PARAMS = {"backbone": {"w": np.array([0.5, -1.0, 2.0], np.float32)}, "decoder": {"w": np.array([1.0, -0.25], np.float32)}}


def grads_at(k):
    """Deterministic, changing gradients for step k."""
    rng = np.random.default_rng(100 + k)
    return {"backbone": {"w": rng.normal(size=3).astype(np.float32) * 3},
            "decoder": {"w": rng.normal(size=2).astype(np.float32)}}


def run_optax(cfg, steps, total=100):
    tx, _ = make_optimizer(cfg, PARAMS, total)
    params = jax.tree_util.tree_map(jnp.asarray, PARAMS)
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for k in range(steps):
        u, state = update(jax.tree_util.tree_map(jnp.asarray, grads_at(k)), state, params)
        params = optax.apply_updates(params, u)
        out.append(jax.tree_util.tree_map(np.asarray, params))
    return out


def np_adam(steps, lr_fn, wd=0.0, decoupled=False, b1=0.9, b2=0.999, eps=1e-8, frozen=(), clip=0.0,
            start=None):
    """PyTorch Adam (coupled L2) / AdamW on the flat leaves; ``frozen`` leaves never move,
    ``start[leaf]`` = first step at which a leaf trains (its moments start then)."""
    p = {k: PARAMS[k]["w"].astype(np.float64).copy() for k in PARAMS}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    t = dict.fromkeys(p, 0)
    start = start or {}
    out = []
    for k in range(steps):
        g = {n: grads_at(k)[n]["w"].astype(np.float64) for n in p}
        live = [n for n in p if n not in frozen and k >= start.get(n, 0)]
        if clip:
            norm = math.sqrt(sum(float(np.sum(g[n] ** 2)) for n in live))
            scale = min(1.0, clip / norm) if norm > 0 else 1.0
            g = {n: g[n] * scale for n in g}
        for n in live:
            t[n] += 1
            lr = lr_fn(k - start.get(n, 0))
            gg = g[n] + (0 if decoupled else wd * p[n])
            m[n] = b1 * m[n] + (1 - b1) * gg
            v[n] = b2 * v[n] + (1 - b2) * gg**2
            mh, vh = m[n] / (1 - b1 ** t[n]), v[n] / (1 - b2 ** t[n])
            step = mh / (np.sqrt(vh) + eps) + (wd * p[n] if decoupled else 0)
            p[n] = p[n] - lr * step
        out.append({n: p[n].copy() for n in p})
    return out


def assert_close(got, want):
    for a, b in zip(got, want):
        for n in b:
            np.testing.assert_allclose(a[n]["w"], b[n], rtol=2e-5, atol=1e-6)


def test_adam_is_pytorch_adam_with_coupled_weight_decay():
    cfg = default_optim(name="adam", lr=1e-2, weight_decay=0.1)
    assert_close(run_optax(cfg, 6), np_adam(6, lambda k: 1e-2, wd=0.1))


def test_adamw_is_decoupled():
    cfg = default_optim(name="adamw", lr=1e-2, weight_decay=0.1, b1=0.8, b2=0.99)
    assert_close(run_optax(cfg, 6), np_adam(6, lambda k: 1e-2, wd=0.1, decoupled=True, b1=0.8, b2=0.99))


def test_schedules():
    s = make_schedule(default_optim(lr=1.0, schedule="cosine", final_lr_fraction=0.1), 101)
    for k in (0, 25, 50, 100):
        want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 101))
        assert float(s(k)) == pytest.approx(want, rel=1e-5)
    s = make_schedule(default_optim(lr=2.0, schedule="linear", warmup_steps=10), 110)
    assert [float(s(k)) for k in (0, 5, 10, 60, 110)] == pytest.approx([0.0, 1.0, 2.0, 1.0, 0.0], abs=1e-6)
    s = make_schedule(default_optim(lr=1e-2, schedule="piecewise", decay_steps=(40, 80, 115), decay_factor=0.2), 180)
    assert [float(s(k)) for k in (0, 39, 40, 80, 179)] == pytest.approx(
        [1e-2, 1e-2, 2e-3, 4e-4, 8e-5], rel=1e-5)
    with pytest.raises(VosjaxError, match="schedule"):
        make_schedule(default_optim(schedule="step"), 10)
    with pytest.raises(VosjaxError, match="decay_steps"):
        make_schedule(default_optim(schedule="piecewise", decay_steps=(50, 20)), 100)


def test_schedule_drives_the_update():
    cfg = default_optim(name="adam", lr=1e-2, schedule="linear", final_lr_fraction=0.0)
    assert_close(run_optax(cfg, 5, total=10), np_adam(5, lambda k: 1e-2 * (1 - k / 10)))


def test_frozen_group_and_clipping_over_trained_leaves_only():
    cfg = default_optim(name="adam", lr=1e-2, weight_decay=0.01, freeze=("^backbone/",), clip_norm=0.5)
    got = run_optax(cfg, 5)
    for g in got:
        np.testing.assert_array_equal(g["backbone"]["w"], PARAMS["backbone"]["w"])
    assert_close(got, np_adam(5, lambda k: 1e-2, wd=0.01, frozen=("backbone",), clip=0.5))


def test_freeze_until_starts_a_fresh_optimizer():
    cfg = default_optim(name="adam", lr=1e-2, freeze=("backbone",), freeze_until=3)
    got = run_optax(cfg, 7)
    for g in got[:3]:
        np.testing.assert_array_equal(g["backbone"]["w"], PARAMS["backbone"]["w"])
    assert not np.allclose(got[3]["backbone"]["w"], PARAMS["backbone"]["w"])
    assert_close(got, np_adam(7, lambda k: 1e-2, start={"backbone": 3}))


def test_bad_optim_configs():
    with pytest.raises(VosjaxError, match=r"optim.lrr.*'lr'"):
        default_optim(lrr=1.0)
    with pytest.raises(VosjaxError, match="matches no parameter"):
        make_optimizer(default_optim(freeze=("^encoder/",)), PARAMS, 10)
    with pytest.raises(VosjaxError, match="not a regex"):
        make_optimizer(default_optim(freeze=("(",)), PARAMS, 10)
    with pytest.raises(VosjaxError, match="past the end"):
        make_optimizer(default_optim(freeze=("backbone",), freeze_until=10), PARAMS, 10)
    with pytest.raises(VosjaxError, match="'adam' or 'adamw'"):
        make_optimizer(default_optim(name="sgd"), PARAMS, 10)
