"""Memory readout kernels against slow, obviously-correct NumPy references.

References run in float64 with explicit loops over batch rows and query
columns; the kernels run in float32 (the test config forces full-precision
matmuls). Top-k selection compares affinities, so examples whose k-th and
(k+1)-th affinities are closer than float32 rounding could separate are
skipped with `assume` (they are rare with random keys).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from vosjax.errors import VosjaxError
from vosjax.ops import memory as mem

CK, CV = 8, 6
# (B, M, N): few shapes, many values; compilation is per shape.
SHAPES = [(2, 24, 12), (1, 40, 20)]
GAP = 1e-4  # minimum k-th / (k+1)-th affinity gap for a stable top-k comparison


# --------------------------------------------------------------------------- references


def ref_affinity(mk, qk):
    mk, qk = np.asarray(mk, np.float64), np.asarray(qk, np.float64)
    b_, m_, c_ = mk.shape
    n_ = qk.shape[1]
    s = np.zeros((b_, m_, n_))
    for b in range(b_):
        for m in range(m_):
            for n in range(n_):
                s[b, m, n] = (
                    2.0 * np.dot(mk[b, m], qk[b, n]) - np.dot(mk[b, m], mk[b, m])
                ) / math.sqrt(c_)
    return s


def _selected(column, valid_row, top_k):
    """Indices kept for one query column: valid ones, largest first (lower index wins ties)."""
    cand = [m for m in range(len(column)) if valid_row is None or valid_row[m]]
    cand.sort(key=lambda m: (-column[m], m))
    return cand if top_k is None else cand[:top_k]


def ref_softmax_topk(s, top_k=None, valid=None):
    s = np.asarray(s, np.float64)
    b_, _, n_ = s.shape
    w = np.zeros_like(s)
    for b in range(b_):
        for n in range(n_):
            keep = _selected(s[b, :, n], None if valid is None else valid[b], top_k)
            if not keep:
                continue
            logits = np.array([s[b, m, n] for m in keep])
            e = np.exp(logits - logits.max())
            for m, wm in zip(keep, e / e.sum()):
                w[b, m, n] = wm
    return w


def ref_readout(mk, mv, qk, top_k=None, valid=None):
    w = ref_softmax_topk(ref_affinity(mk, qk), top_k, valid)
    mv = np.asarray(mv, np.float64)
    out = np.zeros((mv.shape[0], w.shape[2], mv.shape[2]))
    for b in range(mv.shape[0]):
        for n in range(w.shape[2]):
            for m in range(mv.shape[1]):
                out[b, n] += w[b, m, n] * mv[b, m]
    return out


def topk_gap(s, top_k, valid=None):
    """Smallest gap between the k-th and (k+1)-th valid affinity over all columns."""
    if top_k is None:
        return np.inf
    gap = np.inf
    for b in range(s.shape[0]):
        for n in range(s.shape[2]):
            col = np.sort(s[b, :, n][valid[b]] if valid is not None else s[b, :, n])[::-1]
            if len(col) > top_k:
                gap = min(gap, col[top_k - 1] - col[top_k])
    return gap


def ref_progressive(mk, mv, cq, seg, top_k=None, valid=None):
    """PCVOS eq. 4 frame by frame: frame t reads the memory plus, for every
    earlier segment j < t // seg, the key and read-out of that segment's last frame."""
    b_, l_, n_, _ = cq.shape
    out = np.zeros((b_, l_, n_, mv.shape[-1]))
    valid = np.ones(mk.shape[:2], bool) if valid is None else np.asarray(valid)
    for t in range(l_):
        keys, vals, ok = [np.asarray(mk, np.float64)], [np.asarray(mv, np.float64)], [valid]
        for j in range(t // seg):
            last = min((j + 1) * seg, l_) - 1
            keys.append(np.asarray(cq[:, last], np.float64))
            vals.append(out[:, last])
            ok.append(np.ones((b_, n_), bool))
        out[:, t] = ref_readout(
            np.concatenate(keys, 1), np.concatenate(vals, 1), cq[:, t], top_k, np.concatenate(ok, 1)
        )
    return out


def _inputs(seed, b, m, n, dtype=np.float32):
    rng = np.random.default_rng(seed)
    mk = rng.normal(size=(b, m, CK)).astype(dtype)
    mv = rng.normal(size=(b, m, CV)).astype(dtype)
    qk = rng.normal(size=(b, n, CK)).astype(dtype)
    return mk, mv, qk


def _valid(seed, b, m, mode):
    """'none': no mask argument; 'all': an all-True mask; else random (optionally an empty row)."""
    if mode == "none":
        return None
    if mode == "all":
        return np.ones((b, m), bool)
    rng = np.random.default_rng(seed + 1)
    v = rng.uniform(size=(b, m)) < 0.6
    if mode == "with_empty_row":
        v[0] = False
    return v


@functools.cache
def _jit(fn_name, **static):
    fn = getattr(mem, fn_name)
    return jax.jit(functools.partial(fn, **static))


# --------------------------------------------------------------------------- affinity / softmax


@given(
    shape=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 1.0, 5.0]),
)
def test_l2_affinity_matches_reference(shape, seed, scale):
    b, m, n = shape
    mk, _, qk = _inputs(seed, b, m, n)
    mk, qk = mk * scale, qk * scale
    got = np.asarray(_jit("l2_affinity")(mk, qk))
    assert got.shape == (b, m, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_affinity(mk, qk), rtol=1e-5, atol=1e-4 * scale**2)
    # ... and it is -|k - q|^2 / sqrt(Ck) up to the per-column constant |q|^2 / sqrt(Ck).
    dist = ((mk[:, :, None, :].astype(np.float64) - qk[:, None, :, :]) ** 2).sum(-1)
    q2 = (qk.astype(np.float64) ** 2).sum(-1)[:, None, :]
    np.testing.assert_allclose(
        got - q2 / math.sqrt(CK), -dist / math.sqrt(CK), rtol=1e-5, atol=1e-4 * scale**2
    )


