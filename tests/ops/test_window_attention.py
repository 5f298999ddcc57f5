"""3D shifted-window attention against a dense NumPy reference in original coordinates."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from vosjax.errors import VosjaxError
from vosjax.ops import window_attention as wa

# (shape [B, T, H, W, Ck], Cv, num_heads, window, shift): a few fixed shapes so
# XLA compiles a handful of programs; hypothesis varies the values.
CONFIGS = [
    ((1, 2, 7, 7, 8), 8, 2, (2, 7, 7), (0, 0, 0)),  # divisible, unshifted: no mask at all
    ((1, 4, 14, 14, 8), 8, 4, (2, 7, 7), (1, 3, 3)),  # divisible, shifted
    ((2, 3, 9, 10, 8), 8, 1, (2, 7, 7), (0, 0, 0)),  # padding only
    ((2, 3, 9, 10, 8), 12, 4, (2, 7, 7), (1, 3, 3)),  # padding + shift, Cv != Ck
    ((1, 2, 5, 11, 6), 6, 3, (2, 3, 4), (1, 1, 2)),  # T == window: T clamped, no T shift
    ((1, 5, 4, 6, 4), 4, 2, (3, 2, 3), (2, 1, 1)),  # odd windows and shifts
]


def reference_window_attention(q, k, v, num_heads, window, shift, table=None):
    """Dense masked softmax over ALL positions, in original coordinates.

    Two positions may attend iff, on every axis, floor((p - s) / w) agrees,
    where (w, s) are clamped to the axis size as Video Swin does. Padding does
    not exist here, so it cannot receive weight. ``table`` (``[(2wt-1)(2wh-1)(2ww-1),
    heads]`` of the requested window): pair (a, b) adds the row of the offset
    ``p_a - p_b``, counted from ``-(w - 1)`` per axis, t slowest.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, T, H, W, Ck = q.shape
    Cv = v.shape[-1]
    win = [L if L <= w else w for L, w in zip((T, H, W), window)]
    sh = [0 if L <= w else s for L, w, s in zip((T, H, W), window, shift)]
    positions = np.array(list(itertools.product(range(T), range(H), range(W))))  # [N, 3]
    N = len(positions)
    group = (positions - np.array(sh)) // np.array(win)  # window index per axis, floor division
    allowed = (group[:, None, :] == group[None, :, :]).all(axis=-1)  # [N, N]
    dk, dv = Ck // num_heads, Cv // num_heads
    out = np.zeros((B, N, Cv))
    for b in range(B):
        qf, kf, vf = q[b].reshape(N, Ck), k[b].reshape(N, Ck), v[b].reshape(N, Cv)
        for h in range(num_heads):
            qs, ks = qf[:, h * dk : (h + 1) * dk], kf[:, h * dk : (h + 1) * dk]
            logits = qs @ ks.T / np.sqrt(dk)
            if table is not None:
                wt, wh, ww = window
                d = positions[:, None, :] - positions[None, :, :] + np.array([wt - 1, wh - 1, ww - 1])
                row = (d[..., 0] * (2 * wh - 1) + d[..., 1]) * (2 * ww - 1) + d[..., 2]
                logits = logits + np.asarray(table, np.float64)[np.clip(row, 0, len(table) - 1), h]
            logits = np.where(allowed, logits, -np.inf)
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            out[b, :, h * dv : (h + 1) * dv] = p @ vf[:, h * dv : (h + 1) * dv]
    return out.reshape(B, T, H, W, Cv)


@functools.lru_cache(maxsize=None)
def _jitted(num_heads, window, shift):
    return jax.jit(
        functools.partial(wa.window_attention, num_heads=num_heads, window=window, shift=shift)
    )


def _qkv(seed, shape, cv, scale=1.0):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    q = scale * jax.random.normal(kq, shape)
    k = scale * jax.random.normal(kk, shape)
    v = jax.random.normal(kv, shape[:4] + (cv,))
    return q, k, v


