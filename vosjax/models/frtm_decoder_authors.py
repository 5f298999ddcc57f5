"""FRTM's segmentation network S in the form of the authors' released code (``segnet="authors"``).

The released FRTM networks (frtm-vos ``model/seg_network.py``, run with
``nchannels=64, use_batch_norm=True``) differ from vosjax's reading of the
paper (:mod:`vosjax.models.frtm_decoder`) in every block; this module is that
form, with the same :meth:`project` / :meth:`decode` interface, so that
:mod:`vosjax.models.torch_import_frtm` can load their weights. Per depth d
(deepest first: s32, s16, s8, s4 = their ``layer5 .. layer2``), C = 64::

    p^d   = conv1x1(relu(conv1x1(x^d)))                      TSE "reduce" (C channels, biases)
    t^d   = relu(conv3(relu(conv3(relu(conv3([p^d, R_d(s)]))))))   widths C+1, C+1, C
    a^d   = RRB1^d(t^d)
    c^d   = a^d * sigmoid(conv1x1(relu(conv1x1([gap(a^d), g^d])))) + R_d(z^(d+1))
    z^d   = RRB2^d(c^d)

with ``g^d = gap(z^(d+1))`` and, for the deepest block, ``z^(s64) := gap(p^(s32))``
(a 1 x 1 map: its resize is a broadcast). The residual block is
``RRB(x) = relu(h + conv3(relu(BN(conv3_b(h)))))`` with ``h = conv1x1(x)`` (the
second 3x3 conv has no bias; BN with running statistics). The output head::

    logit = conv3_1(R_HW(up2(relu(conv3_(C/2)(up2(z^(s4)))))))

``up2`` is 2x bicubic upsampling (a = -0.75, half-pixel centres, edge samples
replicated: the authors' ``PyrUpBicubic2d``) and ``R`` bilinear resizing
(half-pixel centres, no antialiasing: PyTorch ``align_corners=False``).

Parameter names (``tse_s32/reduce0``, ``rrb1_s16/bb0`` ...) map one-to-one onto
the authors' state-dict keys (:func:`vosjax.models.torch_import_frtm.segnet_torch_key`).
Arrays are NHWC; ``dtype`` is the compute dtype; logits come out float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from vosjax import _validate
from vosjax.errors import VosjaxError
from vosjax.models.frtm_common import KERNEL_INIT
from vosjax.models.frtm_decoder import DEPTHS, resize_to

__all__ = ["AuthorsSegmentationNetwork", "bicubic_up2_matrix", "up2_bicubic"]


def _conv(features: int, kernel: int, dtype: Any, bias: bool = True, name: str | None = None) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        padding="SAME",
        use_bias=bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=KERNEL_INIT,
        name=name,
    )


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_up2_matrix(n: int) -> np.ndarray:
    """``[2n, n]`` matrix of 1-D 2x bicubic upsampling (a = -0.75), half-pixel centres,
    out-of-range samples replaced by the edge sample.

    Output o reads the input at ``c = (o + 0.5) / 2 - 0.5``; the four taps
    ``floor(c) - 1 .. floor(c) + 2`` (clamped to ``0 .. n-1``) get the cubic
    weights of their distance to c.
    """
    m = np.zeros((2 * n, n), np.float64)
    for o in range(2 * n):
        c = (o + 0.5) / 2.0 - 0.5
        f = int(np.floor(c))
        for i in range(f - 1, f + 3):
            m[o, min(max(i, 0), n - 1)] += _cubic(np.asarray(c - i))
    return m.astype(np.float32)


def up2_bicubic(x: Float[Array, "N h w C"]) -> Float[Array, "N 2h 2w C"]:
    """2x bicubic upsampling of NHWC ``x`` (:func:`bicubic_up2_matrix` along H and W)."""
    mh = jnp.asarray(bicubic_up2_matrix(x.shape[1]), x.dtype)
    mw = jnp.asarray(bicubic_up2_matrix(x.shape[2]), x.dtype)
    return jnp.einsum("Ww,nHwc->nHWc", mw, jnp.einsum("Hh,nhwc->nHwc", mh, x))


def _gap(x: Array) -> Array:
    return jnp.mean(x, axis=(1, 2), keepdims=True)


class _Reduce(nn.Module):
    channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = nn.relu(_conv(self.channels, 1, self.dtype, name="reduce0")(x))
        return _conv(self.channels, 1, self.dtype, name="reduce2")(h)


class _Transform(nn.Module):
    channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: Array) -> Array:
        nc = t.shape[-1]
        t = nn.relu(_conv(nc, 3, self.dtype, name="transform0")(t))
        t = nn.relu(_conv(nc, 3, self.dtype, name="transform2")(t))
        return nn.relu(_conv(self.channels, 3, self.dtype, name="transform4")(t))


class _RRB(nn.Module):
    """``relu(h + conv3(relu(BN(conv3(h)))))``, ``h = conv1x1(x)``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        h = _conv(c, 1, self.dtype, name="conv1x1")(x)
        y = _conv(c, 3, self.dtype, name="bb0")(h)
        y = nn.BatchNorm(use_running_average=True, epsilon=1e-5, dtype=self.dtype,
                         param_dtype=jnp.float32, name="bb1")(y)
        y = _conv(c, 3, self.dtype, bias=False, name="bb3")(nn.relu(y))
        return nn.relu(h + y)


