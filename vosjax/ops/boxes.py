"""Bounding boxes of masks and the box-tracker prediction filter (TrickVOS Trick 3).

TrickVOS (sec. 3.4, Algorithm 1) removes false positives far from the tracked
object, e.g. a look-alike distractor matched by the global memory readout: a
box follows the object, and the predicted mask is zeroed outside the box
predicted for the current frame. For frame ``t`` (1-based):

* frames 1-2: ``BB(t) = box(M(t))``, no filtering;
* from frame 3: ``T = BB(t-1) - BB(t-2)`` over ``(x, y, w, h)``;
  ``T' = T`` (CV, constant velocity) or ``T' = MLP(T)`` (PT, parametric
  tracker); ``BB = BB(t-1) + T'``; ``M'(t) = A(BB) * M(t)`` with ``A`` the box's
  attention map; then ``BB(t) = box(M'(t))``.

(The paper's loop condition ``C != len(I)`` would skip the last frame; every
frame is processed here.)

Empty masks (the paper is silent). Policy: a frame is filtered only when BOTH
previous boxes are non-empty. Otherwise the mask passes through unfiltered and
its box becomes the newest history entry. So an object that is absent (or
whose filtered mask came out empty, e.g. the predicted box missed it) is
re-seeded from the raw predictions exactly like frames 1-2: the two frames
after an empty one are unfiltered, and filtering resumes from the third. An
object is therefore never lost for good, and objects that appear mid-video
need no special handling.

Boxes are ``[x, y, w, h]`` in pixels, float32: ``x`` / ``y`` the first
foreground column / row, ``w`` / ``h`` the extent (a single pixel has
``w = h = 1``); the empty box is ``[0, 0, 0, 0]`` (any box with ``w <= 0`` or
``h <= 0`` is empty). A box covers pixel ``(r, c)`` iff its centre
``(r + 0.5, c + 0.5)`` lies in ``[x, x + w) x [y, y + h)``, so real-valued
boxes (from the PT MLP) work too.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from vosjax.errors import VosjaxError

__all__ = [
    "BoxFilterState",
    "mask_to_box",
    "box_to_attention_map",
    "box_filter_init",
    "box_filter_step",
    "filter_masks",
]

MotionFn = Callable[[Float[Array, "*batch 4"]], Float[Array, "*batch 4"]]
Mask = Float[Array, "*batch H W"] | Bool[Array, "*batch H W"]


class BoxFilterState(NamedTuple):
    """Streaming state of the box filter (a pytree; fixed shapes).

    Attributes:
      prev_box: ``BB(t-1)``, ``f32[*batch, 4]``.
      prev_prev_box: ``BB(t-2)``, ``f32[*batch, 4]``.
      count: frames seen so far, ``int32[*batch]``.
    """

    prev_box: Float[Array, "*batch 4"]
    prev_prev_box: Float[Array, "*batch 4"]
    count: Int[Array, "*batch"]


def _check_mask(fn: str, name: str, mask: Any, min_rank: int, layout: str) -> None:
    if np.ndim(mask) < min_rank:
        raise VosjaxError(
            f"{fn}: argument '{name}' must have at least {min_rank} dims laid out as {layout}, "
            f"got shape {tuple(np.shape(mask))}."
        )
    if min(np.shape(mask)[-2:]) < 1:
        raise VosjaxError(
            f"{fn}: argument '{name}' has an empty image, shape {tuple(np.shape(mask))}."
        )
    dtype = jnp.asarray(mask).dtype if not hasattr(mask, "dtype") else mask.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or dtype == jnp.bool_):
        raise VosjaxError(
            f"{fn}: argument '{name}' must be boolean or floating point (probabilities), "
            f"got {dtype}."
        )


def _check_margin(fn: str, margin: Any) -> float:
    try:
        m = float(margin)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise VosjaxError(f"{fn}: 'margin' must be a Python float, got {margin!r}.") from err
    if not m >= 0.0:
        raise VosjaxError(f"{fn}: 'margin' must be >= 0 (a fraction of the box size), got {m}.")
    return m


def _check_mode(fn: str, mode: str, motion_fn: MotionFn | None) -> None:
    if mode not in ("cv", "pt"):
        raise VosjaxError(
            f"{fn}: 'mode' must be 'cv' (constant velocity) or 'pt' (parametric tracker), "
            f"got {mode!r}."
        )
    if mode == "pt" and motion_fn is None:
        raise VosjaxError(
            f"{fn}: mode='pt' needs motion_fn, the parametric box tracker mapping the last "
            "motion T[..., 4] to T'[..., 4]. Build the tracker MLP from vosjax.models.tracker, "
            "load its trained params, and pass e.g. motion_fn=lambda t: tracker.apply(params, t); "
            "or use mode='cv'."
        )
    if mode == "cv" and motion_fn is not None:
        raise VosjaxError(f"{fn}: motion_fn is only used with mode='pt'; drop it or set mode='pt'.")
    if motion_fn is not None and not callable(motion_fn):
        raise VosjaxError(
            f"{fn}: 'motion_fn' must be callable [..., 4] -> [..., 4], got {motion_fn!r}."
        )


def mask_to_box(mask: Mask) -> Float[Array, "*batch 4"]:
    """Tight bounding box ``[x, y, w, h]`` of the foreground ``mask > 0.5``.

    ``x = min{c : fg[:, c]}``, ``y = min{r : fg[r, :]}``,
    ``w = max{c} - x + 1``, ``h = max{r} - y + 1``; ``[0, 0, 0, 0]`` for an
    empty mask. Batched over leading axes; jit-able; not differentiable
    (boxes are integer-valued).

    Args:
      mask: ``[..., H, W]``, boolean or probabilities.

    Returns:
      ``f32[..., 4]``.
    """
    fn = "mask_to_box"
    _check_mask(fn, "mask", mask, 2, "[..., H, W]")
    mask = jnp.asarray(mask)
    fg = mask if mask.dtype == jnp.bool_ else mask > 0.5
    H, W = fg.shape[-2:]
    rows = jnp.any(fg, axis=-1).astype(jnp.int32)  # [..., H]
    cols = jnp.any(fg, axis=-2).astype(jnp.int32)  # [..., W]
    y0 = jnp.argmax(rows, axis=-1)
    y1 = H - 1 - jnp.argmax(rows[..., ::-1], axis=-1)
    x0 = jnp.argmax(cols, axis=-1)
    x1 = W - 1 - jnp.argmax(cols[..., ::-1], axis=-1)
    box = jnp.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=-1).astype(jnp.float32)
    nonempty = jnp.any(rows > 0, axis=-1)
    return jnp.where(nonempty[..., None], box, 0.0)


def box_to_attention_map(
    box: Float[Array, "*batch 4"], height: int, width: int, margin: float = 0.0
) -> Float[Array, "*batch H W"]:
    """Binary map of a (possibly enlarged) box on an ``height x width`` grid.

    The box ``[x, y, w, h]`` is enlarged by ``margin * w`` left and right and
    ``margin * h`` top and bottom; ``A[r, c] = 1`` iff
    ``x - margin w <= c + 0.5 < x + (1 + margin) w`` and likewise for rows,
    else 0. Parts outside the image are clipped; boxes with ``w <= 0`` or
    ``h <= 0`` give an all-zero map.

    Args:
      box: ``[..., 4]`` as ``[x, y, w, h]`` in pixels (real values allowed).
      height, width: the map size.
      margin: enlargement as a fraction of the box size per side, ``>= 0``.

    Returns:
      ``f32[..., height, width]``.
    """
    fn = "box_to_attention_map"
    if np.ndim(box) < 1 or np.shape(box)[-1] != 4:
        raise VosjaxError(
            f"{fn}: argument 'box' must be [..., 4] as [x, y, w, h], "
            f"got shape {tuple(np.shape(box))}."
        )
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise VosjaxError(f"{fn}: '{name}' must be a positive int, got {v!r}.")
    m = _check_margin(fn, margin)
    box = jnp.asarray(box, jnp.float32)
    x, y, w, h = (box[..., i] for i in range(4))
    x0, x1 = x - m * w, x + (1.0 + m) * w
    y0, y1 = y - m * h, y + (1.0 + m) * h
    cx = jnp.arange(width, dtype=jnp.float32) + 0.5
    cy = jnp.arange(height, dtype=jnp.float32) + 0.5
    in_x = (cx >= x0[..., None]) & (cx < x1[..., None])  # [..., W]
    in_y = (cy >= y0[..., None]) & (cy < y1[..., None])  # [..., H]
    return (in_y[..., :, None] & in_x[..., None, :]).astype(jnp.float32)


def box_filter_init(batch_shape: Sequence[int] = ()) -> BoxFilterState:
    """Empty history for a batch of objects: zero boxes, zero frames seen.

    Args:
      batch_shape: leading shape of the masks that will be filtered, e.g. ``(B, O)``.
    """
    try:
        shape = tuple(int(s) for s in batch_shape)
    except TypeError as err:
        raise VosjaxError(
            f"box_filter_init: 'batch_shape' must be a sequence of ints, got {batch_shape!r}."
        ) from err
    if any(s < 0 for s in shape):
        raise VosjaxError(f"box_filter_init: 'batch_shape' must be non-negative, got {shape}.")
    zeros = jnp.zeros(shape + (4,), jnp.float32)
    return BoxFilterState(zeros, zeros, jnp.zeros(shape, jnp.int32))


def _nonempty(box: Array) -> Array:
    return (box[..., 2] > 0) & (box[..., 3] > 0)


def box_filter_step(
    state: BoxFilterState,
    mask: Mask,
    mode: str = "cv",
    motion_fn: MotionFn | None = None,
    margin: float = 0.0,
) -> tuple[BoxFilterState, Mask]:
    """One frame of Algorithm 1 (TrickVOS), for streaming inference.

    If ``count >= 2`` and ``BB(t-1)``, ``BB(t-2)`` are non-empty:
    ``T = BB(t-1) - BB(t-2)``; ``T' = T`` (``"cv"``) or ``motion_fn(T)``
    (``"pt"``); ``BB = BB(t-1) + T'``; ``filtered = A(BB, margin) * mask``.
    Otherwise (frames 1-2, or after an empty box; see the module docstring)
    ``filtered = mask``. Then ``BB(t) = mask_to_box(filtered)`` enters the history.

    Args:
      state: from :func:`box_filter_init` or the previous step; batch shape ``[...]``.
      mask: ``[..., H, W]`` prediction of this frame, bool or probabilities.
      mode: ``"cv"`` (constant velocity) or ``"pt"`` (parametric tracker).
      motion_fn: for ``"pt"``: a pure function ``f32[..., 4] -> f32[..., 4]``
        (the tracker MLP of ``vosjax.models.tracker``, bound to its params).
      margin: enlarge the predicted box by this fraction of its size per side.

    Returns:
      ``(new_state, filtered)``; ``filtered`` has the mask's shape and dtype
      (bool masks are filtered by logical and).
    """
    fn = "box_filter_step"
    _check_mode(fn, mode, motion_fn)
    _check_mask(fn, "mask", mask, 2, "[..., H, W]")
    m = _check_margin(fn, margin)
    mask = jnp.asarray(mask)
    if tuple(state.prev_box.shape[:-1]) != tuple(mask.shape[:-2]):
        raise VosjaxError(
            f"{fn}: the state was made for batch shape {tuple(state.prev_box.shape[:-1])} but "
            f"the mask has leading shape {tuple(mask.shape[:-2])}; "
            "call box_filter_init(mask.shape[:-2])."
        )
    H, W = mask.shape[-2:]
    prev, prev_prev = state.prev_box, state.prev_prev_box
    ready = (state.count >= 2) & _nonempty(prev) & _nonempty(prev_prev)
    motion = prev - prev_prev
    if mode == "pt":
        motion = jnp.asarray(motion_fn(motion))  # type: ignore[misc]
        if motion.shape != prev.shape:
            raise VosjaxError(
                f"{fn}: motion_fn must map [..., 4] to the same shape; got {tuple(prev.shape)} -> "
                f"{tuple(motion.shape)}."
            )
        motion = motion.astype(jnp.float32)
    amap = box_to_attention_map(prev + motion, H, W, m)
    if mask.dtype == jnp.bool_:
        candidate = mask & (amap > 0)
    else:
        candidate = mask * amap.astype(mask.dtype)
    filtered = jnp.where(ready[..., None, None], candidate, mask)
    new_state = BoxFilterState(mask_to_box(filtered), prev, state.count + 1)
    return new_state, filtered


def filter_masks(
    masks: Float[Array, "*batch T H W"] | Bool[Array, "*batch T H W"],
    mode: str = "cv",
    motion_fn: MotionFn | None = None,
    margin: float = 0.0,
) -> Float[Array, "*batch T H W"] | Bool[Array, "*batch T H W"]:
    """Algorithm 1 of TrickVOS over whole sequences (offline form).

    A ``lax.scan`` of :func:`box_filter_step` over the time axis, starting from
    :func:`box_filter_init`, so it equals the streaming form frame by frame.
    Leading axes are independent (objects, videos).

    Args:
      masks: ``[..., T, H, W]`` predicted masks, bool or probabilities.
      mode: ``"cv"`` or ``"pt"``; ``"pt"`` requires ``motion_fn``.
      motion_fn: see :func:`box_filter_step`.
      margin: see :func:`box_filter_step`.

    Returns:
      filtered masks, same shape and dtype as ``masks``.
    """
    fn = "filter_masks"
    _check_mode(fn, mode, motion_fn)
    _check_mask(fn, "masks", masks, 3, "[..., T, H, W]")
    _check_margin(fn, margin)
    masks = jnp.asarray(masks)
    state = box_filter_init(masks.shape[:-3])

    def body(carry: BoxFilterState, frame: Array) -> tuple[BoxFilterState, Array]:
        return box_filter_step(carry, frame, mode, motion_fn, margin)

    _, out = jax.lax.scan(body, state, jnp.moveaxis(masks, -3, 0))
    return jnp.moveaxis(out, 0, -3)
