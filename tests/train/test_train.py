"""The training CLI end to end: typos, a tiny run, kill-and-resume, 1 vs 8 devices vs 2 processes.

Runs that need fresh processes (a SIGKILL, other device counts, jax.distributed)
go through ``python -m vosjax.train`` subprocesses that share a persistent
compilation cache, so the same program compiles once per test session.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from vosjax.checkpoint import load_bundle, load_variables
from vosjax.train import build_config, main, train

REPO = pathlib.Path(__file__).resolve().parents[2]

# a tiny STCN run over 32 x 32 synthetic crops: small enough for many subprocesses
SMALL = [
    "--config.stages.static.steps=0",
    "--config.stages.video.data.crop_size=32,32",
    "--config.stages.video.data.batch_size=8",
    "--config.stages.video.optim.lr=1e-3",
    "--config.log.every_steps=1",
    "--config.log.progress=false",
    "--config.eval.at_end=false",
    "--config.stages.video.data.num_frames=2",
]


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def cli_env(cache: pathlib.Path, devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(workdir, *args, config="configs/stcn.py:tiny"):
    return [sys.executable, "-m", "vosjax.train", "--config", config, "--workdir", str(workdir), *args]


def run_ok(cmd, env, timeout=600):
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                         check=False)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def losses(workdir) -> dict[int, float]:
    rows = [json.loads(x) for x in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def bundle_params(workdir):
    variables, _ = load_variables(pathlib.Path(workdir) / "bundle")
    return variables


# ----------------------------------------------------------------------------- fast


def test_cli_names_typos_and_closest_fields(capsys, tmp_path):
    rc = main(["--config", "configs/stcn.py:tiny", "--workdir", str(tmp_path),
               "--config.stages.video.optim.lrate=1e-3"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "config.stages.video.optim.lrate" in err and "'lr'" in err
    rc = main(["--config", "configs/stcn.py:tiny", "--workdir", str(tmp_path), "--steps=3"])
    assert rc == 2 and "--config.<field>=<value>" in capsys.readouterr().err
    rc = main(["--config", "configs/stcn.py:tyni", "--workdir", str(tmp_path)])
    assert rc == 2 and "Did you mean 'tiny'" in capsys.readouterr().err
    rc = main(["--config", "configs/stcn.py:tiny", "--workdir", str(tmp_path),
               "--config.inference.topk=3"])
    assert rc == 2 and "'top_k'" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()  # nothing ran


@pytest.mark.parametrize("method", ["stcn", "trickvos", "pcvos", "cyclic", "joint", "frtm", "tracker"])
def test_every_config_builds(method):
    for variant in ("", ":tiny"):
        config = build_config(f"configs/{method}.py{variant}")
        assert config.objective.name == method
    full = build_config(f"configs/{method}.py")
    assert all(s.steps >= 50_000 for s in full.stages.values())  # the papers' schedules


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    """Train in process (1 device), evaluate on synthetic val, export and reload the bundle."""
    config = build_config("configs/stcn.py:tiny", SMALL + ["--config.parallel.num_devices=1",
        "--config.stages.video.steps=4", "--config.eval.at_end=true", "--config.eval.max_videos=1",
        "--config.checkpoint.every_steps=2"])
    summary = train(config, tmp_path)
    assert summary["steps"] == 4 and summary["steps_run"] == 4
    assert 0.0 <= summary["eval"]["J&F-Mean"] <= 1.0 and summary["baseline"]["J&F-Mean"] > 0
    assert set(losses(tmp_path)) == {1, 2, 3, 4}
    assert any((tmp_path / "tensorboard").iterdir())
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    model, _, conf = load_bundle(tmp_path / "bundle")
    assert model.name == "stcn" and conf.stages.video.steps == 4
    again = train(config, tmp_path)  # resuming a finished run trains nothing
    assert again["steps_run"] == 0


@pytest.mark.slow
def test_killed_run_resumes_identically(tmp_path, compile_cache):
    env = cli_env(compile_cache, 1)
    steps = ["--config.stages.video.steps=16", "--config.checkpoint.every_steps=3"] + SMALL
    run_ok(cli(tmp_path / "straight", *steps), env)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(killed, *steps), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = killed / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline:
        done = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
        if done and max(done) >= 6:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert 6 <= left < 16

    out = run_ok(cli(killed, *steps), env)
    assert f"resume: step {left}" in out.stdout
    a, b = bundle_params(tmp_path / "straight"), bundle_params(killed)
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)
    la, lb = losses(tmp_path / "straight"), losses(killed)
    for step in range(left + 1, 17):
        assert la[step] == lb[step]


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_one_device_eight_devices_and_two_processes_agree(tmp_path, compile_cache):
    # Adam divides by sqrt(v) + eps: with the default eps a parameter whose gradient is
    # near zero moves by about lr * sign(g), so a last-bit difference in the summation order
    # of the devices' gradients can flip it (seen: 8 of 147456 weights off by 7e-5). A large
    # eps keeps the update proportional to tiny gradients; the comparison then tests the
    # sharded computation itself, to float tolerance.
    steps = ["--config.stages.video.steps=3", "--config.checkpoint.every_steps=3",
             "--config.stages.video.optim.eps=1e-3"] + SMALL
    run_ok(cli(tmp_path / "d1", *steps), cli_env(compile_cache, 1))
    fsdp = ["--config.parallel.fsdp=true", "--config.parallel.fsdp_min_size=4096"]
    run_ok(cli(tmp_path / "d8", *steps, *fsdp), cli_env(compile_cache, 8))
    port = _free_port()
    procs = [
        subprocess.Popen(
            cli(tmp_path / "p2", *steps, *fsdp, f"--coordinator_address=localhost:{port}",
                "--num_processes=2", f"--process_id={i}"),
            cwd=REPO, env=cli_env(compile_cache, 4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "8 device(s) on 2 process(es)" in outs[0]

    l1, l8, l2 = losses(tmp_path / "d1"), losses(tmp_path / "d8"), losses(tmp_path / "p2")
    assert l1.keys() == l8.keys() == l2.keys() == {1, 2, 3}
    np.testing.assert_allclose([l8[k] for k in l8], [l1[k] for k in l8], rtol=1e-4)
    np.testing.assert_allclose([l2[k] for k in l2], [l8[k] for k in l8], rtol=1e-5)
    p1, p8, p2 = (bundle_params(tmp_path / d) for d in ("d1", "d8", "p2"))
    for x1, x8, x2 in zip(_leaves(p1), _leaves(p8), _leaves(p2)):
        np.testing.assert_allclose(x8, x1, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x2, x8, rtol=1e-4, atol=1e-5)  # cross-process sums: another order


@pytest.mark.slow
@pytest.mark.parametrize("method, overrides", [
    ("stcn", ()), ("stcn", ("--config.model.dtype=bfloat16",)), ("trickvos", ()), ("pcvos", ()),
    ("cyclic", ()), ("joint", ()), ("frtm", ()), ("tracker", ()),
])
def test_tiny_config_loss_decreases(method, overrides):
    """The tiny config's model, objective and optimizer, on one batch of its own pipeline:
    a few sharded train steps must lower the loss (the same batch each step, so the
    decrease is not noise)."""
    import jax

    from vosjax import parallel
    from vosjax.data import make_source, make_train_pipeline
    from vosjax.objectives import make_objective
    from vosjax.training.optim import make_optimizer
    from vosjax.training.schema import data_pipeline_config, stage_list
    from vosjax.training.state import build_model, init_state, init_variables, make_train_step

    config = build_config(f"configs/{method}.py:tiny", list(overrides))
    name, stage = stage_list(config)[-1]
    config = build_config(f"configs/{method}.py:tiny", [
        *overrides, f"--config.stages.{name}.data.batch_size=4",
        f"--config.stages.{name}.data.crop_size=32,32"])  # CPU-sized: one sample per core and a half
    _, stage = stage_list(config)[-1]
    data_cfg = data_pipeline_config(stage, stage.steps)
    mesh = parallel.make_mesh(jax.devices()[:1])  # 8 forced devices on 2 cores only slow it down
    model = build_model(config.model)
    variables = init_variables(model, config, data_cfg, log=lambda *_: None)
    tx, schedule = make_optimizer(stage.optim, variables["params"], int(stage.steps))
    state = init_state(jax.tree_util.tree_map(np.asarray, variables), tx, 0)
    sh = parallel.param_sharding(jax.eval_shape(lambda: state), mesh)
    step = make_train_step(model, make_objective(config.objective), tx, schedule, 0, sh,
                           parallel.batch_sharding(mesh), parallel.replicated_sharding(mesh))
    with make_train_pipeline(data_cfg, make_source(stage.data.source), seed=3) as pipe:
        batch = parallel.shard_batch(next(pipe), mesh)
    state = parallel.put(state, sh)
    seen = []
    for _ in range(6):
        state, metrics = step(state, batch)
        seen.append(float(metrics["loss"]))
    assert all(np.isfinite(seen)), seen
    assert seen[-1] < 0.9 * seen[0], f"{method}: loss did not decrease: {seen}"