@given(
    shape=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**31 - 1),
    top_k=st.sampled_from([None, 1, 7, 100]),
    mode=st.sampled_from(["all", "random", "with_empty_row"]),
)
def test_softmax_topk_matches_reference(shape, seed, top_k, mode):
    b, m, n = shape
    rng = np.random.default_rng(seed)
    s = (rng.normal(size=(b, m, n)) * 3).astype(np.float32)
    valid = _valid(seed, b, m, mode)
    got = np.asarray(_jit("softmax_topk", top_k=top_k)(s, valid=valid))
    want = ref_softmax_topk(s, top_k, valid)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Exactly min(k, #valid) non-zero weights per column; columns sum to 1 (or are empty).
    n_valid = valid.sum(1)
    kept = n_valid if top_k is None else np.minimum(n_valid, top_k)
    np.testing.assert_array_equal((got > 0).sum(1), np.broadcast_to(kept[:, None], (b, n)))
    np.testing.assert_allclose(got.sum(1), (kept[:, None] > 0) * np.ones((b, n)), atol=1e-5)
    assert (got[~valid] == 0).all()


def test_softmax_topk_edge_cases():
    @functools.partial(jax.jit, static_argnums=1)
    def f(a, k, v=None):
        return mem.softmax_topk(a, k, v)

    s = jnp.array([[[1.0, 5.0], [3.0, 5.0], [2.0, 0.0], [9.0, -1.0]]])  # [1, 4, 2]
    valid = jnp.array([[True, True, False, False]])
    w = np.asarray(f(s, 3, valid))  # k > #valid keeps the 2 valid entries only
    e = np.exp([1.0 - 3.0, 0.0])
    np.testing.assert_allclose(w[0, :2, 0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(w[0, :2, 1], [0.5, 0.5], rtol=1e-6)  # a tie: both kept
    assert (w[0, 2:] == 0).all()
    # A tie at the k-th place keeps the lower memory index, exactly one entry.
    np.testing.assert_array_equal(np.asarray(f(s, 1))[0, :, 1], [1.0, 0.0, 0.0, 0.0])
    # No valid entry: zeros, never NaN, also in the gradient.
    none = jnp.zeros((1, 4), bool)
    np.testing.assert_array_equal(np.asarray(f(s, 2, none)), 0.0)
    np.testing.assert_array_equal(np.asarray(f(s, None, none)), 0.0)
    g = jax.grad(lambda a: f(a, 2, none).sum())(s)
    assert np.isfinite(np.asarray(g)).all()
    # Large logits: stable (the maximum is subtracted).
    big = np.asarray(f(s * 1e4, 2))
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big.sum(1), 1.0, rtol=1e-6)


# --------------------------------------------------------------------------- readout

# (top_k, chunk_size, shape): dense and top-k, unchunked and chunked (with a
# remainder chunk: N = 12 or 20 over chunks of 8; N = 20 over 5 exactly), and
# the gathered-contraction top-k path above the unroll limit. The valid=None
# path is covered by the tests below.
READOUT_PATHS = [
    (None, 512, SHAPES[0]),
    (None, 8, SHAPES[1]),
    (5, 512, SHAPES[1]),
    (5, 8, SHAPES[0]),
    (5, 5, SHAPES[1]),
    (mem._UNROLL_TOP_K + 1, 8, SHAPES[1]),
]


@pytest.mark.parametrize("top_k,chunk,shape", READOUT_PATHS)
@given(seed=st.integers(0, 2**31 - 1), mode=st.sampled_from(["all", "random", "with_empty_row"]))
def test_readout_matches_reference(top_k, chunk, shape, seed, mode):
    b, m, n = shape
    mk, mv, qk = _inputs(seed, b, m, n)
    valid = _valid(seed, b, m, mode)
    s = ref_affinity(mk, qk)
    assume(topk_gap(s, top_k, valid) > GAP)
    got = np.asarray(_jit("readout", top_k=top_k, chunk_size=chunk)(mk, mv, qk, valid=valid))
    assert got.shape == (b, n, CV) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_readout(mk, mv, qk, top_k, valid), rtol=2e-5, atol=2e-5)
    if mode == "with_empty_row":
        assert (got[0] == 0).all()


def test_readout_objects_fold_into_value_channels():
    mk, mv, qk = _inputs(3, 2, 24, 12)
    mv2 = mv[..., ::-1] * 2.0 + 1.0
    f = _jit("readout", top_k=4, chunk_size=8)
    both = f(mk, jnp.concatenate([mv, mv2], -1), qk)
    np.testing.assert_allclose(both[..., :CV], f(mk, mv, qk), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[..., CV:], f(mk, mv2, qk), rtol=1e-5, atol=1e-6)


def test_readout_jit_equals_eager_and_vmap():
    mk, mv, qk = _inputs(11, 2, 12, 10)
    valid = _valid(11, 2, 12, "random")
    for top_k in (None, 4):
        f = functools.partial(mem.readout, top_k=top_k, chunk_size=4)
        jf = jax.jit(f)
        jitted = np.asarray(jf(mk, mv, qk, valid=valid))
        with jax.disable_jit():
            eager = np.asarray(f(mk, mv, qk, valid=valid))
        np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
        # vmap over an extra leading axis == one call per slice.
        mks, mvs, qks = (jnp.stack([x, x[::-1] * 0.5]) for x in (mk, mv, qk))
        valids = jnp.stack([valid, ~valid])
        batched = jax.jit(jax.vmap(lambda a, b_, c, d, f=f: f(a, b_, c, valid=d)))(
            mks, mvs, qks, valids
        )
        for i in range(2):
            one = jf(mks[i], mvs[i], qks[i], valid=valids[i])
            np.testing.assert_allclose(batched[i], one, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("top_k", [None, 4])
def test_readout_bfloat16(top_k):
    mk, mv, qk = (x.astype(jnp.bfloat16) for x in _inputs(5, 2, 24, 12))
    assume_gap = topk_gap(ref_affinity(np.float32(mk), np.float32(qk)), top_k)
    assert assume_gap > 1e-3  # this seed selects unambiguously
    got = _jit("readout", top_k=top_k, chunk_size=8)(mk, mv, qk)
    assert got.dtype == jnp.bfloat16
    want = ref_readout(np.float32(mk), np.float32(mv), np.float32(qk), top_k)
    np.testing.assert_allclose(np.float32(got), want, rtol=1e-2, atol=1e-2)
    aff = _jit("l2_affinity")(mk, qk)
    assert aff.dtype == jnp.float32
    np.testing.assert_allclose(
        aff, ref_affinity(np.float32(mk), np.float32(qk)), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("top_k,chunk", [(None, 4), (3, 4), (3, 64)])
def test_readout_gradients(top_k, chunk):
    """check_grads (forward and reverse) w.r.t. memory keys, values and query keys, float64."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(14)
        mk = rng.normal(size=(1, 10, 4))
        mv = rng.normal(size=(1, 10, 3))
        qk = rng.normal(size=(1, 6, 4))
        valid = np.ones((1, 10), bool)
        valid[0, 7] = False
        # well-separated affinities: the selection cannot flip under the probe steps
        assert topk_gap(ref_affinity(mk, qk), top_k, valid) > 1e-2

        @jax.jit
        def f(a, b, c):
            return mem.readout(a, b, c, top_k, valid, chunk_size=chunk)

        check_grads(f, (mk, mv, qk), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
        # values of invalid or never-selected entries get exactly zero gradient
        gv = np.asarray(jax.grad(lambda b: f(mk, b, qk).sum())(mv))
        assert (gv[0, 7] == 0).all()
        if top_k is not None:
            used = set()
            s = ref_affinity(mk, qk)
            for n in range(6):
                used.update(_selected(s[0, :, n], valid[0], top_k))
            unused = [m for m in range(10) if m not in used]
            assert (gv[0, unused] == 0).all()


@pytest.mark.parametrize("top_k", [None, 20])
def test_readout_memory_does_not_scale_with_m_n_cv(top_k):
    """Temp memory of the compiled readout is bounded by the chunk, not by M*N(*Cv)."""
    m, ck, cv = 4096, 16, 128

    def temp(n):
        args = (
            jax.ShapeDtypeStruct((1, m, ck), jnp.float32),
            jax.ShapeDtypeStruct((1, m, cv), jnp.float32),
            jax.ShapeDtypeStruct((1, n, ck), jnp.float32),
        )
        f = jax.jit(lambda a, b, c: mem.readout(a, b, c, top_k))
        compiled = f.lower(*args).compile()
        if jax.default_backend() == "cpu" and top_k is not None:
            # a full sort instead of the top-k kernel would be M log M per query
            assert "TopK" in compiled.as_text()
        return compiled.memory_analysis().temp_size_in_bytes

    t1, t2 = temp(2048), temp(4096)
    affinity_bytes = m * 2048 * 4
    assert t1 < affinity_bytes / 2, (t1, affinity_bytes)
    assert t1 < m * 2048 * cv * 4 / 100
    # doubling N adds at most output-sized buffers, never another M x N block
    assert t2 - t1 <= 3 * 2048 * cv * 4, (t1, t2)


# --------------------------------------------------------------------------- progressive


@pytest.mark.parametrize("seg", [1, 2, 5])
@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**31 - 1),
    mode=st.sampled_from(["none", "random"]),
    top_k=st.sampled_from([None, 4]),
)
def test_progressive_readout_matches_eq4(seg, seed, mode, top_k):
    b, m, n, length = 2, 16, 6, 5  # seg 1: S = 5; seg 2: S = 3, last one shorter; seg 5: S = 1
    rng = np.random.default_rng(seed)
    mk = rng.normal(size=(b, m, CK)).astype(np.float32)
    mv = rng.normal(size=(b, m, CV)).astype(np.float32)
    cq = rng.normal(size=(b, length, n, CK)).astype(np.float32)
    valid = _valid(seed, b, m, mode)
    want = ref_progressive(mk, mv, cq, seg, top_k, valid)
    # every read in the reference must select unambiguously
    assume(topk_gap(ref_affinity(mk, cq.reshape(b, -1, CK)), top_k, valid) > GAP)
    f = _jit("progressive_readout", segment_len=seg, top_k=top_k, chunk_size=8)
    got = np.asarray(f(mk, mv, cq) if valid is None else f(mk, mv, cq, valid=valid))
    assert got.shape == (b, length, n, CV)
    np.testing.assert_allclose(got, want, rtol=5e-5, atol=5e-5)
    if seg >= length:
        plain = _jit("readout", top_k=top_k, chunk_size=8)(
            mk, mv, cq.reshape(b, -1, CK), valid=valid
        )
        np.testing.assert_allclose(got.reshape(b, -1, CV), plain, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- memory bank


def ref_bank_policy(inserts, slots, keep_first, writes):
    """Which inserted frame each slot holds, by the stated policy (not the modular formula)."""
    content, stamp = [None] * slots, [None] * slots
    first_seen = False
    for t, w in zip(inserts, writes):
        if not w:
            continue
        if keep_first and not first_seen:
            slot = 0
        else:
            pool = list(range(1 if keep_first else 0, slots))
            if not pool:
                first_seen = True
                continue
            empty = [s for s in pool if content[s] is None]
            slot = empty[0] if empty else min(pool, key=lambda s: stamp[s])
        first_seen = True
        content[slot], stamp[slot] = t, t
    return content


@pytest.mark.parametrize("slots,keep_first", [(1, True), (2, True), (4, True), (3, False)])
def test_bank_insert_policy(slots, keep_first):
    b, p = 2, 3
    rng = np.random.default_rng(slots)
    writes = rng.uniform(size=(9, b)) < 0.7
    writes[0] = [True, False]  # row 1 starts late
    traces = []

    @jax.jit
    def insert(bank, keys, vals, write):
        traces.append(1)  # runs once per trace, i.e. per compilation
        return mem.bank_insert(bank, keys, vals, keep_first=keep_first, write=write)

    bank = mem.bank_init(b, slots, p, CK, CV)
    for t in range(9):
        # frame t is recognisable: every key entry equals t, every value -t
        keys = jnp.full((b, p, CK), float(t))
        vals = jnp.full((b, p, CV), -float(t))
        bank = insert(bank, keys, vals, write=jnp.asarray(writes[t]))
    assert len(traces) == 1  # one compilation serves the whole sequence
    for row in range(b):
        want = ref_bank_policy(range(9), slots, keep_first, writes[:, row])
        for s in range(slots):
            assert bool(bank.valid[row, s]) == (want[s] is not None)
            if want[s] is not None:
                np.testing.assert_array_equal(bank.keys[row, s], want[s])
                np.testing.assert_array_equal(bank.values[row, s], -want[s])
        assert int(bank.count[row]) == writes[:, row].sum()
    if keep_first:
        assert float(bank.keys[0, 0, 0, 0]) == 0.0  # frame 0 was never evicted


def test_bank_flatten_and_read():
    b, slots, p = 2, 3, 4
    insert = jax.jit(mem.bank_insert)
    read = jax.jit(functools.partial(mem.bank_read, top_k=6))
    bank = mem.bank_init(b, slots, p, CK, CV)
    rng = np.random.default_rng(0)
    frames = [(rng.normal(size=(b, p, CK)), rng.normal(size=(b, p, CV))) for _ in range(2)]
    for k, v in frames:
        bank = insert(bank, jnp.float32(k), jnp.float32(v), write=jnp.array([True, True]))
    # row 1 gets a third frame, row 0 does not
    k3, v3 = rng.normal(size=(b, p, CK)), rng.normal(size=(b, p, CV))
    bank = insert(bank, jnp.float32(k3), jnp.float32(v3), write=jnp.array([False, True]))
    keys, values, valid = mem.bank_flatten(bank)
    assert keys.shape == (b, slots * p, CK) and values.shape == (b, slots * p, CV)
    np.testing.assert_array_equal(valid[0], [True] * 8 + [False] * 4)
    np.testing.assert_array_equal(valid[1], [True] * 12)

    q = rng.normal(size=(b, 5, CK)).astype(np.float32)
    ek, ev = (
        rng.normal(size=(b, 2, CK)).astype(np.float32),
        rng.normal(size=(b, 2, CV)).astype(np.float32),
    )
    got = np.asarray(read(bank, q, extra=(ek, ev, None)))
    for row in range(b):
        n_frames = 2 if row == 0 else 3
        fk = np.concatenate([frames[0][0][row], frames[1][0][row], k3[row]][:n_frames] + [ek[row]])
        fv = np.concatenate([frames[0][1][row], frames[1][1][row], v3[row]][:n_frames] + [ev[row]])
        want = ref_readout(np.float32(fk)[None], np.float32(fv)[None], q[row : row + 1], 6)
        np.testing.assert_allclose(got[row : row + 1], want, rtol=2e-5, atol=2e-5)
    # an empty bank with no valid extra entry reads zeros
    empty = mem.bank_init(b, slots, p, CK, CV)
    np.testing.assert_array_equal(read(empty, q, extra=(ek, ev, np.zeros((b, 2), bool))), 0.0)


# --------------------------------------------------------------------------- errors


def _z(*shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


BAD_CALLS = [
    ("rank", lambda: mem.readout(_z(2, 8), _z(2, 8, 3), _z(2, 4, 8)), "mem_keys"),
    ("channels", lambda: mem.readout(_z(2, 8, 4), _z(2, 8, 3), _z(2, 4, 5)), "key channels"),
    ("M mismatch", lambda: mem.readout(_z(2, 8, 4), _z(2, 7, 3), _z(2, 4, 4)), "memory sizes"),
    ("batch", lambda: mem.readout(_z(2, 8, 4), _z(2, 8, 3), _z(3, 4, 4)), "batch"),
    ("top_k 0", lambda: mem.readout(_z(2, 8, 4), _z(2, 8, 3), _z(2, 4, 4), 0), "top_k"),
    ("top_k float", lambda: mem.readout(_z(2, 8, 4), _z(2, 8, 3), _z(2, 4, 4), 2.0), "top_k"),
    (
        "chunk",
        lambda: mem.readout(_z(2, 8, 4), _z(2, 8, 3), _z(2, 4, 4), chunk_size=0),
        "chunk_size",
    ),
    (
        "valid shape",
        lambda: mem.readout(_z(2, 8, 4), _z(2, 8, 3), _z(2, 4, 4), valid=_z(2, 7, dtype=bool)),
        "valid",
    ),
    (
        "valid dtype",
        lambda: mem.readout(_z(2, 8, 4), _z(2, 8, 3), _z(2, 4, 4), valid=_z(2, 8)),
        "valid",
    ),
    (
        "int keys",
        lambda: mem.readout(_z(2, 8, 4, dtype=jnp.int32), _z(2, 8, 3), _z(2, 4, 4)),
        "floating",
    ),
    ("affinity rank", lambda: mem.softmax_topk(_z(8, 4)), "affinity"),
    ("softmax top_k", lambda: mem.softmax_topk(_z(1, 8, 4), -1), "top_k"),
    ("l2 channels", lambda: mem.l2_affinity(_z(1, 8, 4), _z(1, 3, 2)), "key channels"),
    (
        "clip rank",
        lambda: mem.progressive_readout(_z(1, 8, 4), _z(1, 8, 3), _z(1, 3, 4), 2),
        "clip_query_keys",
    ),
    (
        "segment_len",
        lambda: mem.progressive_readout(_z(1, 8, 4), _z(1, 8, 3), _z(1, 2, 3, 4), 0),
        "segment_len",
    ),
    ("bank dims", lambda: mem.bank_init(1, 0, 4, 4, 3), "slots"),
    (
        "bank keys",
        lambda: mem.bank_insert(mem.bank_init(1, 2, 4, 4, 3), _z(1, 5, 4), _z(1, 4, 3)),
        "keys",
    ),
    (
        "bank write",
        lambda: mem.bank_insert(
            mem.bank_init(1, 2, 4, 4, 3), _z(1, 4, 4), _z(1, 4, 3), write=_z(2, dtype=bool)
        ),
        "write",
    ),
    ("bank type", lambda: mem.bank_flatten((_z(1, 2, 4, 4),)), "MemoryBank"),
    (
        "extra",
        lambda: mem.bank_read(
            mem.bank_init(1, 2, 4, 4, 3), _z(1, 5, 4), extra=(_z(1, 2, 5), _z(1, 2, 3), None)
        ),
        "extra must be",
    ),
]


@pytest.mark.parametrize("name,call,needle", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_vosjax_error(name, call, needle):
    with pytest.raises(VosjaxError, match=needle) as info:
        call()
    fn = str(info.value).split(":")[0]
    assert fn in {
        "readout",
        "softmax_topk",
        "l2_affinity",
        "progressive_readout",
        "bank_init",
        "bank_insert",
        "bank_flatten",
        "bank_read",
        "bank_next_slot",
    }
