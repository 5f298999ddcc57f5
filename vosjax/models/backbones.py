"""ImageNet backbones in the torchvision layout: ResNet-18/34/50/101 and MobileNetV2.

All networks are Flax linen modules over channel-last images ``x: f32[B, H, W, C]``
(ImageNet-normalised RGB, optionally followed by extra channels such as masks)
and return a dict of multi-scale features keyed by their stride:

==========  =============================  ================================
key         ResNet (torchvision name)      MobileNetV2 (``features.i``)
==========  =============================  ================================
``"s4"``    ``layer1`` (conv2_x)           ``features.3``  (24 channels)
``"s8"``    ``layer2`` (conv3_x)           ``features.6``  (32 channels)
``"s16"``   ``layer3`` (conv4_x)           ``features.13`` (96 channels)
``"s32"``   ``layer4`` (conv5_x)           ``features.18`` (1280 channels)
==========  =============================  ================================

``stop_at`` ends the network after a given stride (STCN's encoders and the
lightweight TrickVOS encoders stop at ``"s16"``); later stages are not built and
have no parameters. The classifier (``fc`` / ``classifier``) is never built.

Sizes. Every stride-2 layer is a torch-style symmetric zero-padded convolution
(k = 7, p = 3; k = 3, p = 1; k = 1, p = 0) or the 3x3/2 max pool padded with
-inf, so each halves a size n to ceil(n / 2), exactly as PyTorch does. The
feature at stride s of an H x W input therefore has size ceil(H / s) x ceil(W / s)
(65 x 97 -> s4 17 x 25, s8 9 x 13, s16 5 x 7, s32 3 x 4).

Naming. Module names are the torchvision ``state_dict`` names, so the flax path
``params/layer1/0/downsample/0/kernel`` is torch's ``layer1.0.downsample.0.weight``
(conv ``kernel`` <-> ``weight`` in HWIO <-> OIHW; BN ``scale``/``bias`` in
``params`` and ``mean``/``var`` in ``batch_stats`` <-> ``weight``/``bias``/
``running_mean``/``running_var``). :mod:`vosjax.models.torch_import` relies on this.

Batch norm. y = (x - mu) / sqrt(sigma^2 + eps) * gamma + beta with eps = 1e-5.
With ``train=False``, or with ``frozen_bn=True`` in training, mu and sigma^2 are
the running statistics and ``batch_stats`` are never updated (gamma and beta still
receive gradients; freeze them in the optimizer if wanted). Otherwise mu and
sigma^2 are the (biased) batch statistics over B, H, W and, when ``batch_stats``
is mutable, the running statistics move as r <- 0.9 r + 0.1 batch_stat (PyTorch's
momentum 0.1; note PyTorch feeds the unbiased batch variance n / (n - 1) sigma^2
into its running variance, Flax the biased one).

Precision. ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``); parameters
are always float32. Features come out in ``dtype``.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from vosjax import _validate
from vosjax.errors import VosjaxError
from vosjax.ops.depthwise import depthwise_conv2d

Stride = Literal["s4", "s8", "s16", "s32"]
STRIDES: tuple[str, ...] = ("s4", "s8", "s16", "s32")
BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")

# Blocks per stage and block type of the torchvision ResNets.
_RESNET_SPECS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
# MobileNetV2 inverted residual settings (expansion t, channels c, repeats n, first stride s),
# for width multiplier 1.0; they form features.1 .. features.17.
_MBV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Index i of ``features.i`` whose output is the feature at each stride.
MOBILENET_V2_TAPS: dict[str, int] = {"s4": 3, "s8": 6, "s16": 13, "s32": 18}
_MBV2_STEM, _MBV2_LAST = 32, 1280

# torchvision initialisation: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(
    features: int, kernel: int, stride: int, dtype: Any, name: str, bias: bool = False
) -> nn.Conv:
    """A conv with torch's symmetric padding (kernel - 1) // 2; bias-free unless ``bias``."""
    p = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=bias,
        kernel_init=_KERNEL_INIT,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class DepthwiseConv(nn.Module):
    """A bias-free depthwise conv (one filter per channel) with torch's padding (kernel - 1) // 2.

    Its parameter ``kernel [k, k, 1, C]`` is laid out, named and initialised
    as ``nn.Conv(C, feature_group_count=C)``'s; it is computed by
    :func:`vosjax.ops.depthwise.depthwise_conv2d` (fused shifted slices), which
    XLA runs several times faster on CPU than a grouped convolution.
    """

    kernel_size: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"]) -> Float[Array, "B h w C"]:
        k = self.kernel_size
        w = self.param("kernel", _KERNEL_INIT, (k, k, 1, x.shape[-1]), jnp.float32)
        p = (k - 1) // 2
        return depthwise_conv2d(x.astype(self.dtype), w.astype(self.dtype), self.stride, (p, p))


