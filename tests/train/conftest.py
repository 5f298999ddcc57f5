"""Shared pieces of the training tests: a tiny analysable model behind the VOSModel interface.

``ToyModel`` lets the objective tests compute the expected rollout by hand in
NumPy. Its "key" is the first colour channel of each normalised frame at full
resolution; its memory keeps the SUM and COUNT of the memorised masks; its
per-object logits are

    z[b, o, t] = w * mean_memory_mask[b, o] + b0 + c * key[b, t]

(the mean over the memorised frames), ``INVALID_LOGIT`` for invalid slots.
``encode_value`` returns two "label encodings" (for the JOINT objective):
``e_tra = relu(2 m - 1 + c)`` and ``e_ind = relu(1 - 2 m + c)`` per pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.models.base import VOSModel
from vosjax.ops.aggregate import INVALID_LOGIT


class ToyModel(VOSModel):
    name = "toy"
    stride = 1

    def init(self, rng, frames, masks, obj_valid):
        del rng, frames, masks, obj_valid
        return {"params": {"w": jnp.asarray(3.0), "b0": jnp.asarray(-1.5), "c": jnp.asarray(0.4)}}

    def encode_key(self, variables, frames, *, train=False):
        return {"key": frames[..., :1]}

    def encode_value(self, variables, frames, masks, obj_valid, feats, *, train=False):
        c = variables["params"]["c"]
        return {
            "e_tra": jax.nn.relu(2 * masks - 1 + c)[..., None],
            "e_ind": jax.nn.relu(1 - 2 * masks + c)[..., None],
        }

    def init_memory(self, variables, batch, num_objects, feat_shape):
        h, w = feat_shape
        return {"sum": jnp.zeros((batch, num_objects, h, w)), "count": jnp.zeros((batch,))}

    def memorize(self, variables, memory, frames, masks, obj_valid, feats, write, refit=None, *,
                 train=False):
        add = jnp.sum(masks, axis=2) * write[:, None, None, None]
        return {"sum": memory["sum"] + add, "count": memory["count"] + masks.shape[2] * write}

    def segment(self, variables, memory, feats, obj_valid, options=None):
        p = variables["params"]
        mean = memory["sum"] / jnp.maximum(memory["count"], 1)[:, None, None, None]
        z = p["w"] * mean[:, :, None] + p["b0"] + p["c"] * feats["key"][:, None, ..., 0]
        return jnp.where(obj_valid[:, :, None, None, None], z, INVALID_LOGIT)


@pytest.fixture(scope="session")
def toy_model():
    return ToyModel({"name": "toy"})


def random_batch(seed: int, B: int = 3, T: int = 3, H: int = 8, W: int = 8, O: int = 2) -> dict:
    """A batch like the pipeline's: slot labels only for valid objects (sample 1 has one object)."""
    rng = np.random.default_rng(seed)
    obj_valid = np.ones((B, O), bool)
    obj_valid[1, 1:] = False
    labels = np.zeros((B, T, H, W), np.int32)
    for b in range(B):
        n = int(obj_valid[b].sum())
        labels[b] = rng.integers(0, n + 1, (T, H, W))
    return {
        "frames": rng.integers(0, 256, (B, T, H, W, 3)).astype(np.uint8),
        "labels": labels,
        "obj_valid": obj_valid,
    }


@pytest.fixture
def batch_factory():
    return random_batch
