"""FRTM's training samples: the weighted sample memory and first-frame augmentation.

Part of :mod:`vosjax.learners.frtm` (re-exported there; use it through that
module). The memory (FRTM sec. 3.4) is a fixed-shape pytree, so one compiled
step serves a whole video and per-object memories batch with ``vmap``; the
augmentation (sec. 3.1, 3.5) makes the first frame's 5 samples.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from vosjax._validate import check_dims_match, check_floating, check_rank
from vosjax.errors import VosjaxError

__all__ = [
    "CAPACITY",
    "ETA",
    "FG_ROTATION",
    "FG_SCALE",
    "MIN_TARGET_PIXELS",
    "NUM_AUG",
    "SampleMemory",
    "augment_first_frame",
    "first_frame_weights",
    "inpaint_diffusion",
    "memory_add",
    "memory_empty",
    "memory_init",
]

CAPACITY = 80  # K_max, sample memory size (sec. 3.4)
ETA = 0.1  # sample-weight growth rate (sec. 3.4)
MIN_TARGET_PIXELS = 10
"""A label with fewer foreground pixels gets pixel weights 1 (frtm-vos ``model/discriminator.py``
``compute_pixel_weights``: ``too_small = px < 10``) and is not added to the memory
(``Discriminator.update``: ``if (train_y > 0.5).sum() < 10: return``)."""


def first_frame_weights(k0: int) -> np.ndarray:
    """Sample weights of the first frame's ``k0`` samples: the un-augmented sample 0 counts
    twice, ``[2, 1, ..., 1] / (k0 + 1)`` (frtm-vos ``model/memory.py``, ``Memory.initialize``:
    ``weights[:K] = 1 / K; weights[0] = 2 / K`` then normalised)."""
    w = np.full((k0,), 1.0, np.float32)
    w[0] = 2.0
    return w / w.sum()


# -- the weighted sample memory ---------------------------------------------------------------


class SampleMemory(NamedTuple):
    """Fixed-shape sample memory M = {(x_k, y_k, gamma_k)} (sec. 3.4), a pytree.

    Attributes:
      features: ``[S, h, w, C]`` stride-16 features per slot.
      labels: ``[S, H', W']`` masks per slot.
      weights: ``[S]`` sample weights gamma_k, summing to 1 over filled slots, 0 in empty slots.
      count: ``int32[]`` number of filled slots (slots ``0 .. count-1``).
      last: ``int32[]`` slot of the most recently added sample (its weight seeds the next one).
    """

    features: Array
    labels: Array
    weights: Array
    count: Array
    last: Array


def memory_empty(
    feature_shape: Sequence[int],
    label_shape: Sequence[int],
    capacity: int = CAPACITY,
    dtype: Any = jnp.float32,
) -> SampleMemory:
    """An empty memory: ``capacity`` zero slots of features ``[h, w, C]`` and labels ``[H', W']``, count 0."""
    if capacity < 1 or len(feature_shape) != 3 or len(label_shape) != 2:
        raise VosjaxError(
            f"frtm.memory_empty: need capacity >= 1, feature_shape (h, w, C) and label_shape (H', W'), got "
            f"{capacity}, {tuple(feature_shape)}, {tuple(label_shape)}."
        )
    return SampleMemory(
        jnp.zeros((capacity, *feature_shape), dtype),
        jnp.zeros((capacity, *label_shape), dtype),
        jnp.zeros((capacity,), jnp.float32),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(0, jnp.int32),
    )


def memory_init(
    features: Float[Array, "K0 h w C"], labels: Float[Array, "K0 H W"], capacity: int = CAPACITY
) -> SampleMemory:
    """A memory holding the first frame's K0 (augmented) samples, weighted by
    :func:`first_frame_weights` (``[2, 1, ..., 1] / (K0 + 1)``: the un-augmented sample 0
    counts twice, as in the authors' ``Memory.initialize``); the remaining
    ``capacity - K0`` slots are empty (zeros, weight 0).
    """
    fn = "frtm.memory_init"
    check_rank(fn, "features", features, 4, "[K0, h, w, C]")
    check_rank(fn, "labels", labels, 3, "[K0, H', W']")
    check_dims_match(
        fn,
        "numbers of samples in features and labels",
        features=features.shape[0],
        labels=labels.shape[0],
    )
    k0 = features.shape[0]
    if not (1 <= k0 <= capacity):
        raise VosjaxError(f"{fn}: need 1 <= K0 <= capacity, got K0={k0} and capacity={capacity}.")
    pad = capacity - k0
    feats = jnp.concatenate([features, jnp.zeros((pad,) + features.shape[1:], features.dtype)])
    labs = jnp.concatenate([labels, jnp.zeros((pad,) + labels.shape[1:], labels.dtype)])
    weights = jnp.concatenate(
        [jnp.asarray(first_frame_weights(k0)), jnp.zeros((pad,), jnp.float32)]
    )
    return SampleMemory(
        feats, labs, weights, jnp.asarray(k0, jnp.int32), jnp.asarray(k0 - 1, jnp.int32)
    )


def authors_restart(memory: SampleMemory) -> SampleMemory:
    """Mark ``memory`` (from :func:`memory_init`) so that the next :func:`memory_add` weights
    its sample as the authors' code does right after the first frame (``last = -1``)."""
    return memory._replace(last=jnp.full_like(memory.last, -1))


def memory_add(
    memory: SampleMemory,
    features: Float[Array, "h w C"],
    labels: Float[Array, "H W"],
    eta: float = ETA,
    min_pixels: float = MIN_TARGET_PIXELS,
) -> SampleMemory:
    """Insert one sample (sec. 3.4): weight growth, eviction of the lowest weight, normalisation.

    A memory whose ``last`` is negative (:func:`authors_restart`) takes the authors'
    first insertion after their ``Memory.initialize`` (``update_sample_weights`` with
    no previous index): every weight is divided by ``1 - eta`` and the new sample gets
    ``eta``, before the normalisation.

    A label with fewer than ``min_pixels`` (10) pixels above 0.5 is not added
    (the memory is returned unchanged, as the authors' ``Discriminator.update`` skips it).

    The new sample gets ``gamma_i = gamma_(i-1) / (1 - eta)`` where gamma_(i-1) is
    the (normalised) weight of the previous sample (``gamma_0 = eta`` in an
    empty memory, which normalises to 1); if the memory is full the
    slot with the smallest weight (first such slot on ties) is replaced,
    otherwise the next empty slot is used; then the weights are normalised to
    sum to 1. Pure and jit-able (fixed shapes; works under vmap).
    """
    fn = "frtm.memory_add"
    check_rank(fn, "features", features, 3, "[h, w, C]")
    check_rank(fn, "labels", labels, 2, "[H', W']")
    if features.shape != memory.features.shape[1:] or labels.shape != memory.labels.shape[1:]:
        raise VosjaxError(
            f"{fn}: sample shapes {features.shape}, {labels.shape} do not match the memory slots "
            f"{memory.features.shape[1:]}, {memory.labels.shape[1:]}."
        )
    if not 0.0 <= eta < 1.0:
        raise VosjaxError(f"{fn}: 'eta' must be in [0, 1), got {eta}.")
    capacity = memory.weights.shape[0]
    full = memory.count >= capacity
    slot = jnp.where(full, jnp.argmin(memory.weights), memory.count).astype(jnp.int32)
    restart = memory.last < 0
    new_w = jnp.where(memory.count > 0, memory.weights[jnp.maximum(memory.last, 0)] / (1.0 - eta), 1.0)
    new_w = jnp.where(restart, eta, new_w)
    weights = jnp.where(restart, memory.weights / (1.0 - eta), memory.weights)
    weights = weights.at[slot].set(new_w)
    weights = weights / jnp.sum(weights)
    new = SampleMemory(
        features=lax.dynamic_update_index_in_dim(
            memory.features, features.astype(memory.features.dtype), slot, 0
        ),
        labels=lax.dynamic_update_index_in_dim(
            memory.labels, labels.astype(memory.labels.dtype), slot, 0
        ),
        weights=weights,
        count=jnp.minimum(memory.count + 1, capacity).astype(jnp.int32),
        last=slot,
    )
    keep = jnp.sum(labels > 0.5) >= min_pixels
    return jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, memory)


