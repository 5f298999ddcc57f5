"""Training checkpoints (exact restore, retention, atomicity) and params-only bundles."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vosjax import parallel
from vosjax.checkpoint import (
    TrainCheckpointer,
    abstract_model_variables,
    export_bundle,
    load_bundle,
    load_variables,
)
from vosjax.errors import VosjaxError
from vosjax.models import get_model
from vosjax.models.stcn import default_config


def make_state(seed=0):
    rng = np.random.default_rng(seed)
    params = {"enc": {"w": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)},
              "dec": {"b": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}}
    tx = optax.multi_transform({"t": optax.adam(1e-3), "f": optax.set_to_zero()},
                               {"enc": {"w": "f"}, "dec": {"b": "t"}})
    opt_state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments and count
    return {
        "step": jnp.asarray(7, jnp.int32),
        "variables": {"params": params, "batch_stats": {"enc": {"mean": jnp.arange(3.0)}}},
        "opt_state": opt_state,
        "rng": jax.random.key_data(jax.random.key(seed)),
    }


def config():
    return ml_collections.ConfigDict({"model": {"name": "stcn", "sizes": (1, 2)}, "seed": 3})


def test_save_restore_is_exact(tmp_path):
    mesh = parallel.make_mesh()
    state = make_state()
    sh = parallel.param_sharding(state, mesh, fsdp=True, min_size=8)
    state = parallel.put(state, sh)
    ck = TrainCheckpointer(tmp_path / "ck")
    data_state = {"next_batch": 7, "seed": 1, "sampler": "stcn"}
    assert ck.save(7, state, data_state, config(), {"stage": "video", "stage_step": 7})
    assert not ck.save(7, state, data_state, config(), {"stage": "video"})  # exists: not rewritten
    ck.close()
    ck = TrainCheckpointer(tmp_path / "ck")  # a new process would do the same
    assert ck.latest_step() == 7
    js = ck.restore_json(7)
    assert js["data"] == data_state and js["meta"]["stage"] == "video"
    assert js["config"]["model"]["sizes"] == [1, 2] and js["config"]["seed"] == 3
    abstract = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, sh)
    got = ck.restore_state(7, abstract)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(state)):
        assert a.sharding == b.sharding
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(VosjaxError, match="no step 8"):
        ck.restore_json(8)
    bad = dict(abstract, variables={"params": abstract["variables"]["params"]})
    with pytest.raises(VosjaxError, match="does not match"):
        ck.restore_state(7, bad)
    ck.close()


def test_keep_latest_and_best(tmp_path):
    state = make_state()
    with TrainCheckpointer(tmp_path, keep=2, keep_best=1, best_metric="J&F-Mean") as ck:
        metrics = {2: {"J&F-Mean": 0.9}, 4: {"J&F-Mean": 0.5}}
        for step in range(1, 7):
            ck.save(step, state, {"next_batch": step}, config(), {"stage": "s"}, metrics.get(step))
        assert ck.all_steps() == [2, 5, 6]
        assert ck.best_step() == 2 and ck.latest_step() == 6
        assert ck.metrics(2) == {"J&F-Mean": 0.9}
        with pytest.raises(VosjaxError, match="lack the tracked"):
            ck.save(9, state, {}, config(), {}, {"loss": 1.0})


def test_unfinished_save_is_ignored_and_cleaned(tmp_path):
    state = make_state()
    with TrainCheckpointer(tmp_path) as ck:
        ck.save(3, state, {"next_batch": 3}, config(), {"stage": "s"})
    junk = tmp_path / "5.orbax-checkpoint-tmp-1234"  # what a save killed half-way leaves
    junk.mkdir()
    (junk / "partial").write_bytes(b"\0" * 10)
    with TrainCheckpointer(tmp_path) as ck:
        assert ck.latest_step() == 3
    assert not junk.exists()


@pytest.fixture(scope="module")
def tiny_stcn():
    cfg = default_config("stcn", tiny=True)
    model = get_model(cfg)
    shapes = abstract_model_variables(model)
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    return cfg, model, variables


def test_bundle_roundtrip(tmp_path, tiny_stcn):
    cfg, _, variables = tiny_stcn
    run_cfg = ml_collections.ConfigDict({"model": cfg.to_dict(), "inference": {"top_k": 20}})
    out = export_bundle(tmp_path / "bundle", run_cfg, variables)
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["model"] == "stcn" and meta["num_params"] > 0
    model, loaded, conf = load_bundle(out)
    assert model.name == "stcn" and conf.inference.top_k == 20
    assert tuple(conf.model.decoder_dims) == tuple(cfg.decoder_dims)  # JSON lists back to tuples
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
        assert isinstance(a, jax.Array)
        np.testing.assert_array_equal(np.asarray(a), b)
    host, _ = load_variables(out)
    assert jax.tree_util.tree_structure(host) == jax.tree_util.tree_structure(variables)


def test_bundle_errors(tmp_path, tiny_stcn):
    cfg, _, variables = tiny_stcn
    with pytest.raises(VosjaxError, match="config.model.name"):
        export_bundle(tmp_path / "a", {"seed": 1}, variables)
    with pytest.raises(VosjaxError, match="not .*a vosjax bundle"):
        load_bundle(tmp_path / "nothing")
    out = export_bundle(tmp_path / "b", {"model": cfg.to_dict()}, variables)
    conf = json.loads((out / "config.json").read_text())
    conf["model"]["key_dim"] = 8  # a config that does not describe these variables
    (out / "config.json").write_text(json.dumps(conf))
    with pytest.raises(VosjaxError, match=r"do not fit model 'stcn'.*key_proj"):
        load_bundle(out)
