"""ImageNet normalisation of uint8 frames, done on device (inside ``jit``).

Pipelines ship ``uint8`` frames (4x less host-to-device traffic than float32);
the model step calls :func:`normalize_frames` first.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float, UInt8

from vosjax.errors import VosjaxError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize_frames", "denormalize_frames"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize_frames(frames: UInt8[Array, "*batch 3"]) -> Float[Array, "*batch 3"]:
    """``(frames / 255 - mean) / std`` per RGB channel, in float32.

    Accepts any leading shape with a last axis of 3 (``[B, T, H, W, 3]`` in
    the pipelines); integer or float input in the 0..255 range.
    """
    if not frames.shape or frames.shape[-1] != 3:
        raise VosjaxError(
            "normalize_frames: 'frames' must end in an RGB axis of size 3, got shape "
            f"{tuple(frames.shape)}."
        )
    x = jnp.asarray(frames).astype(jnp.float32) * (1.0 / 255.0)
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


def denormalize_frames(frames: Float[Array, "*batch 3"]) -> UInt8[Array, "*batch 3"]:
    """Inverse of :func:`normalize_frames`, rounded and clipped back to uint8."""
    if not frames.shape or frames.shape[-1] != 3:
        raise VosjaxError(
            "denormalize_frames: 'frames' must end in an RGB axis of size 3, got shape "
            f"{tuple(frames.shape)}."
        )
    x = jnp.asarray(frames, jnp.float32) * jnp.asarray(IMAGENET_STD, jnp.float32) + jnp.asarray(
        IMAGENET_MEAN, jnp.float32
    )
    return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)