# -- first-frame augmentation -----------------------------------------------------------------
#
# The authors' recipe (frtm-vos ``model/augmenter.py``, ``ImageAugmenter.augment_first_frame``,
# with the lists of ``evaluate.py`` / ``train.py`` ``aug_params``): the target is cut out
# (``cut_and_inpaint(d=1, f=1)``), the hole is inpainted (OpenCV ``cv2.inpaint`` with
# ``INPAINT_TELEA``, radius 1, over the mask dilated by a 2x2 ellipse), the background is
# warped and blurred, and the target is warped and pasted back. Each augmentation draws its
# parameters from these lists, every list shuffled independently and read without
# replacement (``generate_specs2``).

NUM_AUG = 5  # samples of the first frame incl. the original (evaluate.py num_aug=5; train.py 15)
FG_ROTATION = (5, -5, 10, -10, 20, -20, 30, -30, 45, -45)  # degrees
FG_FLIPLR = (False, False, False, False, True)
FG_SCALE = (0.5, 0.7, 1.0, 1.5, 2.0, 2.5)
FG_SKEW = ((0.0, 0.0), (0.0, 0.0), (0.1, 0.1))
FG_BLUR_SIZE = (0.0, 0.0, 0.0, 2.0)
BLUR_ANGLE = (0, 45, 90, 135)  # degrees, fg and bg
BG_SCALE = (1.0, 1.0, 1.2)
BG_BLUR_SIZE = (0.0, 0.0, 1.0, 2.0, 5.0)
MIN_SIZE = 10  # AugmentationSpec.min_size: the pasted target is at least 10 px wide and high
INPAINT_ITERS = 64  # Jacobi sweeps of the diffusion fill (vosjax's stand-in for Telea)
_BLUR_RADIUS = 3  # the code's largest kernel (blur size 5) is 7 x 7


