"""Boxes and the TrickVOS box filter against a plain-Python Algorithm 1."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vosjax.errors import VosjaxError
from vosjax.ops import boxes as bx

T, H, W = 8, 20, 28


# ----------------------------------------------------------------- references


def ref_box(mask):
    fg = np.asarray(mask) > 0.5
    ys, xs = np.nonzero(fg)
    if len(ys) == 0:
        return np.zeros(4)
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], float)


def ref_map(box, height, width, margin=0.0):
    x, y, w, h = (float(v) for v in box)
    out = np.zeros((height, width), np.float32)
    for r in range(height):
        for c in range(width):
            in_x = x - margin * w <= c + 0.5 < x + w + margin * w
            in_y = y - margin * h <= r + 0.5 < y + h + margin * h
            out[r, c] = float(in_x and in_y)
    return out


def ref_filter(masks, mode="cv", motion_fn=None, margin=0.0):
    """Algorithm 1 frame by frame, with the documented empty-box policy."""
    masks = np.asarray(masks, np.float32)
    boxes, out = [], []
    for t in range(masks.shape[0]):
        m = masks[t]
        ready = t >= 2 and all(b[2] > 0 and b[3] > 0 for b in boxes[-2:])
        if ready:
            motion = boxes[-1] - boxes[-2]
            if mode == "pt":
                motion = np.asarray(motion_fn(motion), float)
            bb = boxes[-1] + motion
            m = ref_map(bb, *m.shape, margin) * m
        boxes.append(ref_box(m))
        out.append(m)
    return np.stack(out), np.stack(boxes)


def rect(x, y, w, h, height=H, width=W, value=1.0):
    m = np.zeros((height, width), np.float32)
    m[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = value
    return m


def random_sequence(rng, distractors=True, dropouts=True):
    """A rectangle moving with random (near-constant) velocity, plus blobs and gaps."""
    x, y = rng.integers(0, W // 2), rng.integers(0, H // 2)
    w, h = rng.integers(3, 8), rng.integers(3, 8)
    vx, vy, dw, dh = rng.integers(-2, 3, size=4)
    seq = []
    for _ in range(T):
        jitter = rng.integers(-1, 2, size=4) if rng.uniform() < 0.3 else np.zeros(4, int)
        m = rect(
            x + jitter[0],
            y + jitter[1],
            max(w + jitter[2], 1),
            max(h + jitter[3], 1),
            value=rng.uniform(0.6, 1.0),
        )
        if distractors and rng.uniform() < 0.4:
            bx_, by_ = rng.integers(0, W - 3), rng.integers(0, H - 3)
            m = np.maximum(m, rect(bx_, by_, 2, 3, value=0.9))
        if dropouts and rng.uniform() < 0.15:
            m[:] = 0.0
        seq.append(m)
        x, y, w, h = x + vx, y + vy, max(w + dw, 1), max(h + dh, 1)
    return np.stack(seq)


# ----------------------------------------------------------------- mask_to_box


@given(seed=st.integers(0, 2**31 - 1), density=st.sampled_from([0.0, 0.002, 0.02, 0.3]))
def test_mask_to_box_matches_reference(seed, density):
    rng = np.random.default_rng(seed)
    probs = rng.uniform(size=(2, 3, H, W)).astype(np.float32)
    probs = np.where(rng.uniform(size=probs.shape) < density, probs * 0.5 + 0.5, probs * 0.5)
    got = np.asarray(_jit_box(probs))
    assert got.shape == (2, 3, 4) and got.dtype == np.float32
    for i in np.ndindex(2, 3):
        np.testing.assert_array_equal(got[i], ref_box(probs[i]))
    np.testing.assert_array_equal(np.asarray(_jit_box(probs > 0.5)), got)  # bool input, same boxes


_jit_box = jax.jit(bx.mask_to_box)


def test_mask_to_box_edge_cases():
    single = np.zeros((5, 6), bool)
    single[2, 4] = True
    np.testing.assert_array_equal(np.asarray(bx.mask_to_box(single)), [4, 2, 1, 1])
    np.testing.assert_array_equal(np.asarray(bx.mask_to_box(np.zeros((5, 6)))), [0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(bx.mask_to_box(np.ones((5, 6)))), [0, 0, 6, 5])
    np.testing.assert_array_equal(
        np.asarray(bx.mask_to_box(np.full((5, 6), 0.5))), [0, 0, 0, 0]
    )  # > 0.5 strictly
    np.testing.assert_array_equal(
        np.asarray(bx.mask_to_box(rect(3, 4, 5, 2, 10, 12))), [3, 4, 5, 2]
    )


# ----------------------------------------------------------------- attention map


@pytest.mark.parametrize("margin", [0.0, 0.25, 0.5])
def test_box_to_attention_map_matches_reference(margin):
    boxes = np.array(
        [
            [3, 4, 5, 2],  # inside
            [-3, -2, 6, 5],  # partly outside top-left
            [20, 15, 30, 30],  # partly outside bottom-right
            [2.3, 1.7, 4.4, 3.1],  # real-valued (PT output)
            [5, 5, 0, 3],  # empty (w = 0)
            [5, 5, -2, 3],  # negative width from a CV extrapolation
            [40, 1, 3, 3],  # entirely outside
        ],
        np.float32,
    )
    got = np.asarray(bx.box_to_attention_map(boxes, H, W, margin))
    assert got.shape == (len(boxes), H, W) and got.dtype == np.float32
    for i, b in enumerate(boxes):
        np.testing.assert_array_equal(got[i], ref_map(b, H, W, margin), err_msg=str(b))
    assert got[-3:].sum() == 0


def test_attention_map_of_mask_box_covers_mask_exactly():
    m = rect(3, 4, 5, 2)
    np.testing.assert_array_equal(np.asarray(bx.box_to_attention_map(bx.mask_to_box(m), H, W)), m)


# ----------------------------------------------------------------- Algorithm 1


@functools.lru_cache(maxsize=None)
def _jit_filter(mode="cv", margin=0.0, motion_fn=None):
    return jax.jit(
        functools.partial(bx.filter_masks, mode=mode, motion_fn=motion_fn, margin=margin)
    )


@given(seed=st.integers(0, 2**31 - 1), margin=st.sampled_from([0.0, 0.25]))
def test_filter_matches_plain_python_algorithm_1(seed, margin):
    rng = np.random.default_rng(seed)
    masks = np.stack([random_sequence(rng) for _ in range(3)])  # [O, T, H, W]
    got = np.asarray(_jit_filter("cv", margin)(masks))
    assert got.shape == masks.shape and got.dtype == np.float32
    for o in range(3):
        want, _ = ref_filter(masks[o], margin=margin)
        np.testing.assert_array_equal(got[o], want)


def test_random_sequences_really_exercise_the_filter():
    # Guards the test above against vacuity: on these sequences the filter both
    # cuts pixels and empties frames (which triggers the re-seeding policy).
    rng = np.random.default_rng(0)
    masks = np.stack([random_sequence(rng) for _ in range(3)])
    got = np.asarray(_jit_filter()(masks))
    changed = (got != masks).any(axis=(-1, -2))
    emptied = (got.sum(axis=(-1, -2)) == 0) & (masks.sum(axis=(-1, -2)) > 0)
    assert changed.any() and not changed.all() and emptied.any()
    for o in range(3):
        np.testing.assert_array_equal(got[o], ref_filter(masks[o])[0])


def _half_motion(t):
    return 0.5 * t


def test_parametric_tracker_plugs_in():
    rng = np.random.default_rng(11)
    masks = np.stack([random_sequence(rng, dropouts=False) for _ in range(4)])
    for fn in (_half_motion, jnp.zeros_like):
        got = np.asarray(_jit_filter("pt", 0.0, fn)(masks))

        def np_fn(t, fn=fn):
            return np.asarray(fn(jnp.asarray(t)))

        for o in range(4):
            want, _ = ref_filter(masks[o], "pt", np_fn)
            np.testing.assert_array_equal(got[o], want)
    # motion_fn = identity is exactly the constant-velocity variant.
    np.testing.assert_array_equal(
        np.asarray(_jit_filter("pt", 0.0, jnp.asarray)(masks)), np.asarray(_jit_filter("cv")(masks))
    )


def test_distractor_blobs_far_from_the_object_are_removed():
    obj = np.stack([rect(2 + 2 * t, 3 + t, 5, 4, value=0.9) for t in range(T)])
    distractor = np.stack(
        [
            rect(22, 14, 4, 4, value=0.8) if t >= 2 else np.zeros((H, W), np.float32)
            for t in range(T)
        ]
    )
    masks = np.maximum(obj, distractor)
    got = np.asarray(_jit_filter()(masks[None]))[0]
    np.testing.assert_array_equal(got[2:], obj[2:])  # filtered from frame 3 on
    np.testing.assert_array_equal(got[:2], masks[:2])  # frames 1-2 untouched
    np.testing.assert_array_equal(got, ref_filter(masks)[0])


@pytest.mark.parametrize(
    "start,velocity",
    [((2, 2, 5, 4), (2, 1, 0, 0)), ((10, 2, 5, 4), (-1, 1, 1, 1)), ((4, 12, 9, 4), (2, -1, -1, 0))],
)
def test_constant_velocity_motion_is_followed_exactly(start, velocity):
    (x, y, w, h), (vx, vy, dw, dh) = start, velocity
    boxes = [(x + vx * t, y + vy * t, w + dw * t, h + dh * t) for t in range(T)]
    assert all(b[0] >= 0 and b[1] >= 0 and b[0] + b[2] <= W and b[1] + b[3] <= H for b in boxes)
    masks = np.stack([rect(*b) for b in boxes])
    state = bx.box_filter_init(())
    step = jax.jit(bx.box_filter_step)
    for t in range(T):
        state, out = step(state, jnp.asarray(masks[t]))
        np.testing.assert_array_equal(np.asarray(out), masks[t])  # nothing of the object is cut
        np.testing.assert_array_equal(np.asarray(state.prev_box), boxes[t])
    assert int(state.count) == T


def test_all_empty_sequence_passes_through():
    masks = np.zeros((2, T, H, W), np.float32)
    np.testing.assert_array_equal(np.asarray(_jit_filter()(masks)), masks)


def test_object_that_vanishes_is_reseeded_not_lost():
    frames = []
    for t in range(T):
        if t in (3, 4):
            frames.append(np.zeros((H, W), np.float32))  # occluded
        elif t < 3:
            frames.append(rect(2 + t, 2, 4, 4))
        else:  # reappears far from where constant velocity would put it
            frames.append(rect(18 + t, 12, 4, 4))
    masks = np.stack(frames)
    got = np.asarray(_jit_filter()(masks[None]))[0]
    np.testing.assert_array_equal(got, masks)  # a clean track is never cut
    np.testing.assert_array_equal(got, ref_filter(masks)[0])


def test_lost_prediction_recovers_after_two_frames():
    # The object jumps: the CV box misses it, frame 3's filtered mask is empty,
    # frames 4-5 re-seed unfiltered, and frame 6 is filtered again (its blob removed).
    frames = [
        rect(2, 2, 4, 4),
        rect(3, 2, 4, 4),
        rect(20, 12, 4, 4),
        rect(20, 12, 4, 4),
        rect(21, 12, 4, 4),
    ]
    blob = rect(1, 14, 2, 2)
    frames.append(np.maximum(rect(22, 12, 4, 4), blob))
    masks = np.stack(frames)
    got = np.asarray(bx.filter_masks(masks))
    assert got[2].sum() == 0
    np.testing.assert_array_equal(got[3:5], masks[3:5])
    np.testing.assert_array_equal(got[5], rect(22, 12, 4, 4))
    np.testing.assert_array_equal(got, ref_filter(masks)[0])


def test_batched_equals_per_object_loop_and_streaming():
    rng = np.random.default_rng(5)
    masks = np.stack(
        [[random_sequence(rng) for _ in range(3)] for _ in range(2)]
    )  # [B, O, T, H, W]
    batched = np.asarray(_jit_filter()(masks))
    for b in range(2):
        for o in range(3):
            np.testing.assert_array_equal(batched[b, o], np.asarray(_jit_filter()(masks[b, o])))
    state = bx.box_filter_init((2, 3))
    step = jax.jit(bx.box_filter_step)
    for t in range(T):
        state, out = step(state, jnp.asarray(masks[:, :, t]))
        np.testing.assert_array_equal(np.asarray(out), batched[:, :, t])
    assert state.count.shape == (2, 3) and (np.asarray(state.count) == T).all()


def test_bool_masks_stay_bool():
    rng = np.random.default_rng(6)
    masks = np.stack([random_sequence(rng) for _ in range(2)]) > 0.5
    got = bx.filter_masks(masks)
    assert got.dtype == jnp.bool_
    np.testing.assert_array_equal(
        np.asarray(got), np.asarray(_jit_filter()(masks.astype(np.float32))) > 0.5
    )


def test_bad_input_raises_vosjax_error():
    masks = jnp.zeros((2, T, H, W))
    with pytest.raises(
        VosjaxError, match="filter_masks: mode='pt' needs motion_fn.*vosjax.models.tracker"
    ):
        bx.filter_masks(masks, mode="pt")
    with pytest.raises(VosjaxError, match="motion_fn is only used with mode='pt'"):
        bx.filter_masks(masks, mode="cv", motion_fn=_half_motion)
    with pytest.raises(VosjaxError, match="'mode' must be 'cv'"):
        bx.filter_masks(masks, mode="kalman")
    with pytest.raises(VosjaxError, match="filter_masks.*'masks'.*at least 3"):
        bx.filter_masks(masks[0, 0])
    with pytest.raises(VosjaxError, match="'margin' must be >= 0"):
        bx.filter_masks(masks, margin=-0.1)
    with pytest.raises(VosjaxError, match="box_filter_init"):
        bx.box_filter_step(bx.box_filter_init((3,)), masks[:, 0])
    with pytest.raises(VosjaxError, match="motion_fn must map"):
        bx.box_filter_step(bx.box_filter_init((2,)), masks[:, 0], "pt", lambda t: t[..., :2])
    with pytest.raises(VosjaxError, match="mask_to_box.*boolean or floating"):
        bx.mask_to_box(jnp.zeros((4, 4), jnp.int32))
    with pytest.raises(VosjaxError, match="'box' must be"):
        bx.box_to_attention_map(jnp.zeros((3,)), H, W)
    with pytest.raises(VosjaxError, match="'height' must be a positive int"):
        bx.box_to_attention_map(jnp.zeros((4,)), 0, W)
