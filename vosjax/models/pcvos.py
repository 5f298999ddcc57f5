"""Per-Clip VOS (PCVOS): the memory network plus intra-clip refinement (PCVOS sec. 3.2-3.5).

:class:`PCVOS` is the :class:`vosjax.models.stcn.STCN` memory network with two
additions:

* a local-key head on the key encoder (sec. 3.2): ``k_intra = conv3x3(f16)``,
  ``Ck' = 256`` channels, computed for every query frame by ``encode_key``
  (``feats["k_intra"]: [B, T, h, w, Ck']``) and shared by all objects;
* intra-clip refinement (ICR, sec. 3.4) between the memory readout and the
  decoder, over the T query frames of a clip, ``icr_layers = 2`` layers:

      v_attn = Attn(phi(k_intra), phi(k_intra)) psi(v) W_o + v          (eq. 3)
      v_out  = FFN(v_attn) + v_attn,   FFN(x) = GELU(LN(x) W_1) W_2

  ``phi`` / ``psi`` = LayerNorm followed by a linear map to the width 256
  (separate per layer; the SAME ``phi`` gives queries and keys, as eq. 3
  writes it); ``Attn`` = softmax(q k^T / sqrt(d)) restricted to 3D windows of
  2 x 7 x 7 (time x height x width) positions, shifted by half a window
  (1, 3, 3) in every other layer (:func:`vosjax.ops.window_attention.window_attention`;
  windows larger than the clip are clamped to it, so a single frame attends
  within 1 x 7 x 7). The value path works at width 256: ``psi`` projects
  ``Cv -> 256`` and ``W_o`` projects back to ``Cv`` for the residual; the FFN
  runs on ``Cv`` channels with hidden width ``icr_ffn_dim`` (1024 = 4 x 256).
  The refinement runs per object on its own values with attention weights
  shared by all objects (they depend on ``k_intra`` only), so objects never
  mix and invalid slots cannot affect valid ones.

The authors' released network (:func:`authors_icr`, used by
:mod:`vosjax.models.torch_import_pcvos`) differs from this default form, and
config switches select its form: values projected ``Cv -> Cv`` (512, not 256)
inside attention, an FFN of hidden width 2048, a relative-position bias per
head (Video Swin's table), Video Swin's padding and region masking, and a
final LayerNorm on the refined values. Its local-key head is the same 3 x 3
convolution of the stride-16 features to 256 channels.

``segment`` honours ``SegmentOptions.segment_len`` (progressive memory
matching, eq. 4) and ``top_k`` as the base class does. Per-clip inference is
the engine's choice: it passes the L frames of a clip in ``feats`` at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
from jaxtyping import Array, Float

from vosjax.errors import VosjaxError
from vosjax.models.base import Feats
from vosjax.models.modules import conv3x3
from vosjax.models.stcn import (
    STCN,
    MemoryNet,
    MemoryNetSpec,
    _field,
    _merge_bt,
    _positive_int,
    spec_fields,
)
from vosjax.models.stcn import default_config as stcn_config
from vosjax.ops.window_attention import effective_window, window_attention


def default_config(tiny: bool = False) -> ml_collections.ConfigDict:
    """PCVOS model config: the STCN baseline fields plus the ICR fields.

    Extra fields: ``intra_key_dim`` (Ck' = 256), ``icr_layers`` (2),
    ``icr_width`` (256), ``icr_heads`` (1: eq. 3 is single-head),
    ``icr_ffn_dim`` (1024), ``icr_window`` ((2, 7, 7)), and four switches of
    the form the authors' released network has (:func:`authors_icr`; bundles
    written before these fields existed get the defaults): ``icr_value_width``
    (width of the value path inside attention; 0 = ``icr_width``),
    ``icr_rel_pos_bias`` (a learned relative-position bias per head added to
    the window logits; False), ``icr_final_norm`` (a LayerNorm after the last
    layer; False), ``icr_padding`` (``"masked"``: padding tokens and tokens of
    other shifted windows are excluded exactly; ``"swin"``: Video Swin's form,
    the normalised inputs are zero-padded to whole windows BEFORE the
    projections, padding tokens take part in attention, and tokens of other
    shifted windows get -100 added to their logits). The clip length L and
    the progressive-matching segment length F are inference options
    (``inference.clip_length`` / ``inference.segment_len`` of a run config;
    the engine passes F as ``SegmentOptions.segment_len``).
    ``tiny=True``: the tiny STCN fields and a width-16 ICR.
    """
    c = stcn_config("stcn", tiny)
    c.name = "pcvos"
    c.intra_key_dim = 256
    c.icr_layers = 2
    c.icr_width = 256
    c.icr_heads = 1
    c.icr_ffn_dim = 1024
    c.icr_window = (2, 7, 7)
    c.icr_value_width = 0
    c.icr_rel_pos_bias = False
    c.icr_final_norm = False
    c.icr_padding = "masked"
    if tiny:
        c.intra_key_dim = 16
        c.icr_width = 16
        c.icr_heads = 2
        c.icr_ffn_dim = 32
        c.icr_window = (2, 3, 3)
    return c


def authors_icr(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Set the ICR fields of ``config`` to the form of the authors' released network.

    Their refinement (github pkyong95/PCVOS, ``model/intra_clip_refinement.py``,
    run with ``--T_window 2 --S_window 7 --shared_proj``): two Video Swin
    blocks, one head, queries = keys from one linear map of the LayerNorm-ed
    256-channel local keys, values projected 512 -> 512 (not through 256), an
    MLP of hidden width 2048 (4 x 512), a relative-position bias, zero-padding
    before the projections, -100 between shifted regions, and a final
    LayerNorm. Returns ``config`` (changed in place).
    """
    config.intra_key_dim = 256
    config.icr_layers = 2
    config.icr_width = 256
    config.icr_heads = 1
    config.icr_window = (2, 7, 7)
    config.icr_value_width = config.value_dim
    config.icr_ffn_dim = 4 * config.value_dim
    config.icr_rel_pos_bias = True
    config.icr_final_norm = True
    config.icr_padding = "swin"
    return config


