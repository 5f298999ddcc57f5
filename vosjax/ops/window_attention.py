"""3D (time x height x width) window attention, Video-Swin style.

PCVOS refines the read-out values of a clip with a small transformer whose
attention is local in space-time (PCVOS sec. 3.4): every token attends only to
the tokens in its own window of ``wt x wh x ww`` positions (default 2 x 7 x 7),
and every other layer the windows are shifted by half a window (1, 3, 3) so
that information crosses window borders.

Geometry, in the ORIGINAL coordinates of an axis of length ``L`` with window
``w`` and shift ``s`` (``0 <= s < w``):

* the axis is zero-padded at its end to ``Lp = ceil(L / w) * w``;
* the windows are the intervals ``[s + k w, s + (k + 1) w)`` cut to ``[0, Lp)``,
  so two positions ``p, q`` share a window iff
  ``floor((p - s) / w) == floor((q - s) / w)``. With ``s = 0`` these are the
  plain windows; with ``s > 0`` the first ``s`` positions form a window of
  their own;
* a token attends to another iff they share a window on all three axes AND
  both are real (not padding). Padding never receives attention weight.

The efficient form computes exactly this: pad, cyclically shift the padded grid
by ``-s`` (:func:`cyclic_shift`), cut it into ``B * nW`` equal windows of
``n = wt * wh * ww`` tokens (:func:`window_partition`), attend inside each
window under :func:`shifted_window_mask` (which separates the tokens that
wrapped around and hides the padding), then undo the partition, the shift and
the padding. The shift acts on the padded grid, as in Video Swin.

Two options give the Video Swin form used by the PCVOS authors' code:
a learned relative-position bias added to the logits
(:func:`relative_position_index`), and region separation by an additive
logit (Video Swin adds -100) instead of exact exclusion. Their code also lets
padding take part in attention; a caller gets that by padding its inputs
itself (before its projections) and passing the padded grid, whose positions
are then all real.

Projections (LayerNorm + linear) live in the Flax module ``models/pcvos.py``;
this module is the pure core.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from vosjax._validate import check_floating, check_rank
from vosjax.errors import VosjaxError

Triple = tuple[int, int, int]

__all__ = [
    "effective_window",
    "pad_to_window",
    "window_partition",
    "window_reverse",
    "cyclic_shift",
    "reverse_cyclic_shift",
    "shifted_window_mask",
    "relative_position_index",
    "window_attention",
]

_LAYOUT = "[B, T, H, W, C] (channel-last)"


def _as_triple(fn: str, name: str, value: int | Sequence[int], minimum: int) -> Triple:
    """Normalise an int or a 3-sequence of ints to a (t, h, w) tuple."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        items: tuple = (value, value, value)
    else:
        try:
            items = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            items = ()
    ok = len(items) == 3 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) >= minimum
        for v in items
    )
    if not ok:
        raise VosjaxError(
            f"{fn}: argument '{name}' must be an int or three ints (t, h, w), each >= {minimum}; "
            f"got {value!r}."
        )
    return (int(items[0]), int(items[1]), int(items[2]))


def _check_shift(fn: str, window: Triple, shift: Triple) -> None:
    for axis, w, s in zip("THW", window, shift):
        if not 0 <= s < w:
            raise VosjaxError(
                f"{fn}: shift must satisfy 0 <= shift < window on every axis; axis {axis} has "
                f"window {w} and shift {s}. PCVOS shifts by half the window, e.g. (1, 3, 3) "
                f"for window (2, 7, 7)."
            )


