"""Image and label-map file I/O shared by the data sources and the CLIs.

Masks follow the DAVIS convention: a palette ("P" mode) PNG whose pixel value
is the object id, 0 = background; the palette only decides the display colour.
Robust reading rules (each either mirrors what the DAVIS tools do or raises a
:class:`~vosjax.errors.VosjaxError` naming the file):

- palette PNG: pixel values are the ids, the file's palette is returned;
- grayscale ("L") PNG holding only 0 and 255 (DAVIS 2016 / saliency style):
  255 -> object 1; any other grayscale PNG: the gray value is the id;
- one-bit ("1") PNG: object 1 where set; 16/32-bit PNG: the value is the id
  (must be < 256);
- RGB / RGBA PNG: every colour is looked up in the palette (the DAVIS palette
  unless one is given); a colour that is not in it is an error;
- a mask whose size differs from its frame (the real case:
  ``davis_demo/Annotations/480p/judo/00005.png`` is 853 px wide, its frame
  854) with the same aspect ratio to within 1 % is resized nearest-neighbour
  to the frame size with a :class:`DataWarning` naming the file; any larger
  disagreement is an error;
- corrupt, truncated or non-image files are errors naming the file.

Writes are atomic (temporary file in the same folder, then ``os.replace``), so
an interrupted writer never leaves a half-written PNG behind.
"""

from __future__ import annotations

import io
import os
import pathlib
import tempfile
import warnings

import numpy as np
from jaxtyping import UInt8
from PIL import Image, UnidentifiedImageError

from vosjax.errors import VosjaxError

__all__ = [
    "DataWarning",
    "davis_palette",
    "read_image",
    "read_image_size",
    "read_label_png",
    "fit_mask_to_frame",
    "write_label_png",
    "write_image",
]

PathLike = str | os.PathLike
Readable = str | os.PathLike | bytes  # a file path, or the encoded file itself


class DataWarning(UserWarning):
    """A data file was repaired on the fly (e.g. a mask resized to its frame)."""


def davis_palette() -> UInt8[np.ndarray, "256 3"]:
    """The DAVIS / PASCAL VOC colour map: colour of id ``i`` spreads the bits of ``i``.

    Bit ``3j + c`` of the id (c = 0 red, 1 green, 2 blue) sets bit ``7 - j`` of
    channel ``c``, so ids 1, 2, 3 are (128,0,0), (0,128,0), (128,128,0).
    """
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, v = [0, 0, 0], i
        for j in range(8):
            for ch in range(3):
                c[ch] |= ((v >> ch) & 1) << (7 - j)
            v >>= 3
        pal[i] = c
    return pal


_DAVIS_PALETTE = davis_palette()