def _bn(use_running_average: bool, dtype: Any, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=use_running_average,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class ConvBNAct(nn.Module):
    """conv (child ``0``) -> BN (``1``) -> optional ReLU / ReLU6 (torch's Conv2dNormActivation)."""

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: Literal["relu", "relu6", "none"] = "none"
    dtype: Any = jnp.float32
    conv_bias: bool = False

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W Ci"], use_running_average: bool
    ) -> Float[Array, "B h w Co"]:
        if self.groups == 1:
            x = _conv(self.features, self.kernel, self.stride, self.dtype, "0", self.conv_bias)(x)
        elif self.groups == self.features == x.shape[-1]:
            x = DepthwiseConv(self.kernel, self.stride, self.dtype, name="0")(x)
        else:
            raise VosjaxError(
                f"ConvBNAct: groups={self.groups} is supported only as 1 or depthwise (groups = "
                f"input channels = features), got {x.shape[-1]} -> {self.features} channels."
            )
        x = _bn(use_running_average, self.dtype, "1")(x)
        if self.act == "relu":
            x = nn.relu(x)
        elif self.act == "relu6":
            x = jnp.clip(x, 0, 6)
        return x


class BasicBlock(nn.Module):
    """ResNet-18/34 block: relu(bn2(conv2(relu(bn1(conv1_s(x))))) + shortcut(x)), 3x3 convs."""

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32
    conv_bias: bool = False
    expansion = 1

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W Ci"], use_running_average: bool
    ) -> Float[Array, "B h w Co"]:
        cb = self.conv_bias
        y = _conv(self.planes, 3, self.stride, self.dtype, "conv1", cb)(x)
        y = nn.relu(_bn(use_running_average, self.dtype, "bn1")(y))
        y = _conv(self.planes, 3, 1, self.dtype, "conv2", cb)(y)
        y = _bn(use_running_average, self.dtype, "bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.planes:
            x = ConvBNAct(
                self.planes, 1, self.stride, dtype=self.dtype, conv_bias=cb, name="downsample"
            )(x, use_running_average)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """ResNet-50/101 block (torchvision v1.5: the stride sits on the 3x3 conv).

    relu(bn3(conv3_1x1(relu(bn2(conv2_3x3_s(relu(bn1(conv1_1x1(x))))))) + shortcut(x)),
    width ``planes`` inside, ``4 * planes`` out. ``stride_in_1x1=True`` moves the stride
    to conv1 (the original / Caffe / Detectron ResNet "v1", e.g. JOINT's Mask R-CNN backbone).
    """

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32
    conv_bias: bool = False
    stride_in_1x1: bool = False
    expansion = 4

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W Ci"], use_running_average: bool
    ) -> Float[Array, "B h w Co"]:
        out, cb = self.planes * self.expansion, self.conv_bias
        s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        y = _conv(self.planes, 1, s1, self.dtype, "conv1", cb)(x)
        y = nn.relu(_bn(use_running_average, self.dtype, "bn1")(y))
        y = _conv(self.planes, 3, s3, self.dtype, "conv2", cb)(y)
        y = nn.relu(_bn(use_running_average, self.dtype, "bn2")(y))
        y = _conv(out, 1, 1, self.dtype, "conv3", cb)(y)
        y = _bn(use_running_average, self.dtype, "bn3")(y)
        if self.stride != 1 or x.shape[-1] != out:
            x = ConvBNAct(
                out, 1, self.stride, dtype=self.dtype, conv_bias=cb, name="downsample"
            )(x, use_running_average)
        return nn.relu(y + x)