def _pick(key: Array, values: Sequence[Any], n: int) -> Array:
    """``n`` values read without replacement from ``values`` repeated to at least ``n`` (generate_specs2)."""
    reps = (n + len(values) - 1) // len(values)
    pool = jnp.asarray(list(values) * reps, jnp.float32)
    return jax.random.permutation(key, pool, axis=0)[:n]


def _sample(image: Array, rows: Array, cols: Array, order: int) -> Array:
    sample = functools.partial(
        jax.scipy.ndimage.map_coordinates, coordinates=[rows, cols], order=order, mode="constant",
        cval=0.0,
    )
    if image.ndim == 2:
        return sample(image)
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


def _warp_affine(image: Array, t: Array, order: int = 1) -> Array:
    """``out(p) = image(T^-1 p)`` for the 3x3 affine ``t`` on pixel coordinates (x, y); 0 outside."""
    h, w = image.shape[:2]
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")
    a, b, c, d = t[0, 0], t[0, 1], t[1, 0], t[1, 1]
    det = a * d - b * c
    m = jnp.array([[d, -b], [-c, a]]) / det
    off = -m @ t[:2, 2]
    inv = jnp.concatenate([m, off[:, None]], axis=1)
    src_x = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    src_y = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    return _sample(image, src_y, src_x, order)


def _blur_kernel(size: Array, angle_deg: Array) -> Array:
    """The code's oriented Gaussian (``_blur_kernel(size, 0.1, R)``): covariance
    ``R diag(size, 0.1) R^T``, support ``|offset| <= s`` with ``s`` = the odd of
    ``int(size / 2 + 0.5)``; size 0 gives the identity. Fixed 7 x 7 array."""
    r = _BLUR_RADIUS
    a = jnp.deg2rad(angle_deg)
    ca, sa = jnp.cos(a), jnp.sin(a)
    rot = jnp.array([[ca, sa], [-sa, ca]])
    cov = rot @ jnp.diag(jnp.stack([jnp.maximum(size, 0.1), 0.1])) @ rot.T
    det = cov[0, 0] * cov[1, 1] - cov[0, 1] * cov[1, 0]
    icov = jnp.array([[cov[1, 1], -cov[0, 1]], [-cov[1, 0], cov[0, 0]]]) / det
    t = jnp.arange(-r, r + 1, dtype=jnp.float32)
    gx, gy = jnp.meshgrid(t, t, indexing="xy")
    q = icov[0, 0] * gx * gx + (icov[0, 1] + icov[1, 0]) * gx * gy + icov[1, 1] * gy * gy
    s = jnp.floor(size / 2 + 0.5)
    s = s + (s + 1) % 2
    inside = (jnp.abs(gx) <= s) & (jnp.abs(gy) <= s)
    g = jnp.where(inside, jnp.exp(-0.5 * q), 0.0)
    g = g / jnp.sum(g)
    ident = jnp.zeros_like(g).at[r, r].set(1.0)
    return jnp.where(size > 0, g, ident)


