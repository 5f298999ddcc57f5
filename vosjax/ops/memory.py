"""Space-time memory readout: L2 affinity, top-k softmax, readout, progressive
memory matching (PCVOS eq. 4) and a fixed-capacity memory bank.

Notation: ``B`` batch, ``M`` memory positions (frames x H x W flattened),
``N`` query positions, ``Ck`` key channels, ``Cv`` value channels.

Similarity is the negative squared L2 distance scaled by ``1/sqrt(Ck)``; the
``|q|^2`` term is constant over the memory axis and cancels in the softmax
over ``M``, so the affinity is

    S[b, m, n] = (2 k_m . q_n - |k_m|^2) / sqrt(Ck)

and the readout (PCVOS eq. 1-2) is

    v_n = sum_m softmax_m(S[:, n])[m] v_m,

where, with ``top_k``, the softmax runs over the ``top_k`` largest entries of
each query column only and every other weight is exactly 0.

Multi-object: the key of a memory frame is shared by all objects, so callers
fold the objects into the value channels (``mem_values f32[B, M, O*Cv]``) and
unfold the result (``[B, N, O*Cv] -> [B, N, O, Cv]``). The affinity and the
top-k selection are then computed once for all objects. Objects that appear
later read only their own entries: :mod:`vosjax.ops.object_memory` (the
affinity shared, the masking, top-k and softmax per object). The memory bank
(:class:`MemoryBank`, :func:`bank_init`, :func:`bank_insert`, ...) lives in
:mod:`vosjax.ops.memory_bank` and is re-exported here.

Everything is pure and shape-static: functions work under ``jit``, ``vmap`` and
``grad``; the memory bank is a pytree of fixed-size buffers so one compiled
step serves a whole video.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float

from vosjax._validate import check_dims_match, check_floating, check_positive_int, check_rank
from vosjax.errors import VosjaxError
from vosjax.ops.memory_bank import (
    MemoryBank,
    bank_flatten,
    bank_init,
    bank_insert,
    bank_next_slot,
    bank_object_valid,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MemoryBank",
    "bank_flatten",
    "bank_init",
    "bank_insert",
    "bank_next_slot",
    "bank_object_valid",
    "bank_read",
    "l2_affinity",
    "progressive_readout",
    "readout",
    "softmax_topk",
]

#: Query positions processed together by :func:`readout`. Each step holds a
#: ``[B, chunk, M]`` affinity block; 128 keeps that block cache-friendly on CPU
#: and bounds memory for long memories (see ``tools/bench/readout.py``).
DEFAULT_CHUNK_SIZE = 128

# Up to this top_k the selected values are summed by an unrolled, fused
# gather-multiply-add; above it by a gathered [chunk, k, Cv] contraction.
_UNROLL_TOP_K = 32


# --------------------------------------------------------------------------- checks

_check_int = check_positive_int


def _check_keys_values(fn: str, mem_keys: Any, mem_values: Any | None, query_keys: Any) -> None:
    check_rank(fn, "mem_keys", mem_keys, 3, "[B, M, Ck]")
    check_rank(fn, "query_keys", query_keys, 3, "[B, N, Ck]")
    check_floating(fn, "mem_keys", mem_keys)
    check_floating(fn, "query_keys", query_keys)
    check_dims_match(
        fn,
        "key channels (last axis) of mem_keys and query_keys",
        mem_keys_Ck=mem_keys.shape[-1],
        query_keys_Ck=query_keys.shape[-1],
    )
    check_dims_match(
        fn, "batch sizes (axis 0)", mem_keys_B=mem_keys.shape[0], query_keys_B=query_keys.shape[0]
    )
    if mem_values is not None:
        check_rank(fn, "mem_values", mem_values, 3, "[B, M, Cv]")
        check_floating(fn, "mem_values", mem_values)
        check_dims_match(
            fn,
            "batch sizes (axis 0)",
            mem_keys_B=mem_keys.shape[0],
            mem_values_B=mem_values.shape[0],
        )
        check_dims_match(
            fn,
            "memory sizes M (axis 1) of mem_keys and mem_values",
            mem_keys_M=mem_keys.shape[1],
            mem_values_M=mem_values.shape[1],
        )


def _check_valid(fn: str, valid: Any, batch: int, m: int) -> None:
    if valid is None:
        return
    check_rank(fn, "valid", valid, 2, "[B, M]")
    if tuple(valid.shape) != (batch, m):
        raise VosjaxError(
            f"{fn}: argument 'valid' must have shape (B, M) = ({batch}, {m}), "
            f"got {tuple(valid.shape)}."
        )
    if jnp.dtype(valid.dtype) != jnp.dtype(bool):
        raise VosjaxError(
            f"{fn}: argument 'valid' must be boolean (True = a filled memory slot), got dtype "
            f"{valid.dtype}; pass e.g. valid.astype(bool)."
        )


def _compute_dtype(*xs: Any) -> Any:
    """float32, or wider where the inputs are wider (float64 under x64)."""
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


# --------------------------------------------------------------------------- kernels


def _masked_softmax(logits: Array, axis: int) -> Array:
    """Softmax where ``-inf`` entries get weight 0 and an all ``-inf`` slice gives zeros."""
    peak = jnp.max(logits, axis=axis, keepdims=True)
    peak = lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    e = jnp.exp(logits - peak)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def l2_affinity(
    mem_keys: Float[Array, "B M Ck"], query_keys: Float[Array, "B N Ck"]
) -> Float[Array, "B M N"]:
    """Negative squared L2 affinity between memory and query keys.

    ``S[b, m, n] = (2 k_m . q_n - |k_m|^2) / sqrt(Ck)``, which is
    ``-|k_m - q_n|^2 / sqrt(Ck)`` up to ``|q_n|^2 / sqrt(Ck)``, a per-column
    constant that cancels in a softmax over ``m``. Computed and returned in
    float32 (float64 inputs stay float64), also for bfloat16 inputs.
    """
    fn = "l2_affinity"
    mem_keys, query_keys = jnp.asarray(mem_keys), jnp.asarray(query_keys)
    _check_keys_values(fn, mem_keys, None, query_keys)
    dt = _compute_dtype(mem_keys, query_keys)
    ck = mem_keys.shape[-1]
    dot = jnp.einsum("bmc,bnc->bmn", mem_keys, query_keys, preferred_element_type=dt)
    k = mem_keys.astype(dt)
    sq = jnp.sum(k * k, axis=-1)
    return (2.0 * dot - sq[:, :, None]) / math.sqrt(ck)


def softmax_topk(
    affinity: Float[Array, "B M N"],
    top_k: int | None = None,
    valid: Bool[Array, "B M"] | None = None,
) -> Float[Array, "B M N"]:
    """Softmax over the memory axis ``M``, optionally restricted to the top-k.

    ``W[:, n] = softmax_m(S[:, n])`` over the entries ``m`` that are valid and,
    with ``top_k``, among the ``top_k`` largest valid entries of column ``n``;
    every other weight is exactly 0 and each column sums to 1. A column with no
    valid entry is all zeros (never NaN). ``top_k`` larger than the number of
    valid entries keeps only the valid ones. Ties in the k-th place keep the
    lower memory index. Computed in float32 (numerically stable: the column
    maximum is subtracted before ``exp``).
    """
    fn = "softmax_topk"
    affinity = jnp.asarray(affinity)
    valid = None if valid is None else jnp.asarray(valid)
    check_rank(fn, "affinity", affinity, 3, "[B, M, N]")
    check_floating(fn, "affinity", affinity)
    _check_int(fn, "top_k", top_k, allow_none=True)
    b, m, n = affinity.shape
    _check_valid(fn, valid, b, m)
    s = affinity.astype(_compute_dtype(affinity))
    if valid is not None:
        s = jnp.where(valid[:, :, None], s, -jnp.inf)
    if top_k is None or top_k >= m:
        return _masked_softmax(s, axis=1)
    st = jnp.swapaxes(s, 1, 2)  # [B, N, M]: lax.top_k works on the last axis
    top, idx = lax.top_k(st, top_k)
    w = _masked_softmax(top, axis=-1)
    bi = jnp.arange(b)[:, None, None]
    ni = jnp.arange(n)[None, :, None]
    dense = jnp.zeros_like(st).at[bi, ni, idx].set(w, unique_indices=True)
    return jnp.swapaxes(dense, 1, 2)


def _over_query_chunks(body, query_keys: Array, chunk_size: int) -> Array:
    """Apply ``body: [B, c, Ck] -> [B, c, Cv]`` to chunks of the query axis.

    Full chunks run sequentially under ``lax.map`` (one compiled body, one
    ``[B, chunk, M]`` block live at a time); a shorter remainder chunk is a
    second call with its own static shape, so nothing is padded.
    """
    b, n, ck = query_keys.shape
    if n <= chunk_size:
        return body(query_keys)
    n_full = n // chunk_size
    head = query_keys[:, : n_full * chunk_size].reshape(b, n_full, chunk_size, ck)
    out = lax.map(body, jnp.swapaxes(head, 0, 1))  # [n_full, B, chunk, Cv]
    out = jnp.swapaxes(out, 0, 1).reshape(b, n_full * chunk_size, out.shape[-1])
    if n_full * chunk_size < n:
        tail = body(query_keys[:, n_full * chunk_size :])
        out = jnp.concatenate([out, tail], axis=1)
    return out


def readout(
    mem_keys: Float[Array, "B M Ck"],
    mem_values: Float[Array, "B M Cv"],
    query_keys: Float[Array, "B N Ck"],
    top_k: int | None = None,
    valid: Bool[Array, "B M"] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Float[Array, "B N Cv"]:
    """Memory readout ``v_n = sum_m W[m, n] v_m`` (PCVOS eq. 1-2, STCN top-k).

    ``W = softmax_topk(l2_affinity(mem_keys, query_keys), top_k, valid)``.
    Multi-object memories fold objects into the value channels
    (``mem_values [B, M, O*Cv]``): keys, affinity and top-k are shared by all
    objects.

    Implementation: the query axis is processed in chunks of ``chunk_size``
    positions (static), so at most a ``[B, chunk, M]`` affinity block is live
    and no ``M x N x Cv`` product is ever formed. With ``top_k`` the block is
    laid out ``[B, chunk, M]`` so ``lax.top_k`` runs on its last axis; ordering
    is taken on ``k.q - |k|^2/2`` (a positive rescaling of the affinity), only
    the ``top_k`` selected logits are scaled and soft-maxed (max subtracted),
    and the ``top_k`` selected value rows are gathered per query: the cost
    after the affinity matmul is ``O(N * top_k * Cv)``. Without ``top_k`` (or
    with ``top_k >= M``) each block is a dense masked softmax followed by a
    ``[chunk, M] x [M, Cv]`` matmul, rematerialised in the backward pass so
    gradients also keep one block live.

    Inputs may be float32 or bfloat16; affinity, softmax and the weighted sum
    accumulate in float32 and the result has ``mem_values``' dtype. Batch rows
    whose memory has no valid entry read out zeros.
    """
    fn = "readout"
    mem_keys, mem_values, query_keys = (jnp.asarray(x) for x in (mem_keys, mem_values, query_keys))
    valid = None if valid is None else jnp.asarray(valid)
    _check_keys_values(fn, mem_keys, mem_values, query_keys)
    _check_int(fn, "top_k", top_k, allow_none=True)
    _check_int(fn, "chunk_size", chunk_size, allow_none=False)
    b, m, ck = mem_keys.shape
    _check_valid(fn, valid, b, m)
    out_dtype = mem_values.dtype
    dt = _compute_dtype(mem_keys, query_keys, mem_values)
    keys = mem_keys.astype(dt)
    half_sq = 0.5 * jnp.sum(keys * keys, axis=-1)  # [B, M]
    scale = 2.0 / math.sqrt(ck)

    def scores(qc: Array) -> Array:
        # [B, c, M] = (k.q - |k|^2 / 2); the affinity is `scale` times this.
        s = jnp.einsum("bnc,bmc->bnm", qc.astype(dt), keys, preferred_element_type=dt)
        s = s - half_sq[:, None, :]
        if valid is not None:
            s = jnp.where(valid[:, None, :], s, -jnp.inf)
        return s

    if top_k is None or top_k >= m:
        values = mem_values.astype(dt)

        @jax.checkpoint
        def dense_body(qc: Array) -> Array:
            w = _masked_softmax(scale * scores(qc), axis=-1)
            return jnp.einsum("bnm,bmv->bnv", w, values, preferred_element_type=dt)

        out = _over_query_chunks(dense_body, query_keys, chunk_size)
    else:
        flat_values = mem_values.reshape(b * m, mem_values.shape[-1])
        row_offset = (jnp.arange(b, dtype=jnp.int32) * m)[:, None, None]

        def topk_body(qc: Array) -> Array:
            top, idx = lax.top_k(scores(qc), top_k)  # [B, c, k]
            # Keep XLA from merging the column slices below into the top-k's
            # own slice: that defeats its top-k rewrite (a full sort instead).
            top, idx = lax.optimization_barrier((top, idx))
            w = _masked_softmax(scale * top, axis=-1)
            rows = idx + row_offset
            if top_k <= _UNROLL_TOP_K:
                # sum_j w_j * v[idx_j]: one fused gather-multiply-add pass.
                acc = None
                for j in range(top_k):
                    v_j = flat_values.at[rows[..., j]].get(mode="promise_in_bounds").astype(dt)
                    term = w[..., j : j + 1] * v_j
                    acc = term if acc is None else acc + term
                return acc
            picked = flat_values.at[rows].get(mode="promise_in_bounds")  # [B, c, k, Cv]
            return jnp.einsum("bnk,bnkv->bnv", w, picked.astype(dt), preferred_element_type=dt)

        out = _over_query_chunks(topk_body, query_keys, chunk_size)
    return out.astype(out_dtype)


def progressive_readout(
    mem_keys: Float[Array, "B M Ck"],
    mem_values: Float[Array, "B M Cv"],
    clip_query_keys: Float[Array, "B L N Ck"],
    segment_len: int,
    top_k: int | None = None,
    valid: Bool[Array, "B M"] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Float[Array, "B L N Cv"]:
    """Progressive memory matching over a clip (PCVOS eq. 4, section 3.5).

    The ``L`` clip frames are split into ``S = ceil(L / F)`` segments of
    ``F = segment_len`` frames (the last may be shorter). Segment ``t`` reads
    all its frames at once from

        k^{M_t} = Concat[k^{M_{t-1}}, last(k^{Q_{t-1}})],
        v^{M_t} = Concat[v^{M_{t-1}}, last(v^{Q_{t-1}})],  k^{M_1} = k^M, v^{M_1} = v^M,

    where ``last(.)`` is the query key and the read-out value of the last frame
    of the previous segment (``N`` entries each). The temporary entries are
    always valid and exist only inside this call (dropped after the clip).
    The result concatenates the segments' read-outs along the clip axis. With
    ``S == 1`` it equals :func:`readout` of all clip frames. ``L`` and ``F``
    are static; each segment is one call of :func:`readout` on
    ``[B, F*N, Ck]`` queries (``top_k``, ``valid``, ``chunk_size`` as there).
    """
    fn = "progressive_readout"
    mem_keys, mem_values = jnp.asarray(mem_keys), jnp.asarray(mem_values)
    clip_query_keys = jnp.asarray(clip_query_keys)
    valid = None if valid is None else jnp.asarray(valid)
    check_rank(fn, "clip_query_keys", clip_query_keys, 4, "[B, L, N, Ck]")
    _check_int(fn, "segment_len", segment_len, allow_none=False)
    b, length, n, ck = clip_query_keys.shape
    if length == 0:
        raise VosjaxError(
            f"{fn}: argument 'clip_query_keys' has no frames (L = 0); pass at least one."
        )
    _check_keys_values(fn, mem_keys, mem_values, clip_query_keys[:, 0])
    _check_int(fn, "top_k", top_k, allow_none=True)
    _check_valid(fn, valid, b, mem_keys.shape[1])

    keys, values, mask = mem_keys, mem_values, valid
    outputs = []
    for start in range(0, length, segment_len):
        stop = min(start + segment_len, length)
        q = clip_query_keys[:, start:stop].reshape(b, (stop - start) * n, ck)
        v = readout(keys, values, q, top_k, mask, chunk_size=chunk_size)
        v = v.reshape(b, stop - start, n, v.shape[-1])
        outputs.append(v)
        if stop < length:  # temporary memory for the following segments
            keys = jnp.concatenate([keys, clip_query_keys[:, stop - 1].astype(keys.dtype)], axis=1)
            values = jnp.concatenate([values, v[:, -1].astype(values.dtype)], axis=1)
            if mask is not None:
                mask = jnp.concatenate([mask, jnp.ones((b, n), dtype=bool)], axis=1)
    return jnp.concatenate(outputs, axis=1)


# --------------------------------------------------------------------------- memory bank
# The bank itself (MemoryBank, bank_init, bank_insert, ...) is vosjax.ops.memory_bank;
# its names are re-exported here.


def bank_read(
    bank: MemoryBank,
    query_keys: Float[Array, "B N Ck"],
    top_k: int | None = None,
    extra: tuple[Array, Array, Array | None] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Float[Array, "B N Cv"]:
    """:func:`readout` from the bank's valid slots plus optional ``extra`` entries.

    ``extra = (keys [B, E, Ck], values [B, E, Cv], valid bool[B, E] or None)``
    is appended to the flattened bank (e.g. PCVOS's temporary memory); ``None``
    validity means all ``E`` entries are valid.
    """
    fn = "bank_read"
    keys, values, valid = bank_flatten(bank)
    if extra is not None:
        if not isinstance(extra, (tuple, list)) or len(extra) != 3:
            raise VosjaxError(
                f"{fn}: argument 'extra' must be a tuple (keys, values, valid-or-None)."
            )
        ek, ev = jnp.asarray(extra[0]), jnp.asarray(extra[1])
        evalid = None if extra[2] is None else jnp.asarray(extra[2])
        b, _, ck = keys.shape
        cv = values.shape[-1]
        e = ek.shape[1] if ek.ndim == 3 else -1
        if ek.ndim != 3 or (ek.shape[0], ek.shape[2]) != (b, ck) or ev.shape != (b, e, cv):
            raise VosjaxError(
                f"{fn}: extra must be (keys [B, E, Ck], values [B, E, Cv], valid) with B={b}, "
                f"Ck={ck}, Cv={cv} as in the bank; got keys {tuple(ek.shape)}, "
                f"values {tuple(ev.shape)}."
            )
        if evalid is None:
            evalid = jnp.ones(ek.shape[:2], bool)
        _check_valid(fn, evalid, ek.shape[0], ek.shape[1])
        keys = jnp.concatenate([keys, ek.astype(keys.dtype)], axis=1)
        values = jnp.concatenate([values, ev.astype(values.dtype)], axis=1)
        valid = jnp.concatenate([valid, evalid], axis=1)
    return readout(keys, values, query_keys, top_k, valid, chunk_size=chunk_size)
