"""The forms of JOINT's released code (github.com/maoyunyao/JOINT, built on pytracking's LWL)
where they differ from the paper reading of :mod:`vosjax.models.joint`.

Selected by the JOINT config switches ``label_encoder = "code"``, ``decoder = "code"``,
``input_format = "caffe_bgr255"``, ``stride_in_1x1 = True`` and
``learner_sample_weights = "code"`` (all set by
:func:`vosjax.models.torch_import_joint.authors_config`; the defaults keep the paper reading):

- :class:`CodeLabelEncoder`: the code's ``ResidualDS16SW`` (``ltr/models/joint/label_encoder.py``,
  ``layer_dims = (16, 32, 64, D)``, ``use_bn = False``): a stride-2 3x3 conv + ReLU and a 3x3/2
  max pool shared by both heads, then per head two stride-2 residual basic blocks
  (bias-free 3x3 convs, a biased stride-2 3x3 conv as shortcut); the transduction head
  ends in 3x3 conv + ReLU (E_tra), the induction head in 3x3 conv + ReLU (E_ind) and a
  plain 3x3 conv (the importance weights W, no sigmoid: initialised to 0 weight / 1 bias).
- :class:`CodeDecoder`: LWL's ``SegDecoder`` (``ltr/models/joint/decoder.py``, ``mdim = 64``,
  ``use_bn = True``), which differs from FRTM's S in :mod:`vosjax.models.frtm_decoder`: per
  depth (layer4 .. layer1, widths 4, 2, 2, 1 x 64) ``TSE`` reduces the backbone feature
  with 1x1 conv, ReLU, 1x1 conv (target independent: ``CodeDecoder(feats, None, None)``
  returns these projections, once per frame), concatenates
  the bilinearly resized mask encoding and applies three 3x3 conv + ReLU; the deeper output
  passes a 1x1 conv + ReLU (``proj``) to the current width; ``RRB`` is
  ``relu(h + conv3(relu(BN(conv3(h)))))`` after ``h = conv1x1(x)``; ``CAB(deeper, x) = x *
  sigmoid(conv1(relu(conv1([gap x, gap deeper])))) + resize(deeper)`` where the deepest depth
  uses the global mean of its own reduced feature as "deeper"; the output upsampler is
  bicubic x2, 3x3 conv (64 -> 32) + ReLU, bicubic to the frame size, 3x3 conv (32 -> 1)
  (PyTorch bicubic, ``align_corners=False``, a = -0.75, clamped borders: :func:`bicubic_matrix`).
  Its batch norms always use their running statistics, also in training (frozen statistics,
  never updated; their scale and bias are ordinary parameters).
- :func:`code_sample_weights`: the temporal weights of the learner's templates
  (``learner_sample_weights = "code"``; their tracker's ``update_sample_weights``).
- :func:`caffe_bgr255`: the Mask R-CNN backbone's input (``image_format='bgr255'``, mean
  (102.9801, 115.9465, 122.7717), std 1) computed from vosjax's ImageNet-normalised RGB.

Flax module names are listed with the authors' module paths in :data:`LABEL_ENCODER_NAMES`
and :func:`decoder_names` (used by the converter).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from vosjax.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from vosjax.models.frtm_common import KERNEL_INIT
from vosjax.models.frtm_decoder import DEPTHS, resize_to

__all__ = [
    "CAFFE_MEAN_BGR",
    "LABEL_ENCODER_NAMES",
    "CodeDecoder",
    "CodeLabelEncoder",
    "bicubic_matrix",
    "caffe_bgr255",
    "code_sample_weights",
    "code_weights_for",
    "decoder_names",
]

#: Mean of the Mask R-CNN backbone's BGR 0..255 input (JOINT ``parameter/joint/joint_*.py``).
CAFFE_MEAN_BGR = (102.9801, 115.9465, 122.7717)
#: vosjax depth -> the authors' layer name.
LAYERS = {"s32": "layer4", "s16": "layer3", "s8": "layer2", "s4": "layer1"}
_WIDTH = {"s32": 4, "s16": 2, "s8": 2, "s4": 1}  # decoder width per depth, times mdim


def caffe_bgr255(x: Float[Array, "N H W 3"]) -> Float[Array, "N H W 3"]:
    """ImageNet-normalised RGB -> ``255 * BGR - CAFFE_MEAN_BGR`` (float32)."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    rgb = x.astype(jnp.float32) * std + mean
    return rgb[..., ::-1] * 255.0 - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)


