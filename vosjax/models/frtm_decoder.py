"""FRTM's segmentation network S (FRTM sec. 3.2, Fig. 3), also JOINT's decoder (JOINT eq. 7).

S turns a coarse target map ``s`` on the stride-16 grid (FRTM: the target
model's 1-channel scores; JOINT: the D-channel mask encoding
``E_tra* + E_ind*``) and backbone features ``x^d`` of four depths into a
full-resolution mask logit, U-Net style (deepest first, d = s32, s16, s8, s4)::

    p^d   = P^d(x^d)                                    1x1 conv to C = 64 channels (projection)
    t^d   = TSE^d(p^d, s) = conv3(conv3(conv3([p^d, R_d(s)])))   each conv 3x3 + ReLU
    z^d   = RB2^d(CAB^d(RB1^d(t^d), R_d(z^(d+1))))      z^(s64) := p^(s32) (the deepest block
                                                        reads its own projection, FRTM sec. 3.2)
    logit = R_HW(conv3x3_1(relu(conv3x3_(C/2)(z^(s4)))))

with ``R_d`` bilinear resizing to the grid of depth d (half-pixel centres,
PyTorch ``align_corners=False``, :func:`resize_to`), the residual block
``RB(x) = relu(x + conv3x3(relu(conv3x3(x))))`` and the channel attention block
of DFN (FRTM ref. [50])::

    CAB(a, h) = a * sigmoid(W2 relu(W1 gap([a, h]))) + h        (W1, W2 1x1 convs, gap = global mean)

The projections ``p^d`` do not depend on the target, so callers compute them
once per frame (:meth:`SegmentationNetwork.project`) and share them by all
objects; only :meth:`SegmentationNetwork.decode` runs per object. The papers
fix C = 64 and the block structure; the widths of the two output convs
(C/2, then 1) and the exact CAB form are vosjax's reading of FRTM Fig. 3. The
authors' released networks differ in every block (two-conv projections, TSE
widths C+1, residual blocks with a 1x1 entry conv and batch norm, CAB on pooled
deeper features, bicubic upsampling head): that form is
:mod:`vosjax.models.frtm_decoder_authors` (FRTM config ``segnet="authors"``).

Arrays are NHWC; ``dtype`` is the compute dtype (parameters float32); logits
come out float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from vosjax import _validate
from vosjax.errors import VosjaxError
from vosjax.learners.frtm import bilinear_matrix
from vosjax.models.frtm_common import KERNEL_INIT

__all__ = ["DEPTHS", "ChannelAttention", "ResidualBlock", "SegmentationNetwork", "resize_to"]

#: Depths of S, deepest first (backbone feature keys).
DEPTHS: tuple[str, ...] = ("s32", "s16", "s8", "s4")


def _conv(features: int, kernel: int, dtype: Any) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        padding="SAME",
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=KERNEL_INIT,
    )


def resize_to(x: Float[Array, "N h w C"], hw: tuple[int, int]) -> Float[Array, "N H W C"]:
    """Bilinear resize of NHWC ``x`` to spatial size ``hw``: ``y = M_H x M_W^T`` per channel.

    ``M`` are the 1-D interpolation matrices of
    :func:`vosjax.learners.frtm.bilinear_matrix` (half-pixel centres, clamped at
    the borders: PyTorch ``F.interpolate(mode="bilinear", align_corners=False)``,
    also when downsampling, i.e. without antialiasing). Two small matmuls with
    constant matrices: cheap to compile and to differentiate. Identity if equal.
    """
    hw = (int(hw[0]), int(hw[1]))
    h, w = x.shape[1:3]
    if (h, w) == hw:
        return x
    mh = jnp.asarray(bilinear_matrix(hw[0], h), x.dtype)
    mw = jnp.asarray(bilinear_matrix(hw[1], w), x.dtype)
    y = jnp.einsum("Hh,nhwc->nHwc", mh, x) if hw[0] != h else x
    return jnp.einsum("Ww,nhwc->nhWc", mw, y) if hw[1] != w else y


class ResidualBlock(nn.Module):
    """``relu(x + conv3x3(relu(conv3x3(x))))``, width kept."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "N h w C"]) -> Float[Array, "N h w C"]:
        c = x.shape[-1]
        y = _conv(c, 3, self.dtype)(nn.relu(_conv(c, 3, self.dtype)(x)))
        return nn.relu(x + y)


