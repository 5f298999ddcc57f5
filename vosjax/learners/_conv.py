"""Stride-1 'SAME' convolution written as one matmul plus shifted adds.

The target models here map many input channels to few outputs (FRTM: 96 -> 1
with a 3 x 3 kernel; LWL: 512 -> 16). For such kernels

    out[b, y, x, o] = sum_{i, j, c} x_pad[b, y + i, x + j, c] k[i, j, c, o]
                    = sum_{i, j} g_pad[b, y + i, x + j, i, j, o],   g = x @ k.reshape(C, kh kw O)

so one matmul to ``kh * kw * O`` channels (fewer than C) followed by ``kh * kw``
shifted adds of that small tensor computes the convolution, and its
transposes are a matmul each as well (the filter gradient reads x once).
On CPU this is several times faster than XLA's convolution for the filter
gradient, which the learners evaluate in every CG / steepest-descent step.
Zero padding, cross-correlation (no kernel flip), as ``lax.conv_general_dilated``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


def conv_same(
    x: Float[Array, "B h w C"], kernel: Float[Array, "kh kw C O"]
) -> Float[Array, "B h w O"]:
    """Zero-padded stride-1 cross-correlation of NHWC ``x`` with an HWIO ``kernel`` (odd kh, kw)."""
    kh, kw, c, o = kernel.shape
    b, h, w, _ = x.shape
    if (kh, kw) == (1, 1):
        return jnp.einsum("bhwc,co->bhwo", x, kernel[0, 0])
    k = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c, kh * kw * o)
    g = jnp.einsum("bhwc,cn->bhwn", x, k.astype(x.dtype)).reshape(b, h, w, kh, kw, o)
    ph, pw = kh // 2, kw // 2
    g = jnp.pad(g, ((0, 0), (ph, ph), (pw, pw), (0, 0), (0, 0), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            term = g[:, i : i + h, j : j + w, i, j, :]
            out = term if out is None else out + term
    return out