#: Their tracker's ``learning_rate`` and ``init_samples_minimum_weight`` (both parameter files).
SAMPLE_LR = 0.1
SAMPLE_INIT_MIN = 0.25


@functools.lru_cache(maxsize=8)
def code_sample_weights(slots: int, rows: int | None = None) -> np.ndarray:
    """Temporal weights ``[rows + 1, slots]`` of the templates, per slot, after ``count``
    inserts into a keep-first bank of ``slots`` slots (row ``count``; row 0 all zero).

    Their tracker (``pytracking/tracker/joint/joint.py`` ``update_sample_weights``, one
    initial sample, learning rate ``SAMPLE_LR``, first sample kept at weight >=
    ``SAMPLE_INIT_MIN``) scales each template's learner residual by its weight; a new
    sample goes to the next free slot, then replaces the lowest weight after the first,
    which is the oldest (the keep-first ring of :func:`vosjax.ops.memory.bank_next_slot`;
    checked here while the table is built). Counts beyond ``rows`` (default ``4 * slots``)
    use the last row rotated to the ring position (the weights are stationary there to
    ~1e-9 relative)."""
    rows = 4 * slots if rows is None else rows
    lr, mw = SAMPLE_LR, SAMPLE_INIT_MIN
    out = np.zeros((rows + 1, slots), np.float64)
    sw = np.zeros(slots, np.float64)
    sw[0] = 1.0
    out[1] = sw
    prev = None
    for count in range(2, rows + 1):
        n = count - 1  # stored before this insert
        r = n if n < slots else int(np.argmin(sw[1:])) + 1
        ring = 0 if slots == 1 else 1 + (count - 2) % (slots - 1)
        if slots > 1 and r != ring:
            raise AssertionError(f"code_sample_weights: slot {r} replaced, the ring's is {ring}")
        if slots == 1:  # only the first frame is kept (bank_next_slot drops later inserts)
            out[count] = sw
            continue
        if prev is None:
            sw /= 1 - lr
            sw[r] = lr
        else:
            sw[r] = sw[prev] / (1 - lr)
        sw /= sw.sum()
        if sw[0] < mw:
            sw /= mw + sw[1:].sum()
            sw[0] = mw
        prev = r
        out[count] = sw
    out = out.astype(np.float32)
    out.setflags(write=False)
    return out


def code_weights_for(count, slots: int):
    """The rows of :func:`code_sample_weights` for ``count`` ``int32[B]`` -> ``f32[B, slots]``."""
    table = code_sample_weights(slots)
    rows = table.shape[0] - 1
    c = jnp.asarray(count, jnp.int32)
    direct = jnp.asarray(table)[jnp.minimum(c, rows)]
    if slots <= 1:
        return direct
    # beyond the table: the stationary pattern of row `rows`, rotated so that the ages match
    shift = jnp.mod(c - rows, slots - 1)
    rest = jnp.asarray(table[rows, 1:])
    idx = jnp.mod(jnp.arange(slots - 1)[None, :] - shift[:, None], slots - 1)
    late = jnp.concatenate([jnp.full((c.shape[0], 1), table[rows, 0]), rest[idx]], axis=1)
    return jnp.where((c > rows)[:, None], late, direct)


def _conv(features: int, kernel: int, dtype: Any, name: str, stride: int = 1, bias: bool = True):
    p = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=KERNEL_INIT,
        name=name,
    )


