"""Noisy reference masks for the robustness study (cyclic VOS sec. 4.3.4, Tables 5-6).

Pure builders of the natural perturbations (the adversarial ones are
:func:`vosjax.correction.fgsm` / :func:`vosjax.correction.mi_fgsm`):

- :func:`box_masks`: the box template, every pixel of each object's bounding
  box set to 1 (as the authors' ``mask_to_box``, libs/utils/utility.py:238:
  inclusive box per object channel; an empty mask stays empty);
- :func:`low_quality_masks`: a worse mask of the same frame: each object
  eroded or dilated (a random choice per object) by ``radius`` pixels, then a
  fraction ``flip`` of its pixels flipped at random. The paper takes the
  prediction of a weaker baseline; this is a model-free stand-in.

Masks are ``f32[O, H, W]`` (or any ``[..., H, W]``) in [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from vosjax._validate import check_rank
from vosjax.errors import VosjaxError

__all__ = ["box_masks", "dilate", "erode", "low_quality_masks"]


def box_masks(masks: Float[Array, "*batch H W"]) -> Float[Array, "*batch H W"]:
    """1 inside the inclusive bounding box of ``masks > 0`` of every map, else 0."""
    check_rank("box_masks", "masks", masks, (2, 3, 4, 5), "[..., H, W]")
    on = masks > 0
    rows = jnp.any(on, axis=-1)  # [..., H]
    cols = jnp.any(on, axis=-2)  # [..., W]

    def span(v):
        n = v.shape[-1]
        idx = jnp.arange(n)
        lo = jnp.min(jnp.where(v, idx, n), axis=-1, keepdims=True)
        hi = jnp.max(jnp.where(v, idx, -1), axis=-1, keepdims=True)
        return (idx >= lo) & (idx <= hi)

    return (span(rows)[..., :, None] & span(cols)[..., None, :]).astype(masks.dtype)


def _max_filter(x: Array, radius: int) -> Array:
    """Max over the (2r+1) x (2r+1) square around each pixel (border: -inf)."""
    k = 2 * radius + 1
    dims = (1,) * (x.ndim - 2) + (k, k)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, (1,) * x.ndim, "SAME")


def dilate(masks: Float[Array, "*batch H W"], radius: int) -> Float[Array, "*batch H W"]:
    """Binary dilation of ``masks > 0.5`` by a square of side ``2 radius + 1``."""
    return (_max_filter((masks > 0.5).astype(jnp.float32), radius) > 0.5).astype(masks.dtype)


def erode(masks: Float[Array, "*batch H W"], radius: int) -> Float[Array, "*batch H W"]:
    """Binary erosion of ``masks > 0.5`` (pixels outside the frame count as background)."""
    off = (masks <= 0.5).astype(jnp.float32)
    p = [(0, 0)] * (masks.ndim - 2) + [(radius, radius)] * 2
    grown = _max_filter(jnp.pad(off, p, constant_values=1.0), radius)
    h, w = masks.shape[-2:]
    return (grown[..., radius : radius + h, radius : radius + w] < 0.5).astype(masks.dtype)


def low_quality_masks(
    key: Array, masks: Float[Array, "O H W"], radius: int = 3, flip: float = 0.02
) -> Float[Array, "O H W"]:
    """Each object's mask eroded or dilated by ``radius`` (coin flip), then ``flip`` of its pixels flipped."""
    check_rank("low_quality_masks", "masks", masks, (3,), "[O, H, W]")
    if radius < 0 or not 0.0 <= flip <= 1.0:
        raise VosjaxError(
            f"low_quality_masks: need radius >= 0 and flip in [0, 1], got {radius}, {flip}."
        )
    k1, k2 = jax.random.split(key)
    grow = jax.random.bernoulli(k1, 0.5, (masks.shape[0], 1, 1))
    m = jnp.where(grow, dilate(masks, radius), erode(masks, radius))
    flips = jax.random.bernoulli(k2, flip, masks.shape)
    return jnp.where(flips, 1.0 - m, m).astype(masks.dtype)
