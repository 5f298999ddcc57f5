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
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from vosjax._validate import check_dims_match, check_floating, check_rank
from vosjax.errors import VosjaxError

__all__ = [
    "BLUR_SIGMA",
    "CAPACITY",
    "ETA",
    "MAX_ROTATION_DEG",
    "MAX_SHIFT",
    "SCALE_RANGE",
    "SampleMemory",
    "augment_first_frame",
    "memory_add",
    "memory_empty",
    "memory_init",
]

CAPACITY = 80  # K_max, sample memory size (sec. 3.4)
ETA = 0.1  # sample-weight growth rate (sec. 3.4)


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
    """A memory holding the first frame's K0 (augmented) samples, each of weight 1 / K0.

    The K0 samples all stand for frame 0 and share gamma_0 (normalised: 1 / K0);
    the remaining ``capacity - K0`` slots are empty (zeros, weight 0).
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
        [jnp.full((k0,), 1.0 / k0, jnp.float32), jnp.zeros((pad,), jnp.float32)]
    )
    return SampleMemory(
        feats, labs, weights, jnp.asarray(k0, jnp.int32), jnp.asarray(k0 - 1, jnp.int32)
    )


def memory_add(
    memory: SampleMemory,
    features: Float[Array, "h w C"],
    labels: Float[Array, "H W"],
    eta: float = ETA,
) -> SampleMemory:
    """Insert one sample (sec. 3.4): weight growth, eviction of the lowest weight, normalisation.

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
    new_w = jnp.where(memory.count > 0, memory.weights[memory.last] / (1.0 - eta), 1.0)
    weights = memory.weights.at[slot].set(new_w)
    weights = weights / jnp.sum(weights)
    return SampleMemory(
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


# -- first-frame augmentation -----------------------------------------------------------------

MAX_SHIFT = 0.1  # translation, fraction of height / width
MAX_ROTATION_DEG = 15.0
SCALE_RANGE = (0.9, 1.1)
BLUR_SIGMA = (0.5, 2.0)  # pixels
_BLUR_RADIUS = 6  # fixed support >= 3 sigma_max, so shapes stay static


def _warp(image: Array, mask: Array, inv: Array, offset: Array) -> tuple[Array, Array]:
    """Sample image and mask at ``src = inv @ dst + offset`` (bilinear, zeros outside)."""
    h, w = mask.shape
    ii, jj = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    src = jnp.einsum("ab,bhw->ahw", inv, jnp.stack([ii, jj])) + offset[:, None, None]
    sample = functools.partial(
        jax.scipy.ndimage.map_coordinates,
        coordinates=[src[0], src[1]],
        order=1,
        mode="constant",
        cval=0.0,
    )
    img = jax.vmap(sample, in_axes=-1, out_axes=-1)(image)
    return img.astype(image.dtype), sample(mask).astype(mask.dtype)


def _blur(image: Array, sigma: Array) -> Array:
    """Separable Gaussian blur with edge padding."""
    r = _BLUR_RADIUS
    t = jnp.arange(-r, r + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * jnp.square(t / sigma))
    k = k / jnp.sum(k)
    h, w = image.shape[:2]
    p = jnp.pad(image.astype(jnp.float32), ((r, r), (r, r), (0, 0)), mode="edge")
    p = sum(k[i] * p[i : i + h] for i in range(2 * r + 1))
    p = sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1))
    return p.astype(image.dtype)


def augment_first_frame(
    image: Float[Array, "H W 3"], mask: Float[Array, "H W"], key: PRNGKeyArray
) -> tuple[Float[Array, "5 H W 3"], Float[Array, "5 H W"]]:
    """The first frame's 5 training samples (sec. 3.1, 3.5): the original plus 4 augmentations.

    The paper defers its augmentation to a supplement we do not have; these are
    vosjax's choices, plausible image-space augmentations that keep the object
    in view:

    0. the original;
    1. horizontal flip;
    2. translation by up to ``MAX_SHIFT`` (10 %) of the height / width;
    3. rotation by up to +-15 degrees and scaling by 0.9-1.1 about the centre;
    4. Gaussian blur of the image (sigma 0.5-2 px), mask unchanged.

    Geometric warps resample bilinearly and fill outside the frame with 0 (the
    mean colour of an ImageNet-normalised image; background for the mask), so
    warped masks are soft at their edges but stay in [0, 1].
    """
    fn = "frtm.augment_first_frame"
    check_rank(fn, "image", image, 3, "[H, W, 3]")
    check_rank(fn, "mask", mask, 2, "[H, W]")
    check_floating(fn, "image", image)
    check_floating(fn, "mask", mask)
    check_dims_match(fn, "image and mask heights", image=image.shape[0], mask=mask.shape[0])
    check_dims_match(fn, "image and mask widths", image=image.shape[1], mask=mask.shape[1])
    h, w = mask.shape
    k_shift, k_rot, k_scale, k_blur = jax.random.split(key, 4)
    centre = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)

    shift = jax.random.uniform(k_shift, (2,), minval=-MAX_SHIFT, maxval=MAX_SHIFT) * jnp.array(
        [h, w], jnp.float32
    )
    img_t, mask_t = _warp(image, mask, jnp.eye(2, dtype=jnp.float32), -shift)

    theta = jnp.deg2rad(
        jax.random.uniform(k_rot, (), minval=-MAX_ROTATION_DEG, maxval=MAX_ROTATION_DEG)
    )
    scale = jax.random.uniform(k_scale, (), minval=SCALE_RANGE[0], maxval=SCALE_RANGE[1])
    c, s = jnp.cos(theta), jnp.sin(theta)
    inv = jnp.array([[c, s], [-s, c]]) / scale  # inverse of scale * rotation(theta)
    img_r, mask_r = _warp(image, mask, inv, centre - inv @ centre)

    sigma = jax.random.uniform(k_blur, (), minval=BLUR_SIGMA[0], maxval=BLUR_SIGMA[1])
    img_b = _blur(image, sigma)

    images = jnp.stack([image, image[:, ::-1], img_t, img_r, img_b])
    masks = jnp.stack([mask, mask[:, ::-1], mask_t, mask_r, mask])
    return images, masks
