"""The method registry: a new method is one module plus one ``register`` call.

The toy method below is such a module (a model class, an objective and its
options); ``toy_method`` registers it with one ``Method`` entry, and the test
then trains it with the trainer, exports a bundle and segments a video from
that bundle, with nothing else in vosjax told about it.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax import methods
from vosjax.errors import VosjaxError
from vosjax.memory_policy import POLICIES, MemoryPolicy, get_policy
from vosjax.models.base import SegmentOptions, VOSModel
from vosjax.objectives.common import TRAIN_OPTIONS, hard_iou, prepare_batch, rollout
from vosjax.ops import memory as mem_ops
from vosjax.ops.aggregate import INVALID_LOGIT

# -- the toy method's module -------------------------------------------------------------------
STRIDE = 8
KEY_DIM = 3


def _pool(x: jax.Array) -> jax.Array:
    *lead, h, w, c = x.shape
    return x.reshape(*lead, h // STRIDE, STRIDE, w // STRIDE, STRIDE, c).mean(axis=(-4, -2))


class ToyMemory(VOSModel):
    """Keys: each 8 x 8 cell's mean colour times a learned scale; values: the cell's mean mask
    per object; logits: ``scale * (readout - 0.5)`` upsampled (two parameters)."""

    name = "toymem"
    stride = STRIDE

    def init(self, rng, frames, masks, obj_valid):
        del rng, frames, masks, obj_valid
        return {"params": {"key_scale": jnp.asarray(1.0), "scale": jnp.asarray(2.0)}}

    def encode_key(self, variables, frames, *, train=False):
        del train
        key = _pool(frames) * variables["params"]["key_scale"]
        return {"key": key}

    def encode_value(self, variables, frames, masks, obj_valid, feats, *, train=False):
        del variables, frames, feats, train
        return _pool(masks[..., None]) * obj_valid[:, :, None, None, None, None]

    def init_memory(self, variables, batch, num_objects, feat_shape):
        del variables
        h, w = feat_shape
        return mem_ops.bank_init(batch, self.memory_frames, h * w, KEY_DIM, num_objects)

    def memorize(
        self, variables, memory, frames, masks, obj_valid, feats, write, refit=None, *, train=False
    ):
        del refit
        values = self.encode_value(variables, frames, masks, obj_valid, feats, train=train)
        b, o, t, h, w, _ = values.shape
        for i in range(t):
            k = feats["key"][:, i].reshape(b, h * w, KEY_DIM)
            v = jnp.moveaxis(values[:, :, i, ..., 0], 1, -1).reshape(b, h * w, o)
            memory = mem_ops.bank_insert(
                memory, k, v, keep_first=self.policy.keep_first, write=write
            )
        return memory

    def segment(self, variables, memory, feats, obj_valid, options=SegmentOptions()):
        key = feats["key"]
        b, t, h, w, _ = key.shape
        keys, values, valid = mem_ops.bank_flatten(memory)
        o = values.shape[-1]
        r = mem_ops.readout(keys, values, key.reshape(b, t * h * w, KEY_DIM), options.top_k, valid)
        p = jnp.moveaxis(r.reshape(b, t, h, w, o), -1, 1)
        p = jax.image.resize(p, (b, o, t, h * STRIDE, w * STRIDE), "linear")
        logits = variables["params"]["scale"] * (p - 0.5)
        return jnp.where(obj_valid[:, :, None, None, None], logits, INVALID_LOGIT)


@dataclasses.dataclass(frozen=True)
class ToyOptions:
    weight: float = 1.0


def toy_objective(model, variables, batch, rng, step, *, options=ToyOptions()):
    """Mean BCE of the per-object probabilities of frames 1.. propagated from frame 0."""
    del rng, step
    prep = prepare_batch(batch)
    T = prep.frames.shape[1]
    r = rollout(model, variables, prep, [[t] for t in range(1, T)], options=TRAIN_OPTIONS)
    target = prep.masks[:, :, 1:]
    p = jnp.clip(r.probs, 1e-6, 1 - 1e-6)
    bce = -(target * jnp.log(p) + (1 - target) * jnp.log(1 - p))
    weight = prep.obj_valid[:, :, None, None, None].astype(jnp.float32)
    loss = options.weight * jnp.sum(bce * weight) / jnp.maximum(jnp.sum(weight) * bce[0, 0].size, 1)
    return loss, {"bce": loss, "iou": hard_iou(r.probs, target, prep.obj_valid)}


TOY = methods.Method(
    name="toymem",
    model=ToyMemory,
    objective=toy_objective,
    options=ToyOptions,
    sampler=methods.Sampler("chain", 3, ((1.0, 2),), 0.0),
    memory_policy="every_k",
)


@pytest.fixture
def toy_method():
    methods.register(TOY)  # the one entry
    yield TOY
    methods.unregister(TOY.name)


# -- tests ---------------------------------------------------------------------------------------
def _toy_config():
    import ml_collections

    from vosjax.training import presets as P
    from vosjax.training.schema import validate_config, with_defaults

    c = P.base(seed=0)
    c.model = ml_collections.ConfigDict({"name": "toymem", "memory_frames": 4})
    c.objective = ml_collections.ConfigDict({"name": "toymem", "weight": 1.0})
    P.add_stage(
        c,
        "video",
        steps=40,
        data=P.data(
            P.synthetic_source("demo"),
            sampler="toymem",
            batch_size=8,
            crop_size=(32, 32),
            max_objects=2,
            num_threads=1,
            prefetch=2,
        ),
        optim=P.optim(name="adam", lr=3e-2),
    )
    c.inference = ml_collections.ConfigDict({"max_objects": 2, "top_k": 8})
    c.log.every_steps = 10
    c.log.progress = False
    c.eval.at_end = False
    config = with_defaults(c)
    validate_config(config)
    return config


def test_a_registered_toy_method_trains_and_segments(toy_method, tmp_path):
    from vosjax.data.samplers import default_num_frames
    from vosjax.inference import VideoSegmenter
    from vosjax.objectives import make_objective
    from vosjax.train import train

    assert "toymem" in methods.method_names(segments=True)
    assert default_num_frames("toymem") == 3  # the sampler comes from the record
    assert make_objective({"name": "toymem", "weight": 2.0}).options == ToyOptions(2.0)

    train(_toy_config(), tmp_path / "run", log=lambda msg: None)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(x)["train/loss"] for x in lines if '"train/loss"' in x]
    assert len(losses) >= 3 and np.all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.9 * losses[0], losses  # it learns

    seg = VideoSegmenter(str(tmp_path / "run" / "bundle"))
    assert isinstance(seg.engine.model, ToyMemory)
    assert seg.engine.policy == get_policy("every_k")  # the record's default policy
    rng = np.random.default_rng(0)
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    frames[..., 0] = 40
    frames[:, 8:24, 8:24] = (220, 30, 30)  # a red square (2 x 2 cells) that stays put
    frames += rng.integers(0, 6, frames.shape, dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    preds = [p for t, f in enumerate(frames) for p in seg.step(f, mask if t == 0 else None)]
    preds += seg.flush()
    assert len(preds) == 4
    for p in preds[1:]:
        inter = np.logical_and(p.labels == 1, mask == 1).sum()
        union = np.logical_or(p.labels == 1, mask == 1).sum()
        assert inter / union > 0.8


def test_registry_lookups_and_errors():
    m = methods.get_method("pcvos")
    assert m.model == "vosjax.models.pcvos:PCVOS" and m.memory_policy == "every_k"
    assert methods.get_method("trickvos").memory_policy == "first_last"
    assert methods.get_method("tracker").bundle_key == "tracker"
    assert "tracker" not in methods.method_names(segments=True)
    assert set(methods.method_names(segments=True)) == {
        "stcn",
        "trickvos",
        "cyclic",
        "pcvos",
        "joint",
        "frtm",
    }
    with pytest.raises(VosjaxError, match="Did you mean 'pcvos'"):
        methods.get_method("pcvoss")
    with pytest.raises(VosjaxError, match="already registered"):
        methods.register(methods.get_method("stcn"))
    with pytest.raises(VosjaxError, match="sampler kind"):
        methods.Sampler("zigzag", 3)
    with pytest.raises(VosjaxError, match="package.module:attribute"):
        methods.load("no_colon")


def test_policies_are_values_chosen_by_name():
    assert POLICIES["first_last"].capacity == 2 and POLICIES["joint"].refit_on_write
    p = get_policy("every_k").with_overrides(clip_length=5)
    assert p.write_every == 5 and p.name == "every_k"
    assert get_policy("frtm").with_overrides(update_interval=6).refit_every == 6
    assert get_policy("frtm").with_overrides(update_interval=6, refit_every=2).refit_every == 2
    assert get_policy("every_k").with_overrides(update_interval=6).refit_every == 0
    with pytest.raises(VosjaxError, match="not a memory policy"):
        get_policy("lru")
    with pytest.raises(VosjaxError, match="capacity"):
        MemoryPolicy("x", capacity=0)
