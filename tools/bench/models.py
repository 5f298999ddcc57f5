"""Model sizes (and optionally per-frame step times) of every method at full size.

    python tools/benchmark.py models [--detail] [--time] [--depthwise] [--methods a,b] [--objects 2]
                                     [--repeats 5]

Parameter counts: trainable parameters (``variables["params"]``; batch-norm
running statistics excluded) of each registry entry's default full-size
config, counted from ``jax.eval_shape(model.init, ...)`` (nothing is
allocated or compiled), next to the figure the paper gives where it gives one.
Methods whose module is not in the repository (or has no ``default_config``)
are listed as skipped with the reason. ``--detail`` adds the count of each
top-level parameter group (encoders, fusion, decoder, ...).

``--depthwise``: the depthwise convolutions of a MobileNetV2 (TrickVOS's
lightweight encoders) at 480 x 854, each timed as vosjax computes it
(:func:`vosjax.ops.depthwise.depthwise_conv2d`, fused shifted slices) and as
XLA's grouped convolution (``feature_group_count = C``, the baseline), with
the ratio per layer and over the whole network.

``--time``: median time of one jitted per-frame step at 480 x 854, the full
DAVIS size (batch 1, ``--objects`` objects): ``encode_key`` of the frame, ``segment``
from a memory holding the first frame, ``memorize`` of the frame; the baseline
of the run is the ``stcn`` step (column ``x stcn``). Runs on the default JAX
device (compile time excluded).
"""

from __future__ import annotations

import argparse
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bench.common import fmt_ms, machine_line, time_fn
from vosjax import methods
from vosjax.models import get_model
from vosjax.models.backbones import _MBV2_SETTINGS, _MBV2_STEM
from vosjax.models.base import SegmentOptions
from vosjax.ops.depthwise import depthwise_conv2d

FULL_SIZE = (480, 854)


def model_config(name: str) -> Any:
    """Default full-size config of method ``name`` (its record's ``default_config``)."""
    return methods.get_method(name).make_default_config()


def example_inputs(cfg: Any, objects: int, frames: int = 2) -> tuple[Any, Any, Any, tuple]:
    hw = FULL_SIZE
    f = jax.ShapeDtypeStruct((1, frames) + hw + (3,), jnp.float32)
    m = jax.ShapeDtypeStruct((1, objects, frames) + hw, jnp.float32)
    v = jax.ShapeDtypeStruct((1, objects), jnp.bool_)
    return f, m, v, hw


def count(tree: Any) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def param_table(detail: bool, names: list[str]) -> dict[str, tuple[Any, Any]]:
    print(f"{'method':10s} {'input':>10s} {'params':>12s} {'paper':>8s}  note")
    built: dict[str, tuple[Any, Any]] = {}
    for name in names:
        try:
            cfg = model_config(name)
            model = get_model(cfg)
            f, m, v, hw = example_inputs(cfg, 1)
            shapes = jax.eval_shape(model.init, jax.random.key(0), f, m, v)
        except ModuleNotFoundError as err:
            print(f"{name:10s} skipped: {err.name} is not in the repository yet")
            continue
        except Exception as err:  # noqa: BLE001 - report and go on with the other methods
            print(f"{name:10s} skipped: {type(err).__name__}: {err}")
            continue
        built[name] = (cfg, model)
        n = count(shapes["params"])
        paper, note = methods.get_method(name).paper_params
        ptxt = f"{paper / 1e6:.1f}M" if paper else "-"
        if paper:
            note = f"{note}; ours / paper = {n / paper:.2f}"
        print(f"{name:10s} {hw[0]:>4d}x{hw[1]:<5d} {n:>12,d} {ptxt:>8s}  {note}")
        if detail:
            for group, sub in shapes["params"].items():
                print(f"{'':12s}{group:22s}{count(sub):>12,d}")
    return built


