"""Training pipelines: batch contents, determinism, sharding, resumable state, worker count."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vosjax.data import (
    DavisSource,
    SyntheticSource,
    TrainDataConfig,
    make_train_pipeline,
    remap_to_slots,
)
from vosjax.data.samplers import sampler_spec, schedule_value
from vosjax.errors import VosjaxError

NO_AUG = {
    "crop_scale": (1.0, 1.0),
    "crop_aspect": (1.0, 1.0),
    "rotation_deg": 0,
    "shear_deg": 0,
    "flip_prob": 0,
    "brightness": 0,
    "contrast": 0,
    "saturation": 0,
    "hue_deg": 0,
}


def _take(it, n):
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def _equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "sampler,T",
    [
        ("stcn", 3),
        ("trickvos", 5),
        ("cyclic", 3),
        ("pcvos", 7),
        ("frtm", 3),
        ("joint", 4),
        ("static", 3),
    ],
)
def test_batches_have_the_documented_fields(tiny_spec, sampler, T):
    src = SyntheticSource(tiny_spec, "train")
    (b,) = _take(
        make_train_pipeline(
            {
                "sampler": sampler,
                "batch_size": 3,
                "crop_size": (32, 24),
                "max_objects": 2,
                "min_object_pixels": 4,
            },
            src,
            seed=1,
            process_index=0,
            process_count=1,
        ),
        1,
    )
    assert b["frames"].shape == (3, T, 32, 24, 3) and b["frames"].dtype == np.uint8
    assert b["labels"].shape == (3, T, 32, 24) and b["labels"].dtype == np.int32
    assert b["obj_valid"].shape == (3, 2) and b["obj_valid"].dtype == bool
    assert b["frame_indices"].shape == (3, T) and b["video_index"].shape == (3,)
    assert ("clip_id" in b) == (sampler == "pcvos") and ("max_gap" in b) == (
        sampler_spec(sampler).gap_schedule is not None
    )
    for i in range(3):
        n = int(b["obj_valid"][i].sum())
        assert b["obj_valid"][i].tolist() == [True] * n + [False] * (2 - n)  # valid slots first
        assert set(np.unique(b["labels"][i]).tolist()) <= set(range(n + 1))
        for k in range(1, n + 1):  # every object is visible enough in the reference frame
            assert (b["labels"][i, 0] == k).sum() >= 4
        assert (b["object_ids"][i, n:] == 0).all() and (b["object_ids"][i, :n] > 0).all()


def test_without_augmentation_the_batch_is_the_source_data(tiny_spec):
    src = SyntheticSource(tiny_spec, "train")
    cfg = {
        "sampler": "stcn",
        "batch_size": 4,
        "crop_size": (40, 56),
        "max_objects": 5,
        "augment": NO_AUG,
        "min_object_pixels": 1,
    }
    for b in _take(make_train_pipeline(cfg, src, seed=2, process_index=0, process_count=1), 2):
        for i in range(4):
            v = src[int(b["video_index"][i])]
            idx = b["frame_indices"][i]
            np.testing.assert_array_equal(b["frames"][i], v.frames[idx])
            n = int(b["obj_valid"][i].sum())
            ids = b["object_ids"][i, :n].tolist()
            assert sorted(ids) == sorted(
                np.unique(v.masks[idx[0]])[1:].tolist()
            )  # all reference objects
            np.testing.assert_array_equal(b["labels"][i], remap_to_slots(v.masks[idx], ids)[0])


def test_same_seed_same_batches_other_seed_other_batches_and_epochs_are_permutations(tiny_spec):
    src = SyntheticSource(tiny_spec, "train")  # 6 videos
    cfg = {"sampler": "stcn", "batch_size": 3, "crop_size": (24, 24)}
    a = _take(make_train_pipeline(cfg, src, seed=5, process_index=0, process_count=1), 4)
    b = _take(make_train_pipeline(cfg, src, seed=5, process_index=0, process_count=1), 4)
    c = _take(make_train_pipeline(cfg, src, seed=6, process_index=0, process_count=1), 1)
    assert all(_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0]["frames"], c[0]["frames"])
    order = np.concatenate([x["video_index"] for x in a])
    assert sorted(order[:6].tolist()) == list(range(6)) and sorted(order[6:12].tolist()) == list(
        range(6)
    )
    assert not np.array_equal(order[:6], order[6:12])  # reshuffled every epoch


def test_hosts_get_disjoint_blocks_of_the_same_global_batch(tiny_spec):
    src = SyntheticSource(tiny_spec, "train")
    cfg = {"sampler": "cyclic", "batch_size": 4, "crop_size": (24, 24)}
    whole = _take(make_train_pipeline(cfg, src, seed=9, process_index=0, process_count=1), 2)
    h0 = _take(make_train_pipeline(cfg, src, seed=9, process_index=0, process_count=2), 2)
    h1 = _take(make_train_pipeline(cfg, src, seed=9, process_index=1, process_count=2), 2)
    for w, x, y in zip(whole, h0, h1):
        assert x["frames"].shape[0] == 2
        for k in w:
            np.testing.assert_array_equal(w[k], np.concatenate([x[k], y[k]]))
    with pytest.raises(VosjaxError, match="must divide by process_count 3"):
        make_train_pipeline(cfg, src, seed=9, process_index=0, process_count=3)


def test_resume_mid_epoch_from_saved_state(tiny_spec):
    src = SyntheticSource(tiny_spec, "train")
    cfg = {"sampler": "pcvos", "batch_size": 4, "crop_size": (24, 24), "total_steps": 6}
    run = make_train_pipeline(cfg, src, seed=3, process_index=0, process_count=1)
    for _ in range(
        3
    ):  # 12 samples: two epochs of 6 videos, stopping inside the second batch of epoch 2
        next(run)
    state = run.get_state()
    assert state["next_batch"] == 3 and state["seed"] == 3 and state["sampler"] == "pcvos"
    rest = _take(run, 2)
    resumed = make_train_pipeline(cfg, src, seed=3, process_index=0, process_count=1)
    resumed.set_state(dict(state))
    again = _take(resumed, 2)
    assert all(_equal(x, y) for x, y in zip(rest, again))
    # The curriculum follows the step: batch k reads progress k / total_steps.
    assert again[0]["max_gap"][0] == schedule_value(sampler_spec("pcvos").gap_schedule, 3 / 6)
    other = make_train_pipeline(
        {**cfg, "sampler": "stcn"}, src, seed=3, process_index=0, process_count=1
    )
    with pytest.raises(VosjaxError, match="saved sampler='pcvos' differs"):
        other.set_state(state)
    with pytest.raises(VosjaxError, match="expected a state"):
        other.set_state({"step": 3})


def test_worker_processes_do_not_change_the_data(tiny_spec):
    src = SyntheticSource(tiny_spec, "train")
    cfg = {"sampler": "stcn", "batch_size": 2, "crop_size": (24, 24)}
    ref = _take(make_train_pipeline(cfg, src, seed=4, process_index=0, process_count=1), 3)
    with make_train_pipeline(
        {**cfg, "num_workers": 2, "num_threads": 1}, src, seed=4, process_index=0, process_count=1
    ) as mp:
        mp.set_state({"next_batch": 1})
        got = [next(mp) for _ in range(2)]
    assert all(_equal(x, y) for x, y in zip(ref[1:], got))


def test_static_sampler_on_real_frames(davis_demo):
    src = DavisSource(davis_demo, sequences=["bike"], complete=True)
    (b,) = _take(
        make_train_pipeline(
            {"sampler": "static", "batch_size": 1, "crop_size": (96, 96)},
            src,
            seed=0,
            process_index=0,
            process_count=1,
        ),
        1,
    )
    assert b["frames"].shape == (1, 3, 96, 96, 3) and b["frame_indices"].tolist() == [[0, 0, 0]]
    assert b["obj_valid"].any() and (b["frames"].std(axis=(2, 3)) > 5).all()


@pytest.mark.filterwarnings(
    "ignore::vosjax.data.io.DataWarning"
)  # judo/00005.png is resized (tested elsewhere)
def test_config_and_source_errors(davis_demo, tiny_spec):
    src = SyntheticSource(tiny_spec, "train")
    with pytest.raises(VosjaxError, match=r"unknown field 'batchsize'.*'batch_size'"):
        make_train_pipeline({"batchsize": 4}, src, seed=0, process_index=0, process_count=1)
    with pytest.raises(VosjaxError, match=r"unknown field 'augment.zoom'"):
        make_train_pipeline({"augment": {"zoom": 2}}, src, seed=0, process_index=0, process_count=1)
    with pytest.raises(VosjaxError, match="'sampler' must be one of"):
        TrainDataConfig(sampler="xmem")
    sparse = DavisSource(davis_demo, sequences=["judo"])
    it = make_train_pipeline(
        {"batch_size": 1, "crop_size": (32, 32)}, sparse, seed=0, process_index=0, process_count=1
    )
    with pytest.raises(VosjaxError, match="video 'judo' has first-appearance annotations only"):
        next(it)
    it.close()
    default_host = make_train_pipeline({"batch_size": 8}, src)  # process index / count from JAX
    state = default_host.get_state()
    assert (state["process_index"], state["process_count"]) == (
        jax.process_index(),
        jax.process_count(),
    )
    cfg = TrainDataConfig.from_config(
        {"sampler": "joint", "crop_size": [8, 8], "augment": {"flip_prob": 0.0}}
    )
    assert cfg.crop_size == (8, 8) and cfg.augment.flip_prob == 0.0 and cfg.frames_per_sample == 4
