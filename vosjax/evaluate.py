"""``python -m vosjax.evaluate``: score result folders with the DAVIS semi-supervised protocol.

Usage::

    python -m vosjax.evaluate --gt DIR --results DIR [--out DIR] [--sequences a b ...]
                              [--split val] [--resolution 480p] [--workers N]

``--gt`` is a DAVIS root (``Annotations/<resolution>/<seq>/*.png``; with
``--split NAME`` the sequences of ``ImageSets/2017/NAME.txt``) or simply a
folder holding one sub-folder of palette PNGs per sequence. ``--results``
holds one sub-folder per sequence with a PNG per frame, named like the
ground truth (``00000.png`` ...). The scores are those of the official DAVIS
2017 toolkit (:mod:`vosjax.metrics`): per object the mean, recall and decay
of J and F over all frames but the first and the last; globally the mean over
all objects of all sequences. Two CSVs are written into ``--out`` (default:
the results folder, as the official toolkit does):

- ``global_results.csv``: ``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay``;
- ``per-sequence_results.csv``: ``Sequence,J-Mean,F-Mean`` with one row
  ``<sequence>_<object id>`` per object.

Sequences are scored in parallel worker processes. Rules, each a
:class:`~vosjax.errors.VosjaxError` naming the file and what to do:

- a sequence of the ground truth without a results folder, a missing result
  PNG for an evaluated frame, or a result PNG with no ground-truth frame of
  that name ("extra") is an error (result PNGs of the first and the last
  frame may be absent: they are not scored, as in the official toolkit);
- a result PNG whose size differs from its ground-truth frame is an error
  (results are never resized);
- a result that labels an object id absent from the sequence's ground truth
  is an error naming the frame file;
- ground-truth objects are every id up to the largest one of the first frame
  (the official rule) plus every id appearing in a later frame (objects that
  appear mid-video, YouTube-VOS style); void pixels (255) count as background.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from vosjax import metrics
from vosjax.errors import VosjaxError

__all__ = [
    "EvaluationResult",
    "evaluate_folders",
    "find_annotation_root",
    "format_tables",
    "main",
    "score_sequence",
    "write_csvs",
]

GLOBAL_CSV = "global_results.csv"
PER_SEQUENCE_CSV = "per-sequence_results.csv"
VOID_LABEL = 255


class EvaluationResult(NamedTuple):
    """Outcome of :func:`evaluate_folders`: the official summary and the per-frame scores."""

    summary: metrics.DavisSummary
    scores: dict[str, metrics.SequenceScores]


# --------------------------------------------------------------------------- folders


def find_annotation_root(gt: os.PathLike, resolution: str = "480p") -> pathlib.Path:
    """The folder holding one sub-folder of PNGs per sequence.

    ``gt/Annotations/<resolution>`` for a DAVIS root (or its only sub-folder
    when ``resolution`` is absent and there is exactly one); ``gt`` itself
    otherwise.
    """
    root = pathlib.Path(gt)
    if not root.is_dir():
        raise VosjaxError(f"evaluate: --gt folder not found: {root}.")
    ann = root / "Annotations"
    if not ann.is_dir():
        return root
    if (ann / resolution).is_dir():
        return ann / resolution
    subs = sorted(p for p in ann.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(subs) == 1:
        return subs[0]
    raise VosjaxError(
        f"evaluate: {ann} has no {resolution!r} folder; pass --resolution as one of "
        f"{[p.name for p in subs]}."
    )


def _pngs(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")
    )


def _list_sequences(
    gt: pathlib.Path, ann_root: pathlib.Path, sequences: Sequence[str] | None, split: str | None
) -> list[str]:
    if sequences:
        names = [str(s) for s in sequences]
    elif split is not None:
        lst = gt / "ImageSets" / "2017" / f"{split}.txt"
        if not lst.is_file():
            raise VosjaxError(
                f"evaluate: --split {split!r} needs the list file {lst}; pass --sequences instead."
            )
        from vosjax.data.davis import read_sequence_list

        names = read_sequence_list(lst)
    else:
        names = sorted(
            p.name for p in ann_root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    if not names:
        raise VosjaxError(f"evaluate: no sequences found under {ann_root}.")
    if len(set(names)) != len(names):
        raise VosjaxError(f"evaluate: a sequence is listed twice in {names}.")
    missing = [s for s in names if not (ann_root / s).is_dir()]
    if missing:
        raise VosjaxError(
            f"evaluate: sequence(s) {missing} have no ground-truth folder under {ann_root}."
        )
    return names


# --------------------------------------------------------------------------- one sequence


def _read_labels(path: pathlib.Path) -> np.ndarray:
    from vosjax.label_png import read_label_ids

    return read_label_ids(path)


def _fit_to_frame(labels: np.ndarray, hw: tuple[int, int], path: pathlib.Path) -> np.ndarray:
    if labels.shape == hw:
        return labels
    from vosjax.data.io import DataWarning, fit_mask_to_frame  # loads JAX: only when needed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return fit_mask_to_frame(labels, hw, path)


def _ids_beyond(labels: np.ndarray, known_max: int) -> list[int]:
    """Sorted values of ``labels`` above ``known_max`` (a max() pass when there are none)."""
    if labels.size == 0 or int(labels.max()) <= known_max:
        return []
    return [int(k) for k in np.unique(labels[labels > known_max])]


def score_sequence(
    name: str, gt_dir: os.PathLike, result_dir: os.PathLike
) -> metrics.SequenceScores:
    """Per-object, per-frame J and F of one sequence from its two folders of PNGs.

    Applies every rule of the module docstring; see
    :func:`vosjax.metrics.evaluate_sequence` for the measures.
    """
    gt_dir, result_dir = pathlib.Path(gt_dir), pathlib.Path(result_dir)
    gt_files = _pngs(gt_dir)
    if len(gt_files) < 3:
        raise VosjaxError(
            f"evaluate: ground truth of {name!r} ({gt_dir}) has {len(gt_files)} frame(s); the "
            "semi-supervised protocol needs every frame annotated and at least 3 frames (the "
            "first and the last are not scored)."
        )
    if not result_dir.is_dir():
        raise VosjaxError(
            f"evaluate: no results folder for sequence {name!r}: expected {result_dir} with one "
            "PNG per frame."
        )
    stems = [p.stem for p in gt_files]
    res_files = {p.stem: p for p in _pngs(result_dir)}
    extra = sorted(set(res_files) - set(stems))
    if extra:
        shown = ", ".join(f"{s}.png" for s in extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise VosjaxError(
            f"evaluate: {result_dir} has {len(extra)} extra result file(s) with no ground-truth "
            f"frame of that name ({shown}); remove them or check that the folder belongs to "
            f"sequence {name!r}."
        )
    scored = stems[1:-1]
    missing = [s for s in scored if s not in res_files]
    if missing:
        shown = ", ".join(f"{s}.png" for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise VosjaxError(
            f"evaluate: {result_dir} is missing {len(missing)} result file(s) of scored frames "
            f"({shown}); write one PNG per frame."
        )

    gt0 = _read_labels(gt_files[0])
    hw = gt0.shape
    gt = np.empty((len(gt_files), *hw), np.uint8)
    gt[0] = gt0
    for t, p in enumerate(gt_files[1:], start=1):
        gt[t] = _fit_to_frame(_read_labels(p), hw, p)
    gt[gt == VOID_LABEL] = 0
    first_max = int(gt[0].max())
    ids = tuple(range(1, first_max + 1)) + tuple(_ids_beyond(gt, first_max))
    # Values below first_max are ids already; ids past it are sorted: a value is unknown
    # exactly when it is above max(ids) or one of the gaps between first_max and max(ids).
    gaps = sorted(set(range(first_max + 1, max(ids, default=0) + 1)) - set(ids))

    pred = np.zeros_like(gt)
    for t, stem in enumerate(stems):
        if stem not in res_files or not 0 < t < len(stems) - 1:
            continue
        labels = _read_labels(res_files[stem])
        if labels.shape != hw:
            raise VosjaxError(
                f"evaluate: {res_files[stem]} is {labels.shape[1]}x{labels.shape[0]} but its "
                f"ground-truth frame is {hw[1]}x{hw[0]}; write results at the ground-truth size."
            )
        unknown = _ids_beyond(labels, max(ids, default=0))
        if gaps:
            unknown = sorted(set(unknown) | {k for k in gaps if np.any(labels == k)})
        if unknown:
            raise VosjaxError(
                f"evaluate: {res_files[stem]} labels object id(s) {unknown} that are not objects "
                f"of the ground truth of {name!r} (objects {list(ids)}); results must keep the "
                "ids of the input masks."
            )
        pred[t] = labels
    if not ids:
        return metrics.SequenceScores(
            (), np.zeros((0, len(stems) - 2)), np.zeros((0, len(stems) - 2))
        )
    return metrics.evaluate_sequence(gt, pred, object_ids=ids, void_label=None)


def _score_job(args: tuple[str, str, str]) -> metrics.SequenceScores:
    return score_sequence(*args)


# --------------------------------------------------------------------------- many sequences


def evaluate_folders(
    gt: os.PathLike,
    results: os.PathLike,
    sequences: Sequence[str] | None = None,
    *,
    split: str | None = None,
    resolution: str = "480p",
    workers: int | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Score every sequence of ``gt`` against ``results`` (DAVIS semi-supervised protocol).

    Args:
      gt: DAVIS root or folder of per-sequence PNG folders (module docstring).
      results: folder with one sub-folder of PNGs per sequence.
      sequences: restrict to these names (default: ``split``'s list, else all of ``gt``).
      split: read the names from ``ImageSets/2017/<split>.txt`` of a DAVIS root.
      resolution: the ``Annotations`` sub-folder of a DAVIS root.
      workers: processes scoring sequences in parallel (default: CPU count;
        1 = in this process).
      progress: show a tqdm bar on stderr.

    Returns:
      :class:`EvaluationResult` with the official summary and per-frame scores,
      sequences in the listed order.
    """
    gt_path = pathlib.Path(gt)
    res_root = pathlib.Path(results)
    if not res_root.is_dir():
        raise VosjaxError(f"evaluate: --results folder not found: {res_root}.")
    ann_root = find_annotation_root(gt_path, resolution)
    names = _list_sequences(gt_path, ann_root, sequences, split)
    absent = [s for s in names if not (res_root / s).is_dir()]
    if absent:
        shown = ", ".join(absent[:8]) + (" ..." if len(absent) > 8 else "")
        raise VosjaxError(
            f"evaluate: {res_root} has no results for {len(absent)} of {len(names)} sequence(s) "
            f"({shown}); segment them or restrict the evaluation with --sequences / --split."
        )
    jobs = [(s, str(ann_root / s), str(res_root / s)) for s in names]
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if n_workers < 1:
        raise VosjaxError(f"evaluate: --workers must be >= 1, got {workers}.")
    n_workers = min(n_workers, len(jobs))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="evaluate", unit="seq", file=sys.stderr)
    done: dict[str, metrics.SequenceScores] = {}
    try:
        if n_workers == 1:
            for job in jobs:
                done[job[0]] = _score_job(job)
                if bar is not None:
                    bar.update(1)
        else:
            # "spawn": the caller may have JAX (multithreaded) loaded, where fork is unsafe.
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
                futures = {pool.submit(_score_job, job): job[0] for job in jobs}
                try:
                    for fut in cf.as_completed(futures):
                        done[futures[fut]] = fut.result()
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
    scores = {s: done[s] for s in names}
    if not any(len(sc.object_ids) for sc in scores.values()):
        raise VosjaxError(f"evaluate: the ground truth under {ann_root} has no objects to score.")
    return EvaluationResult(metrics.summarize(scores), scores)