def _filter(image: Array, kernel: Array) -> Array:
    """Per-channel correlation with ``kernel`` (zero padding, as the code's ``F.conv2d``)."""
    r = _BLUR_RADIUS
    x = image[..., None] if image.ndim == 2 else image
    x = jnp.moveaxis(x, -1, 0)[:, None]  # [C, 1, H, W]
    out = lax.conv_general_dilated(
        x, kernel[None, None].astype(x.dtype), (1, 1), ((r, r), (r, r)),
        precision=lax.Precision.HIGHEST,
    )
    out = jnp.moveaxis(out[:, 0], 0, -1)
    return out[..., 0] if image.ndim == 2 else out


def _dilate(mask: Array) -> Array:
    """3 x 3 binary dilation (the code dilates by a 2 x 2 ellipse before inpainting)."""
    p = jnp.pad(mask, 1)
    h, w = mask.shape
    return jnp.max(jnp.stack([p[i : i + h, j : j + w] for i in range(3) for j in range(3)]), 0)


def inpaint_diffusion(image: Float[Array, "H W 3"], hole: Float[Array, "H W"],
                      iters: int = INPAINT_ITERS) -> Float[Array, "H W 3"]:
    """Fill ``hole`` (1 = unknown) by diffusion: start from the mean colour of the known
    pixels, then ``iters`` Jacobi sweeps set every hole pixel to the mean of its 4
    neighbours (edge-replicated), known pixels fixed. A harmonic fill, in spirit like
    the authors' ``cv2.inpaint(..., INPAINT_TELEA)`` (fast-marching, also propagating
    the border colours inward)."""
    known = 1.0 - hole
    mean = jnp.sum(image * known[..., None], (0, 1)) / jnp.maximum(jnp.sum(known), 1.0)
    x = jnp.where(hole[..., None] > 0, mean, image)

    def sweep(x, _):
        p = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        avg = 0.25 * (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:])
        return jnp.where(hole[..., None] > 0, avg, image), None

    x, _ = lax.scan(sweep, x, None, length=iters)
    return x


def _bbox(mask: Array) -> tuple[Array, Array, Array, Array]:
    """Centre (x, y) and size (w, h) of the mask's bounding box (``center_bbox_from_mask``)."""
    rows, cols = jnp.any(mask > 0.5, 1), jnp.any(mask > 0.5, 0)
    h, w = mask.shape
    y0, y1 = jnp.argmax(rows), h - 1 - jnp.argmax(rows[::-1])
    x0, x1 = jnp.argmax(cols), w - 1 - jnp.argmax(cols[::-1])
    bw = jnp.maximum(x1 - x0 + 1, 1).astype(jnp.float32)
    bh = jnp.maximum(y1 - y0 + 1, 1).astype(jnp.float32)
    return x0 + bw / 2, y0 + bh / 2, bw, bh


def _target_locations(key: Array, h: int, w: int, n: int) -> Array:
    """``n`` target centres (fractions x, y): a jittered grid of NUM_AUG cells in random
    order (``generate_target_locations``), then ``n`` of them drawn (generate_specs2)."""
    aspect = w / h
    nrows = int(np.ceil(np.sqrt(NUM_AUG / aspect)))
    ncols = int(np.ceil(aspect * nrows))
    grid = np.array([((c + 0.5) / ncols, (r + 0.5) / nrows) for r in range(nrows)
                     for c in range(ncols)], np.float32)
    k1, k2 = jax.random.split(key)
    jitter = jax.random.normal(k1, grid.shape) * jnp.array([0.5 / ncols / 4, 0.5 / nrows / 4])
    locs = jax.random.permutation(k2, jnp.asarray(grid) + jitter, axis=0)[:NUM_AUG]
    return locs[:n]


def _affine(loc_x, loc_y, skew, rot_deg, sx, sy, cx, cy) -> Array:
    """``T = translate(loc) @ skew @ rotate @ scale @ translate(-centre)`` (get_transform)."""
    a = jnp.deg2rad(rot_deg)
    ca, sa = jnp.cos(a), jnp.sin(a)
    one, zero = jnp.ones(()), jnp.zeros(())
    tr = lambda dx, dy: jnp.array([[one, zero, dx], [zero, one, dy], [zero, zero, one]])
    sk = jnp.array([[one, skew, zero], [skew, one, zero], [zero, zero, one]])
    ro = jnp.array([[ca, sa, zero], [-sa, ca, zero], [zero, zero, one]])
    sc = jnp.array([[sx, zero, zero], [zero, sy, zero], [zero, zero, one]])
    return tr(loc_x, loc_y) @ sk @ ro @ sc @ tr(-cx, -cy)


