"""JOINT's transduction branch: a light transformer with L2-normalised attention (JOINT sec. 3.2).

Attention (eq. 1), with row-wise L2 normalisation ``n(a) = a / max(|a|, 1e-12)``::

    Attention(Q, K, V) = softmax_over_keys(n(Q) n(K)^T / tau) V,      tau = 1/30

Encoder over the N template features ``Z`` (flattened to NHW tokens, eq. 2-3)::

    Z_enc = IN(Attention(phi(Z), phi(Z), Z) + Z)          phi: linear C -> C/4 (one map for Q and K)

Decoder on the search features ``X`` (eq. 4-5)::

    X_attn = IN(Attention(phi'(X), phi'(X), X) + X)
    E_tra* = Attention(psi(X_attn), psi(Z_enc), E_tra)    psi: linear C -> C/4

IN is instance normalisation without affine parameters: every channel of
every frame is normalised over that frame's H x W positions,
``(x - mean) / sqrt(var + 1e-5)`` (PyTorch ``InstanceNorm2d`` defaults on the
``[N, C, H, W]`` view of the NHW x C tokens). The paper writes one shared
linear map for query and key (phi, psi), which is what is built here.

The attention is computed by the tested, query-chunked memory readout
(:func:`vosjax.ops.memory.readout`, dense path). With unit-norm keys
``|k| = 1`` its affinity ``(2 k.q' - |k|^2) / sqrt(c)`` at ``q' = q sqrt(c) / (2 tau)``
equals ``k.q / tau - 1/sqrt(c)``, and the constant cancels in the softmax over
keys, so ``readout(n(K), V, n(Q) sqrt(c) / (2 tau))`` is eq. 1 exactly, with
at most a ``[B, chunk, M]`` block of affinities live (20 templates at 480 x 854
are 32k tokens). A key that is exactly zero (norm below 1e-12) would keep
``|k| = 0`` and differ from eq. 1 by ``1/sqrt(c)`` in its logit; keys come out
of a learned affine map, where that has probability zero.

Multi-object: the keys are shared by all objects, so the per-object mask
encodings are folded into the value channels (``[B, NHW, O * D]``) and the
attention runs once for all objects. Invalid template slots are excluded from
the keys with ``valid``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from vosjax import _validate
from vosjax.errors import VosjaxError
from vosjax.models.frtm_common import KERNEL_INIT
from vosjax.ops.memory import readout
from vosjax.ops.object_memory import read_objects

__all__ = [
    "TAU",
    "TransformerDecoder",
    "TransformerEncoder",
    "instance_norm",
    "l2_normalize",
    "normalized_attention",
]

TAU = 1.0 / 30.0
_NORM_EPS = 1e-12
_IN_EPS = 1e-5


def l2_normalize(x: Float[Array, "... c"]) -> Float[Array, "... c"]:
    """``x / max(|x|, 1e-12)`` along the last axis, computed in float32."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jnp.reciprocal(jnp.sqrt(jnp.maximum(sq, _NORM_EPS**2)))


def normalized_attention(
    queries: Float[Array, "B N c"],
    keys: Float[Array, "B M c"],
    values: Float[Array, "B M Cv"],
    tau: float = TAU,
    valid: Bool[Array, "B M"] | None = None,
    *,
    object_valid: Bool[Array, "B M O"] | None = None,
) -> Float[Array, "B N Cv"]:
    """JOINT eq. 1: ``softmax_m(n(q_n) . n(k_m) / tau) v_m`` over the valid keys m.

    ``valid`` (``bool[B, M]``) excludes key slots; a query with no valid key
    reads zeros. Accumulates in float32; returns ``values``' dtype.
    ``object_valid`` (``bool[B, M, O]``, with ``valid`` its union over O):
    ``values`` fold O objects and object ``o`` attends only to its own keys
    (:func:`vosjax.ops.object_memory.read_objects`).
    """
    fn = "normalized_attention"
    _validate.check_rank(fn, "queries", queries, 3, "[B, N, c]")
    _validate.check_rank(fn, "keys", keys, 3, "[B, M, c]")
    _validate.check_rank(fn, "values", values, 3, "[B, M, Cv]")
    _validate.check_dims_match(
        fn, "query and key channels", queries=queries.shape[-1], keys=keys.shape[-1]
    )
    if not float(tau) > 0:
        raise VosjaxError(f"{fn}: 'tau' must be a positive temperature, got {tau}.")
    c = keys.shape[-1]
    q = l2_normalize(queries) * (math.sqrt(c) / (2.0 * float(tau)))
    if object_valid is not None:
        return read_objects(l2_normalize(keys), values, q, object_valid, valid, None)
    return readout(l2_normalize(keys), values, q, None, valid)


