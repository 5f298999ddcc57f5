"""The fixed-capacity memory bank: a pytree of frame slots and the rules that fill it.

``S`` slots of ``P`` positions (one frame each): keys ``[B, S, P, Ck]``,
values ``[B, S, P, Cv]`` (objects folded into ``Cv``), a valid flag per slot
and the insert count that decides the next write slot (keep-first ring or
plain ring, :func:`bank_next_slot`). A per-object bank
(``bank_init(num_objects=O)``) also records which objects each slot's frame was
written for and each object's first slot, so that an object that appears
later reads only the frames written since its own first one and keeps that
first frame (:func:`bank_object_valid`; the readout over such a validity is
:mod:`vosjax.ops.object_memory`).

Reading the bank is :func:`vosjax.ops.memory.bank_read`; the names here are
re-exported by :mod:`vosjax.ops.memory`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from vosjax._validate import check_floating, check_positive_int, check_rank
from vosjax.errors import VosjaxError

__all__ = [
    "MemoryBank",
    "bank_flatten",
    "bank_init",
    "bank_insert",
    "bank_next_slot",
    "bank_object_valid",
]

_check_int = check_positive_int


class MemoryBank(NamedTuple):
    """Fixed-capacity memory: ``S`` frame slots of ``P`` positions each (a pytree).

    Attributes:
        keys: ``[B, S, P, Ck]`` memory keys of each slot.
        values: ``[B, S, P, Cv]`` memory values (objects folded into ``Cv``).
        valid: ``bool[B, S]``, True where a slot holds a frame.
        count: ``int32[B]``, frames inserted so far per batch row (the
            bookkeeping that decides the next write slot, see
            :func:`bank_next_slot`).
        obj: per-object banks only (``bank_init(num_objects=O)``), else None:
            ``bool[B, S, O]``, True where the slot's frame was written while
            the object was present (an object never reads frames written
            before its first one).
        first: per-object banks only: ``int32[B, O]``, the slot holding each
            object's first frame (-1 before it appears); with ``keep_first``
            such a slot is never overwritten by the ring.
        time: per-object banks only: ``int32[B, S]``, the insert number
            (``count`` at the write) of each slot's frame, -1 for empty slots.
    """

    keys: Float[Array, "B S P Ck"]
    values: Float[Array, "B S P Cv"]
    valid: Bool[Array, "B S"]
    count: Int[Array, " B"]
    obj: Bool[Array, "B S O"] | None = None
    first: Int[Array, "B O"] | None = None
    time: Int[Array, "B S"] | None = None


def _check_bank(fn: str, bank: Any) -> None:
    if not isinstance(bank, MemoryBank):
        raise VosjaxError(
            f"{fn}: argument 'bank' must be a MemoryBank (from bank_init), got {type(bank).__name__}."
        )


def bank_init(
    batch: int,
    slots: int,
    positions: int,
    key_dim: int,
    value_dim: int,
    dtype: Any = jnp.float32,
    *,
    num_objects: int | None = None,
) -> MemoryBank:
    """An empty bank: zero keys/values, no valid slot, count 0.

    Capacity is ``slots`` frames of ``positions`` (= H*W) entries. ``slots=2``
    with ``keep_first=True`` inserts gives TrickVOS's "first + last frame"
    memory. ``num_objects = O`` makes a per-object bank: it also records which
    objects were present at each write and each object's first slot
    (:class:`MemoryBank` ``obj``, ``first``, ``time``), so objects that appear
    later read only the frames written since their own first one
    (:func:`bank_object_valid`; read with :mod:`vosjax.ops.object_memory`) and
    keep that first frame (:func:`bank_next_slot`).
    """
    fn = "bank_init"
    for name, v in (
        ("batch", batch),
        ("slots", slots),
        ("positions", positions),
        ("key_dim", key_dim),
        ("value_dim", value_dim),
    ):
        _check_int(fn, name, v, allow_none=False)
    _check_int(fn, "num_objects", num_objects, allow_none=True)
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise VosjaxError(f"bank_init: argument 'dtype' must be a floating dtype, got {dtype}.")
    per_object = {}
    if num_objects is not None:
        per_object = {
            "obj": jnp.zeros((batch, slots, num_objects), bool),
            "first": jnp.full((batch, num_objects), -1, jnp.int32),
            "time": jnp.full((batch, slots), -1, jnp.int32),
        }
    return MemoryBank(
        keys=jnp.zeros((batch, slots, positions, key_dim), dtype),
        values=jnp.zeros((batch, slots, positions, value_dim), dtype),
        valid=jnp.zeros((batch, slots), bool),
        count=jnp.zeros((batch,), jnp.int32),
        **per_object,
    )


def _object_slot(bank: MemoryBank, keep_first: bool) -> tuple[Array, Array]:
    """``(slot, room)`` of a per-object bank: the next write slot and whether it is not kept.

    keep_first: the kept slots are the first frame ever written and every
    object's first slot; the write goes to the lowest empty slot that is not
    kept, else to the oldest one that is not kept (``room`` True); when every
    slot is kept, to the oldest slot (``room`` False: only a frame that brings
    a new object is stored there, see :func:`bank_insert`). Otherwise a plain
    ring ``count mod S``.
    """
    b, s = bank.valid.shape
    if not keep_first:
        return (bank.count % s).astype(jnp.int32), jnp.ones((b,), bool)
    idx = jnp.arange(s, dtype=jnp.int32)
    kept = jnp.any(bank.first[:, None, :] == idx[None, :, None], axis=2) | (bank.time == 0)
    big = jnp.iinfo(jnp.int32).max
    age = jnp.where(bank.valid, bank.time, idx[None] - (s + 1))  # empty slots first, low index first
    free_slot = jnp.argmin(jnp.where(kept, big, age), axis=1).astype(jnp.int32)
    oldest = jnp.argmin(jnp.where(bank.valid, bank.time, big), axis=1).astype(jnp.int32)
    room = jnp.any(~kept, axis=1)
    return jnp.where(room, free_slot, oldest), room


def bank_next_slot(bank: MemoryBank, keep_first: bool = True) -> Int[Array, " B"]:
    """Slot the next insert writes, per batch row.

    keep_first: the first frame ever inserted goes to slot 0 and stays; later
    frames fill slots 1..S-1 and then overwrite the oldest of those,
    ``slot = 1 + (count - 1) mod (S - 1)``. (With ``S == 1`` only the first
    frame is ever stored: later inserts are dropped.) Otherwise a plain ring,
    ``slot = count mod S``. Use the same ``keep_first`` for every insert into
    one bank.

    A per-object bank (``bank_init(num_objects=O)``) with keep_first also keeps
    each object's first slot: the ring runs over the slots that are neither
    the first frame written nor an object's first frame (the lowest empty one,
    else the oldest); with no object appearing later this is the rule above.
    When every slot is kept, the oldest slot is named (written only by a frame
    that brings a new object; other inserts are dropped).
    """
    _check_bank("bank_next_slot", bank)
    s = bank.keys.shape[1]
    count = bank.count
    if bank.obj is not None:
        return _object_slot(bank, keep_first)[0]
    if not keep_first:
        return count % s
    if s == 1:
        return jnp.zeros_like(count)
    return jnp.where(count == 0, 0, 1 + (count - 1) % (s - 1)).astype(jnp.int32)


def _check_bool_rows(fn: str, name: str, x: Array, shape: tuple[int, ...]) -> None:
    if tuple(x.shape) != shape or jnp.dtype(x.dtype) != jnp.dtype(bool):
        raise VosjaxError(
            f"{fn}: argument '{name}' must be bool{list(shape)}, got {x.dtype}{list(x.shape)}."
        )


def bank_insert(
    bank: MemoryBank,
    keys: Float[Array, "B P Ck"],
    values: Float[Array, "B P Cv"],
    keep_first: bool = True,
    write: Bool[Array, " B"] | None = None,
    objects: Bool[Array, "B O"] | None = None,
) -> MemoryBank:
    """Insert one frame's keys/values per batch row into the slot of :func:`bank_next_slot`.

    Rows where ``write`` is False are left untouched (count not advanced).
    Inputs are cast to the bank's dtype. Pure: returns a new bank (under
    ``jit`` with the bank donated, the update is in place).

    ``objects`` (per-object banks only; default all present): the objects
    present in this frame. The slot records them (``obj``); an object present
    for the first time gets this slot as its first slot (``first``). With
    keep_first and every slot kept, the frame is stored only if it brings a
    new object (it replaces the oldest slot, whose objects keep it as their
    first slot: they are in this frame too).
    """
    fn = "bank_insert"
    _check_bank(fn, bank)
    keys, values = jnp.asarray(keys), jnp.asarray(values)
    write = None if write is None else jnp.asarray(write)
    b, s, p, ck = bank.keys.shape
    cv = bank.values.shape[-1]
    check_rank(fn, "keys", keys, 3, "[B, P, Ck]")
    check_rank(fn, "values", values, 3, "[B, P, Cv]")
    check_floating(fn, "keys", keys)
    check_floating(fn, "values", values)
    if tuple(keys.shape) != (b, p, ck):
        raise VosjaxError(
            f"{fn}: argument 'keys' must have shape (B, P, Ck) = {(b, p, ck)} to fit the "
            f"bank, got {tuple(keys.shape)}."
        )
    if tuple(values.shape) != (b, p, cv):
        raise VosjaxError(
            f"{fn}: argument 'values' must have shape (B, P, Cv) = {(b, p, cv)} to fit the "
            f"bank, got {tuple(values.shape)}."
        )
    if write is None:
        write = jnp.ones((b,), bool)
    else:
        check_rank(fn, "write", write, 1, "[B]")
        _check_bool_rows(fn, "write", write, (b,))
    if bank.obj is None and objects is not None:
        raise VosjaxError(
            f"{fn}: 'objects' needs a per-object bank; make it with bank_init(..., num_objects=O)."
        )

    if bank.obj is None:
        slot = bank_next_slot(bank, keep_first)
        store = write
        if keep_first and s == 1:
            store = write & (bank.count == 0)
    else:
        o = bank.obj.shape[2]
        objects = jnp.ones((b, o), bool) if objects is None else jnp.asarray(objects)
        _check_bool_rows(fn, "objects", objects, (b, o))
        slot, room = _object_slot(bank, keep_first)
        new_obj = objects & (bank.first < 0)
        store = write & (room | jnp.any(new_obj, axis=1))

    def put(buf: Array, new: Array, row_store: Array, row_slot: Array) -> Array:
        old = lax.dynamic_index_in_dim(buf, row_slot, 0, keepdims=False)
        return lax.dynamic_update_index_in_dim(
            buf, jnp.where(row_store, new.astype(buf.dtype), old), row_slot, 0
        )

    new_keys = jax.vmap(put)(bank.keys, keys, store, slot)
    new_values = jax.vmap(put)(bank.values, values, store, slot)
    at = jax.nn.one_hot(slot, s, dtype=bool) & store[:, None]  # [B, S]
    new_valid = bank.valid | at
    new_count = bank.count + write.astype(jnp.int32)
    if bank.obj is None:
        return MemoryBank(new_keys, new_values, new_valid, new_count)
    return MemoryBank(
        new_keys,
        new_values,
        new_valid,
        new_count,
        obj=jnp.where(at[:, :, None], objects[:, None, :], bank.obj),
        first=jnp.where(store[:, None] & new_obj, slot[:, None], bank.first),
        time=jnp.where(at, bank.count[:, None], bank.time),
    )


def bank_flatten(
    bank: MemoryBank,
) -> tuple[Float[Array, "B SP Ck"], Float[Array, "B SP Cv"], Bool[Array, "B SP"]]:
    """The bank as readout inputs: keys ``[B, S*P, Ck]``, values ``[B, S*P, Cv]``
    and the per-entry validity ``[B, S*P]`` (each slot's flag repeated ``P`` times)."""
    _check_bank("bank_flatten", bank)
    b, s, p, ck = bank.keys.shape
    keys = bank.keys.reshape(b, s * p, ck)
    values = bank.values.reshape(b, s * p, bank.values.shape[-1])
    valid = jnp.repeat(bank.valid, p, axis=1)
    return keys, values, valid




def bank_object_valid(
    bank: MemoryBank, recent: int | None = None, keep_first: bool = True
) -> Bool[Array, "B S O"]:
    """Per object, the slots it reads: written since its own first frame (a per-object bank).

    ``V[b, s, o] = valid[b, s] & obj[b, s, o]``: the slot's frame was written
    while object ``o`` was present, i.e. at or after its first frame (the
    authors' per-object memories, STCN ``inference_core_yv.py``). With
    ``recent = R`` each object also keeps at most ``R`` of those frames
    besides its first one (keep_first; the ``R`` most recent writes), or the
    ``R`` most recent (not keep_first): the memory of an object is then what
    its own keep-first bank of ``R + 1`` slots (``R`` slots) would hold, even
    when the shared bank holds more frames for other objects. ``recent=None``
    puts no such bound. An object not yet present reads nothing.
    """
    fn = "bank_object_valid"
    _check_bank(fn, bank)
    if bank.obj is None:
        raise VosjaxError(f"{fn}: the bank has no per-object record; make it with bank_init(..., num_objects=O).")
    _check_int(fn, "recent", recent, allow_none=True)
    mask = bank.obj & bank.valid[:, :, None]
    if recent is None:
        return mask
    s = bank.valid.shape[1]
    own = bank.first[:, None, :] == jnp.arange(s, dtype=jnp.int32)[None, :, None]  # [B, S, O]
    own = own & mask if keep_first else jnp.zeros_like(mask)
    ring = mask & ~own
    # rank of a slot among the object's ring slots, newest first
    newer = bank.time[:, None, :] > bank.time[:, :, None]  # [B, S, S']: s' newer than s
    rank = jnp.einsum("bst,bto->bso", newer.astype(jnp.int32), ring.astype(jnp.int32))
    return own | (ring & (rank < recent))