def augment_first_frame(
    image: Float[Array, "H W 3"], mask: Float[Array, "H W"], key: PRNGKeyArray
) -> tuple[Float[Array, "5 H W 3"], Float[Array, "5 H W"]]:
    """The first frame's 5 training samples (sec. 3.1, 3.5): the original plus 4 augmentations.

    As the authors' code does (see the comment above :data:`NUM_AUG`): the
    target (mask > 0.5) is cut out and the hole inpainted
    (:func:`inpaint_diffusion`, over the mask dilated by one pixel); per
    augmentation the inpainted background is scaled about the centre by one of
    :data:`BG_SCALE` and blurred (:data:`BG_BLUR_SIZE`, :data:`BLUR_ANGLE`),
    and the target is moved to one of a jittered grid of centres, rotated by
    one of :data:`FG_ROTATION` (+-5 .. +-45 degrees), scaled by one of
    :data:`FG_SCALE` (0.5 - 2.5; limited so it fits the frame and is at
    least :data:`MIN_SIZE` px), mirrored for one in :data:`FG_FLIPLR`, skewed by
    one of :data:`FG_SKEW`, motion-blurred (:data:`FG_BLUR_SIZE`), and pasted
    (its bilinearly warped mask as alpha). The label is the warped mask
    (nearest neighbour, as the code's ``warp_affine(labels, H, sz, 'nearest')``).
    Sample 0 is the original. The code's retry of frames where the target left
    the view (``verify_frame``) has no fixed-shape counterpart here; the
    scale limit and the grid of centres keep the target in view.
    """
    fn = "frtm.augment_first_frame"
    check_rank(fn, "image", image, 3, "[H, W, 3]")
    check_rank(fn, "mask", mask, 2, "[H, W]")
    check_floating(fn, "image", image)
    check_floating(fn, "mask", mask)
    check_dims_match(fn, "image and mask heights", image=image.shape[0], mask=mask.shape[0])
    check_dims_match(fn, "image and mask widths", image=image.shape[1], mask=mask.shape[1])
    h, w = mask.shape
    n = NUM_AUG - 1
    img = image.astype(jnp.float32)
    tgt = (mask > 0.5).astype(jnp.float32)
    background = inpaint_diffusion(img, _dilate(tgt))
    cx, cy, bw, bh = _bbox(tgt)
    keys = jax.random.split(key, 10)
    locs = _target_locations(keys[0], h, w, n)
    rot = _pick(keys[1], FG_ROTATION, n)
    flip = _pick(keys[2], FG_FLIPLR, n)
    scale = _pick(keys[3], FG_SCALE, n)
    skew = _pick(keys[4], [k[0] for k in FG_SKEW], n)
    fg_blur = _pick(keys[5], FG_BLUR_SIZE, n)
    fg_angle = _pick(keys[6], BLUR_ANGLE, n)
    bg_scale = _pick(keys[7], BG_SCALE, n)
    bg_blur = _pick(keys[8], BG_BLUR_SIZE, n)
    bg_angle = _pick(keys[9], BLUR_ANGLE, n)
    cut = img * tgt[..., None]

    def one(loc, r, m, s, k, fb, fa, bs, bb, ba):
        tb = _affine(w / 2, h / 2, 0.0, 0.0, bs, bs, w / 2, h / 2)
        bg = _filter(_warp_affine(background, tb), _blur_kernel(bb, ba))
        s = jnp.where((s * bw > w) | (s * bh > h), jnp.minimum(w / bw, h / bh), s)
        s = jnp.where((s * bw < MIN_SIZE) | (s * bh < MIN_SIZE),
                      jnp.maximum(MIN_SIZE / bw, MIN_SIZE / bh), s)
        sx = jnp.where(m > 0.5, -s, s)
        t = _affine(loc[0] * w, loc[1] * h, k, r, sx, s, cx, cy)
        kern = _blur_kernel(fb, fa)
        fg = _filter(_warp_affine(cut, t), kern)
        alpha = jnp.clip(_filter(_warp_affine(tgt, t), kern), 0.0, 1.0)
        label = _warp_affine(tgt, t, order=0)
        out = fg + bg * (1.0 - alpha[..., None])
        return out, label

    images, labels = jax.vmap(one)(locs, rot, flip, scale, skew, fg_blur, fg_angle, bg_scale,
                                   bg_blur, bg_angle)
    images = jnp.concatenate([img[None], images]).astype(image.dtype)
    labels = jnp.concatenate([mask[None].astype(jnp.float32), labels]).astype(mask.dtype)
    return images, labels