@given(
    config=st.sampled_from(CONFIGS),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.3, 1.0, 3.0]),
)
def test_matches_dense_reference(config, seed, scale):
    shape, cv, heads, window, shift = config
    q, k, v = _qkv(seed, shape, cv, scale)
    got = _jitted(heads, window, shift)(q, k, v)
    want = reference_window_attention(q, k, v, heads, window, shift)
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def test_shift_changes_the_result():
    # Guards against a shift that is silently ignored: shifted and unshifted differ.
    shape, cv, heads, window, _ = CONFIGS[1]
    q, k, v = _qkv(0, shape, cv)
    a = _jitted(heads, window, (0, 0, 0))(q, k, v)
    b = _jitted(heads, window, (1, 3, 3))(q, k, v)
    assert float(jnp.abs(a - b).max()) > 1e-2


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3]])
def test_relative_position_bias_matches_dense_reference(config):
    shape, cv, heads, window, shift = config
    q, k, v = _qkv(3, shape, cv)
    rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    table = jax.random.normal(jax.random.PRNGKey(4), (rows, heads))
    got = wa.window_attention(q, k, v, heads, window, shift, bias_table=table)
    want = reference_window_attention(q, k, v, heads, window, shift, table)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
    plain = reference_window_attention(q, k, v, heads, window, shift)
    assert np.abs(want - plain).max() > 1e-2  # the bias matters
    with pytest.raises(VosjaxError, match="bias_table"):
        wa.window_attention(q, k, v, heads, window, shift, bias_table=table[1:])


