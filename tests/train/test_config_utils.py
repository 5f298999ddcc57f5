"""Config files, command-line overrides and typo errors (vosjax.config_utils, training.schema)."""

from __future__ import annotations

import dataclasses
import textwrap

import ml_collections
import pytest

from vosjax.config_utils import (
    apply_overrides,
    check_fields,
    closest,
    load_config,
    parse_override,
    read_section,
)
from vosjax.errors import VosjaxError
from vosjax.training.schema import stage_list, validate_config, with_defaults

CONFIG = textwrap.dedent(
    '''
    import ml_collections
    from vosjax.config_utils import pick_variant

    def get_config(arg=None):
        variant = pick_variant(arg, ("full", "tiny"), __file__)
        c = ml_collections.ConfigDict()
        c.seed = 0
        c.model = ml_collections.ConfigDict({"name": "stcn", "key_dim": 64 if variant == "full" else 16})
        c.objective = ml_collections.ConfigDict({"name": "stcn", "top_p": 0.15})
        c.stages = ml_collections.ConfigDict()
        c.stages.video = ml_collections.ConfigDict({
            "steps": 10,
            "data": {"source": {"kind": "synthetic", "spec": "demo"}, "batch_size": 8,
                     "crop_size": (64, 64)},
            "optim": {"lr": 1e-4, "freeze": ()},
        })
        c.stage_order = ("video",)
        c.log = ml_collections.ConfigDict({"every_steps": 5, "progress": False})
        c.model.flag = True
        c.model.maybe = None
        return c
    '''
)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(CONFIG)
    return path


def test_load_variants(config_file):
    assert load_config(str(config_file)).model.key_dim == 64
    assert load_config(f"{config_file}:tiny").model.key_dim == 16
    with pytest.raises(VosjaxError, match=r"unknown variant 'tinny'.*Did you mean 'tiny'"):
        load_config(f"{config_file}:tinny")
    with pytest.raises(VosjaxError, match="not found"):
        load_config(str(config_file.parent / "missing.py"))