def _padded(size: int, w: int) -> int:
    return -(-size // w) * w


def effective_window(
    size: Sequence[int],
    window: int | Sequence[int] = (2, 7, 7),
    shift: int | Sequence[int] = (0, 0, 0),
) -> tuple[Triple, Triple]:
    """Clamp window and shift to the input size, as Video Swin does.

    On every axis with ``size <= window`` the window becomes ``size`` and the
    shift 0 (a single window already covers the axis, so shifting would only
    split it). Other axes keep their window and shift.

    Args:
      size: ``(T, H, W)`` of the unpadded input.
      window: requested window, an int or ``(wt, wh, ww)``.
      shift: requested shift, an int or ``(st, sh, sw)``, ``0 <= shift < window``.

    Returns:
      ``(window, shift)`` actually used by :func:`window_attention`.
    """
    fn = "effective_window"
    size3 = _as_triple(fn, "size", tuple(size), 1)
    win = _as_triple(fn, "window", window, 1)
    sh = _as_triple(fn, "shift", shift, 0)
    _check_shift(fn, win, sh)
    out_w = tuple(L if L <= w else w for L, w in zip(size3, win))
    out_s = tuple(0 if L <= w else s for L, w, s in zip(size3, win, sh))
    return out_w, out_s  # type: ignore[return-value]


def pad_to_window(
    x: Float[Array, "B T H W C"], window: int | Sequence[int]
) -> Float[Array, "B Tp Hp Wp C"]:
    """Zero-pad T, H, W at their ends up to multiples of the window.

    ``Tp = ceil(T / wt) * wt`` and likewise for H and W.
    """
    fn = "pad_to_window"
    check_rank(fn, "x", x, 5, _LAYOUT)
    win = _as_triple(fn, "window", window, 1)
    _, T, H, W, _ = x.shape
    pads = [(0, 0)] + [(0, _padded(L, w) - L) for L, w in zip((T, H, W), win)] + [(0, 0)]
    if all(p == (0, 0) for p in pads):
        return x
    return jnp.pad(x, pads)


def window_partition(
    x: Float[Array, "B T H W C"], window: int | Sequence[int]
) -> Float[Array, "BnW n C"]:
    """Cut a video feature map into non-overlapping 3D windows.

    The input is first zero-padded (:func:`pad_to_window`). Windows are ordered
    batch-major, then along T, H, W (so window ``b * nW + i`` belongs to batch
    element ``b``); the ``n = wt * wh * ww`` tokens inside a window are ordered
    (t, h, w) row-major.

    Args:
      x: ``[B, T, H, W, C]``.
      window: ``(wt, wh, ww)`` or an int for all three axes.

    Returns:
      ``[B * nW, n, C]`` with ``nW = (Tp/wt) (Hp/wh) (Wp/ww)``.
    """
    fn = "window_partition"
    check_rank(fn, "x", x, 5, _LAYOUT)
    wt, wh, ww = _as_triple(fn, "window", window, 1)
    x = pad_to_window(x, (wt, wh, ww))
    B, Tp, Hp, Wp, C = x.shape
    x = x.reshape(B, Tp // wt, wt, Hp // wh, wh, Wp // ww, ww, C)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, wt * wh * ww, C)


def window_reverse(
    windows: Float[Array, "BnW n C"],
    window: int | Sequence[int],
    shape: Sequence[int],
) -> Float[Array, "B T H W C"]:
    """Inverse of :func:`window_partition`: reassemble windows and crop the padding.

    Args:
      windows: ``[B * nW, n, C]`` as produced by :func:`window_partition`.
      window: the window used for the partition.
      shape: ``(B, T, H, W)`` (or ``(B, T, H, W, C)``) of the unpadded map.

    Returns:
      ``[B, T, H, W, C]``; ``window_reverse(window_partition(x, w), w, x.shape) == x``.
    """
    fn = "window_reverse"
    check_rank(fn, "windows", windows, 3, "[B * nW, n, C]")
    wt, wh, ww = _as_triple(fn, "window", window, 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise VosjaxError(
            f"{fn}: argument 'shape' must be (B, T, H, W) or (B, T, H, W, C) of positive sizes, "
            f"got {shape}."
        )
    B, T, H, W = shape[:4]
    C = windows.shape[-1]
    if len(shape) == 5 and shape[4] != C:
        raise VosjaxError(f"{fn}: shape says C={shape[4]} but the windows have C={C}.")
    nt, nh, nw = (_padded(T, wt) // wt, _padded(H, wh) // wh, _padded(W, ww) // ww)
    expected = (B * nt * nh * nw, wt * wh * ww)
    if tuple(windows.shape[:2]) != expected:
        raise VosjaxError(
            f"{fn}: windows of shape {tuple(windows.shape)} do not match shape {shape} with "
            f"window {(wt, wh, ww)}; expected leading dims {expected}. Pass the same window "
            f"and the original (unpadded) shape used for window_partition."
        )
    x = windows.reshape(B, nt, nh, nw, wt, wh, ww, C)
    x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(B, nt * wt, nh * wh, nw * ww, C)
    return x[:, :T, :H, :W]


def cyclic_shift(
    x: Float[Array, "B T H W C"], shift: int | Sequence[int]
) -> Float[Array, "B T H W C"]:
    """Roll T, H, W by ``-shift``.

    ``out[:, t, h, w] = x[:, (t + st) % T, (h + sh) % H, (w + sw) % W]``.
    """
    fn = "cyclic_shift"
    check_rank(fn, "x", x, 5, _LAYOUT)
    st, sh, sw = _as_triple(fn, "shift", shift, 0)
    if st == sh == sw == 0:
        return x
    return jnp.roll(x, (-st, -sh, -sw), axis=(1, 2, 3))


def reverse_cyclic_shift(
    x: Float[Array, "B T H W C"], shift: int | Sequence[int]
) -> Float[Array, "B T H W C"]:
    """Undo :func:`cyclic_shift`: roll T, H, W by ``+shift``."""
    fn = "reverse_cyclic_shift"
    check_rank(fn, "x", x, 5, _LAYOUT)
    st, sh, sw = _as_triple(fn, "shift", shift, 0)
    if st == sh == sw == 0:
        return x
    return jnp.roll(x, (st, sh, sw), axis=(1, 2, 3))


def _np_partition(grid: np.ndarray, window: Triple) -> np.ndarray:
    """window_partition for one [Tp, Hp, Wp] NumPy grid (already padded) -> [nW, n]."""
    wt, wh, ww = window
    Tp, Hp, Wp = grid.shape
    g = grid.reshape(Tp // wt, wt, Hp // wh, wh, Wp // ww, ww).transpose(0, 2, 4, 1, 3, 5)
    return g.reshape(-1, wt * wh * ww)


@functools.lru_cache(maxsize=128)
def _mask_np(size: Triple, window: Triple, shift: Triple) -> np.ndarray:
    # For each axis, a rolled (shifted) padded index r holds original position
    # p = (r + s) mod Lp; its window is floor((p - s) / w) in original
    # coordinates; it is real iff p < L.
    groups, reals = [], []
    for L, w, s in zip(size, window, shift):
        Lp = _padded(L, w)
        p = (np.arange(Lp) + s) % Lp
        groups.append(np.floor_divide(p - s, w))
        reals.append(p < L)
    gt, gh, gw = np.meshgrid(*groups, indexing="ij")
    rt, rh, rw = np.meshgrid(*reals, indexing="ij")
    real = _np_partition(rt & rh & rw, window)  # [nW, n]
    mask = real[:, :, None] & real[:, None, :]
    for g in (gt, gh, gw):
        gp = _np_partition(g, window)
        mask &= gp[:, :, None] == gp[:, None, :]
    mask.setflags(write=False)
    return mask


def shifted_window_mask(
    size: Sequence[int],
    window: int | Sequence[int],
    shift: int | Sequence[int] = (0, 0, 0),
) -> Bool[Array, "nW n n"]:
    """Which tokens of a (shifted) window may attend to which.

    For the padded, cyclically shifted grid cut by :func:`window_partition`,
    ``mask[i, a, b]`` is True iff tokens ``a`` and ``b`` of window ``i`` come
    from the same window in original coordinates (``floor((p - s) / w)`` equal
    on every axis; this separates tokens that wrapped around in the cyclic
    shift) and both are real positions, not padding. Rows of padding tokens
    are all False. The mask depends only on shapes: it is built with NumPy at
    trace time and is a constant under ``jit``. Window and shift are used as
    given (no clamping; see :func:`effective_window`).

    Args:
      size: ``(T, H, W)`` of the unpadded input.
      window: ``(wt, wh, ww)``.
      shift: ``(st, sh, sw)`` with ``0 <= shift < window``; zeros for unshifted windows.

    Returns:
      ``bool[nW, n, n]``, shared by all batch elements.
    """
    fn = "shifted_window_mask"
    size3 = _as_triple(fn, "size", tuple(size), 1)
    win = _as_triple(fn, "window", window, 1)
    sh = _as_triple(fn, "shift", shift, 0)
    _check_shift(fn, win, sh)
    return jnp.asarray(_mask_np(size3, win, sh))


@functools.lru_cache(maxsize=32)
def _rel_index_np(window: Triple) -> np.ndarray:
    wt, wh, ww = window
    coords = np.stack(np.meshgrid(np.arange(wt), np.arange(wh), np.arange(ww), indexing="ij"))
    coords = coords.reshape(3, -1)  # [3, n], tokens in (t, h, w) row-major order
    rel = coords[:, :, None] - coords[:, None, :] + np.array([wt - 1, wh - 1, ww - 1])[:, None, None]
    index = (rel[0] * (2 * wh - 1) + rel[1]) * (2 * ww - 1) + rel[2]
    index.setflags(write=False)
    return index


def relative_position_index(window: int | Sequence[int]) -> np.ndarray:
    """Row of the relative-position bias table for every token pair of a window.

    For tokens ``a, b`` at ``(t, h, w)`` offsets inside a ``wt x wh x ww``
    window (row-major order, as :func:`window_partition`), the pair's entry is
    ``((dt + wt - 1) (2 wh - 1) + dh + wh - 1) (2 ww - 1) + dw + ww - 1`` with
    ``d = pos_a - pos_b``: one row per distinct 3D offset of a table with
    ``(2 wt - 1)(2 wh - 1)(2 ww - 1)`` rows (Video Swin's layout).

    Returns:
      ``int[n, n]``, ``n = wt * wh * ww`` (a NumPy constant).
    """
    return _rel_index_np(_as_triple("relative_position_index", "window", window, 1))


def _masked_softmax(logits: Array, mask: np.ndarray) -> Array:
    """Softmax over the last axis restricted to ``mask``; all-False rows give 0, never NaN.

    Masked entries get exactly zero weight and zero gradient.
    """
    row_max = jnp.max(jnp.where(mask, logits, jnp.finfo(logits.dtype).min), axis=-1, keepdims=True)
    z = jnp.where(mask, logits - jax.lax.stop_gradient(row_max), -jnp.inf)
    e = jnp.exp(z)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def window_attention(
    q: Float[Array, "B T H W Ck"],
    k: Float[Array, "B T H W Ck"],
    v: Float[Array, "B T H W Cv"],
    num_heads: int,
    window: int | Sequence[int] = (2, 7, 7),
    shift: int | Sequence[int] = (0, 0, 0),
    *,
    bias_table: Float[Array, "R heads"] | None = None,
    masked_logit: float | None = None,
) -> Float[Array, "B T H W Cv"]:
    """Multi-head dot-product attention inside (shifted) 3D windows.

    With ``d = Ck / num_heads`` and heads ``h`` split off the channel axis,

        out_h[p] = sum_{q in N(p)} softmax_q(q_h[p] . k_h[q] / sqrt(d)) v_h[q]

    where ``N(p)`` is the set of real positions sharing the (shifted) window of
    ``p`` (see the module docstring), and the heads are concatenated back to
    ``Cv`` channels. Window and shift are first clamped by
    :func:`effective_window`; T, H, W need not be multiples of the window.
    The softmax runs in at least float32.

    With ``bias_table`` (``[(2wt-1)(2wh-1)(2ww-1), heads]`` for the REQUESTED
    window) the logits get ``table[relative_position_index(window)[:n, :n]]``
    (per head) added, ``n`` the volume of the clamped window: Video Swin's
    rule, exact when only the time axis (the outermost) is clamped. With
    ``masked_logit`` (Video Swin: -100.0) pairs from different windows get
    that value added to their logits instead of being excluded, so they keep
    a tiny weight, as in Video Swin; padding is then NOT hidden either, so use
    it on inputs whose T, H, W are already multiples of the window.

    Args:
      q, k: queries and keys, ``[B, T, H, W, Ck]`` (already projected).
      v: values, ``[B, T, H, W, Cv]``.
      num_heads: number of heads; must divide ``Ck`` and ``Cv``.
      window: ``(wt, wh, ww)``; PCVOS uses (2, 7, 7).
      shift: ``(st, sh, sw)``; PCVOS uses (1, 3, 3) every other layer.
      bias_table: optional learned relative-position bias (see above).
      masked_logit: None (exact exclusion) or the additive logit of separated pairs.

    Returns:
      ``[B, T, H, W, Cv]``.
    """
    fn = "window_attention"
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_rank(fn, name, x, 5, _LAYOUT)
        check_floating(fn, name, x)
    if tuple(q.shape) != tuple(k.shape):
        raise VosjaxError(
            f"{fn}: 'q' and 'k' must have the same shape, got {q.shape} and {k.shape}."
        )
    if tuple(v.shape[:4]) != tuple(q.shape[:4]):
        raise VosjaxError(
            f"{fn}: 'v' must share [B, T, H, W] with 'q', got {v.shape} and {q.shape}."
        )
    if not isinstance(num_heads, (int, np.integer)) or isinstance(num_heads, bool) or num_heads < 1:
        raise VosjaxError(f"{fn}: 'num_heads' must be a positive int, got {num_heads!r}.")
    B, T, H, W, Ck = q.shape
    Cv = v.shape[-1]
    if Ck % num_heads or Cv % num_heads:
        raise VosjaxError(
            f"{fn}: num_heads={num_heads} must divide the channels of q/k ({Ck}) and v ({Cv})."
        )
    win, sh = effective_window((T, H, W), window, shift)
    window3 = _as_triple(fn, "window", window, 1)
    d = Ck // num_heads

    def to_windows(x: Array) -> Array:
        x = cyclic_shift(pad_to_window(x, win), sh)
        xw = window_partition(x, win)  # [B*nW, n, C]
        return xw.reshape(xw.shape[0], xw.shape[1], num_heads, -1)

    qw = to_windows(q * jnp.asarray(1.0 / math.sqrt(d), q.dtype))
    kw, vw = to_windows(k), to_windows(v)
    nwin, n = qw.shape[0] // B, qw.shape[1]
    logits = jnp.einsum("bnhd,bmhd->bhnm", qw, kw)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if bias_table is not None:
        r = (2 * window3[0] - 1) * (2 * window3[1] - 1) * (2 * window3[2] - 1)
        if tuple(bias_table.shape) != (r, num_heads):
            raise VosjaxError(
                f"{fn}: 'bias_table' must have shape {(r, num_heads)} for window {window3} "
                f"and {num_heads} heads, got {tuple(bias_table.shape)}."
            )
        index = relative_position_index(window3)[:n, :n]
        bias = jnp.moveaxis(jnp.asarray(bias_table)[index], -1, 0)  # [heads, n, n]
        logits = logits + bias.astype(logits.dtype)[None]
    mask = _mask_np((T, H, W), win, sh)
    if masked_logit is not None:
        if not mask.all():
            extra = np.where(mask, 0.0, float(masked_logit)).astype(np.float32)
            logits = logits.reshape(B, nwin, num_heads, n, n) + extra[None, :, None]
            logits = logits.reshape(B * nwin, num_heads, n, n)
        attn = jax.nn.softmax(logits, axis=-1)
    elif mask.all():
        attn = jax.nn.softmax(logits, axis=-1)
    else:
        logits = logits.reshape(B, nwin, num_heads, n, n)
        attn = _masked_softmax(logits, mask[None, :, None]).reshape(B * nwin, num_heads, n, n)
    out = jnp.einsum("bhnm,bmhd->bnhd", attn.astype(vw.dtype), vw).reshape(B * nwin, n, Cv)
    Tp, Hp, Wp = (_padded(L, w) for L, w in zip((T, H, W), win))
    out = reverse_cyclic_shift(window_reverse(out, win, (B, Tp, Hp, Wp)), sh)
    return out[:, :T, :H, :W]