def time_step(cfg: Any, model: Any, objects: int, repeats: int) -> tuple[dict, tuple]:
    """Median time of one jitted per-frame step of ``model`` at 480 x 854."""
    f, m, v, hw = example_inputs(cfg, objects, 1)
    frames = jnp.zeros(f.shape, f.dtype).at[..., 0].set(1.0)
    masks = jnp.zeros(m.shape, m.dtype).at[..., : hw[0] // 2, : hw[1] // 2].set(1.0)
    valid = jnp.ones(v.shape, bool)
    write = jnp.ones((1,), bool)
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), frames, masks, valid)
    feats = jax.jit(model.encode_key)(variables, frames)
    mem = model.init_memory(variables, 1, objects, feats["key"].shape[2:4])
    mem = jax.jit(model.memorize)(variables, mem, frames, masks, valid, feats, write)

    @jax.jit
    def step(variables, mem, frames):
        feats = model.encode_key(variables, frames)
        logits = model.segment(variables, mem, feats, valid, SegmentOptions())
        probs = jax.nn.sigmoid(logits)
        return logits, model.memorize(variables, mem, frames, probs, valid, feats, write)

    return time_fn(lambda: step(variables, mem, frames), repeats=repeats), hw


def step_times(built: dict[str, tuple[Any, Any]], objects: int, repeats: int) -> None:
    print(f"\nper-frame step (encode_key + segment + memorize), batch 1, {objects} objects")
    base = None
    for name, (cfg, model) in built.items():
        try:
            t, hw = time_step(cfg, model, objects, repeats)
        except Exception as err:  # noqa: BLE001 - report and go on with the other methods
            print(f"  {name:10s} skipped: {type(err).__name__}: {err}")
            continue
        base = t["median"] if name == "stcn" else base
        ratio = f"{t['median'] / base:6.2f} x stcn" if base else ""
        print(f"  {name:10s} {hw[0]}x{hw[1]:<5d}{fmt_ms(t['median'])}  {ratio}")


def mbv2_depthwise_layers(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """``(H, W, C, stride)`` of the input of every 3x3 depthwise conv of MobileNetV2 up to
    stride 16 (``features.1`` .. ``features.13``) for an ``h x w`` image."""
    size = lambda n, s: -(-n // s)
    h, w, c, out = size(h, 2), size(w, 2), _MBV2_STEM, []
    for t, ch, n, first in _MBV2_SETTINGS[:5]:  # (t, c, n, s) up to the 96-channel s16 stage
        for i in range(n):
            s = first if i == 0 else 1
            out.append((h, w, c * t, s))
            h, w, c = size(h, s), size(w, s), ch
    return out


def depthwise_times(repeats: int) -> None:
    print(f"\nMobileNetV2 depthwise 3x3 convs (features.1-13) at {FULL_SIZE[0]}x{FULL_SIZE[1]}, "
          "batch 1: vosjax (fused shifted slices) vs XLA grouped conv (baseline)")
    rng = np.random.default_rng(0)
    tot_ours = tot_base = 0.0
    for h, w, c, s in mbv2_depthwise_layers(*FULL_SIZE):
        x = jnp.asarray(rng.normal(size=(1, h, w, c)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(3, 3, 1, c)), jnp.float32)
        ours = jax.jit(lambda a, b, s=s: depthwise_conv2d(a, b, s, (1, 1)))
        base = jax.jit(lambda a, b, s=s, c=c: lax.conv_general_dilated(
            a, b, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c))
        t_ours = time_fn(functools.partial(ours, x, k), repeats=repeats)["median"]
        t_base = time_fn(functools.partial(base, x, k), repeats=repeats)["median"]
        tot_ours, tot_base = tot_ours + t_ours, tot_base + t_base
        print(f"  {h:4d}x{w:<4d} C={c:<4d} s={s}  vosjax{fmt_ms(t_ours)}  grouped{fmt_ms(t_base)}"
              f"  {t_ours / t_base:5.2f} x")
    print(f"  all {len(mbv2_depthwise_layers(*FULL_SIZE))} layers: vosjax{fmt_ms(tot_ours)}  "
          f"grouped{fmt_ms(tot_base)}  {tot_ours / tot_base:5.2f} x")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="benchmark.py models", description=__doc__)
    ap.add_argument("--detail", action="store_true", help="count per top-level parameter group")
    ap.add_argument("--time", action="store_true", help="also time one jitted per-frame step")
    engine_methods = methods.method_names(segments=True)
    ap.add_argument("--methods", default=",".join(engine_methods), help="comma-separated subset")
    ap.add_argument("--depthwise", action="store_true",
                    help="time MobileNetV2's depthwise convs: vosjax vs grouped conv")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    chosen = [m for m in args.methods.split(",") if m]
    unknown = [m for m in chosen if m not in engine_methods]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {', '.join(engine_methods)}")
    print(machine_line())
    built = param_table(args.detail, chosen)
    if args.time:
        step_times(built, args.objects, args.repeats)
    if args.depthwise:
        depthwise_times(args.repeats)
    return 0