#: flax module of :class:`CodeLabelEncoder` -> the authors' ``label_encoder.<path>``.
LABEL_ENCODER_NAMES: dict[str, str] = {
    "stem": "conv_block.0",
    **{
        f"{blk}_{head}_{part}": f"{blk}_{head}.{part}"
        for blk in ("res1", "res2")
        for head in ("tm", "tr")
        for part in ("conv1", "conv2", "downsample")
    },
    "label_pred_tm": "label_pred_tm.0",
    "samp_w_pred": "samp_w_pred",
    "label_pred_tr": "label_pred_tr.0",
}


class CodeLabelEncoder(nn.Module):
    """``ResidualDS16SW`` without BN: mask ``[N, H, W]`` -> ``(E_tra, E_ind, W)`` ``[N, h, w, D]``."""

    enc_dim: int
    widths: tuple[int, ...] = (16, 32, 64)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, masks: Float[Array, "N H W"]) -> tuple[Array, Array, Array]:
        w0, w1, w2 = self.widths
        d = self.dtype
        x = nn.relu(_conv(w0, 3, d, "stem", stride=2)(masks[..., None].astype(d)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        def block(y, width, prefix):
            out = nn.relu(_conv(width, 3, d, f"{prefix}_conv1", stride=2, bias=False)(y))
            out = _conv(width, 3, d, f"{prefix}_conv2", bias=False)(out)
            return nn.relu(out + _conv(width, 3, d, f"{prefix}_downsample", stride=2)(y))

        tm = block(block(x, w1, "res1_tm"), w2, "res2_tm")
        tr = block(block(x, w1, "res1_tr"), w2, "res2_tr")
        e_ind = nn.relu(_conv(self.enc_dim, 3, d, "label_pred_tm")(tm))
        weights = _conv(self.enc_dim, 3, d, "samp_w_pred")(tm)
        e_tra = nn.relu(_conv(self.enc_dim, 3, d, "label_pred_tr")(tr))
        return e_tra, e_ind, weights


@functools.lru_cache(maxsize=64)
def bicubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """1-D resampling matrix ``[n_out, n_in]`` of PyTorch's bicubic ``F.interpolate``
    (``align_corners=False``, size given): source ``c = (o + 0.5) n_in / n_out - 0.5``
    (not clamped), taps ``floor(c) - 1 .. floor(c) + 2`` clamped to the border, Keys' cubic
    with a = -0.75. ``n_out == n_in`` gives the identity."""
    a = -0.75
    m = np.zeros((n_out, n_in), np.float64)
    if n_out == n_in:
        np.fill_diagonal(m, 1.0)
    else:
        for o in range(n_out):
            c = (o + 0.5) * n_in / n_out - 0.5
            i = math.floor(c)
            t = c - i
            near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1
            far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
            for k, wgt in zip(range(i - 1, i + 3), (far(t + 1), near(t), near(1 - t), far(2 - t))):
                m[o, min(max(k, 0), n_in - 1)] += wgt
    out = m.astype(np.float32)
    out.setflags(write=False)
    return out


def _bicubic(x: Float[Array, "N h w C"], hw: tuple[int, int]) -> Float[Array, "N H W C"]:
    mh = jnp.asarray(bicubic_matrix(int(hw[0]), x.shape[1]), x.dtype)
    mw = jnp.asarray(bicubic_matrix(int(hw[1]), x.shape[2]), x.dtype)
    return jnp.einsum("Ww,nhwc->nhWc", mw, jnp.einsum("Hh,nhwc->nHwc", mh, x))


def decoder_names() -> dict[str, str]:
    """flax module of :class:`CodeDecoder` -> the authors' ``decoder.<path>``."""
    out = {"project_conv1": "project.conv1", "project_conv2": "project.conv2"}
    for d, layer in LAYERS.items():
        out[f"tse_{d}_reduce0"] = f"TSE.{layer}.reduce.0"
        out[f"tse_{d}_reduce2"] = f"TSE.{layer}.reduce.2"
        for i in (0, 2, 4):
            out[f"tse_{d}_transform{i}"] = f"TSE.{layer}.transform.{i}"
        for rrb in ("rrb1", "rrb2"):
            r = rrb.upper()
            out[f"{rrb}_{d}_conv1x1"] = f"{r}.{layer}.conv1x1"
            out[f"{rrb}_{d}_conv"] = f"{r}.{layer}.bblock.0"
            out[f"{rrb}_{d}_bn"] = f"{r}.{layer}.bblock.1"
            out[f"{rrb}_{d}_conv_out"] = f"{r}.{layer}.bblock.3"
        out[f"cab_{d}_0"] = f"CAB.{layer}.convreluconv.0"
        out[f"cab_{d}_2"] = f"CAB.{layer}.convreluconv.2"
        if d != DEPTHS[0]:
            out[f"proj_{d}"] = f"proj.{layer}.0"
    return out


class CodeDecoder(nn.Module):
    """LWL's ``SegDecoder(use_bn=True)`` with the interface of
    :class:`~vosjax.models.frtm_decoder.SegmentationNetwork` (``project`` / ``decode``).

    Attributes:
      channels: ``mdim`` (64); the depths are 4, 2, 2, 1 times as wide.
      dtype: compute dtype (parameters float32); logits come out float32.
    """

    channels: int = 64
    dtype: Any = jnp.float32

    def _c(self, name: str, features: int, kernel: int, bias: bool = True) -> nn.Conv:
        return _conv(features, kernel, self.dtype, name, bias=bias)

    def _rrb(self, name: str, x: Array) -> Array:
        c = x.shape[-1]
        h = self._c(f"{name}_conv1x1", c, 1)(x)
        y = self._c(f"{name}_conv", c, 3)(h)
        y = nn.BatchNorm(
            use_running_average=True,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=f"{name}_bn",
        )(y)
        y = self._c(f"{name}_conv_out", c, 3, bias=False)(nn.relu(y))
        return nn.relu(h + y)

    @nn.compact
    def __call__(
        self,
        feats: dict[str, Float[Array, "N h w c"]] | None,
        target_map: Float[Array, "N hs ws S"],
        out_hw: tuple[int, int],
        proj: dict[str, Float[Array, "N h w C"]] | None = None,
    ) -> Float[Array, "N H W"] | dict[str, Array]:
        """With ``proj`` None: the projections (``TSE.reduce``) of ``feats``; else the logits."""
        if proj is None:
            out = {}
            for d in DEPTHS:
                oc = _WIDTH[d] * self.channels
                h = nn.relu(self._c(f"tse_{d}_reduce0", oc, 1)(feats[d].astype(self.dtype)))
                out[d] = self._c(f"tse_{d}_reduce2", oc, 1)(h)
            return out
        x = None
        for d in DEPTHS:
            h = proj[d]
            oc = h.shape[-1]
            s = resize_to(target_map.astype(h.dtype), h.shape[1:3])
            if x is not None:
                x = nn.relu(self._c(f"proj_{d}", oc, 1)(x))
            deeper = jnp.mean(h, axis=(1, 2), keepdims=True) if x is None else x
            t = jnp.concatenate([h, s], axis=-1)
            nc = t.shape[-1]
            t = nn.relu(self._c(f"tse_{d}_transform0", nc, 3)(t))
            t = nn.relu(self._c(f"tse_{d}_transform2", nc, 3)(t))
            t = nn.relu(self._c(f"tse_{d}_transform4", oc, 3)(t))
            t = self._rrb(f"rrb1_{d}", t)
            g = jnp.concatenate(
                [jnp.mean(t, axis=(1, 2), keepdims=True), jnp.mean(deeper, axis=(1, 2), keepdims=True)],
                axis=-1,
            )
            g = self._c(f"cab_{d}_2", oc, 1)(nn.relu(self._c(f"cab_{d}_0", oc, 1)(g)))
            t = t * nn.sigmoid(g) + resize_to(deeper, t.shape[1:3])
            x = self._rrb(f"rrb2_{d}", t)
        hh, ww = x.shape[1:3]
        y = _bicubic(x, (2 * hh, 2 * ww))
        y = nn.relu(self._c("project_conv1", self.channels // 2, 3)(y))
        y = _bicubic(y, out_hw)
        y = self._c("project_conv2", 1, 3)(y)
        return y.astype(jnp.float32)[..., 0]