class _ResNetStage(nn.Module):
    """``layerK``: ``num_blocks`` blocks named ``0`` .. ``num_blocks - 1``, stride on the first."""

    block: Literal["basic", "bottleneck"]
    num_blocks: int
    planes: int
    stride: int
    dtype: Any = jnp.float32
    conv_bias: bool = False
    stride_in_1x1: bool = False

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W Ci"], use_running_average: bool
    ) -> Float[Array, "B h w Co"]:
        for i in range(self.num_blocks):
            stride = self.stride if i == 0 else 1
            if self.block == "basic":
                blk = BasicBlock(self.planes, stride, self.dtype, self.conv_bias, name=str(i))
            else:
                blk = Bottleneck(
                    self.planes, stride, self.dtype, self.conv_bias, self.stride_in_1x1, name=str(i)
                )
            x = blk(x, use_running_average)
        return x


def _check_input(fn: str, x: Any, in_channels: int) -> None:
    _validate.check_rank(fn, "x", x, 4, "NHWC [batch, height, width, channels]")
    _validate.check_floating(fn, "x", x)
    if x.shape[-1] != in_channels:
        raise VosjaxError(
            f"{fn}: argument 'x' has {x.shape[-1]} channels (shape {tuple(x.shape)}) but the "
            "backbone "
            f"was built with in_channels={in_channels}; build it with in_channels={x.shape[-1]} "
            "or concatenate the expected inputs on the last axis."
        )


def _check_stop_at(fn: str, stop_at: str) -> None:
    if stop_at not in STRIDES:
        raise VosjaxError(f"{fn}: stop_at={stop_at!r} is not one of {', '.join(STRIDES)}.")


def _use_running_average(train: bool, frozen_bn: bool) -> bool:
    return (not train) or frozen_bn