class _CAB(nn.Module):
    """``a * sigmoid(conv1x1(relu(conv1x1([gap(a), g])))) + R(deeper)``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, a: Array, deeper_pool: Array, deeper: Array) -> Array:
        c = a.shape[-1]
        g = jnp.concatenate([_gap(a), deeper_pool.astype(a.dtype)], axis=-1)
        g = _conv(c, 1, self.dtype, name="crc0")(g)
        w = nn.sigmoid(_conv(c, 1, self.dtype, name="crc2")(nn.relu(g)))
        if deeper.shape[1:3] == (1, 1):
            up = jnp.broadcast_to(deeper, a.shape).astype(a.dtype)
        else:
            up = resize_to(deeper, a.shape[1:3]).astype(a.dtype)
        return a * w + up


class AuthorsSegmentationNetwork(nn.Module):
    """S as in the authors' released code (see the module docstring).

    Attributes:
      channels: width C (64 in the released networks).
      dtype: compute dtype.
    """

    channels: int = 64
    dtype: Any = jnp.float32

    def setup(self):
        c = self.channels
        self.tse_reduce = {d: _Reduce(c, self.dtype) for d in DEPTHS}
        self.tse_transform = {d: _Transform(c, self.dtype) for d in DEPTHS}
        self.rrb1 = {d: _RRB(self.dtype) for d in DEPTHS}
        self.cab = {d: _CAB(self.dtype) for d in DEPTHS}
        self.rrb2 = {d: _RRB(self.dtype) for d in DEPTHS}
        self.up_conv1 = _conv(max(c // 2, 1), 3, self.dtype)
        self.up_conv2 = _conv(1, 3, self.dtype)

    def project(
        self, feats: dict[str, Float[Array, "N h w c"]]
    ) -> dict[str, Float[Array, "N h w C"]]:
        """``p^d`` (the TSE "reduce" of each depth): target-independent, shared by all objects."""
        missing = [d for d in DEPTHS if d not in feats]
        if missing:
            raise VosjaxError(
                f"AuthorsSegmentationNetwork.project: 'feats' lacks backbone features {missing}; "
                f"pass the backbone's {list(DEPTHS)} outputs (stop_at='s32')."
            )
        return {d: self.tse_reduce[d](feats[d].astype(self.dtype)) for d in DEPTHS}

    def decode(
        self,
        proj: dict[str, Float[Array, "N h w C"]],
        target_map: Float[Array, "N hs ws S"],
        out_hw: tuple[int, int],
    ) -> Float[Array, "N H W"]:
        """Logits ``[N, H, W]`` (float32) at ``out_hw`` from the reductions and the target map."""
        _validate.check_rank(
            "AuthorsSegmentationNetwork.decode", "target_map", target_map, 4, "[N, h, w, S]"
        )
        z = _gap(proj[DEPTHS[0]])  # the deepest block's "deeper" input: a 1 x 1 map
        for d in DEPTHS:
            p = proj[d]
            t = jnp.concatenate([p, resize_to(target_map.astype(p.dtype), p.shape[1:3])], axis=-1)
            a = self.rrb1[d](self.tse_transform[d](t))
            c = self.cab[d](a, z if z.shape[1:3] == (1, 1) else _gap(z), z)
            z = self.rrb2[d](c)
        y = nn.relu(self.up_conv1(up2_bicubic(z)))
        y = resize_to(up2_bicubic(y), out_hw)
        return self.up_conv2(y).astype(jnp.float32)[..., 0]

    def __call__(
        self,
        feats: dict[str, Float[Array, "N h w c"]],
        target_map: Float[Array, "N hs ws S"],
        out_hw: tuple[int, int],
    ) -> Float[Array, "N H W"]:
        """:meth:`project` then :meth:`decode` (one object per batch row)."""
        return self.decode(self.project(feats), target_map, out_hw)
