"""Memory readout with a validity per object: objects that appear later read only their own frames.

The memory of a multi-object video holds, per frame slot, ONE key shared by
all objects and a value per object (folded into the value channels,
``mem_values f32[B, M, O*Cv]``, object-major). When every object is present
from the first written frame, every object reads every valid entry and the
readout is :func:`vosjax.ops.memory.readout` (affinity and top-k computed once).
An object that first appears at frame ``t`` must not read the frames written
before ``t``: its values there encode an empty mask, and in the authors' code
(STCN's YouTube-VOS driver ``inference_core_yv.py``; PCVOS and JOINT likewise)
each object has its own memory that starts at its own first frame.

:func:`object_readout` takes ``object_valid bool[B, M, O]`` and computes, per
object ``o``,

    v_n^o = sum_m softmax_m( S[m, n] | m valid for o, top_k )[m] v_m^o,

with the affinity ``S`` (:func:`vosjax.ops.memory.l2_affinity`) computed once
for all objects (one ``[B, chunk, M]`` matmul per query chunk); only the
masking, the top-k selection and the softmax run per object.
:func:`read_objects` picks, under ``lax.cond``, the shared readout when every
object's validity equals the slot validity (no object appeared late: the
same program and bits as before) and :func:`object_readout` otherwise.
:func:`bank_read_objects` reads a per-object
:class:`~vosjax.ops.memory_bank.MemoryBank`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float

from vosjax._validate import check_rank
from vosjax.errors import VosjaxError
from vosjax.ops import memory as mem
from vosjax.ops.memory_bank import MemoryBank, bank_flatten, bank_object_valid

__all__ = [
    "bank_read_objects",
    "bank_validity",
    "object_readout",
    "object_recent",
    "progressive_object_readout",
    "read_objects",
]


def _check_object_valid(fn: str, object_valid, b: int, m: int, cv_total: int) -> int:
    check_rank(fn, "object_valid", object_valid, 3, "[B, M, O]")
    o = object_valid.shape[2]
    if tuple(object_valid.shape[:2]) != (b, m) or jnp.dtype(object_valid.dtype) != jnp.dtype(bool):
        raise VosjaxError(
            f"{fn}: argument 'object_valid' must be bool[B, M, O] with (B, M) = ({b}, {m}), got "
            f"{object_valid.dtype}{list(object_valid.shape)}."
        )
    if o < 1 or cv_total % o:
        raise VosjaxError(
            f"{fn}: the value channels ({cv_total}) must fold O = {o} objects (O*Cv); "
            "object_valid's last axis is O."
        )
    return o


def object_readout(
    mem_keys: Float[Array, "B M Ck"],
    mem_values: Float[Array, "B M OCv"],
    query_keys: Float[Array, "B N Ck"],
    object_valid: Bool[Array, "B M O"],
    top_k: int | None = None,
    *,
    chunk_size: int = mem.DEFAULT_CHUNK_SIZE,
) -> Float[Array, "B N OCv"]:
    """Readout of each object over its own valid entries (module docstring).

    ``mem_values`` folds ``O`` objects into its channels (object-major:
    channel ``o * Cv + c``); object ``o`` reads the entries ``m`` with
    ``object_valid[b, m, o]`` (top-k and softmax among those only; an object
    with no valid entry reads zeros). With all ``O`` columns of
    ``object_valid`` equal to ``valid`` it equals
    ``readout(mem_keys, mem_values, query_keys, top_k, valid)`` up to float
    rounding. Chunked over the query axis like :func:`vosjax.ops.memory.readout`;
    the top-k path costs one shared affinity matmul plus ``O`` top-k's per chunk.
    """
    fn = "object_readout"
    mem_keys, mem_values, query_keys = (jnp.asarray(x) for x in (mem_keys, mem_values, query_keys))
    object_valid = jnp.asarray(object_valid)
    mem._check_keys_values(fn, mem_keys, mem_values, query_keys)
    mem._check_int(fn, "top_k", top_k, allow_none=True)
    mem._check_int(fn, "chunk_size", chunk_size, allow_none=False)
    b, m, ck = mem_keys.shape
    o = _check_object_valid(fn, object_valid, b, m, mem_values.shape[-1])
    cv = mem_values.shape[-1] // o
    out_dtype = mem_values.dtype
    dt = mem._compute_dtype(mem_keys, query_keys, mem_values)
    keys = mem_keys.astype(dt)
    half_sq = 0.5 * jnp.sum(keys * keys, axis=-1)  # [B, M]
    scale = 2.0 / math.sqrt(ck)
    ov = jnp.moveaxis(object_valid, 2, 1)[:, :, None, :]  # [B, O, 1, M]

    def scores(qc: Array) -> Array:
        # one shared [B, c, M] matmul, then the per-object mask: [B, O, c, M]
        s = jnp.einsum("bnc,bmc->bnm", qc.astype(dt), keys, preferred_element_type=dt)
        s = s - half_sq[:, None, :]
        return jnp.where(ov, s[:, None], -jnp.inf)

    if top_k is None or top_k >= m:
        values = mem_values.reshape(b, m, o, cv).astype(dt)

        @jax.checkpoint
        def dense_body(qc: Array) -> Array:
            w = mem._masked_softmax(scale * scores(qc), axis=-1)  # [B, O, c, M]
            r = jnp.einsum("bonm,bmov->bnov", w, values, preferred_element_type=dt)
            return r.reshape(r.shape[0], r.shape[1], o * cv)

        out = mem._over_query_chunks(dense_body, query_keys, chunk_size)
    else:
        flat_values = mem_values.reshape(b * m * o, cv)
        base = (jnp.arange(b, dtype=jnp.int32) * m)[:, None, None, None]  # [B, 1, 1, 1]
        obj = jnp.arange(o, dtype=jnp.int32)[None, :, None, None]  # [1, O, 1, 1]

        def topk_body(qc: Array) -> Array:
            top, idx = lax.top_k(scores(qc), top_k)  # [B, O, c, k]
            top, idx = lax.optimization_barrier((top, idx))
            w = mem._masked_softmax(scale * top, axis=-1)
            rows = (idx + base) * o + obj
            if top_k <= mem._UNROLL_TOP_K:
                acc = None
                for j in range(top_k):
                    v_j = flat_values.at[rows[..., j]].get(mode="promise_in_bounds").astype(dt)
                    term = w[..., j : j + 1] * v_j
                    acc = term if acc is None else acc + term
            else:
                picked = flat_values.at[rows].get(mode="promise_in_bounds")  # [B, O, c, k, Cv]
                acc = jnp.einsum("bonk,bonkv->bonv", w, picked.astype(dt), preferred_element_type=dt)
            acc = jnp.moveaxis(acc, 1, 2)  # [B, c, O, Cv]
            return acc.reshape(acc.shape[0], acc.shape[1], o * cv)

        out = mem._over_query_chunks(topk_body, query_keys, chunk_size)
    return out.astype(out_dtype)


def read_objects(
    mem_keys: Float[Array, "B M Ck"],
    mem_values: Float[Array, "B M OCv"],
    query_keys: Float[Array, "B N Ck"],
    object_valid: Bool[Array, "B M O"],
    valid: Bool[Array, "B M"],
    top_k: int | None = None,
    *,
    chunk_size: int = mem.DEFAULT_CHUNK_SIZE,
) -> Float[Array, "B N OCv"]:
    """:func:`object_readout`, or the shared ``readout(..., valid)`` when it is the same.

    Where every column of ``object_valid`` equals ``valid`` (all objects read
    the same entries: none appeared late) the shared readout runs, chosen at
    run time by ``lax.cond``: one top-k for all objects and the exact results
    of :func:`vosjax.ops.memory.readout`.
    """
    same = jnp.all(object_valid == valid[:, :, None])

    def shared():
        return mem.readout(mem_keys, mem_values, query_keys, top_k, valid, chunk_size=chunk_size)

    def per_object():
        return object_readout(
            mem_keys, mem_values, query_keys, object_valid, top_k, chunk_size=chunk_size
        ).astype(mem_values.dtype)

    if not isinstance(same, jax.core.Tracer):  # eager call: no need to compile both branches
        return shared() if bool(same) else per_object()
    return lax.cond(same, shared, per_object)


def object_recent(capacity: int, keep_first: bool, late_slots: int) -> int | None:
    """The ``recent`` bound of :func:`bank_object_valid` that gives each object its own memory
    of ``capacity`` frames in a bank of ``capacity + late_slots`` slots (None: no bound needed,
    the bank holds no more than that for any object)."""
    if not late_slots:
        return None
    recent = capacity - 1 if keep_first else capacity
    return recent if recent >= 1 else None


def bank_validity(
    bank: MemoryBank, recent: int | None = None, keep_first: bool = True
) -> tuple[Bool[Array, "B S"], Bool[Array, "B S O"]]:
    """``(valid, object_valid)`` of a per-object bank's slots, as :func:`read_objects` takes them.

    ``object_valid`` is :func:`~vosjax.ops.memory_bank.bank_object_valid`;
    ``valid`` the union of what the present objects read (the bank's valid
    slots when nobody is present). Objects not yet present get ``valid`` (their
    read-out is discarded by the caller), so a video without late objects
    takes the shared readout of :func:`read_objects`.
    """
    ov = bank_object_valid(bank, recent, keep_first)  # [B, S, O]
    present = (bank.first >= 0)[:, None, :]
    union = jnp.any(ov & present, axis=2)
    union = jnp.where(jnp.any(present, axis=2), union, bank.valid)
    return union, jnp.where(present, ov, union[:, :, None])


def _bank_object_valid_flat(bank: MemoryBank, recent: int | None, keep_first: bool):
    """``(keys, values, valid, object_valid)`` of the flattened bank: ``[B, S*P, ...]``."""
    keys, values, _ = bank_flatten(bank)
    p = bank.keys.shape[2]
    union, ov = bank_validity(bank, recent, keep_first)
    return keys, values, jnp.repeat(union, p, axis=1), jnp.repeat(ov, p, axis=1)


def bank_read_objects(
    bank: MemoryBank,
    query_keys: Float[Array, "B N Ck"],
    top_k: int | None = None,
    *,
    recent: int | None = None,
    keep_first: bool = True,
    chunk_size: int = mem.DEFAULT_CHUNK_SIZE,
) -> Float[Array, "B N OCv"]:
    """Read a per-object bank: each object over the slots of ``bank_object_valid(bank, recent)``."""
    keys, values, valid, ov = _bank_object_valid_flat(bank, recent, keep_first)
    return read_objects(keys, values, query_keys, ov, valid, top_k, chunk_size=chunk_size)


def progressive_object_readout(
    bank: MemoryBank,
    clip_query_keys: Float[Array, "B L N Ck"],
    segment_len: int,
    top_k: int | None = None,
    *,
    recent: int | None = None,
    keep_first: bool = True,
    chunk_size: int = mem.DEFAULT_CHUNK_SIZE,
) -> Float[Array, "B L N OCv"]:
    """:func:`vosjax.ops.memory.progressive_readout` (PCVOS eq. 4) from a per-object bank.

    The temporary entries (the last frame of each segment) are valid for every
    object; the bank's entries as :func:`bank_read_objects`.
    """
    fn = "progressive_object_readout"
    clip_query_keys = jnp.asarray(clip_query_keys)
    check_rank(fn, "clip_query_keys", clip_query_keys, 4, "[B, L, N, Ck]")
    mem._check_int(fn, "segment_len", segment_len, allow_none=False)
    keys, values, valid, ov = _bank_object_valid_flat(bank, recent, keep_first)
    b, length, n, ck = clip_query_keys.shape
    outputs = []
    for start in range(0, length, segment_len):
        stop = min(start + segment_len, length)
        q = clip_query_keys[:, start:stop].reshape(b, (stop - start) * n, ck)
        v = read_objects(keys, values, q, ov, valid, top_k, chunk_size=chunk_size)
        v = v.reshape(b, stop - start, n, v.shape[-1])
        outputs.append(v)
        if stop < length:
            keys = jnp.concatenate([keys, clip_query_keys[:, stop - 1].astype(keys.dtype)], axis=1)
            values = jnp.concatenate([values, v[:, -1].astype(values.dtype)], axis=1)
            valid = jnp.concatenate([valid, jnp.ones((b, n), bool)], axis=1)
            ov = jnp.concatenate([ov, jnp.ones((b, n, ov.shape[2]), bool)], axis=1)
    return jnp.concatenate(outputs, axis=1)