class ResNet(nn.Module):
    """torchvision ResNet trunk (conv1 7x7/2, bn1, relu, maxpool 3x3/2, layer1..layer4).

    Attributes:
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101).
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      in_channels: input channels; channels beyond RGB are extra input planes of conv1.
      stop_at: last returned stride; later stages are not built.
      frozen_bn: use running BN statistics also when ``train=True`` (never updated).
      dtype: compute dtype; parameters stay float32.
      conv_bias: every convolution carries a bias (torchvision's have none; STCN's
        value-encoder ResNet-18 has them, so its released weights need this).
      stride_in_1x1: bottleneck stages stride on their first 1x1 conv (see :class:`Bottleneck`).
    """

    block: Literal["basic", "bottleneck"]
    stage_sizes: tuple[int, ...]
    in_channels: int = 3
    stop_at: Stride = "s32"
    frozen_bn: bool = False
    dtype: Any = jnp.float32
    conv_bias: bool = False
    stride_in_1x1: bool = False

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W C"], *, train: bool = False
    ) -> dict[str, Float[Array, "B h w c"]]:
        """Features {"s4": layer1, "s8": layer2, "s16": layer3, "s32": layer4} up to ``stop_at``.

        Each has spatial size ceil(H / s) x ceil(W / s) and 64 * 2^i * expansion channels.
        """
        _check_input("ResNet", x, self.in_channels)
        _check_stop_at("ResNet", self.stop_at)
        ura = _use_running_average(train, self.frozen_bn)
        x = _conv(64, 7, 2, self.dtype, "conv1", self.conv_bias)(x)
        x = nn.relu(_bn(ura, self.dtype, "bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        feats: dict[str, jax.Array] = {}
        last = STRIDES.index(self.stop_at)
        for i, num_blocks in enumerate(self.stage_sizes[: last + 1]):
            x = _ResNetStage(
                self.block,
                num_blocks,
                64 * 2**i,
                1 if i == 0 else 2,
                self.dtype,
                self.conv_bias,
                self.stride_in_1x1,
                name=f"layer{i + 1}",
            )(x, ura)
            feats[STRIDES[i]] = x
        return feats


class _InvertedResidualBody(nn.Module):
    """torchvision's ``InvertedResidual.conv``: [expand 1x1] -> depthwise 3x3 -> 1x1 -> BN."""

    out_channels: int
    stride: int
    expand_ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W Ci"], use_running_average: bool
    ) -> Float[Array, "B h w Co"]:
        hidden = x.shape[-1] * self.expand_ratio
        i = 0
        if self.expand_ratio != 1:
            x = ConvBNAct(hidden, 1, 1, act="relu6", dtype=self.dtype, name="0")(
                x, use_running_average
            )
            i = 1
        x = ConvBNAct(
            hidden, 3, self.stride, groups=hidden, act="relu6", dtype=self.dtype, name=str(i)
        )(x, use_running_average)
        x = _conv(self.out_channels, 1, 1, self.dtype, str(i + 1))(x)
        return _bn(use_running_average, self.dtype, str(i + 2))(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: body(x) + x when stride 1 and channels agree, else body(x)."""

    out_channels: int
    stride: int
    expand_ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W Ci"], use_running_average: bool
    ) -> Float[Array, "B h w Co"]:
        y = _InvertedResidualBody(
            self.out_channels, self.stride, self.expand_ratio, self.dtype, name="conv"
        )(x, use_running_average)
        return x + y if self.stride == 1 and x.shape[-1] == self.out_channels else y


class _MobileNetV2Features(nn.Module):
    """torchvision's ``MobileNetV2.features`` (children ``0`` .. ``18``), cut after ``last``."""

    last: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W C"], use_running_average: bool
    ) -> dict[int, jax.Array]:
        taps = set(MOBILENET_V2_TAPS.values())
        out: dict[int, jax.Array] = {}
        x = ConvBNAct(_MBV2_STEM, 3, 2, act="relu6", dtype=self.dtype, name="0")(
            x, use_running_average
        )
        idx = 1
        for t, c, n, s in _MBV2_SETTINGS:
            for j in range(n):
                if idx > self.last:
                    return out
                x = InvertedResidual(c, s if j == 0 else 1, t, self.dtype, name=str(idx))(
                    x, use_running_average
                )
                if idx in taps:
                    out[idx] = x
                idx += 1
        if idx <= self.last:
            x = ConvBNAct(_MBV2_LAST, 1, 1, act="relu6", dtype=self.dtype, name=str(idx))(
                x, use_running_average
            )
            out[idx] = x
        return out


class MobileNetV2(nn.Module):
    """torchvision MobileNetV2 (width 1.0, expansion 6, ReLU6) without the classifier.

    Attributes are those of :class:`ResNet`. Returned features (see the module
    docstring): s4 = features.3 (24 ch), s8 = features.6 (32), s16 = features.13 (96),
    s32 = features.18 (1280, the full torchvision trunk).
    """

    in_channels: int = 3
    stop_at: Stride = "s32"
    frozen_bn: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Float[Array, "B H W C"], *, train: bool = False
    ) -> dict[str, Float[Array, "B h w c"]]:
        """Features at strides 4, 8, 16, 32 (up to ``stop_at``); sizes ceil(H / s) x ceil(W / s)."""
        _check_input("MobileNetV2", x, self.in_channels)
        _check_stop_at("MobileNetV2", self.stop_at)
        ura = _use_running_average(train, self.frozen_bn)
        outs = _MobileNetV2Features(MOBILENET_V2_TAPS[self.stop_at], self.dtype, name="features")(
            x, ura
        )
        return {k: outs[i] for k, i in MOBILENET_V2_TAPS.items() if i in outs}