# --------------------------------------------------------------------------- output


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_csvs(
    summary: metrics.DavisSummary, out_dir: os.PathLike, precision: int = 3
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``global_results.csv`` and ``per-sequence_results.csv`` (official columns), atomically.

    Values are fractions in [0, 1] (decay may be negative) printed with
    ``precision`` decimals (the official toolkit prints 3).
    """
    out = pathlib.Path(out_dir)
    fmt = f"{{:.{int(precision)}f}}"
    g = summary.global_metrics
    glob_text = ",".join(metrics.GLOBAL_MEASURES) + "\n"
    glob_text += ",".join(fmt.format(g[k]) for k in metrics.GLOBAL_MEASURES) + "\n"
    seq_text = "Sequence,J-Mean,F-Mean\n" + "".join(
        f"{name},{fmt.format(j)},{fmt.format(f)}\n" for name, j, f in summary.per_object
    )
    gpath, spath = out / GLOBAL_CSV, out / PER_SEQUENCE_CSV
    _atomic_write_text(gpath, glob_text)
    _atomic_write_text(spath, seq_text)
    return gpath, spath


def format_tables(summary: metrics.DavisSummary) -> str:
    """The global and per-object tables as aligned text (what the CLI prints)."""
    g = summary.global_metrics
    width = max(len(k) for k in metrics.GLOBAL_MEASURES) + 1
    lines = [
        "Global results:",
        " ".join(f"{k:>{width}}" for k in metrics.GLOBAL_MEASURES),
        " ".join(f"{g[k]:>{width}.3f}" for k in metrics.GLOBAL_MEASURES),
        "",
        "Per-object results:",
    ]
    name_w = max([len("Sequence")] + [len(r[0]) for r in summary.per_object])
    lines.append(f"{'Sequence':<{name_w}} {'J-Mean':>7} {'F-Mean':>7}")
    lines += [f"{n:<{name_w}} {j:>7.3f} {f:>7.3f}" for n, j, f in summary.per_object]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vosjax.evaluate",
        description="DAVIS semi-supervised evaluation of result folders (J, F, J&F).",
    )
    p.add_argument("--gt", required=True, help="DAVIS root or folder of per-sequence PNG folders")
    p.add_argument("--results", required=True, help="folder with one PNG folder per sequence")
    p.add_argument("--out", default=None, help="where the CSVs go (default: --results)")
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    p.add_argument("--split", default=None, help="sequences of ImageSets/2017/<split>.txt")
    p.add_argument("--resolution", default="480p", help="Annotations sub-folder of a DAVIS root")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPUs)")
    p.add_argument("--precision", type=int, default=3, help="decimals in the CSVs (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no tables")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vosjax.evaluate``; returns the exit status."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        result = evaluate_folders(
            args.gt,
            args.results,
            args.sequences,
            split=args.split,
            resolution=args.resolution,
            workers=args.workers,
            progress=not args.quiet,
        )
        out = pathlib.Path(args.out) if args.out is not None else pathlib.Path(args.results)
        gpath, spath = write_csvs(result.summary, out, args.precision)
    except VosjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(format_tables(result.summary))
        n_obj = len(result.summary.per_object)
        print(
            f"\n{len(result.scores)} sequence(s), {n_obj} object(s) in "
            f"{time.perf_counter() - start:.1f} s; wrote {gpath} and {spath}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