class ChannelAttention(nn.Module):
    """DFN channel attention block: ``a * sigmoid(W2 relu(W1 gap([a, h]))) + h``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, low: Float[Array, "N h w C"], high: Float[Array, "N h w C"]
    ) -> Float[Array, "N h w C"]:
        c = low.shape[-1]
        g = jnp.mean(jnp.concatenate([low, high], axis=-1), axis=(1, 2), keepdims=True)
        g = nn.relu(_conv(c, 1, self.dtype)(g))
        w = nn.sigmoid(_conv(c, 1, self.dtype)(g))
        return low * w + high


class _Block(nn.Module):
    """One depth of S: TSE (3 convs over [projection, resized target map]) then refinement."""

    channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        proj: Float[Array, "N h w C"],
        target_map: Float[Array, "N hs ws S"],
        deeper: Float[Array, "N hd wd C"],
    ) -> Float[Array, "N h w C"]:
        hw = proj.shape[1:3]
        t = jnp.concatenate([proj, resize_to(target_map.astype(proj.dtype), hw)], axis=-1)
        for _ in range(3):
            t = nn.relu(_conv(self.channels, 3, self.dtype)(t))
        a = ResidualBlock(self.dtype)(t)
        c = ChannelAttention(self.dtype)(a, resize_to(deeper, hw))
        return ResidualBlock(self.dtype)(c)


class SegmentationNetwork(nn.Module):
    """S of FRTM (sec. 3.2): TSE + refinement blocks over 4 depths, two output convs.

    Attributes:
      channels: width C of the network (64 in FRTM).
      dtype: compute dtype.
    """

    channels: int = 64
    dtype: Any = jnp.float32

    def setup(self):
        self.proj = {d: _conv(self.channels, 1, self.dtype) for d in DEPTHS}
        self.blocks = {d: _Block(self.channels, self.dtype) for d in DEPTHS}
        self.head1 = _conv(max(self.channels // 2, 1), 3, self.dtype)
        self.head2 = _conv(1, 3, self.dtype)

    def project(
        self, feats: dict[str, Float[Array, "N h w c"]]
    ) -> dict[str, Float[Array, "N h w C"]]:
        """``p^d = P^d(x^d)`` for d in s4..s32: the target-independent 1x1 projections."""
        missing = [d for d in DEPTHS if d not in feats]
        if missing:
            raise VosjaxError(
                f"SegmentationNetwork.project: 'feats' lacks backbone features {missing}; "
                f"pass the backbone's {list(DEPTHS)} outputs (stop_at='s32')."
            )
        return {d: self.proj[d](feats[d].astype(self.dtype)) for d in DEPTHS}

    def decode(
        self,
        proj: dict[str, Float[Array, "N h w C"]],
        target_map: Float[Array, "N hs ws S"],
        out_hw: tuple[int, int],
    ) -> Float[Array, "N H W"]:
        """Logits ``[N, H, W]`` (float32) at ``out_hw`` from projections and the target map."""
        _validate.check_rank(
            "SegmentationNetwork.decode", "target_map", target_map, 4, "[N, h, w, S]"
        )
        z = proj[DEPTHS[0]]
        for d in DEPTHS:
            z = self.blocks[d](proj[d], target_map, z)
        y = self.head2(nn.relu(self.head1(z)))
        return resize_to(y.astype(jnp.float32), out_hw)[..., 0]

    def __call__(
        self,
        feats: dict[str, Float[Array, "N h w c"]],
        target_map: Float[Array, "N hs ws S"],
        out_hw: tuple[int, int],
    ) -> Float[Array, "N H W"]:
        """:meth:`project` then :meth:`decode` (one object per batch row)."""
        return self.decode(self.project(feats), target_map, out_hw)
