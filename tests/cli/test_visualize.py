"""tools/visualize.py: overlays, cycle-ERF heat maps, J&F bars and the speed-accuracy plot."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from vosjax.data.io import davis_palette, read_image, write_image, write_label_png

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def viz():
    spec = importlib.util.spec_from_file_location(
        "vosjax_visualize", ROOT / "tools" / "visualize.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def sequence(tmp_path):
    """One 4-frame sequence of a red square on grey, and its masks (id 2)."""
    frames, masks = tmp_path / "frames" / "seq", tmp_path / "masks" / "seq"
    for t in range(4):
        img = np.full((32, 48, 3), 100, np.uint8)
        lab = np.zeros((32, 48), np.uint8)
        img[8:20, 4 + 4 * t : 16 + 4 * t] = (220, 30, 30)
        lab[8:20, 4 + 4 * t : 16 + 4 * t] = 2
        write_image(frames / f"{t:05d}.png", img)
        write_label_png(masks / f"{t:05d}.png", lab, davis_palette())
    return tmp_path


def _svg(path):
    root = ET.parse(path).getroot()
    return root, [el for el in root.iter() if el.get("class") in ("bar", "point")]


def test_overlay(viz, sequence, tmp_path):
    out = tmp_path / "ov"
    assert (
        viz.main(
            [
                "overlay",
                "--frames",
                str(sequence / "frames"),
                "--results",
                str(sequence / "masks"),
                "--out",
                str(out),
                "--alpha",
                "0.5",
            ]
        )
        == 0
    )
    files = sorted((out / "seq").glob("*.png"))
    assert len(files) == 4
    img = read_image(files[1]).astype(int)
    # Inside the object (away from the contour): half frame colour, half palette colour of id 2.
    want = 0.5 * np.array([220, 30, 30]) + 0.5 * davis_palette()[2]
    assert np.abs(img[14, 12] - want).max() <= 1  # PNG: exact up to rounding
    assert np.abs(img[28, 40] - 100).max() == 0  # background untouched


def test_bar_plot(viz, tmp_path):
    csv_path = tmp_path / "per-sequence_results.csv"
    csv_path.write_text(
        "Sequence,J-Mean,F-Mean\ndog_1,0.800,0.700\nbike_1,0.500,0.250\nbike_2,0.1,0.3\n"
    )
    out = tmp_path / "jf.svg"
    assert viz.main(["bars", "--csv", str(csv_path), "--out", str(out)]) == 0
    root, marks = _svg(out)
    assert root.tag.endswith("svg") and len(marks) == 6
    heights = [float(m.get("height")) for m in marks]
    np.testing.assert_allclose(
        heights, [220 * v for v in (0.8, 0.7, 0.5, 0.25, 0.1, 0.3)], atol=0.06
    )
    assert "mean J&amp;F 0.442" in out.read_text()
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    assert viz.main(["bars", "--csv", str(bad), "--out", str(out)]) == 2


def test_speed_plot_from_table(viz, tmp_path):
    table = tmp_path / "speed.json"
    pts = [
        {"clip_length": 1, "fps": 2.0, "jf": 0.8},
        {"clip_length": 5, "fps": 5.0, "jf": 0.78},
        {"clip_length": 10, "fps": 7.5, "jf": 0.7},
    ]
    table.write_text(json.dumps(pts))
    out = tmp_path / "speed.svg"
    assert viz.main(["speed", "--table", str(table), "--plot-only", "--out", str(out)]) == 0
    _, marks = _svg(out)
    assert len(marks) == 3
    xs = [float(m.get("cx")) for m in marks]
    ys = [float(m.get("cy")) for m in marks]
    assert xs == sorted(xs) and ys == sorted(ys)  # faster to the right, less accurate lower
    assert viz.main(["speed", "--out", str(out)]) == 2


def test_speed_measured_on_a_davis_root(viz, tiny_bundle, tmp_path, sequence):
    from vosjax.data import SyntheticSource, load_spec, write_davis_layout

    spec = load_spec(
        "demo",
        name="v",
        height=32,
        width=48,
        num_frames=5,
        splits={"val": {"seed": 3, "num_videos": 1}},
    )
    root = write_davis_layout(
        SyntheticSource(spec, "val"),
        tmp_path / "davis",
        split="val",
        image_format="png",
        resolution="480p",
    )
    points = viz.measure_speed(str(tiny_bundle), str(root), [1, 5])
    assert [p["clip_length"] for p in points] == [1, 5]
    assert all(p["fps"] > 0 and 0 <= p["jf"] <= 1 and p["frames"] == 5 for p in points)


@pytest.mark.slow
def test_cycle_erf_heat_map(viz, tiny_bundle, sequence, tmp_path):
    out = tmp_path / "erf.png"
    assert (
        viz.main(
            [
                "erf",
                "--checkpoint",
                str(tiny_bundle),
                "--frames",
                str(sequence / "frames"),
                "--masks",
                str(sequence / "masks"),
                "--reference",
                "00000",
                "--target",
                "00003",
                "--out",
                str(out),
                "--steps",
                "3",
            ]
        )
        == 0
    )
    img = read_image(out)
    assert img.shape == (32, 48, 3)  # one object: one panel the size of the frame
    assert (
        viz.main(
            [
                "erf",
                "--checkpoint",
                str(tiny_bundle),
                "--frames",
                str(sequence / "frames"),
                "--masks",
                str(sequence / "masks"),
                "--reference",
                "00000",
                "--target",
                "00009",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_heat_map_colours(viz):
    hm = viz.heat_map(np.array([[0.0, 1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(hm[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(hm[0, 1], [255, 0, 0])
    np.testing.assert_array_equal(hm[0, 2], [255, 255, 0])
    np.testing.assert_array_equal(hm[0, 3], [255, 255, 255])