def instance_norm(x: Float[Array, "N P C"], eps: float = _IN_EPS) -> Float[Array, "N P C"]:
    """Per row n and channel c: ``(x - mean_p x) / sqrt(var_p x + eps)`` (no affine), in float32."""
    _validate.check_rank("instance_norm", "x", x, 3, "[N, P, C]")
    dt = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(dt)
    mean = jnp.mean(xf, axis=1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=1, keepdims=True)
    return ((xf - mean) * jnp.reciprocal(jnp.sqrt(var + eps))).astype(x.dtype)


def _dense(features: int, dtype: Any, name: str | None = None) -> nn.Dense:
    return nn.Dense(
        features, dtype=dtype, param_dtype=jnp.float32, kernel_init=KERNEL_INIT, name=name
    )


class TransformerEncoder(nn.Module):
    """Eq. 2-3 over the template features ``[B, S, P, C]`` (S frame slots of P = H*W tokens).

    Attributes:
      attn_dim: channels of phi (C/4 in the paper).
      tau: attention temperature.
    """

    attn_dim: int
    tau: float = TAU
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, z: Float[Array, "B S P C"], valid: Bool[Array, "B S"]
    ) -> Float[Array, "B S P C"]:
        b, s, p, c = z.shape
        flat = z.reshape(b, s * p, c)
        qk = _dense(self.attn_dim, self.dtype, "phi")(flat)
        mask = jnp.repeat(valid, p, axis=1)
        a = normalized_attention(qk, qk, flat, self.tau, mask)
        return instance_norm((a + flat).reshape(b * s, p, c)).reshape(b, s, p, c)


class TransformerDecoder(nn.Module):
    """Eq. 4-5: self-attention on each search frame, then cross-attention to the templates.

    Attributes:
      attn_dim: channels of phi' and psi.
      tau: attention temperature.
    """

    attn_dim: int
    tau: float = TAU
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "B T P C"],
        z_enc: Float[Array, "B S P C"],
        e_tra: Float[Array, "B S P E"],
        valid: Bool[Array, "B S"],
    ) -> Float[Array, "B T P E"]:
        """``E_tra*`` of every search frame; ``E`` = objects x D folded channels."""
        b, t, p, c = x.shape
        s = z_enc.shape[1]
        frames = x.reshape(b * t, p, c)
        qk = _dense(self.attn_dim, self.dtype, "phi")(frames)
        x_attn = instance_norm(normalized_attention(qk, qk, frames, self.tau) + frames)
        psi = _dense(self.attn_dim, self.dtype, "psi")
        q = psi(x_attn).reshape(b, t * p, self.attn_dim)
        k = psi(z_enc.reshape(b, s * p, c))
        v = e_tra.reshape(b, s * p, e_tra.shape[-1])
        if valid.ndim == 3:  # per object [B, S, O]: each object over its own templates
            ov = jnp.repeat(valid, p, axis=1)
            out = normalized_attention(q, k, v, self.tau, jnp.any(ov, axis=2), object_valid=ov)
        else:
            out = normalized_attention(q, k, v, self.tau, jnp.repeat(valid, p, axis=1))
        return out.reshape(b, t, p, e_tra.shape[-1])
