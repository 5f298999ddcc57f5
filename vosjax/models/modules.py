"""Small building blocks shared by the memory networks (STCN, TrickVOS, cyclic, PCVOS).

All blocks are Flax linen modules over channel-last maps ``x: [N, h, w, C]``
(any number of leading batch axes is NOT supported: callers flatten to one).
Parameters are float32; ``dtype`` is the compute dtype.

- :class:`ResBlock`: ``y = D(x) + conv2(relu(conv1(relu(x))))`` with 3x3 convs
  (bias), where ``D`` is a 3x3 conv when the channel count changes and the
  identity otherwise (pre-activation residual block of STM / STCN).
- :class:`ChannelGate`, :class:`SpatialGate`, :class:`CBAM`: the convolutional
  block attention module (Woo et al. 2018), channel attention then spatial
  attention:
  ``Mc = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, ``x' = Mc * x``;
  ``Ms = sigmoid(conv7x7([max_c(x'), mean_c(x')]))``, ``x'' = Ms * x'``.
- :class:`UpsampleBlock`: the decoder step ``y = ResBlock(skip + up(x))`` where
  ``up`` is a bilinear resize of the coarse map to the skip's size (x2 when the
  sizes are exact multiples) and ``skip`` is the already projected skip feature.
- :func:`resize_bilinear`: half-pixel-centre bilinear resize (PyTorch's
  ``F.interpolate(mode="bilinear", align_corners=False)`` when upsampling).
- :class:`FeatureFusion`: the value path's fusion of value-encoder and
  key-encoder features, ``x = ResBlock([v, f16]); ResBlock(x + CBAM(x))``.
- :class:`Decoder`: the per-object mask decoder (stride 16 -> 8 -> 4 with skips).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def conv3x3(features: int, dtype: Any, name: str | None = None, **kwargs: Any) -> nn.Conv:
    """A 3x3 stride-1 conv with bias and zero padding 1 (size preserving)."""
    return nn.Conv(
        features,
        (3, 3),
        padding=((1, 1), (1, 1)),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **kwargs,
    )


def resize_bilinear(x: Float[Array, "N h w C"], size: tuple[int, int]) -> Float[Array, "N H W C"]:
    """Bilinear resize of ``x`` to ``size = (H, W)`` with half-pixel centres.

    Output pixel ``i`` samples the input at ``(i + 0.5) * h / H - 0.5`` (clamped
    at the borders), as ``align_corners=False`` does; no antialiasing is needed
    because the memory networks only upsample.
    """
    n, h, w, c = x.shape
    if (h, w) == tuple(size):
        return x
    return jax.image.resize(x, (n, size[0], size[1], c), "bilinear", antialias=False)


class ResBlock(nn.Module):
    """``D(x) + conv2(relu(conv1(relu(x))))``; ``D`` = 3x3 conv if channels change, else identity."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "N h w Ci"]) -> Float[Array, "N h w Co"]:
        r = conv3x3(self.features, self.dtype, "conv1")(nn.relu(x))
        r = conv3x3(self.features, self.dtype, "conv2")(nn.relu(r))
        if x.shape[-1] != self.features:
            x = conv3x3(self.features, self.dtype, "downsample")(x)
        return x + r


class ChannelGate(nn.Module):
    """``x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, MLP = C -> C/r -> C with ReLU (shared)."""

    reduction: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "N h w C"]) -> Float[Array, "N h w C"]:
        c = x.shape[-1]
        hidden = nn.Dense(max(c // self.reduction, 1), dtype=self.dtype, name="mlp_in")
        out = nn.Dense(c, dtype=self.dtype, name="mlp_out")
        avg = jnp.mean(x, axis=(1, 2))
        mx = jnp.max(x, axis=(1, 2))
        att = out(nn.relu(hidden(avg))) + out(nn.relu(hidden(mx)))
        return x * nn.sigmoid(att)[:, None, None, :]


class SpatialGate(nn.Module):
    """``x * sigmoid(conv7x7([max_c(x), mean_c(x)]))`` (one output channel, bias)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "N h w C"]) -> Float[Array, "N h w C"]:
        pooled = jnp.concatenate(
            [jnp.max(x, axis=-1, keepdims=True), jnp.mean(x, axis=-1, keepdims=True)], axis=-1
        )
        att = nn.Conv(
            1,
            (7, 7),
            padding=((3, 3), (3, 3)),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv",
        )(pooled)
        return x * nn.sigmoid(att)


class CBAM(nn.Module):
    """Channel attention followed by spatial attention (Woo et al. 2018)."""

    reduction: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "N h w C"]) -> Float[Array, "N h w C"]:
        x = ChannelGate(self.reduction, self.dtype, name="channel")(x)
        return SpatialGate(self.dtype, name="spatial")(x)


class UpsampleBlock(nn.Module):
    """``ResBlock(skip + resize(x, skip size))``; ``skip`` already has ``x``'s channels."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, skip: Float[Array, "N H W C"], x: Float[Array, "N h w C"]
    ) -> Float[Array, "N H W Co"]:
        up = resize_bilinear(x, skip.shape[1:3])
        return ResBlock(self.features, self.dtype, name="res")(skip + up.astype(skip.dtype))


class FeatureFusion(nn.Module):
    """Values from value-encoder and key-encoder stride-16 features (STCN's fuser).

    ``x = ResBlock_Cv([v, f16]); y = ResBlock_Cv(x + CBAM(x))``.
    """

    value_dim: int
    reduction: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, v: Float[Array, "N h w Cb"], f16: Float[Array, "N h w Ck16"]
    ) -> Float[Array, "N h w Cv"]:
        x = ResBlock(self.value_dim, self.dtype, name="block1")(jnp.concatenate([v, f16], -1))
        x = x + CBAM(self.reduction, self.dtype, name="attention")(x)
        return ResBlock(self.value_dim, self.dtype, name="block2")(x)


class Decoder(nn.Module):
    """Per-object mask decoder over the read-out values and the query's skips.

    Input ``x [N, O, h, w, C]`` (N = B*T frames, O objects) and per-frame skips
    ``s8 [N, h8, w8, C8]``, ``s4 [N, h4, w4, C4]``. The skip projections are
    object-independent and computed once per frame, then broadcast over O.
    Returns stride-4 logits ``[N, O, h4, w4]``.
    """

    dims: tuple[int, int, int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "N O h w C"],
        s8: Float[Array, "N h8 w8 C8"],
        s4: Float[Array, "N h4 w4 C4"],
    ) -> Float[Array, "N O h4 w4"]:
        n, o = x.shape[:2]
        d0, d1, d2 = self.dims

        def per_object(skip: Array) -> Array:
            return jnp.broadcast_to(skip[:, None], (n, o) + skip.shape[1:]).reshape(
                (n * o,) + skip.shape[1:]
            )

        x = ResBlock(d0, self.dtype, name="compress")(x.reshape((n * o,) + x.shape[2:]))
        skip8 = conv3x3(d0, self.dtype, "skip8")(s8)
        x = UpsampleBlock(d1, self.dtype, name="up_16_8")(per_object(skip8), x)
        skip4 = conv3x3(d1, self.dtype, "skip4")(s4)
        x = UpsampleBlock(d2, self.dtype, name="up_8_4")(per_object(skip4), x)
        x = conv3x3(1, self.dtype, "pred")(nn.relu(x))
        return x.reshape((n, o) + x.shape[1:3])