@dataclasses.dataclass(frozen=True)
class PCVOSSpec(MemoryNetSpec):
    """:class:`MemoryNetSpec` plus the intra-clip refinement hyper-parameters."""

    intra_key_dim: int = 256
    icr_layers: int = 2
    icr_width: int = 256
    icr_heads: int = 1
    icr_ffn_dim: int = 1024
    icr_window: tuple[int, int, int] = (2, 7, 7)
    icr_value_width: int | None = None
    icr_rel_pos_bias: bool = False
    icr_final_norm: bool = False
    icr_padding: str = "masked"


class ICRLayer(nn.Module):
    """One refinement layer (eq. 3 + FFN) on per-object values with shared local keys.

    ``value_width`` (None = ``width``): width of ``psi``'s output, the value path
    inside attention; ``rel_pos_bias``: a learned ``[(2wt-1)(2wh-1)(2ww-1), heads]``
    table ``rel_bias`` added to the window logits; ``padding``: ``"masked"`` or
    ``"swin"`` (see :func:`default_config`).
    """

    width: int
    heads: int
    ffn_dim: int
    window: tuple[int, int, int]
    shift: tuple[int, int, int]
    dtype: Any = jnp.float32
    value_width: int | None = None
    rel_pos_bias: bool = False
    padding: str = "masked"

    @nn.compact
    def __call__(
        self, v: Float[Array, "B O T h w Cv"], k_intra: Float[Array, "B T h w Ckp"]
    ) -> Float[Array, "B O T h w Cv"]:
        b, o, t, h, w, cv = v.shape
        dt, heads = self.dtype, self.heads
        dv = (self.value_width or self.width) // heads

        def norm(x: Array, name: str) -> Array:
            return nn.LayerNorm(epsilon=1e-5, dtype=dt, param_dtype=jnp.float32, name=name)(x)

        def dense(x: Array, features: int, name: str) -> Array:
            return nn.Dense(features, dtype=dt, param_dtype=jnp.float32, name=name)(x)

        kn, vn = norm(k_intra, "phi_norm"), norm(v, "psi_norm")
        win, _ = effective_window((t, h, w), self.window, self.shift)
        tp, hp, wp = (-(-n // s) * s for n, s in zip((t, h, w), win))
        if self.padding == "swin":  # pad the normalised inputs; padding is attended to
            grow = ((0, tp - t), (0, hp - h), (0, wp - w), (0, 0))
            kn = jnp.pad(kn, ((0, 0),) + grow)
            vn = jnp.pad(vn, ((0, 0), (0, 0)) + grow)
        k = dense(kn, self.width, "phi")  # [B, T', h', w', width], shared by objects
        u = dense(vn, heads * dv, "psi")  # [B, O, T', h', w', heads * dv]
        tt, hh, ww = k.shape[1:4]
        table = None
        if self.rel_pos_bias:
            rows = (2 * self.window[0] - 1) * (2 * self.window[1] - 1) * (2 * self.window[2] - 1)
            table = self.param(
                "rel_bias", nn.initializers.truncated_normal(0.02), (rows, heads), jnp.float32
            )
        # Fold objects into each head's value channels: [B, T, h, w, heads * O * dv], so one
        # softmax per head serves all objects and objects never mix.
        u = u.reshape(b, o, tt, hh, ww, heads, dv).transpose(0, 2, 3, 4, 5, 1, 6)
        a = window_attention(
            k, k, u.reshape(b, tt, hh, ww, heads * o * dv), heads, self.window, self.shift,
            bias_table=table, masked_logit=-100.0 if self.padding == "swin" else None,
        )[:, :t, :h, :w]
        a = a.reshape(b, t, h, w, heads, o, dv).transpose(0, 5, 1, 2, 3, 4, 6)
        a = a.reshape(b, o, t, h, w, heads * dv)
        v = v + dense(a, cv, "out")
        f = nn.gelu(dense(norm(v, "ffn_in_norm"), self.ffn_dim, "ffn_in"), approximate=False)
        return v + dense(f, cv, "ffn_out")


class IntraClipRefinement(nn.Module):
    """``icr_layers`` :class:`ICRLayer` s, the odd ones with windows shifted by half a window."""

    spec: PCVOSSpec

    @nn.compact
    def __call__(
        self, v: Float[Array, "B O T h w Cv"], k_intra: Float[Array, "B T h w Ckp"]
    ) -> Float[Array, "B O T h w Cv"]:
        s = self.spec
        half = tuple(x // 2 for x in s.icr_window)
        for i in range(s.icr_layers):
            v = ICRLayer(
                s.icr_width,
                s.icr_heads,
                s.icr_ffn_dim,
                s.icr_window,
                half if i % 2 else (0, 0, 0),
                s.compute_dtype,
                value_width=s.icr_value_width,
                rel_pos_bias=s.icr_rel_pos_bias,
                padding=s.icr_padding,
                name=f"layer{i}",
            )(v, k_intra)
        if s.icr_final_norm:
            v = nn.LayerNorm(
                epsilon=1e-5, dtype=s.compute_dtype, param_dtype=jnp.float32, name="norm"
            )(v)
        return v


def _optional(config: Any, name: str, default: Any, kind: type, owner: str) -> Any:
    """A field that configs written before it existed lack: ``default`` then."""
    try:
        v = config[name]
    except (KeyError, AttributeError, TypeError):
        return default
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise VosjaxError(
            f"{owner}: config field 'model.{name}' must be a {kind.__name__}, got {v!r}."
        )
    return v


class PCVOSNet(MemoryNet):
    """:class:`MemoryNet` + the ``k_intra`` head and the intra-clip refinement."""

    spec: PCVOSSpec

    def setup(self) -> None:
        super().setup()
        self.intra_key = conv3x3(self.spec.intra_key_dim, self.spec.compute_dtype)
        self.icr = IntraClipRefinement(self.spec)

    def encode_key(self, frames: Float[Array, "B T H W 3"], train: bool = False) -> Feats:
        out = super().encode_key(frames, train)
        b, t = frames.shape[:2]
        k = self.intra_key(_merge_bt(out["s16"]))
        out["k_intra"] = k.reshape((b, t) + k.shape[1:])
        return out

    def refine_readout(
        self, readout: Float[Array, "B O T h w Cv"], feats: Feats
    ) -> Float[Array, "B O T h w Cv"]:
        dt = self.spec.compute_dtype
        return self.icr(readout.astype(dt), feats["k_intra"].astype(dt))


class PCVOS(STCN):
    """PCVOS behind the :class:`VOSModel` interface (see the module docstring).

    ``feats`` carry ``"k_intra"`` in addition to the STCN entries; ``segment``
    refines the read-out values of all T query frames together (a clip).
    """

    net_cls = PCVOSNet
    spec_cls = PCVOSSpec
    feat_keys = STCN.feat_keys + ("k_intra",)

    @staticmethod
    def _spec_fields(config: Any) -> dict[str, Any]:
        owner = "PCVOS"
        fields = spec_fields(config, owner)
        window = tuple(_field(config, "icr_window", owner))
        if len(window) != 3 or any(
            isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in window
        ):
            raise VosjaxError(
                f"{owner}: config field 'model.icr_window' must be three positive ints "
                f"(time, height, width), got {window!r}."
            )
        fields.update(
            intra_key_dim=_positive_int(config, "intra_key_dim", owner),
            icr_layers=_positive_int(config, "icr_layers", owner),
            icr_width=_positive_int(config, "icr_width", owner),
            icr_heads=_positive_int(config, "icr_heads", owner),
            icr_ffn_dim=_positive_int(config, "icr_ffn_dim", owner),
            icr_window=window,
            icr_value_width=_optional(config, "icr_value_width", 0, int, owner) or None,
            icr_rel_pos_bias=_optional(config, "icr_rel_pos_bias", False, bool, owner),
            icr_final_norm=_optional(config, "icr_final_norm", False, bool, owner),
            icr_padding=_optional(config, "icr_padding", "masked", str, owner),
        )
        if fields["icr_padding"] not in ("masked", "swin"):
            raise VosjaxError(
                f"{owner}: config field 'model.icr_padding' must be 'masked' or 'swin', "
                f"got {fields['icr_padding']!r}."
            )
        vw = fields["icr_value_width"]
        if vw is not None and (vw < 0 or vw % fields["icr_heads"]):
            raise VosjaxError(
                f"{owner}: config field 'model.icr_value_width' = {vw} must be 0 (= icr_width) "
                f"or a positive multiple of 'model.icr_heads' = {fields['icr_heads']}."
            )
        if fields["icr_width"] % fields["icr_heads"]:
            raise VosjaxError(
                f"{owner}: config field 'model.icr_heads' = {fields['icr_heads']} must divide "
                f"'model.icr_width' = {fields['icr_width']}."
            )
        return fields
