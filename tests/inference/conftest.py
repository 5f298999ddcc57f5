"""A tiny stand-in model and hand-made videos for the engine tests.

``ColorMemory`` implements the :class:`VOSModel` interface with a memory
network that has one parameter: keys are the average ImageNet-normalised
colour of ``stride x stride`` cells (times ``params["scale"]``), values the
average mask of each object over the cell, the readout is
:func:`vosjax.ops.memory.readout` over a keep-first :class:`MemoryBank`, and
the per-object logits are ``10 * (v - 0.5)`` of the read-out values ``v`` resized
to the frame.
On videos of uniformly coloured objects it tracks well, so engine logic can be
checked end to end; it also records, per ``memorize`` call, the ``write`` and
``refit`` flags it received (``memory["history"]``), which the schedule tests read.
"""

from __future__ import annotations

import types
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models.base import SegmentOptions, VOSModel
from vosjax.ops import memory as mem_ops
from vosjax.ops.aggregate import INVALID_LOGIT

HISTORY = 256


def _pool(x: jax.Array, s: int) -> jax.Array:
    """Mean over s x s cells of the axes (-3, -2) of ``[..., H, W, C]`` (H, W multiples of s)."""
    *lead, h, w, c = x.shape
    return x.reshape(*lead, h // s, s, w // s, s, c).mean(axis=(-4, -2))


class ColorMemory(VOSModel):
    """Stand-in memory network (module docstring). ``config``: dict with ``memory_frames``."""

    name = "colormem"
    stride = 4

    def __init__(self, config: Any = None):
        super().__init__(dict(config or {"name": "colormem", "memory_frames": 3}))

    def init(self, rng, frames, masks, obj_valid):
        del rng, frames, masks, obj_valid
        return {"params": {"scale": jnp.asarray(3.0, jnp.float32)}}

    def encode_key(self, variables, frames, *, train=False):
        key = _pool(frames, self.stride) * variables["params"]["scale"]
        b, t, hh, ww, _ = frames.shape
        return {"key": key, "frame_hw": jnp.zeros((b, t, hh, ww, 0), jnp.float32)}

    def encode_value(self, variables, frames, masks, obj_valid, feats, *, train=False):
        v = _pool(masks[..., None], self.stride)  # [B, O, T, h, w, 1]
        return v * obj_valid[:, :, None, None, None, None]

    def init_memory(self, variables, batch, num_objects, feat_shape):
        h, w = feat_shape
        bank = mem_ops.bank_init(batch, self.memory_frames, h * w, 3, num_objects)
        return {
            "bank": bank,
            "history": jnp.zeros((batch, HISTORY), jnp.int32),
            "calls": jnp.zeros((batch,), jnp.int32),
        }

    def memorize(
        self, variables, memory, frames, masks, obj_valid, feats, write, refit=None, *, train=False
    ):
        refit = write if refit is None else refit
        values = self.encode_value(variables, frames, masks, obj_valid, feats)
        b, o, t, h, w, _ = values.shape
        bank = memory["bank"]
        for i in range(t):
            k = feats["key"][:, i].reshape(b, h * w, 3)
            v = jnp.moveaxis(values[:, :, i, ..., 0], 1, -1).reshape(b, h * w, o)
            bank = mem_ops.bank_insert(bank, k, v, keep_first=self.policy.keep_first, write=write)
        flags = write.astype(jnp.int32) + 2 * refit.astype(jnp.int32)
        rows = jnp.arange(b)
        calls = memory["calls"]
        history = memory["history"].at[rows, calls % HISTORY].set(flags)
        return {"bank": bank, "history": history, "calls": calls + 1}

    def segment(self, variables, memory, feats, obj_valid, options=SegmentOptions()):
        key = feats["key"]
        b, t, h, w, _ = key.shape
        hh, ww = feats["frame_hw"].shape[2:4]
        keys, values, valid = mem_ops.bank_flatten(memory["bank"])
        o = values.shape[-1]
        if options.segment_len is not None:
            r = mem_ops.progressive_readout(
                keys,
                values,
                key.reshape(b, t, h * w, 3),
                options.segment_len,
                options.top_k,
                valid,
            )
        else:
            r = mem_ops.readout(keys, values, key.reshape(b, t * h * w, 3), options.top_k, valid)
        p = jnp.moveaxis(r.reshape(b, t, h, w, o), -1, 1)  # [B, O, T, h, w]
        p = jax.image.resize(p, (b, o, t, hh, ww), "linear")
        logits = 10.0 * (p - 0.5)  # linear in the read-out: finite with a gradient everywhere
        return jnp.where(obj_valid[:, :, None, None, None], logits, INVALID_LOGIT)


def random_variables(model, seed: int = 0, size: int = 64):
    """Random variables of a real model without compiling its ``init`` (shapes from eval_shape):
    weights ``N(0, 1 / fan_in)``, zero biases and running means, unit scales and variances."""
    abstract = jax.eval_shape(
        model.init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 2, size, size, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 1, 2, size, size), jnp.float32),
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


