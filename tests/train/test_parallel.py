"""Mesh, shardings, batch assembly and the sharded train step (vosjax.parallel, training.state)."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vosjax import parallel
from vosjax.errors import VosjaxError
from vosjax.objectives import make_objective
from vosjax.training.optim import default_optim, make_optimizer
from vosjax.training.state import init_state, make_train_step


def test_mesh_over_all_devices():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count() == 8
    assert parallel.batch_sharding(mesh).spec == P("data")
    assert parallel.replicated_sharding(mesh).spec == P()


def test_fsdp_spec_rules():
    assert parallel.fsdp_spec((64, 3), 8, min_size=1000) == P()  # too small
    assert parallel.fsdp_spec((3, 3, 64, 128), 8, min_size=100) == P(None, None, None, "data")
    assert parallel.fsdp_spec((256, 16), 8, min_size=100) == P("data")  # largest divisible axis
    assert parallel.fsdp_spec((16, 16), 8, min_size=100) == P(None, "data")  # ties: the last
    assert parallel.fsdp_spec((7, 9, 5), 8, min_size=10) == P()  # nothing divides
    assert parallel.fsdp_spec((64, 64), 1, min_size=1) == P()
    tree = {"a": np.zeros((32, 24)), "b": np.zeros((3,)), "c": jax.ShapeDtypeStruct((8, 128), np.float32)}
    sh = parallel.param_sharding(tree, parallel.make_mesh(), fsdp=True, min_size=64)
    assert sh["a"].spec == P("data") and sh["b"].spec == P() and sh["c"].spec == P(None, "data")
    assert all(s.spec == P() for s in jax.tree_util.tree_leaves(parallel.param_sharding(tree, parallel.make_mesh())))


def test_shard_batch_and_round_trip():
    mesh = parallel.make_mesh()
    batch = {"frames": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "valid": np.arange(16) % 2 == 0}
    g = parallel.shard_batch(batch, mesh)
    assert g["frames"].shape == (16, 3) and g["frames"].sharding.spec == P("data")
    for shard in g["frames"].addressable_shards:  # device i holds rows 2i, 2i + 1
        i = list(mesh.devices.flat).index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data), batch["frames"][2 * i:2 * i + 2])
    back = parallel.to_host(g)
    np.testing.assert_array_equal(back["frames"], batch["frames"])
    np.testing.assert_array_equal(back["valid"], batch["valid"])
    with pytest.raises(VosjaxError, match="multiple of its 8 local devices"):
        parallel.shard_batch({"x": np.zeros((12, 2))}, mesh)
    with pytest.raises(VosjaxError, match="multiple of the device count 8"):
        parallel.local_batch_size(12, mesh)
    tree = {"w": np.arange(64.0).reshape(8, 8), "s": np.float32(2.0)}
    sh = parallel.param_sharding(tree, mesh, fsdp=True, min_size=8)
    placed = parallel.put(tree, sh)
    assert placed["w"].sharding.spec == P(None, "data")
    np.testing.assert_array_equal(parallel.to_host(placed)["w"], tree["w"])


def test_initialize_distributed_arguments(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.initialize_distributed() is False  # single process: nothing to do
    with pytest.raises(VosjaxError, match="without a coordinator"):
        parallel.initialize_distributed(num_processes=2, process_id=1)
    with pytest.raises(VosjaxError, match="set both"):
        parallel.initialize_distributed("localhost:1234", num_processes=2)
    with pytest.raises(VosjaxError, match="host:port"):
        parallel.initialize_distributed("localhost", num_processes=2, process_id=0)
    with pytest.raises(VosjaxError, match="0 <= process_id < num_processes"):
        parallel.initialize_distributed("localhost:1234", num_processes=2, process_id=2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(VosjaxError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        parallel.initialize_distributed("localhost:1234", process_id=0)


def _run_steps(model, mesh, batches, fsdp=False):
    obj = make_objective(ml_collections.ConfigDict({"name": "cyclic", "top_p": 0.5}))
    variables = model.init(None, None, None, None)
    tx, schedule = make_optimizer(default_optim(name="adamw", lr=0.05, weight_decay=0.01, clip_norm=5.0),
                                  variables["params"], 10)
    state = init_state(jax.tree_util.tree_map(np.asarray, variables), tx, seed=0)
    sh = parallel.param_sharding(jax.eval_shape(lambda: state), mesh, fsdp, min_size=1)
    state = parallel.put(state, sh)
    step = make_train_step(model, obj, tx, schedule, 0, sh, parallel.batch_sharding(mesh),
                           parallel.replicated_sharding(mesh))
    losses = []
    for b in batches:
        state, metrics = step(state, parallel.shard_batch(b, mesh))
        losses.append(float(metrics["loss"]))
    return losses, parallel.to_host(state)


def test_train_step_same_on_1_and_8_devices(toy_model, batch_factory):
    batches = [batch_factory(10 + k, B=8) for k in range(3)]
    l1, s1 = _run_steps(toy_model, parallel.make_mesh(jax.devices()[:1]), batches)
    l8, s8 = _run_steps(toy_model, parallel.make_mesh(), batches)
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    assert l1[2] != l1[0]  # the parameters did move
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s8)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(s8["step"]) == 3
