"""`python -m vosjax.evaluate`: the DAVIS CSVs, their numbers, layouts and every error case."""

from __future__ import annotations

import csv
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vosjax import evaluate, metrics
from vosjax.data.io import write_label_png
from vosjax.errors import VosjaxError

H, W, T = 30, 40, 7


def _disk(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _gt_video(seed: int, late: bool = False) -> np.ndarray:
    """Label maps of two moving disks; object 2 appears at frame 3 when ``late``."""
    rng = np.random.default_rng(seed)
    v = np.zeros((T, H, W), np.uint8)
    c1, c2 = rng.uniform(8, 20, 2), rng.uniform(10, 22, 2)
    for t in range(T):
        v[t][_disk(c1[0], c1[1] + 2 * t, 6)] = 1
        if not late or t >= 3:
            v[t][_disk(c2[0], c2[1] + 10 - t, 5)] = 2
    return v


def _noisy(gt: np.ndarray, seed: int) -> np.ndarray:
    """A plausible prediction: shifted by a pixel, some pixels flipped to another id."""
    rng = np.random.default_rng(seed)
    p = np.roll(gt, 1, axis=-1).copy()
    flip = rng.random(p.shape) < 0.03
    p[flip] = rng.integers(0, 3, flip.sum())
    return p


def _write_seq(folder: pathlib.Path, labels: np.ndarray) -> None:
    for t, lab in enumerate(labels):
        write_label_png(folder / f"{t:05d}.png", lab)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A DAVIS root with three sequences (one with a late object) and noisy results."""
    root = tmp_path_factory.mktemp("davis")
    res = tmp_path_factory.mktemp("results")
    gts, preds = {}, {}
    for i, name in enumerate(["alpha", "bravo", "charlie"]):
        gt = _gt_video(i, late=name == "charlie")
        pred = _noisy(gt, 100 + i)
        if name == "bravo":
            gt[2, :3, :3] = 255  # void pixels count as background
        _write_seq(root / "Annotations" / "480p" / name, gt)
        _write_seq(res / name, pred)
        gts[name], preds[name] = gt, pred
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\ncharlie\n")
    return root, res, gts, preds


def _in_process(gts, preds, names):
    scores = {}
    for n in names:
        gt = np.where(gts[n] == 255, 0, gts[n])
        scores[n] = metrics.evaluate_sequence(gt, preds[n], object_ids=(1, 2))
    return metrics.summarize(scores)


def _read_csv(path: pathlib.Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csvs_equal_in_process_metrics(dataset, tmp_path):
    root, res, gts, preds = dataset
    out = tmp_path / "out"
    assert (
        evaluate.main(
            [
                "--gt",
                str(root),
                "--results",
                str(res),
                "--out",
                str(out),
                "--workers",
                "2",
                "--quiet",
                "--precision",
                "6",
            ]
        )
        == 0
    )
    want = _in_process(gts, preds, ["alpha", "bravo", "charlie"])
    rows = _read_csv(out / "global_results.csv")
    assert rows[0] == list(metrics.GLOBAL_MEASURES)
    got = [float(x) for x in rows[1]]
    np.testing.assert_allclose(
        got, [want.global_metrics[k] for k in metrics.GLOBAL_MEASURES], atol=5e-7
    )
    per = _read_csv(out / "per-sequence_results.csv")
    assert per[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in per[1:]] == [
        "alpha_1",
        "alpha_2",
        "bravo_1",
        "bravo_2",
        "charlie_1",
        "charlie_2",
    ]
    np.testing.assert_allclose(
        [[float(r[1]), float(r[2])] for r in per[1:]],
        [[j, f] for _, j, f in want.per_object],
        atol=5e-7,
    )
    # The scores are not trivial: the shifted, noisy masks are imperfect but close.
    assert 0.3 < want.global_metrics["J-Mean"] < 0.99
    assert not (res / "global_results.csv").exists()


def test_default_out_is_results_folder_and_official_precision(dataset, tmp_path):
    root, _, gts, preds = dataset
    res_copy = tmp_path / "res"
    for n in ("alpha", "charlie"):
        _write_seq(res_copy / n, preds[n])
    # --split reads ImageSets/2017/val.txt (alpha, charlie).
    assert (
        evaluate.main(
            [
                "--gt",
                str(root),
                "--results",
                str(res_copy),
                "--split",
                "val",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    rows = _read_csv(res_copy / "global_results.csv")
    want = _in_process(gts, preds, ["alpha", "charlie"])
    assert rows[1] == [f"{want.global_metrics[k]:.3f}" for k in metrics.GLOBAL_MEASURES]
    names = [r[0] for r in _read_csv(res_copy / "per-sequence_results.csv")[1:]]
    assert names == ["alpha_1", "alpha_2", "charlie_1", "charlie_2"]


def test_plain_folder_layout_and_sequence_subset(dataset, tmp_path):
    _, res, gts, preds = dataset
    plain = tmp_path / "gt"
    for n in ("alpha", "bravo"):
        _write_seq(plain / n, gts[n])
    r = evaluate.evaluate_folders(plain, res, ["bravo"], workers=1)
    assert list(r.scores) == ["bravo"]
    want = _in_process(gts, preds, ["bravo"])
    assert r.summary.global_metrics == pytest.approx(want.global_metrics)
    # Parallel scoring gives the same numbers as in-process scoring.
    r1 = evaluate.evaluate_folders(plain, res, workers=1)
    r2 = evaluate.evaluate_folders(plain, res, workers=2)
    assert r1.summary == r2.summary


def test_late_object_is_scored(dataset, tmp_path):
    root, _, gts, _ = dataset
    res = tmp_path / "res"
    _write_seq(res / "charlie", np.roll(gts["charlie"], 1, axis=-1))
    r = evaluate.evaluate_folders(root, res, ["charlie"], workers=1)
    assert r.scores["charlie"].object_ids == (1, 2)  # 2 is not in the first frame
    # Object 2 is absent in frames 1-2 of both GT and prediction: J = 1 there, < 1 after.
    np.testing.assert_array_equal(r.scores["charlie"].j[1, :2], 1.0)
    assert np.all(r.scores["charlie"].j[1, 2:] < 1.0)


def test_first_and_last_result_files_are_optional(dataset, tmp_path):
    root, _, gts, preds = dataset
    res = tmp_path / "res"
    _write_seq(res / "alpha", preds["alpha"])
    (res / "alpha" / "00000.png").unlink()
    (res / "alpha" / f"{T - 1:05d}.png").unlink()
    r = evaluate.evaluate_folders(root, res, ["alpha"], workers=1)
    assert r.summary == _in_process(gts, preds, ["alpha"])


def _expect_error(root, res, match, seqs=("alpha",)):
    with pytest.raises(VosjaxError, match=match):
        evaluate.evaluate_folders(root, res, list(seqs), workers=1)


def test_error_missing_sequence_folder(dataset, tmp_path):
    root, *_ = dataset
    (tmp_path / "res").mkdir()
    _expect_error(root, tmp_path / "res", r"no results for 1 of 1 sequence\(s\) \(alpha\)")


def test_error_missing_and_extra_and_missized_files(dataset, tmp_path):
    root, _, _, preds = dataset
    res = tmp_path / "res"
    _write_seq(res / "alpha", preds["alpha"])
    (res / "alpha" / "00003.png").unlink()
    _expect_error(root, res, r"missing 1 result file\(s\) of scored frames \(00003.png\)")
    write_label_png(res / "alpha" / "00003.png", preds["alpha"][3])
    write_label_png(res / "alpha" / "00099.png", preds["alpha"][3])
    _expect_error(root, res, r"1 extra result file\(s\).*00099.png")
    (res / "alpha" / "00099.png").unlink()
    write_label_png(res / "alpha" / "00002.png", np.zeros((H, W - 1), np.uint8))
    _expect_error(root, res, r"00002.png is 39x30 but its ground-truth frame is 40x30")


def test_error_unknown_object_id_names_the_file(dataset, tmp_path):
    root, _, _, preds = dataset
    res = tmp_path / "res"
    bad = preds["alpha"].copy()
    bad[4, 0, 0] = 7
    _write_seq(res / "alpha", bad)
    _expect_error(root, res, r"00004.png labels object id\(s\) \[7\].*objects \[1, 2\]")


def test_error_short_ground_truth_and_bad_arguments(dataset, tmp_path):
    _, res, gts, _ = dataset
    gt = tmp_path / "gt"
    _write_seq(gt / "alpha", gts["alpha"][:2])
    _expect_error(gt, res, "needs every frame annotated and at least 3 frames")
    with pytest.raises(VosjaxError, match="--gt folder not found"):
        evaluate.evaluate_folders(tmp_path / "nope", res)
    with pytest.raises(VosjaxError, match="no ground-truth folder"):
        evaluate.evaluate_folders(gt, res, ["zulu"])
    with pytest.raises(VosjaxError, match="--split 'test' needs the list file"):
        evaluate.evaluate_folders(gt, res, split="test")


def test_cli_reports_errors_with_exit_status(dataset, tmp_path, capsys):
    root, *_ = dataset
    (tmp_path / "res").mkdir()
    assert evaluate.main(["--gt", str(root), "--results", str(tmp_path / "res"), "--quiet"]) == 2
    assert "error: evaluate:" in capsys.readouterr().err


def test_module_entry_point_runs(dataset, tmp_path):
    root, res, *_ = dataset
    out = tmp_path / "o"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vosjax.evaluate",
            "--gt",
            str(root),
            "--results",
            str(res),
            "--out",
            str(out),
            "--sequences",
            "alpha",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "J&F-Mean" in proc.stdout and "alpha_2" in proc.stdout
    assert (out / "global_results.csv").is_file() and (out / "per-sequence_results.csv").is_file()
