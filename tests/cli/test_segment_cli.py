"""`python -m vosjax.segment` end to end: DAVIS layout in, palette PNGs out, scored by
`python -m vosjax.evaluate`, plus the real demo sequences (late objects, the 853-px mask)."""

from __future__ import annotations

import csv
import pathlib
import warnings

import numpy as np
import pytest

from vosjax import evaluate, metrics, segment
from vosjax.checkpoint import load_bundle
from vosjax.data import DataWarning, SyntheticSource, load_spec, write_davis_layout
from vosjax.data.io import davis_palette, read_label_png, write_label_png
from vosjax.inference import EngineConfig, evaluate_source

SPEC = dict(
    name="cli",
    height=48,
    width=64,
    num_frames=7,
    num_objects=[2, 2],
    late_appearance=1.0,
    late_window=[0.3, 0.5],
    splits={"val": {"seed": 5, "num_videos": 2}},
)


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> pathlib.Path:
    return tiny_bundle


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(load_spec("demo", **SPEC), "val")


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_segment_then_evaluate_matches_in_process(bundle, source, tmp_path):
    root = write_davis_layout(source, tmp_path / "davis", split="val", image_format="png")
    out = tmp_path / "results"
    assert (
        segment.main(
            [
                "--checkpoint",
                str(bundle),
                "--frames",
                str(root),
                "--masks",
                str(root),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    # One PNG per frame, the input palette, the source's ids.
    for i in range(len(source)):
        v = source[i]
        files = sorted((out / v.name).glob("*.png"))
        assert [p.stem for p in files] == list(v.frame_names)
        lab, pal = read_label_png(files[0])
        np.testing.assert_array_equal(pal, v.palette)
        np.testing.assert_array_equal(lab, np.asarray(v.masks[0]))  # the given frame
        late = [k for k in v.object_ids if v.first_frame[k] > 0]
        assert late, "the spec makes a late object"
        for k in late:  # nothing is labelled with an object before it appears
            for t in range(v.first_frame[k]):
                assert not np.any(read_label_png(files[t])[0] == k)
    assert (
        evaluate.main(
            [
                "--gt",
                str(root),
                "--results",
                str(out),
                "--workers",
                "1",
                "--quiet",
                "--precision",
                "6",
            ]
        )
        == 0
    )
    rows = _read_csv(out / "global_results.csv")
    model, variables, run = load_bundle(bundle)
    want = evaluate_source(model, variables, source, EngineConfig.from_config(run.inference))
    np.testing.assert_allclose(
        [float(x) for x in rows[1]],
        [want.global_metrics[k] for k in metrics.GLOBAL_MEASURES],
        atol=5e-7,
    )
    per = _read_csv(out / "per-sequence_results.csv")[1:]
    assert [r[0] for r in per] == [r[0] for r in want.per_object]
    np.testing.assert_allclose(
        [[float(r[1]), float(r[2])] for r in per],
        [[j, f] for _, j, f in want.per_object],
        atol=5e-7,
    )


def test_demo_sequences_smoke(bundle, davis_demo, tmp_path):
    """Real frames: judo's objects appear at frames 5, 8 and 13 and its 00005.png is 853 px wide."""
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = segment.main(
            [
                "--checkpoint",
                str(bundle),
                "--frames",
                str(davis_demo),
                "--masks",
                str(davis_demo),
                "--out",
                str(out),
                "--sequences",
                "bike",
                "judo",
                "--size",
                "64",
                "--clip-length",
                "4",
                "--overlay",
                "--quiet",
                "--engine",
                "bucket_objects=False",
            ]
        )
    assert code == 0
    assert any(issubclass(w.category, DataWarning) and "853x480" in str(w.message) for w in caught)
    ann = davis_demo / "Annotations" / "480p"
    for seq, n, appear in (("bike", 4, {1: 0, 2: 0}), ("judo", 16, {1: 0, 2: 5, 3: 8, 4: 13})):
        files = sorted((out / seq).glob("*.png"))
        assert len(files) == n
        _, palette = read_label_png(ann / seq / "00000.png")
        for t, p in enumerate(files):
            lab, pal = read_label_png(p)
            assert lab.shape == (480, 854) and lab.dtype == np.uint8
            np.testing.assert_array_equal(pal, palette)
            present = set(np.unique(lab).tolist()) - {0}
            assert present <= {k for k, t0 in appear.items() if t0 <= t}
            for k, t0 in appear.items():
                if t0 == t:  # its given frame is reproduced exactly
                    given = read_label_png(ann / seq / f"{t:05d}.png")[0]
                    if given.shape == lab.shape:
                        np.testing.assert_array_equal(lab == k, given == k)
                    assert k in present
        assert len(list((out / "overlays" / seq).glob("*.png"))) == n


def test_video_file_input(bundle, tmp_path):
    iio = pytest.importorskip("imageio.v3")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
    video = tmp_path / "clip.gif"
    iio.imwrite(video, frames, loop=0)
    masks = tmp_path / "masks"
    m = np.zeros((32, 48), np.uint8)
    m[4:12, 6:20] = 3
    write_label_png(masks / "00000.png", m, davis_palette())
    out = tmp_path / "out"
    assert (
        segment.main(
            [
                "--checkpoint",
                str(bundle),
                "--video",
                str(video),
                "--masks",
                str(masks),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    files = sorted((out / "clip").glob("*.png"))
    assert [p.stem for p in files] == [f"{i:05d}" for i in range(5)]
    first = read_label_png(files[0])[0]
    np.testing.assert_array_equal(first, m)
    assert set(np.unique(np.stack([read_label_png(p)[0] for p in files]))) <= {0, 3}


def test_errors_exit_with_a_message(bundle, tmp_path, capsys):
    frames = tmp_path / "seq"
    frames.mkdir()
    from vosjax.data.io import write_image

    write_image(frames / "00000.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "masks").mkdir()
    args = [
        "--checkpoint",
        str(bundle),
        "--frames",
        str(frames),
        "--masks",
        str(tmp_path / "masks"),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    assert segment.main(args) == 2
    assert "has no mask files" in capsys.readouterr().err
    assert segment.main(args + ["--engine", "top_kk=3"]) == 2
    assert "unknown field 'top_kk'" in capsys.readouterr().err
    assert segment.main(args[:2] + ["--frames", str(tmp_path / "nope")] + args[4:]) == 2
    assert "--frames folder not found" in capsys.readouterr().err
    assert (
        segment.main(
            [
                "--checkpoint",
                str(tmp_path),
                "--frames",
                str(frames),
                "--masks",
                str(frames),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "bundle" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_full_resolution_all_sequences(bundle, davis_demo, tmp_path):
    """All four demo sequences at 480 x 854, per-clip (L = 5)."""
    out = tmp_path / "out"
    assert (
        segment.main(
            [
                "--checkpoint",
                str(bundle),
                "--frames",
                str(davis_demo),
                "--masks",
                str(davis_demo),
                "--out",
                str(out),
                "--clip-length",
                "5",
                "--quiet",
            ]
        )
        == 0
    )
    counts = {"bike": 4, "dog": 60, "drift-straight": 50, "judo": 16}
    for seq, n in counts.items():
        files = sorted((out / seq).glob("*.png"))
        assert len(files) == n
        labs = np.stack([read_label_png(p)[0] for p in files])
        assert labs.shape == (n, 480, 854)
        ids = set(np.unique(labs).tolist()) - {0}
        assert ids <= {1, 2, 3, 4}
    judo = np.stack([read_label_png(p)[0] for p in sorted((out / "judo").glob("*.png"))])
    assert 4 not in np.unique(judo[:13]) and 4 in np.unique(judo[13])