def test_relative_position_index_by_hand():
    # window (1, 2, 2): tokens (h, w) = (0,0), (0,1), (1,0), (1,1); row = (dh + 1) * 3 + dw + 1
    want = np.array([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    np.testing.assert_array_equal(wa.relative_position_index((1, 2, 2)), want)
    index = wa.relative_position_index((2, 7, 7))
    assert index.shape == (98, 98) and index.min() == 0 and index.max() == 3 * 13 * 13 - 1


def test_masked_logit_is_video_swins_additive_region_mask():
    shape, cv, heads, window, shift = CONFIGS[1]  # divisible, shifted
    q, k, v = _qkv(5, shape, cv)
    exact = wa.window_attention(q, k, v, heads, window, shift)
    huge = wa.window_attention(q, k, v, heads, window, shift, masked_logit=-1e4)
    np.testing.assert_allclose(np.asarray(huge), np.asarray(exact), rtol=1e-6, atol=1e-6)
    # masked_logit = 0: nothing is separated, i.e. plain windows of the rolled grid
    zero = wa.window_attention(q, k, v, heads, window, shift, masked_logit=0.0)
    rolled = [wa.cyclic_shift(a, shift) for a in (q, k, v)]
    plain = wa.reverse_cyclic_shift(wa.window_attention(*rolled, heads, window), shift)
    np.testing.assert_allclose(np.asarray(zero), np.asarray(plain), rtol=1e-5, atol=1e-5)
    # Video Swin's -100: a weight of e^-100 relative, below float32 resolution here
    swin = wa.window_attention(q, k, v, heads, window, shift, masked_logit=-100.0)
    np.testing.assert_allclose(np.asarray(swin), np.asarray(exact), rtol=1e-6, atol=1e-6)


def test_mask_of_small_example_by_hand():
    # One axis of length 5 with window 2, shift 1: original windows {0}, {1, 2}, {3, 4}.
    # Padded length 6, rolled by -1: rolled index r holds position (r + 1) % 6, so the
    # rolled windows are [1, 2], [3, 4], [5(pad), 0].
    mask = np.asarray(wa.shifted_window_mask((1, 1, 5), (1, 1, 2), (0, 0, 1)))
    want = np.array(
        [
            [[True, True], [True, True]],
            [[True, True], [True, True]],
            [
                [False, False],
                [False, True],
            ],  # the padding token attends to nothing, token 0 to itself
        ]
    )
    np.testing.assert_array_equal(mask, want)


@pytest.mark.parametrize(
    "size,window,shift", [((4, 14, 14), (2, 7, 7), (1, 3, 3)), ((6, 8, 9), (3, 4, 3), (1, 2, 1))]
)
def test_mask_matches_video_swin_region_labels_when_divisible(size, window, shift):
    # Independent construction (Video Swin): label the rolled grid by the regions
    # [0, L-w), [L-w, L-s), [L-s, L) per axis; tokens attend iff labels agree.
    label = np.zeros(size, int)
    count = 0
    slices = [(slice(0, -w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
    for st_, sh_, sw_ in itertools.product(*slices):
        label[st_, sh_, sw_] = count
        count += 1
    wt, wh, ww = window
    T, H, W = size
    lw = (
        label.reshape(T // wt, wt, H // wh, wh, W // ww, ww)
        .transpose(0, 2, 4, 1, 3, 5)
        .reshape(-1, wt * wh * ww)
    )
    want = lw[:, :, None] == lw[:, None, :]
    np.testing.assert_array_equal(np.asarray(wa.shifted_window_mask(size, window, shift)), want)


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 3, 3)])
def test_mask_never_lets_padding_attend_or_be_attended(shift):
    size, window = (3, 9, 10), (2, 7, 7)
    mask = np.asarray(wa.shifted_window_mask(size, window, shift))
    # Mark real tokens by pushing an indicator grid through pad -> shift -> partition.
    ones = jnp.ones((1,) + size + (1,))
    real = (
        np.asarray(
            wa.window_partition(wa.cyclic_shift(wa.pad_to_window(ones, window), shift), window)
        )[..., 0]
        > 0
    )
    assert real.shape == mask.shape[:2] and (~real).any()
    assert not mask[~real].any(), "a padding token attends to something"
    assert not mask.transpose(0, 2, 1)[~real].any(), "a padding token receives attention"
    diag = np.diagonal(mask, axis1=1, axis2=2)
    np.testing.assert_array_equal(diag, real)  # every real token at least sees itself


@pytest.mark.parametrize(
    "shape,window",
    [((2, 3, 9, 10, 5), (2, 7, 7)), ((1, 4, 14, 7, 3), (2, 7, 7)), ((1, 1, 2, 3, 2), (3, 4, 5))],
)
def test_partition_reverse_round_trip(shape, window):
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    w = wa.window_partition(x, window)
    B, T, H, W, C = shape
    nW = np.prod([-(-L // s) for L, s in zip((T, H, W), window)])
    assert w.shape == (B * nW, np.prod(window), C)
    np.testing.assert_array_equal(np.asarray(wa.window_reverse(w, window, shape)), np.asarray(x))
    np.testing.assert_array_equal(
        np.asarray(wa.window_reverse(w, window, shape[:4])), np.asarray(x)
    )


def test_partition_layout_is_batch_major_then_t_h_w():
    # Window (b, it, ih, iw) holds x[b, it*wt:(it+1)*wt, ih*wh:..., iw*ww:...] in (t, h, w) order.
    x = jnp.arange(2 * 4 * 6 * 4, dtype=jnp.float32).reshape(2, 4, 6, 4, 1)
    w = np.asarray(wa.window_partition(x, (2, 3, 2)))[..., 0]
    xn = np.asarray(x)[..., 0]
    idx = 0
    for b, it, ih, iw in itertools.product(range(2), range(2), range(2), range(2)):
        block = xn[b, it * 2 : it * 2 + 2, ih * 3 : ih * 3 + 3, iw * 2 : iw * 2 + 2]
        np.testing.assert_array_equal(w[idx], block.reshape(-1))
        idx += 1


def test_cyclic_shift_round_trip_and_direction():
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 4, 6, 5, 2))
    s = wa.cyclic_shift(x, (1, 3, 2))
    np.testing.assert_array_equal(np.asarray(s[0, 0, 0, 0]), np.asarray(x[0, 1, 3, 2]))
    np.testing.assert_array_equal(np.asarray(wa.reverse_cyclic_shift(s, (1, 3, 2))), np.asarray(x))


def test_effective_window_clamps_like_video_swin():
    assert wa.effective_window((4, 14, 14), (2, 7, 7), (1, 3, 3)) == ((2, 7, 7), (1, 3, 3))
    assert wa.effective_window((2, 5, 30), (2, 7, 7), (1, 3, 3)) == ((2, 5, 7), (0, 0, 3))
    assert wa.effective_window((1, 8, 8), 4, 2) == ((1, 4, 4), (0, 2, 2))


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 2)])
def test_gradients_match_finite_differences(shift):
    with jax.enable_x64(True):
        kq, kk, kv = jax.random.split(jax.random.PRNGKey(3), 3)
        shape = (1, 3, 4, 5, 4)  # padded on every axis with window (2, 3, 4)
        q = jax.random.normal(kq, shape, jnp.float64)
        k = jax.random.normal(kk, shape, jnp.float64)
        v = jax.random.normal(kv, shape, jnp.float64)
        f = jax.jit(
            functools.partial(wa.window_attention, num_heads=2, window=(2, 3, 4), shift=shift)
        )
        check_grads(f, (q, k, v), order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
        # The padded positions must not leak NaN into gradients.
        g = jax.grad(lambda q_, k_, v_: jnp.sum(f(q_, k_, v_) ** 2), argnums=(0, 1, 2))(q, k, v)
        assert all(bool(jnp.isfinite(gi).all()) for gi in g)


def test_jit_and_vmap_agree_with_eager():
    shape, cv, heads, window, shift = CONFIGS[3]
    q, k, v = _qkv(4, shape, cv)
    eager = wa.window_attention(q, k, v, heads, window, shift)
    np.testing.assert_allclose(
        np.asarray(_jitted(heads, window, shift)(q, k, v)), np.asarray(eager), rtol=1e-6, atol=1e-6
    )
    # vmap over an extra leading axis (e.g. several clips) == a Python loop.
    qs, ks, vs = (jnp.stack([a, 2.0 * a]) for a in (q, k, v))
    batched = jax.vmap(lambda a, b, c: wa.window_attention(a, b, c, heads, window, shift))(
        qs, ks, vs
    )
    for i in range(2):
        loop = wa.window_attention(qs[i], ks[i], vs[i], heads, window, shift)
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(loop), rtol=1e-6, atol=1e-6)


def test_bfloat16_inputs_stay_close_to_float32():
    shape, cv, heads, window, shift = CONFIGS[3]
    q, k, v = _qkv(5, shape, cv)
    ref = wa.window_attention(q, k, v, heads, window, shift)
    low = wa.window_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)), heads, window, shift)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low, np.float32), np.asarray(ref), atol=5e-2)