def _open(src: Readable, what: str, name: str | None = None) -> tuple[Image.Image, str]:
    """Open and decode an image from a path or encoded bytes; returns (image, name for messages)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        path = name or "<encoded bytes>"
        fileobj = io.BytesIO(bytes(src))
    else:
        path = pathlib.Path(src)
        if not path.is_file():
            raise VosjaxError(f"{what}: file not found: {path}. Check the dataset root and layout.")
        fileobj = path
    try:
        im = Image.open(fileobj)
        im.load()
    except UnidentifiedImageError as e:
        raise VosjaxError(
            f"{what}: {path} is not a readable image ({e}). Replace the file with a valid JPEG/PNG."
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise VosjaxError(
            f"{what}: {path} is corrupt or truncated ({e}). Re-extract or re-download this file."
        ) from e
    return im, str(path)


def read_image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise VosjaxError(f"read_image_size: file not found: {p}.")
    try:
        with Image.open(p) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise VosjaxError(
            f"read_image_size: {p} is not a readable image ({e}). Replace the file."
        ) from e
    return int(h), int(w)


def read_image(path: Readable, name: str | None = None) -> UInt8[np.ndarray, "H W 3"]:
    """Decode an image (a path, or bytes named ``name`` in errors) to RGB ``uint8[H, W, 3]``."""
    im, _ = _open(path, "read_image", name)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def _palette_of(im: Image.Image) -> np.ndarray:
    flat = im.getpalette() or []
    flat = list(flat[: 256 * 3]) + [0] * (256 * 3 - min(len(flat), 256 * 3))
    return np.asarray(flat, np.uint8).reshape(256, 3)


def read_label_png(
    path: Readable, palette: UInt8[np.ndarray, "256 3"] | None = None, name: str | None = None
) -> tuple[UInt8[np.ndarray, "H W"], UInt8[np.ndarray, "256 3"]]:
    """Read a mask (a path, or bytes named ``name`` in errors) as an id label map and its palette.

    Returns ``(labels uint8[H, W], palette uint8[256, 3])``. See the module
    docstring for how each PNG mode maps to ids. ``palette`` is used to decode
    RGB masks (default: the DAVIS palette) and is returned for non-palette files.
    """
    im, p = _open(path, "read_label_png", name)
    pal = _DAVIS_PALETTE if palette is None else np.asarray(palette, np.uint8).reshape(256, 3)
    mode = im.mode
    if mode == "P":
        return np.asarray(im, dtype=np.uint8), _palette_of(im)
    if mode in ("L", "LA"):
        a = np.asarray(im.getchannel(0), dtype=np.uint8)
        vals = np.unique(a)
        if vals.size and vals.max() == 255 and np.all(np.isin(vals, (0, 255))):
            return (a == 255).astype(np.uint8), pal
        return a, pal
    if mode == "1":
        return np.asarray(im, dtype=bool).astype(np.uint8), pal
    if mode.startswith("I"):
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 255):
            raise VosjaxError(
                f"read_label_png: {p} holds label values outside 0..255 "
                f"(range {a.min()}..{a.max()}); save masks as palette PNGs with ids < 256."
            )
        return a.astype(np.uint8), pal
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        code = (
            (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        )
        pal_code = (
            (pal[:, 0].astype(np.int64) << 16) | (pal[:, 1].astype(np.int64) << 8) | pal[:, 2]
        )
        # First occurrence wins where a palette repeats a colour (black = id 0).
        uniq_pal, first_idx = np.unique(pal_code, return_index=True)
        colours, inverse = np.unique(code, return_inverse=True)
        pos = np.searchsorted(uniq_pal, colours)
        pos = np.clip(pos, 0, len(uniq_pal) - 1)
        known = uniq_pal[pos] == colours
        if not np.all(known):
            bad = colours[~known][0]
            raise VosjaxError(
                f"read_label_png: {p} is an RGB mask with colour "
                f"({bad >> 16}, {(bad >> 8) & 255}, {bad & 255}) that is not in the palette; "
                "save masks as palette PNGs (pixel value = object id) or pass the palette used."
            )
        ids = first_idx[pos].astype(np.uint8)
        return ids[inverse].reshape(code.shape), pal
    raise VosjaxError(
        f"read_label_png: {p} has unsupported image mode {mode!r}; save masks as palette PNGs."
    )


def fit_mask_to_frame(
    labels: UInt8[np.ndarray, "h w"], frame_hw: tuple[int, int], path: PathLike = "<array>"
) -> UInt8[np.ndarray, "H W"]:
    """Make a label map match its frame's ``(H, W)``.

    Equal sizes pass through. If the aspect ratios agree to within 1 % the map
    is resized nearest-neighbour (ids are never blended) with a
    :class:`DataWarning` naming ``path``; otherwise a :class:`VosjaxError`.
    """
    h, w = labels.shape
    H, W = int(frame_hw[0]), int(frame_hw[1])
    if (h, w) == (H, W):
        return labels
    if h > 0 and w > 0 and abs((w / h) / (W / H) - 1.0) <= 0.01:
        warnings.warn(
            f"{path}: mask is {w}x{h} but its frame is {W}x{H}; resized nearest-neighbour to the "
            "frame size.",
            DataWarning,
            stacklevel=2,
        )
        out = Image.fromarray(np.ascontiguousarray(labels, np.uint8), mode="L").resize(
            (W, H), resample=Image.NEAREST
        )
        return np.asarray(out, np.uint8)
    raise VosjaxError(
        f"{path}: mask is {w}x{h} but its frame is {W}x{H} (different aspect ratio); "
        "regenerate the mask at the frame resolution."
    )


def _atomic_save(im: Image.Image, path: pathlib.Path, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            im.save(f, format=fmt, **kw)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_label_png(
    path: PathLike,
    labels: np.ndarray,
    palette: UInt8[np.ndarray, "256 3"] | None = None,
) -> None:
    """Write an id label map ``[H, W]`` (ids 0..255) as a palette PNG, atomically."""
    a = np.asarray(labels)
    if a.ndim != 2:
        raise VosjaxError(
            f"write_label_png: 'labels' must be [H, W], got shape {a.shape} for {path}."
        )
    if a.size and (a.min() < 0 or a.max() > 255):
        raise VosjaxError(
            f"write_label_png: ids must lie in 0..255 for a palette PNG, got {a.min()}..{a.max()} "
            f"for {path}."
        )
    pal = _DAVIS_PALETTE if palette is None else np.asarray(palette, np.uint8).reshape(256, 3)
    im = Image.fromarray(a.astype(np.uint8), mode="P")
    im.putpalette(pal.reshape(-1).tolist())
    _atomic_save(im, pathlib.Path(path), "PNG")


def write_image(path: PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Write an RGB ``uint8[H, W, 3]`` image atomically (JPEG or PNG by extension)."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise VosjaxError(
            f"write_image: 'image' must be uint8 [H, W, 3], got {a.dtype} {a.shape} for {path}."
        )
    p = pathlib.Path(path)
    ext = p.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        _atomic_save(Image.fromarray(a), p, "JPEG", quality=int(quality))
    elif ext == ".png":
        _atomic_save(Image.fromarray(a), p, "PNG")
    else:
        raise VosjaxError(f"write_image: unsupported extension {ext!r} for {p}; use .jpg or .png.")
