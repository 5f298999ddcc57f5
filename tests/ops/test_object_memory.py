"""Readout with a validity per object, and the per-object memory bank, against NumPy references.

The reference reads each object on its own: the readout of ``test_memory.ref_readout``
over the object's value channels and the entries valid for that object.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from vosjax.errors import VosjaxError
from vosjax.ops import memory as mem
from vosjax.ops import object_memory as om

from .test_memory import ref_affinity, ref_readout, topk_gap

CK, CV, O = 8, 3, 3
SHAPES = [(2, 24, 12), (1, 40, 20)]  # (B, M, N)


def ref_object_readout(mk, mv, qk, ov, top_k=None):
    """Object by object: ``ref_readout`` of its channels over its valid entries."""
    o = ov.shape[2]
    cv = mv.shape[2] // o
    outs = [
        ref_readout(mk, mv[:, :, i * cv : (i + 1) * cv], qk, top_k, ov[:, :, i]) for i in range(o)
    ]
    return np.concatenate(outs, axis=2)


def _inputs(seed, b, m, n):
    rng = np.random.default_rng(seed)
    mk = rng.normal(size=(b, m, CK)).astype(np.float32)
    mv = rng.normal(size=(b, m, O * CV)).astype(np.float32)
    qk = rng.normal(size=(b, n, CK)).astype(np.float32)
    ov = rng.uniform(size=(b, m, O)) < 0.6
    ov[0, :, 1] = False  # an object with no entry reads zeros
    ov[:, : m // 2, 2] = False  # an object that appeared half-way
    return mk, mv, qk, ov


@functools.cache
def _jit(fn, **static):
    return jax.jit(functools.partial(fn, **static))


@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**31 - 1),
    top_k=st.sampled_from([None, 1, 5]),
    chunk=st.sampled_from([5, 128]),
)
def test_object_readout_matches_per_object_reference(shape, seed, top_k, chunk):
    mk, mv, qk, ov = _inputs(seed, *shape)
    s = ref_affinity(mk, qk)
    for i in range(O):
        assume(topk_gap(s, top_k, ov[:, :, i]) > 1e-4)
    out = _jit(om.object_readout, top_k=top_k, chunk_size=chunk)(mk, mv, qk, ov)
    want = ref_object_readout(mk, mv, qk, ov, top_k)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-5)
    assert not np.asarray(out)[0, :, CV : 2 * CV].any()  # object 1 has no entry in row 0


@pytest.mark.parametrize("top_k", [None, 4])
def test_read_objects_is_the_shared_readout_when_all_objects_read_the_same(top_k):
    mk, mv, qk, _ = _inputs(3, 2, 24, 12)
    valid = np.random.default_rng(4).uniform(size=(2, 24)) < 0.7
    same = np.repeat(valid[:, :, None], O, axis=2)
    shared = _jit(mem.readout, top_k=top_k)(mk, mv, qk, valid=valid)
    got = _jit(om.read_objects, top_k=top_k)(mk, mv, qk, same, valid)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(shared))  # bit for bit
    # and the per-object kernel agrees with it up to rounding
    per = _jit(om.object_readout, top_k=top_k)(mk, mv, qk, same)
    np.testing.assert_allclose(np.asarray(per), np.asarray(shared), rtol=1e-5, atol=1e-6)
    # a differing object switches to the per-object readout
    late = same.copy()
    late[:, :8, 2] = False
    got = _jit(om.read_objects, top_k=top_k)(mk, mv, qk, late, valid)
    np.testing.assert_allclose(
        np.asarray(got), ref_object_readout(mk, mv, qk, late, top_k), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("top_k,chunk", [(None, 4), (3, 4)])
def test_object_readout_gradients(top_k, chunk):
    """check_grads (fwd and rev) w.r.t. keys, values and queries; entries an object may not
    read get exactly zero gradient in its value channels."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        mk, mv, qk = rng.normal(size=(1, 10, 4)), rng.normal(size=(1, 10, 2 * 2)), rng.normal(size=(1, 5, 4))
        ov = np.ones((1, 10, 2), bool)
        ov[0, :4, 1] = False  # object 1 appeared at entry 4
        for i in range(2):
            assert topk_gap(ref_affinity(mk, qk), top_k, ov[:, :, i]) > 1e-2

        @jax.jit
        def f(a, b, c):
            return om.object_readout(a, b, c, ov, top_k, chunk_size=chunk)

        check_grads(f, (mk, mv, qk), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
        gv = np.asarray(jax.grad(lambda b: f(mk, b, qk).sum())(mv))
        assert (gv[0, :4, 2:] == 0).all() and np.abs(gv[0, :4, :2]).sum() > 0


# --------------------------------------------------------------------------- the bank


def _insert_all(slots, keep_first, presence):
    """Insert frame t (keys = t) with the objects ``presence[t]``; returns the bank after each."""
    o = len(presence[0])
    bank = mem.bank_init(1, slots, 2, 1, o, num_objects=o)
    insert = jax.jit(functools.partial(mem.bank_insert, keep_first=keep_first))
    banks = []
    for t, present in enumerate(presence):
        k = jnp.full((1, 2, 1), float(t))
        bank = insert(bank, k, jnp.zeros((1, 2, o)), objects=jnp.asarray([present]))
        banks.append(bank)
    return banks


def _frames(bank, ov=None):
    """Frames (key values) of the valid slots, per object if ``ov`` is given."""
    keys = np.asarray(bank.keys)[0, :, 0, 0].astype(int)
    if ov is None:
        return sorted(keys[np.asarray(bank.valid)[0]].tolist())
    ov = np.asarray(ov)[0]
    return [sorted(keys[ov[:, i]].tolist()) for i in range(ov.shape[1])]


@pytest.mark.parametrize("slots,keep_first", [(1, True), (2, True), (4, True), (3, False)])
def test_per_object_bank_without_late_objects_is_the_old_bank(slots, keep_first):
    old = mem.bank_init(1, slots, 2, 1, 2)
    banks = _insert_all(slots, keep_first, [[True, True]] * 9)
    for t, bank in enumerate(banks):
        old = mem.bank_insert(old, jnp.full((1, 2, 1), float(t)), jnp.zeros((1, 2, 2)), keep_first)
        np.testing.assert_array_equal(bank.keys, old.keys)
        np.testing.assert_array_equal(bank.valid, old.valid)
        ov = mem.bank_object_valid(bank, None, keep_first)
        np.testing.assert_array_equal(ov, np.repeat(np.asarray(old.valid)[:, :, None], 2, 2))


def test_late_object_keeps_its_first_frame_and_reads_only_its_frames():
    # object 0 from frame 0, object 1 from frame 3; 4 slots, keep-first ring
    presence = [[True, False]] * 3 + [[True, True]] * 9
    banks = _insert_all(4, True, presence)
    b5 = banks[5]  # frames 0..5 written: ring over 3 slots, frame 3 is kept for object 1
    assert _frames(b5) == [0, 3, 4, 5]
    assert _frames(b5, mem.bank_object_valid(b5)) == [[0, 3, 4, 5], [3, 4, 5]]
    last = banks[-1]  # frame 11: frames 0 and 3 kept, the ring over the other 2 slots
    assert _frames(last) == [0, 3, 10, 11]
    assert _frames(last, mem.bank_object_valid(last)) == [[0, 3, 10, 11], [3, 10, 11]]
    np.testing.assert_array_equal(last.first, [[0, int(np.argmax(np.asarray(last.keys)[0, :, 0, 0] == 3))]])
    # recent=1: each object reads its first frame + the most recent one (first + last)
    assert _frames(last, mem.bank_object_valid(last, recent=1)) == [[0, 11], [3, 11]]
    # not keep_first: a plain ring, object 1 still reads nothing before frame 3
    ring = _insert_all(4, False, presence)
    assert _frames(ring[4], mem.bank_object_valid(ring[4])) == [[1, 2, 3, 4], [3, 4]]


def test_all_slots_kept_stores_only_frames_with_new_objects():
    # 2 slots: object 0 at frame 0, object 1 at frame 2, object 2 at frame 4
    presence = [[True, False, False]] * 2 + [[True, True, False]] * 2 + [[True, True, True]] * 2
    banks = _insert_all(2, True, presence)
    assert _frames(banks[1]) == [0, 1]
    assert _frames(banks[2]) == [0, 2]  # frame 2 replaces the ring slot and is kept
    assert _frames(banks[3]) == [0, 2]  # every slot kept: frame 3 is dropped
    assert _frames(banks[4]) == [2, 4]  # a new object: the oldest slot takes it
    assert _frames(banks[4], mem.bank_object_valid(banks[4])) == [[2, 4], [2, 4], [4]]
    assert int(banks[5].count[0]) == 6


def test_bank_object_inputs_are_checked():
    with pytest.raises(VosjaxError, match="per-object bank"):
        mem.bank_insert(
            mem.bank_init(1, 2, 2, 1, 2), jnp.zeros((1, 2, 1)), jnp.zeros((1, 2, 2)),
            objects=jnp.ones((1, 2), bool),
        )
    with pytest.raises(VosjaxError, match="num_objects"):
        mem.bank_object_valid(mem.bank_init(1, 2, 2, 1, 2))
    with pytest.raises(VosjaxError, match="object_valid"):
        om.object_readout(
            jnp.zeros((1, 4, 2)), jnp.zeros((1, 4, 6)), jnp.zeros((1, 3, 2)), jnp.ones((1, 4, 4), bool)
        )


@pytest.mark.parametrize("top_k", [None, 3])
def test_progressive_object_readout_is_eq4_per_object(top_k):
    """PCVOS eq. 4 from a per-object bank: per object, ``ref_progressive`` over its own slots
    (the temporary entries are every object's)."""
    from .test_memory import ref_progressive

    rng = np.random.default_rng(5)
    p, o, cv, length, seg = 4, 2, 2, 4, 2
    bank = mem.bank_init(1, 3, p, CK, o * cv, num_objects=o)
    presence = [[True, False], [True, True], [True, True]]  # object 1 from the 2nd frame
    for present in presence:
        bank = mem.bank_insert(
            bank,
            jnp.asarray(rng.normal(size=(1, p, CK)), jnp.float32),
            jnp.asarray(rng.normal(size=(1, p, o * cv)), jnp.float32),
            objects=jnp.asarray([present]),
        )
    cq = rng.normal(size=(1, length, p, CK)).astype(np.float32)
    got = np.asarray(om.progressive_object_readout(bank, cq, seg, top_k))
    keys, values, _ = mem.bank_flatten(bank)
    ov = np.repeat(np.asarray(mem.bank_object_valid(bank)), p, axis=1)
    for i in range(o):
        ch = slice(i * cv, (i + 1) * cv)
        want = ref_progressive(
            np.asarray(keys), np.asarray(values)[:, :, ch], cq, seg, top_k, ov[:, :, i]
        )
        np.testing.assert_allclose(got[..., ch], want, rtol=1e-4, atol=1e-5)
    assert not ov[0, :p, 1].any() and ov[0, p:, 1].all()
