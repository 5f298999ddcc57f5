"""EngineConfig: field checks, resolved memory-policy defaults, from_config mapping."""

from __future__ import annotations

import dataclasses

import pytest

from vosjax.errors import VosjaxError
from vosjax.inference import EngineConfig, resolve_policy


def test_defaults_are_per_frame_stcn():
    c = EngineConfig()
    assert c.clip_length == 1 and not c.per_clip
    assert c.top_k == 20
    p = resolve_policy(c)
    assert (p.write_every, p.refit_every, p.capacity) == (5, 0, None)
    assert not p.refit_on_write


@pytest.mark.parametrize(
    "policy, write, refit, capacity, on_write",
    [
        ("every_k", 5, 0, None, False),
        ("first_last", 1, 0, 2, False),
        ("joint", 5, 0, None, True),
        ("frtm", 1, 8, None, False),
        ("auto", 5, 0, None, False),
    ],
)
def test_policy_defaults(policy, write, refit, capacity, on_write):
    c = resolve_policy(EngineConfig(memory_policy=policy))
    assert (c.write_every, c.refit_every, c.capacity, c.refit_on_write) == (
        write,
        refit,
        capacity,
        on_write,
    )


def test_per_clip_defaults_write_every_clip():
    assert resolve_policy(EngineConfig(clip_length=5)).write_every == 5
    assert resolve_policy(EngineConfig(clip_length=5, mem_every=10)).write_every == 10
    assert resolve_policy(EngineConfig(clip_length=5, memory_policy="first_last")).write_every == 5
    assert resolve_policy(EngineConfig(memory_frames=7)).capacity == 7


def test_from_config_maps_fields_one_to_one():
    ml_collections = pytest.importorskip("ml_collections")
    cd = ml_collections.ConfigDict({"clip_length": 10, "segment_len": 5, "top_k": None})
    c = EngineConfig.from_config(cd)
    assert (c.clip_length, c.segment_len, c.top_k) == (10, 5, None)
    d = EngineConfig.from_config({"box_filter": "cv"}, max_objects=3)
    assert d.box_filter == "cv" and d.max_objects == 3
    assert EngineConfig.from_config(None) == EngineConfig()
    # Round trip through a plain dict.
    assert EngineConfig.from_config(c.to_dict()) == c
    assert c.replace(top_k=5).top_k == 5


def test_unknown_field_names_closest():
    with pytest.raises(VosjaxError, match=r"unknown field 'clip_lenght'.*'clip_length'"):
        EngineConfig.from_config({"clip_lenght": 5})
    with pytest.raises(VosjaxError, match="unknown field 'zzz'"):
        EngineConfig.from_config({"zzz": 1})
    with pytest.raises(VosjaxError, match="ConfigDict or a mapping"):
        EngineConfig.from_config([("top_k", 3)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_objects": 0}, "max_objects"),
        ({"clip_length": 2.0}, "clip_length"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"memory_policy": "lru"}, "memory_policy"),
        ({"box_filter": "kalman"}, "box_filter"),
        ({"correction_every": -1}, "correction_every"),
        ({"correction_every": None}, "correction_every"),
        ({"correction_rate": -0.1}, "correction_rate"),
        ({"segment_len": 0}, "segment_len"),
        ({"clip_length": 5, "mem_every": 7}, "multiple of clip_length"),
        ({"memory_policy": "first_last", "mem_every": 5}, "first_last"),
        ({"tracker": "x.msgpack"}, "box_filter='pt'"),
        ({"return_probs": 1}, "return_probs"),
    ],
)
def test_bad_values_raise(kwargs, match):
    with pytest.raises(VosjaxError, match=match):
        EngineConfig(**kwargs)


def test_progressive_matching_only_where_it_splits_a_clip():
    assert EngineConfig(clip_length=10, segment_len=5).pmm_segment_len == 5
    assert EngineConfig(clip_length=5, segment_len=5).pmm_segment_len is None  # PCVOS L = 5
    assert EngineConfig(segment_len=5).pmm_segment_len is None
    assert EngineConfig(clip_length=10).pmm_segment_len is None


def test_frozen_and_hashable():
    c = EngineConfig(clip_length=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.clip_length = 3  # type: ignore[misc]
    assert hash(c) == hash(EngineConfig(clip_length=5))
    assert {c: 1}[EngineConfig(clip_length=5)] == 1
