"""``python -m vosjax.segment``: segment videos from their first masks with an exported model.

Usage::

    python -m vosjax.segment --checkpoint BUNDLE (--frames DIR | --video FILE) --masks DIR
                             --out DIR [--clip-length L] [--top-k K] [--correction K]
                             [--box-filter cv|pt] [--resolution R] [--overlay] [--mp4]
                             [--engine FIELD=VALUE ...] [--sequences a b ...]

``--checkpoint`` is a bundle written by training (``vosjax.checkpoint.export_bundle``:
variables + run config; the run config's ``inference`` section gives the
default engine options, which the flags override; ``--engine FIELD=VALUE``
sets any :class:`~vosjax.inference.EngineConfig` field).

Inputs, in any of three layouts:

- ``--frames`` a DAVIS root (``JPEGImages/<resolution>/<seq>/``; then
  ``--masks`` may be the same root, read as ``Annotations/<resolution>/<seq>/``);
- ``--frames`` a folder of sequence folders, ``--masks`` a folder of the same
  sequence folders of palette PNGs;
- ``--frames`` one folder of frames, ``--masks`` one folder of PNGs (one sequence,
  named after the frames folder);
- ``--video FILE`` (any format imageio can decode; mp4 needs the ``av``
  package): frames are named ``00000`` ... and ``--masks`` holds the PNGs of
  the annotated frame numbers.

A mask file ``<frame>.png`` gives the objects that FIRST appear in it (ids
already seen are ignored: the semi-supervised protocol; a fully annotated
DAVIS folder is thus read correctly). Objects may appear at any frame; ids
are kept, and every output PNG uses the palette of the sequence's first mask
file. A mask whose size differs slightly from its frame (same aspect ratio to
1 %) is resized with a warning. 255 (void) counts as background.

Outputs (every file written atomically): ``OUT/<seq>/<frame>.png`` for every
frame; with ``--overlay`` ``OUT/overlays/<seq>/<frame>.png``; with ``--mp4``
``OUT/overlays/<seq>.mp4``. ``OUT`` is then a results folder for
``python -m vosjax.evaluate``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vosjax.errors import VosjaxError

__all__ = ["SequenceInput", "find_sequences", "main", "segment_sequence"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
VOID = 255


@dataclasses.dataclass
class SequenceInput:
    """One sequence to segment: its frames (files, or a video) and its mask files by frame name."""

    name: str
    frame_paths: list[pathlib.Path] | None
    video: pathlib.Path | None
    masks: dict[str, pathlib.Path]

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(frame name, uint8[H, W, 3])`` in order, decoded one at a time."""
        from vosjax.data.io import read_image

        if self.frame_paths is not None:
            for p in self.frame_paths:
                yield p.stem, read_image(p)
            return
        yield from _video_frames(self.video)