def test_bad_input_raises_vosjax_error():
    x = jnp.zeros((1, 2, 7, 7, 8))
    with pytest.raises(VosjaxError, match="window_attention.*'q'.*rank 5"):
        wa.window_attention(x[0], x, x, 2)
    with pytest.raises(VosjaxError, match="num_heads=3 must divide"):
        wa.window_attention(x, x, x, 3)
    with pytest.raises(VosjaxError, match="'q' and 'k'"):
        wa.window_attention(x, x[..., :4], x, 2)
    with pytest.raises(VosjaxError, match="0 <= shift < window"):
        wa.window_attention(
            jnp.zeros((1, 4, 14, 14, 8)),
            jnp.zeros((1, 4, 14, 14, 8)),
            jnp.zeros((1, 4, 14, 14, 8)),
            2,
            (2, 7, 7),
            (1, 7, 3),
        )
    with pytest.raises(VosjaxError, match="'window' must be an int or three ints"):
        wa.window_partition(x, (2, 7))
    with pytest.raises(VosjaxError, match="do not match shape"):
        wa.window_reverse(wa.window_partition(x, (2, 7, 7)), (2, 7, 7), (2, 2, 7, 7))
    with pytest.raises(VosjaxError, match="must be floating point"):
        wa.window_attention(x.astype(jnp.int32), x, x, 2)