# Well separated, saturated colours: background grey, objects red / green / blue / yellow.
COLORS = np.array(
    [[110, 110, 110], [230, 30, 30], [30, 200, 40], [40, 60, 230], [230, 220, 30]], np.uint8
)


def make_video(
    num_frames: int = 12,
    size: tuple[int, int] = (48, 64),
    appear: tuple[int, ...] = (0, 0),
    seed: int = 0,
    speed: float = 2.0,
    noise: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly coloured squares moving over a grey background.

    Object ``k + 1`` appears at frame ``appear[k]``. ``noise`` adds uniform
    integer noise in ``[-noise, noise]`` to every pixel (so no two memory keys
    tie exactly). Returns ``frames uint8[T, H, W, 3]`` and label maps
    ``uint8[T, H, W]`` (later objects on top).
    """
    rng = np.random.default_rng(seed)
    hh, ww = size
    frames = np.broadcast_to(COLORS[0], (num_frames, hh, ww, 3)).copy()
    labels = np.zeros((num_frames, hh, ww), np.uint8)
    side = max(6, min(hh, ww) // 4)
    for k, t0 in enumerate(appear):
        y0, x0 = rng.uniform(0, hh - side), rng.uniform(0, ww - side)
        vy, vx = rng.uniform(-1, 1, 2) * speed
        for t in range(t0, num_frames):
            y = int(round(np.clip(y0 + vy * (t - t0), 0, hh - side)))
            x = int(round(np.clip(x0 + vx * (t - t0), 0, ww - side)))
            frames[t, y : y + side, x : x + side] = COLORS[k + 1]
            labels[t, y : y + side, x : x + side] = k + 1
    if noise:
        jitter = rng.integers(-noise, noise + 1, frames.shape)
        frames = np.clip(frames.astype(np.int64) + jitter, 0, 255).astype(np.uint8)
    return frames, labels


def first_masks(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Frame -> label map of the objects first appearing there (the semi-supervised input)."""
    out, seen = {}, set()
    for t, lab in enumerate(labels):
        new = [int(k) for k in np.unique(lab) if k and int(k) not in seen]
        if new:
            out[t] = np.where(np.isin(lab, new), lab, 0).astype(np.uint8)
            seen.update(new)
    return out


@pytest.fixture(scope="session")
def toy_model() -> ColorMemory:
    return ColorMemory()


@pytest.fixture(scope="session")
def toy_variables(toy_model):
    return toy_model.init(None, None, None, None)


@pytest.fixture(scope="session")
def toy_engine(toy_model):
    """``get(config) -> Engine`` of the stand-in model, one per config for the whole session,
    so tests with equal configs and frame sizes share one compiled step."""
    from vosjax.inference import Engine

    cache: dict = {}

    def get(config):
        if config not in cache:
            cache[config] = Engine(toy_model, config)
        return cache[config]

    return get


@pytest.fixture(scope="session")
def tk() -> types.SimpleNamespace:
    """The helpers of this file (test modules cannot import conftest under importlib mode)."""
    return types.SimpleNamespace(
        ColorMemory=ColorMemory,
        make_video=make_video,
        first_masks=first_masks,
        COLORS=COLORS,
        random_variables=random_variables,
    )