def _video_frames(path: pathlib.Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        import imageio.v3 as iio
    except ImportError as e:  # pragma: no cover - imageio ships with scikit-image
        raise VosjaxError(
            "segment: --video needs the imageio package (pip install imageio)."
        ) from e
    try:
        it = iio.imiter(path)
        for i, frame in enumerate(it):
            f = np.asarray(frame)
            if f.ndim == 2:
                f = np.repeat(f[..., None], 3, axis=-1)
            yield f"{i:05d}", np.ascontiguousarray(f[..., :3]).astype(np.uint8)
    except VosjaxError:
        raise
    except Exception as e:  # imageio raises plugin-specific errors
        raise VosjaxError(
            f"segment: cannot decode the video {path} ({type(e).__name__}: {e}). For mp4 / avi "
            "install a video backend (pip install av), or extract the frames to a folder and "
            "pass --frames."
        ) from e


def _images(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def _subdirs(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _mask_files(folder: pathlib.Path | None) -> dict[str, pathlib.Path]:
    if folder is None or not folder.is_dir():
        return {}
    return {
        p.stem: p
        for p in folder.iterdir()
        if p.suffix.lower() == ".png" and not p.name.startswith(".")
    }


def find_sequences(
    frames: os.PathLike | None,
    masks: os.PathLike,
    video: os.PathLike | None = None,
    resolution: str = "480p",
    sequences: Sequence[str] | None = None,
) -> list[SequenceInput]:
    """The sequences of the inputs (the layouts of the module docstring)."""
    masks_root = pathlib.Path(masks)
    if not masks_root.is_dir():
        raise VosjaxError(f"segment: --masks folder not found: {masks_root}.")
    if video is not None:
        v = pathlib.Path(video)
        if not v.is_file():
            raise VosjaxError(f"segment: --video file not found: {v}.")
        return [SequenceInput(v.stem, None, v, _mask_files(masks_root))]
    root = pathlib.Path(frames)
    if not root.is_dir():
        raise VosjaxError(f"segment: --frames folder not found: {root}.")
    if _images(root):  # one sequence
        return [SequenceInput(root.name, _images(root), None, _mask_files(masks_root))]
    if (root / "JPEGImages").is_dir():
        img_root = root / "JPEGImages" / resolution
        if not img_root.is_dir():
            subs = _subdirs(root / "JPEGImages")
            if len(subs) != 1:
                raise VosjaxError(
                    f"segment: {img_root} not found; pass --resolution as one of "
                    f"{[p.name for p in subs]}."
                )
            img_root, resolution = subs[0], subs[0].name
        if (masks_root / "Annotations").is_dir():
            masks_root = masks_root / "Annotations" / resolution
    else:
        img_root = root
    names = [p.name for p in _subdirs(img_root)]
    if sequences:
        unknown = [s for s in sequences if s not in names]
        if unknown:
            raise VosjaxError(f"segment: sequence(s) {unknown} not found under {img_root}.")
        names = list(sequences)
    if not names:
        raise VosjaxError(
            f"segment: no frames under {root}: expected image files, sequence folders, or a "
            "DAVIS root with JPEGImages/<resolution>/."
        )
    out = []
    for n in names:
        files = _images(img_root / n)
        if not files:
            raise VosjaxError(
                f"segment: sequence folder {img_root / n} holds no .jpg / .png frames."
            )
        out.append(SequenceInput(n, files, None, _mask_files(masks_root / n)))
    return out


def _given_masks(
    seq: SequenceInput, frame_size: tuple[int, int]
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """First-appearance masks by frame name, the palette, and the number of objects."""
    from vosjax.data.io import davis_palette, fit_mask_to_frame, read_label_png

    if not seq.masks:
        raise VosjaxError(
            f"segment: sequence {seq.name!r} has no mask files; semi-supervised segmentation "
            "needs the mask of each object on the frame where it first appears."
        )
    given: dict[str, np.ndarray] = {}
    palette = None
    seen: set[int] = set()
    for stem in sorted(seq.masks):
        labels, pal = read_label_png(seq.masks[stem])
        if palette is None:
            palette = pal
        labels = fit_mask_to_frame(labels, frame_size, seq.masks[stem])
        labels = np.where(labels == VOID, 0, labels)
        new = [int(k) for k in np.unique(labels) if k and int(k) not in seen]
        if new:
            given[stem] = np.where(np.isin(labels, new), labels, 0).astype(np.uint8)
            seen.update(new)
    return given, (davis_palette() if palette is None else palette), len(seen)


def segment_sequence(
    engine: Any,
    variables: Any,
    seq: SequenceInput,
    out_dir: os.PathLike,
    *,
    overlay: bool = False,
    mp4: bool = False,
    progress: bool = True,
) -> int:
    """Segment one sequence and write its PNGs (and overlays); returns the number of frames."""
    from vosjax.data.io import write_image, write_label_png
    from vosjax.inference.overlay import overlay as draw
    from vosjax.inference.runner import run_video

    out = pathlib.Path(out_dir)
    frames = seq.frames()
    try:
        first_name, first = next(frames)
    except StopIteration:
        raise VosjaxError(f"segment: sequence {seq.name!r} has no frames.") from None
    size = first.shape[:2]
    given, palette, num_objects = _given_masks(seq, size)
    unknown = sorted(set(seq.masks) - {first_name} - {p.stem for p in seq.frame_paths or []})
    if seq.frame_paths is not None and unknown:
        warnings.warn(
            f"segment: mask file(s) {unknown[:3]} of {seq.name!r} match no frame and are ignored.",
            stacklevel=2,
        )
    names: list[str] = []
    images: list[np.ndarray] = []

    def inputs() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for name, img in _chain(first_name, first, frames):
            if img.shape[:2] != size:
                raise VosjaxError(
                    f"segment: frame {name} of {seq.name!r} is {img.shape[1]}x{img.shape[0]}, the "
                    f"first frame {size[1]}x{size[0]}; all frames of a sequence must have one size."
                )
            names.append(name)
            if overlay or mp4:
                images.append(img)
            yield img, given.get(name)

    bar = None
    if progress:
        from tqdm import tqdm

        total = len(seq.frame_paths) if seq.frame_paths is not None else None
        bar = tqdm(total=total, desc=seq.name, unit="frame", file=sys.stderr, leave=False)
    video_frames = []
    count = 0
    try:
        for pred in run_video(engine, variables, inputs(), num_objects):
            name = names[pred.index]
            write_label_png(out / seq.name / f"{name}.png", pred.labels, palette)
            if overlay or mp4:
                img = draw(images[pred.index], pred.labels, palette)
                images[pred.index] = None  # frames are released once drawn
                if overlay:
                    write_image(out / "overlays" / seq.name / f"{name}.png", img)
                if mp4:
                    video_frames.append(img)
            count += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if mp4:
        _write_mp4(out / "overlays" / f"{seq.name}.mp4", video_frames)
    return count


def _chain(name: str, img: np.ndarray, rest: Iterator[tuple[str, np.ndarray]]):
    yield name, img
    yield from rest


def _write_mp4(path: pathlib.Path, frames: list[np.ndarray], fps: int = 24) -> None:
    import tempfile

    try:
        import imageio.v3 as iio

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".mp4")
        os.close(fd)
        try:
            iio.imwrite(tmp, np.stack(frames), fps=fps, extension=".mp4")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except Exception as e:
        raise VosjaxError(
            f"segment: cannot write {path} ({type(e).__name__}: {e}); --mp4 needs a video "
            "backend (pip install av). The PNGs and --overlay images do not."
        ) from e


# --------------------------------------------------------------------------- CLI


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The EngineConfig fields set on the command line (checked where the config is built)."""
    o: dict[str, Any] = {}
    if args.clip_length is not None:
        o["clip_length"] = args.clip_length
    if args.top_k is not None:
        o["top_k"] = None if args.top_k <= 0 else args.top_k
    if args.correction is not None:
        o["correction_every"] = args.correction
    if args.box_filter is not None:
        o["box_filter"] = None if args.box_filter == "none" else args.box_filter
    if args.resolution_px is not None:
        o["resolution"] = args.resolution_px
    for item in args.engine or []:
        if "=" not in item:
            raise VosjaxError(f"segment: --engine expects FIELD=VALUE, got {item!r}.")
        key, value = item.split("=", 1)
        o[key.strip()] = _parse_value(value.strip())
    return o


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vosjax.segment",
        description="Segment videos from the masks where objects first appear (palette PNGs out).",
    )
    p.add_argument("--checkpoint", required=True, help="bundle folder exported by training")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames", help="frames folder, folder of sequences, or DAVIS root")
    src.add_argument("--video", help="a video file (mp4 needs: pip install av)")
    p.add_argument("--masks", required=True, help="mask PNGs (same layout as the frames)")
    p.add_argument("--out", required=True, help="output folder (OUT/<seq>/<frame>.png)")
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences")
    p.add_argument("--resolution", default="480p", help="JPEGImages sub-folder of a DAVIS root")
    p.add_argument("--clip-length", type=int, default=None, help="L: 1 per-frame, >1 per-clip")
    p.add_argument("--top-k", type=int, default=None, help="memory top-k (0: dense)")
    p.add_argument(
        "--correction",
        type=int,
        default=None,
        metavar="K",
        help="gradient correction every K frames (0: off)",
    )
    p.add_argument("--box-filter", choices=("cv", "pt", "none"), default=None)
    p.add_argument(
        "--size",
        dest="resolution_px",
        type=int,
        default=None,
        help="test-time size: shorter side in pixels",
    )
    p.add_argument(
        "--engine",
        action="append",
        metavar="FIELD=VALUE",
        help="any EngineConfig field, e.g. --engine mem_every=10 (repeatable)",
    )
    p.add_argument("--overlay", action="store_true", help="also write overlay PNGs")
    p.add_argument("--mp4", action="store_true", help="also write an overlay mp4 per sequence")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vosjax.segment``; returns the exit status."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        from vosjax.inference import engine_from_bundle

        # The one EngineConfig (bundle section + overrides) is built here, before the inputs
        # are read, so unknown fields / bad values fail first, naming the field.
        engine, variables = engine_from_bundle(args.checkpoint, _overrides(args))
        seqs = find_sequences(args.frames, args.masks, args.video, args.resolution, args.sequences)
        total = 0
        for seq in seqs:
            total += segment_sequence(
                engine,
                variables,
                seq,
                args.out,
                overlay=args.overlay,
                mp4=args.mp4,
                progress=not args.quiet,
            )
    except VosjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    secs = time.perf_counter() - start
    cfg = engine.config
    print(
        f"segmented {len(seqs)} sequence(s), {total} frames in {secs:.1f} s "
        f"({total / max(secs, 1e-9):.2f} frames/s incl. compilation); model "
        f"{getattr(engine.model, 'name', '?')}, clip_length={cfg.clip_length}, top_k={cfg.top_k}, "
        f"memory={engine.policy.name}; wrote {pathlib.Path(args.out)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
