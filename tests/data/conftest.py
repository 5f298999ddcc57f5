"""Fixtures of the data tests: small synthetic specs and folders written from them."""

from __future__ import annotations

import pathlib

import pytest

from vosjax.data import SyntheticSource, load_spec, write_davis_layout

# Every difficulty knob of the default preset, at a size that renders in milliseconds.
TINY = dict(
    name="tiny",
    height=40,
    width=56,
    num_frames=8,
    splits={"train": {"seed": 11, "num_videos": 6}, "val": {"seed": 12, "num_videos": 3}},
)


@pytest.fixture(scope="session")
def tiny_spec():
    return load_spec("default", **TINY)


@pytest.fixture(scope="session")
def tiny_davis(tmp_path_factory, tiny_spec) -> pathlib.Path:
    """The tiny spec's train and val splits written as a DAVIS folder with lossless PNG frames."""
    root = tmp_path_factory.mktemp("tiny_davis")
    write_davis_layout(SyntheticSource(tiny_spec, "train"), root, split="train", image_format="png")
    write_davis_layout(SyntheticSource(tiny_spec, "val"), root, split="val", image_format="png")
    return root