def test_load_reports_broken_files(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(VosjaxError, match="failed to import: RuntimeError: boom"):
        load_config(str(bad))
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    with pytest.raises(VosjaxError, match="no get_config"):
        load_config(str(none))


def test_overrides_parse_by_type(config_file):
    c = load_config(str(config_file))
    c = apply_overrides(c, [
        "--config.stages.video.steps=1_000",
        "--config.stages.video.optim.lr=3e-4",
        "--config.model.flag=false",
        "--config.stages.video.data.crop_size=32,48",
        "--config.stages.video.optim.freeze=('^backbone/', 'decoder')",
        "--config.model.name=cyclic",
        "--config.model.maybe=[1, 2]",
        "--config.stages.video.data.source.spec='default'",
    ])
    assert c.stages.video.steps == 1000 and isinstance(c.stages.video.steps, int)
    assert c.stages.video.optim.lr == pytest.approx(3e-4)
    assert c.model.flag is False
    assert tuple(c.stages.video.data.crop_size) == (32, 48)
    assert tuple(c.stages.video.optim.freeze) == ("^backbone/", "decoder")
    assert c.model.name == "cyclic"
    assert list(c.model.maybe) == [1, 2]
    assert c.stages.video.data.source.spec == "default"


def test_override_type_errors(config_file):
    c = load_config(str(config_file))
    with pytest.raises(VosjaxError, match="expects a number"):
        apply_overrides(c, ["--config.stages.video.steps=many"])
    with pytest.raises(VosjaxError, match="expects an integer"):
        apply_overrides(c, ["--config.stages.video.steps=1.5"])
    with pytest.raises(VosjaxError, match="true/false"):
        apply_overrides(c, ["--config.model.flag=maybe"])
    with pytest.raises(VosjaxError, match="is a section"):
        apply_overrides(c, ["--config.model=3"])
    with pytest.raises(VosjaxError, match=r"--config.<field>=<value>"):
        parse_override("--config.flag")


def test_typo_names_field_and_closest(config_file):
    c = load_config(str(config_file))
    with pytest.raises(VosjaxError) as e:
        apply_overrides(c, ["--config.stages.video.optim.lrr=1"])
    msg = str(e.value)
    assert "config.stages.video.optim.lrr" in msg and "'lr'" in msg
    with pytest.raises(VosjaxError, match=r"'config.stagess'.*'stages'"):
        apply_overrides(c, ["--config.stagess.video.steps=1"])


def test_closest_and_check_fields():
    assert closest("learning_rate", ["lr", "learning_rates", "warmup"]) == ["learning_rates"]
    check_fields({"a": 1}, ["a", "b"], "x")
    with pytest.raises(VosjaxError, match=r"unknown field 'x.bb'.*Did you mean 'b'"):
        check_fields({"bb": 1}, ["a", "b"], "x")


@dataclasses.dataclass(frozen=True)
class _Inner:
    size: tuple[int, int] = (1, 2)
    rate: float = 0.5


@dataclasses.dataclass(frozen=True)
class _Outer:
    steps: int = 3
    schedule: tuple | None = None
    inner: _Inner = _Inner()

    def __post_init__(self):
        if self.steps < 1:
            raise VosjaxError("_Outer: 'steps' must be >= 1")


def test_read_section_sources_nesting_and_tuples():
    assert read_section(_Outer, None, "f") == _Outer()
    assert read_section(_Outer, {}, "f", steps=5) == _Outer(steps=5)
    cd = ml_collections.ConfigDict(
        {"steps": 2, "schedule": [[0.0, 5], [0.5, 25]], "inner": {"size": [4, 8]}}
    )
    got = read_section(_Outer, cd, "f", steps=7)
    assert got == _Outer(7, ((0.0, 5), (0.5, 25)), _Inner((4, 8), 0.5))
    assert isinstance(got.inner.size, tuple) and hash(got)  # lists became tuples: hashable
    # a dataclass instance: returned as is, or its fields read (and overridden)
    assert read_section(_Outer, got, "f") is got
    assert read_section(_Outer, got, "f", steps=1) == dataclasses.replace(got, steps=1)
    assert read_section(_Outer, {"inner": _Inner(rate=2.0)}, "f").inner.rate == 2.0
    with pytest.raises(VosjaxError, match="'steps' must be >= 1"):  # values: the class checks
        read_section(_Outer, {"steps": 0}, "f")


def test_read_section_names_unknown_fields():
    want = r"^EngineConfig.from_config: unknown field 'stpes'\. Did you mean 'steps'\?"
    with pytest.raises(VosjaxError, match=want):
        read_section(_Outer, {"stpes": 1}, "EngineConfig.from_config")
    with pytest.raises(VosjaxError, match=r"^f: unknown field 'zzz'\. Valid fields: steps, "):
        read_section(_Outer, {}, "f", zzz=1)  # overrides are checked too
    with pytest.raises(VosjaxError, match=r"unknown field 'inner.rat'.*'rate'.*fields of 'inner'"):
        read_section(_Outer, {"inner": {"rat": 1.0}}, "f")
    with pytest.raises(VosjaxError, match=r"f: 'config' must be an ml_collections.ConfigDict or a"):
        read_section(_Outer, [("steps", 1)], "f")
    with pytest.raises(VosjaxError, match=r"f: field 'inner' must be .*ConfigDict or a mapping"):
        read_section(_Outer, {"inner": 3}, "f")


def test_validate_catches_typos_in_files(config_file):
    c = load_config(str(config_file))
    validate_config(c)
    bad = apply_overrides(c, [])
    bad.stages.video.data.batchsize = 4
    with pytest.raises(VosjaxError, match=r"stages.video.data.batchsize.*'batch_size'"):
        validate_config(bad)
    bad = apply_overrides(c, [])
    bad.chekpoint = ml_collections.ConfigDict({"keep": 1})
    with pytest.raises(VosjaxError, match=r"'config.chekpoint'.*'checkpoint'"):
        validate_config(bad)
    bad = apply_overrides(c, [])
    bad.log.evry_steps = 3
    with pytest.raises(VosjaxError, match=r"'log.evry_steps'.*'every_steps'"):
        validate_config(bad)


def test_defaults_and_stage_order(config_file):
    c = with_defaults(load_config(str(config_file)))
    assert c.checkpoint.keep == 3 and c.log.every_steps == 5 and c.log.progress is False
    assert c.stages.video.optim.name == "adam" and c.stages.video.optim.lr == pytest.approx(1e-4)
    c.stages.static = ml_collections.ConfigDict(dict(c.stages.video.to_dict()))
    with pytest.raises(VosjaxError, match="stage_order"):
        stage_list(c)
    c.stage_order = ("static", "video")
    assert [n for n, _ in stage_list(c)] == ["static", "video"]
    c.stages.static.steps = 0
    assert [n for n, _ in stage_list(c)] == ["video"]
    c.stage_order = ("static", "vid")
    with pytest.raises(VosjaxError, match="'vid'"):
        stage_list(c)
