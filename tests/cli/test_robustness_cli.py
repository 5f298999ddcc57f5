"""tools/robustness.py on a tiny bundle and tiny synthetic videos: every setting, finite numbers."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from vosjax.data import SyntheticSource, load_spec

SPEC = dict(name="rob", height=32, width=32, num_frames=4, num_objects=[1, 1],
            splits={"val": {"seed": 5, "num_videos": 1}})


def _tool():
    path = pathlib.Path(__file__).parents[2] / "tools" / "robustness.py"
    spec = importlib.util.spec_from_file_location("robustness_tool", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_robustness_table_has_every_setting_with_finite_numbers(tiny_bundle, capsys, monkeypatch):
    tool = _tool()
    monkeypatch.setattr(tool, "open_source", lambda data: SyntheticSource(load_spec("demo", **SPEC), "val"))
    assert tool.main(["--checkpoint", str(tiny_bundle), "--every", "1", "--max-videos", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["setting", "+GC", "J&F", "J", "F"]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[0] for r in rows] == [s for s in tool.SETTINGS for _ in (0, 1)]
    assert [len(r) == 5 for r in rows] == [i % 2 == 1 for i in range(len(rows))]
    for r in rows:
        vals = np.array(r[-3:], float)
        assert np.all(np.isfinite(vals)) and np.all((vals >= 0) & (vals <= 100))