def feature_channels(name: str, stop_at: Stride = "s32") -> dict[str, int]:
    """Channels of each returned feature of backbone ``name`` (e.g. resnet50 -> s16: 1024)."""
    _check_name("feature_channels", name)
    _check_stop_at("feature_channels", stop_at)
    keep = STRIDES[: STRIDES.index(stop_at) + 1]
    if name == "mobilenet_v2":
        chans = {"s4": 24, "s8": 32, "s16": 96, "s32": _MBV2_LAST}
    else:
        expansion = 1 if _RESNET_SPECS[name][0] == "basic" else 4
        chans = {s: 64 * 2**i * expansion for i, s in enumerate(STRIDES)}
    return {s: chans[s] for s in keep}


def _check_name(fn: str, name: str) -> None:
    if name not in BACKBONES:
        raise VosjaxError(
            f"{fn}: unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}."
        )


def make_backbone(
    name: str,
    *,
    in_channels: int = 3,
    stop_at: Stride = "s32",
    frozen_bn: bool = False,
    dtype: Any = jnp.float32,
    conv_bias: bool = False,
    stride_in_1x1: bool = False,
) -> ResNet | MobileNetV2:
    """Build backbone ``name`` (one of :data:`BACKBONES`) in the torchvision layout.

    ``model.init(key, x)`` gives ``{"params", "batch_stats"}``; ``model.apply(variables, x,
    train=False)`` returns {"s4", "s8", "s16", "s32"} features up to ``stop_at``. Parameter
    counts (classifier excluded) equal torchvision's: resnet18 11,176,512; resnet50
    23,508,032; mobilenet_v2 2,223,872 (with the classifier: 11.69M, 25.56M, 3.50M).
    """
    _check_name("make_backbone", name)
    _check_stop_at("make_backbone", stop_at)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise VosjaxError(
            f"make_backbone: in_channels must be a positive integer, got {in_channels!r}."
        )
    if name == "mobilenet_v2":
        if conv_bias or stride_in_1x1:
            raise VosjaxError(
                "make_backbone: conv_bias / stride_in_1x1 are only supported for the ResNets."
            )
        return MobileNetV2(
            in_channels=in_channels, stop_at=stop_at, frozen_bn=frozen_bn, dtype=dtype
        )
    block, sizes = _RESNET_SPECS[name]
    return ResNet(
        block,
        sizes,
        in_channels=in_channels,
        stop_at=stop_at,
        frozen_bn=frozen_bn,
        dtype=dtype,
        conv_bias=conv_bias,
        stride_in_1x1=stride_in_1x1,
    )


def init_leaf(leaf: str, key: jax.Array, shape: tuple[int, ...]) -> Float[Array, ...]:
    """Initial value of one variable leaf, as ``model.init`` draws it (torchvision's rules).

    ``kernel`` ~ N(0, 2 / fan_out) with fan_out = kh * kw * out_channels (kaiming normal,
    fan-out mode); BN ``scale`` and ``var`` = 1; ``bias`` and ``mean`` = 0. Lets a caller
    fill a few missing leaves without tracing and compiling the whole ``init``.
    """
    if leaf == "kernel":
        return _KERNEL_INIT(key, shape, jnp.float32)
    if leaf in ("scale", "var"):
        return jnp.ones(shape, jnp.float32)
    if leaf in ("bias", "mean"):
        return jnp.zeros(shape, jnp.float32)
    raise VosjaxError(
        f"init_leaf: unknown leaf name {leaf!r}; expected kernel, scale, bias, mean or var."
    )


def stem_conv_path(name: str) -> tuple[str, ...]:
    """Module path of the first conv (the one that sees the ``in_channels`` input planes)."""
    _check_name("stem_conv_path", name)
    return ("features", "0", "0") if name == "mobilenet_v2" else ("conv1",)
