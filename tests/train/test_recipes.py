"""The paper recipes: configs pinned to docs/RECIPES.md (STCN family, JOINT), the gap curriculum, weights at start."""

from __future__ import annotations

import importlib
import json
import os
import pathlib

import pytest

from vosjax import methods
from vosjax.data.pipeline import TrainDataConfig
from vosjax.data.samplers import schedule_value
from vosjax.errors import VosjaxError
from vosjax.training.optim import default_optim, make_schedule
from vosjax.training.state import build_model
from vosjax.training.weights import check_backbones

ROOT = pathlib.Path(__file__).resolve().parents[2]


def table(method: str) -> dict[str, list[str]]:
    """``{field: [paper/code, config, source]}`` of the ``## method`` table of docs/RECIPES.md."""
    text = (ROOT / "docs" / "RECIPES.md").read_text()
    section = text.split(f"\n## {method}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0] not in ("field", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def config_of(method: str):
    return importlib.import_module(f"configs.{method}").get_config()


def _arch(folder: str) -> str:
    return os.path.basename(folder).split("_imagenet")[0]


def describe(method: str) -> dict[str, str]:
    """The config's recipe in the words of the table's config column."""
    c = config_of(method)
    s, v = c.stages.static, c.stages.video
    ds, dv = (TrainDataConfig.from_config({k: x for k, x in st.data.items() if k != 'source'}) for st in (s, v))
    assert s.optim.lr == v.optim.lr and s.optim.weight_decay == v.optim.weight_decay
    assert s.optim.schedule == v.optim.schedule == "piecewise" and s.optim.decay_factor == v.optim.decay_factor
    assert tuple(ds.crop_size) == tuple(dv.crop_size)
    o = c.objective
    assert o.bootstrap == "sample"
    ce = f"CE top {o.top_p} per sample, warm {o.start_warm}-{o.end_warm}"
    frames = sorted({ds.frames_per_sample, dv.frames_per_sample})
    out = {
        "batch": f"static {ds.batch_size} / video {dv.batch_size}",
        "iterations": f"static {s.steps} / video {v.steps}",
        "lr": (f"{s.optim.lr}, x{s.optim.decay_factor} at {s.optim.decay_steps[0]} / "
               f"{v.optim.decay_steps[0]}, wd {s.optim.weight_decay}"),
        "crop": "{}x{}".format(*dv.crop_size),
        "frames": " / ".join(str(f) for f in frames),
        "objects": f"{ds.max_objects} / {dv.max_objects}",
        "augment": f"per-frame affine {dv.augment.frame_rotation_deg:g} / {dv.augment.frame_shear_deg:g}",
    }
    key, value = c.init.backbones.key_encoder, c.init.backbones.value_encoder
    out["init"] = f"ImageNet {_arch(key)} / {_arch(value)}" + (" (value stem random)" if "_in2_" in value else "")
    sched = methods.get_method(method).sampler.gap_schedule
    if method == "pcvos":
        out["gaps"] = f"inter-clip {' / '.join(str(g) for _, g in sched)}, intra {dv.intra_clip_gap}"
        out["loss"] = f"Dice {o.dice_weight:g} + {ce}"
    else:
        starts = [0.0] + [e for e, _ in sched[:-1]]
        out["gaps"] = (f"{' / '.join(str(g) for _, g in sched)} at "
                       f"{' / '.join(f'{round(100 * e)}' for e in starts)} %")
        out["loss"] = (f"hybrid ({', '.join(f'{w:g}' for w in o.weights)}), {ce}" if method == "trickvos"
                       else f"bootstrapped {ce}")
    return out


@pytest.mark.parametrize("method", ["stcn", "trickvos", "pcvos"])
def test_config_matches_the_recipe_table(method):
    rows = table(method)
    got = describe(method)
    assert set(got) == set(rows), sorted(set(got) ^ set(rows))
    for field, text in got.items():
        assert rows[field][1] == text, (method, field)


def describe_joint() -> dict[str, str]:
    """configs/joint.py (full) in the words of the JOINT table's config column."""
    c = config_of("joint")
    assert tuple(c.stage_order) == ("video", "video_full")
    st = [c.stages[n] for n in c.stage_order]
    d1, d2 = (TrainDataConfig.from_config({k: x for k, x in s.data.items() if k != "source"}) for s in st)
    assert d1 == d2  # both stages train on the same data
    a = d1.augment
    lr = "; ".join(
        f"{s.optim.lr:g}, x{s.optim.decay_factor:g} at {' / '.join(str(k) for k in s.optim.decay_steps)}"
        for s in st
    )
    rj, oj = a.search_center_jitter
    return {
        "batch": str(d1.batch_size),
        "iterations": " / ".join(f"{n} {s.steps}" for n, s in zip(c.stage_order, st)),
        "lr": f"{st[0].optim.name.capitalize()} {lr}",
        "crop": "{}x{}".format(*d1.crop_size) + f", factor {a.search_area_factor:g}, {a.search_crop}",
        "jitter": (f"reference {a.search_scale_jitter[0]:g} / ({rj[0]:g}, {rj[1]:g}), "
                   f"others {a.search_scale_jitter[1]:g} / ({oj[0]:g}, {oj[1]:g})"),
        "frames": f"{d1.frames_per_sample} (window {d1.window})",
        "objects": str(d1.max_objects),
        "augment": (f"per-frame rotation {a.frame_rotation_deg:g} / zoom {a.frame_scale:g}, "
                    f"mirror {a.flip_prob:g}{' (reference apart)' if a.reference_own_flip else ''}, "
                    f"brightness {a.brightness:g}"),
        "losses": f"Lovasz + {c.objective.cosine_weight:g} cosine",
        "init": f"ImageNet {_arch(c.init.backbones.backbone)}",
    }


def test_joint_config_matches_the_recipe_table():
    rows = table("joint")
    got = describe_joint()
    assert set(got) == set(rows), sorted(set(got) ^ set(rows))
    for field, text in got.items():
        assert rows[field][1] == text, (field, text)
    a = TrainDataConfig.from_config(
        {k: x for k, x in config_of("joint").stages.video.data.items() if k != "source"}).augment
    # nothing else moves the frames: the search region replaces the clip's crop, rotation and shear
    assert (a.rotation_deg, a.shear_deg, a.frame_shear_deg) == (0, 0, 0)
    assert (a.contrast, a.saturation, a.hue_deg, a.noise_std) == (0, 0, 0, 0)
    tiny = importlib.import_module("configs.joint").get_config("tiny").stages.video.data
    assert "augment" not in tiny  # the CPU variant keeps the plain random crop


def test_stcn_values_are_the_authors_code():
    c = config_of("stcn")
    assert (c.stages.static.data.batch_size, c.stages.video.data.batch_size) == (16, 8)
    assert (c.stages.static.steps, c.stages.video.steps) == (300_000, 150_000)
    assert tuple(c.stages.video.optim.decay_steps) == (125_000,)
    tv = importlib.import_module("configs.stcn").get_config("trickvos_regime")
    assert (tv.stages.video.data.batch_size, tv.stages.video.steps, tv.stages.video.optim.schedule) == (
        16, 300_000, "constant")


def test_stcn_step_decay_is_multisteplr():
    """torch MultiStepLR([125000], 0.1) stepped once per iteration: lr x0.1 from iteration 125000 on."""
    c = config_of("stcn").stages.video
    lr = make_schedule(c.optim, c.steps)
    assert [float(lr(k)) for k in (0, 124_999, 125_000, 149_999)] == pytest.approx([1e-5, 1e-5, 1e-6, 1e-6])
    assert float(make_schedule(default_optim(lr=1e-5), 10)(5)) == pytest.approx(1e-5)


def test_stcn_gap_curriculum():
    """STCN train.py: 5, then 10 / 15 / 20 / 25 from 10 / 20 / 30 / 40 %, back to 5 from 90 %."""
    for name in ("stcn", "trickvos"):
        sched = methods.get_method(name).sampler.gap_schedule
        got = [schedule_value(sched, f / 100) for f in (0, 5, 15, 25, 35, 50, 95)]
        assert got == [5, 5, 10, 15, 20, 25, 5], name
        assert schedule_value(sched, 0.1) == 10 and schedule_value(sched, 0.9) == 5


@pytest.mark.parametrize("method", ["stcn", "trickvos", "pcvos", "cyclic", "joint", "frtm"])
def test_full_configs_name_encoders_and_tiny_ones_do_not(method):
    mod = importlib.import_module(f"configs.{method}")
    full, tiny = mod.get_config(), mod.get_config("tiny")
    assert not dict(tiny.init.backbones)
    model = build_model(full.model)
    table_ = model.backbone_paths()
    assert set(full.init.backbones) == set(table_)
    for name, folder in full.init.backbones.items():
        assert _arch(folder) == table_[name][1]


def test_missing_weights_stop_training_at_once(tmp_path, monkeypatch, capsys):
    from vosjax.train import main

    monkeypatch.setenv("VOSJAX_DATA", str(tmp_path / "data"))
    rc = main(["--config", str(ROOT / "configs" / "stcn.py"), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    folder = tmp_path / "data" / "weights" / "resnet50_imagenet_s16"
    assert str(folder) in err and "init.from_scratch=True" in err
    assert "https://download.pytorch.org/models/resnet50-19c8e357.pth" in err
    assert (f"python tools/convert_torch_weights.py --arch resnet50 --input resnet50-19c8e357.pth "
            f"--output {folder} --stop-at s16") in err
    assert "--arch resnet18 --input resnet18-5c106cde.pth" in err and "--in-channels 5" in err
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_check_backbones_from_scratch_and_present_folders(tmp_path):
    c = config_of("trickvos")
    model = build_model(c.model)
    with pytest.raises(VosjaxError, match="--in-channels 2 --allow-missing"):
        check_backbones(c, model)
    c.init.from_scratch = True
    assert check_backbones(c, model) == {}
    c.init.from_scratch = False
    for name in c.init.backbones:
        d = tmp_path / name
        d.mkdir()
        (d / "vosjax_backbone.json").write_text(json.dumps({}))
        c.init.backbones[name] = str(d)
    assert check_backbones(c, model) == dict(c.init.backbones)
