"""The TrickVOS parametric box tracker: MLP, loss, and filter_masks(mode="pt") end to end."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy.special import erf

from vosjax.errors import VosjaxError
from vosjax.models import tracker
from vosjax.ops import boxes


def np_mlp(params, t, scale=32.0):
    """T' = s * MLP(T / s): Dense layers dense0..dense4, exact GELU between them."""
    p = params["params"]
    x = np.asarray(t, np.float64) / scale
    n = len(p)
    for i in range(n):
        x = x @ np.asarray(p[f"dense{i}"]["kernel"], np.float64) + np.asarray(
            p[f"dense{i}"]["bias"], np.float64
        )
        if i < n - 1:
            x = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    return x * scale


@pytest.fixture(scope="module")
def params():
    return tracker.init_tracker(jax.random.key(0))


def test_mlp_matches_numpy_reference(params):
    p = params["params"]
    assert sorted(p) == [f"dense{i}" for i in range(5)]
    assert p["dense0"]["kernel"].shape == (4, 64) and p["dense4"]["kernel"].shape == (64, 4)
    fn = tracker.make_motion_fn(params)
    t = np.random.default_rng(0).normal(scale=10.0, size=(3, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(fn(jnp.asarray(t)), np_mlp(params, t), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(jax.jit(fn)(t), fn(t), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(jax.vmap(fn)(t), fn(t), rtol=1e-6, atol=1e-5)


def np_box(fg):
    rows, cols = np.where(fg)
    if rows.size == 0:
        return np.zeros(4)
    return np.array(
        [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1], float
    )


def np_filter(masks, motion_fn):
    """Algorithm 1 (TrickVOS) by loops, with the empty-box policy of vosjax.ops.boxes."""
    hh, ww = masks.shape[-2:]
    prev, pprev, count = np.zeros(4), np.zeros(4), 0
    out = []
    for m in masks:
        ready = count >= 2 and prev[2] > 0 and prev[3] > 0 and pprev[2] > 0 and pprev[3] > 0
        if ready:
            x, y, bw, bh = prev + np.asarray(motion_fn(jnp.asarray(prev - pprev, jnp.float32)))
            amap = np.zeros((hh, ww))
            for r in range(hh):
                for c in range(ww):
                    amap[r, c] = x <= c + 0.5 < x + bw and y <= r + 0.5 < y + bh
            f = m * amap
        else:
            f = m
        pprev, prev, count = prev, np_box(f > 0.5), count + 1
        out.append(f)
    return np.stack(out)


def moving_square_video(n=7, hh=40, ww=48, distractor_from=3):
    """An object moving at constant velocity and a look-alike blob far away from frame 3 on."""
    masks = np.zeros((n, hh, ww), np.float32)
    for t in range(n):
        masks[t, 5 + 2 * t : 15 + 2 * t, 4 + 3 * t : 14 + 3 * t] = 1.0
        if t >= distractor_from:
            masks[t, 30:38, 36:46] = 1.0
    return masks


def test_filter_masks_pt_matches_loop_reference(params):
    fn = tracker.make_motion_fn(params)
    masks = moving_square_video()
    got = boxes.filter_masks(jnp.asarray(masks), mode="pt", motion_fn=fn)
    np.testing.assert_array_equal(got, np_filter(masks, fn))
    # Streaming form, frame by frame, gives the same.
    state = boxes.box_filter_init(())
    for t in range(masks.shape[0]):
        state, f = boxes.box_filter_step(state, jnp.asarray(masks[t]), mode="pt", motion_fn=fn)
        np.testing.assert_array_equal(f, got[t])


@pytest.fixture(scope="module")
def trained():
    """A tracker fitted on constant-velocity ground-truth box tracks (a few hundred Adam steps)."""
    rng = np.random.default_rng(1)
    start = rng.uniform(20, 200, size=(512, 1, 4))
    vel = rng.uniform(-12, 12, size=(512, 1, 4))
    tracks = jnp.asarray(start + vel * np.arange(5)[None, :, None], jnp.float32)  # [N, 5, 4]
    params = tracker.init_tracker(jax.random.key(2))
    opt = optax.adam(3e-3)

    def loss_fn(p):
        return tracker.tracker_loss(tracker.predict_boxes(p, tracks), tracks[:, 2:], 2.0)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    state = opt.init(params)
    first = None
    for _ in range(400):
        params, state, loss = step(params, state)
        first = loss if first is None else first
    return params, float(first), float(loss)


def test_trained_tracker_filters_a_distractor(trained):
    params, first_loss, last_loss = trained
    assert last_loss < 0.1 * first_loss, (first_loss, last_loss)
    masks = moving_square_video(n=8)
    clean = moving_square_video(n=8, distractor_from=99)
    pt = np.asarray(boxes.filter_masks(masks, mode="pt", motion_fn=tracker.make_motion_fn(params)))
    cv = np.asarray(boxes.filter_masks(masks, mode="cv"))
    # Frames 3+ lose the far-away distractor and keep (almost all of) the object.
    for out in (pt, cv):
        assert out[3:, 30:38, 36:46].sum() == 0
        inter = (out[3:] * clean[3:]).sum()
        assert inter / clean[3:].sum() > 0.95
    np.testing.assert_array_equal(pt[:3], masks[:3])


def np_tracker_loss(pred, gt, uw, valid=None):
    pred, gt = (
        np.asarray(pred, np.float64).reshape(-1, 4),
        np.asarray(gt, np.float64).reshape(-1, 4),
    )
    valid = np.ones(len(pred)) if valid is None else np.asarray(valid, np.float64).ravel()
    total = 0.0
    for p, g, m in zip(pred, gt, valid):
        wgt = uw if (p[2] < g[2] or p[3] < g[3]) else 1.0
        total += m * wgt * np.abs(p - g).sum()
    return total / max(1.0, valid.sum())


@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(6,), (2, 3)]),
    uw=st.sampled_from([1.0, 2.0, 5.0]),
)
def test_tracker_loss_matches_reference(seed, shape, uw):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 50, size=shape + (4,)).astype(np.float32)
    pred = (gt + rng.normal(scale=5.0, size=gt.shape)).astype(np.float32)
    valid = rng.uniform(size=shape) > 0.3
    got = tracker.tracker_loss(pred, gt, uw)
    np.testing.assert_allclose(got, np_tracker_loss(pred, gt, uw), rtol=1e-5)
    got_v = tracker.tracker_loss(pred, gt, uw, valid=jnp.asarray(valid))
    np.testing.assert_allclose(got_v, np_tracker_loss(pred, gt, uw, valid), rtol=1e-5)


def test_tracker_loss_weights_and_gradient():
    gt = jnp.array([[10.0, 10.0, 20.0, 20.0], [10.0, 10.0, 20.0, 20.0]])
    small = jnp.array([[10.0, 10.0, 18.0, 20.0], [10.0, 10.0, 22.0, 20.0]])  # 1st too narrow
    np.testing.assert_allclose(tracker.tracker_loss(small, gt, 3.0), (3 * 2 + 2) / 2)
    # Away from the kinks (|p - g| > 0) the loss is smooth in the prediction.
    rng = np.random.default_rng(0)
    g = rng.uniform(5, 50, size=(5, 4))
    p = g + np.sign(rng.normal(size=g.shape)) * rng.uniform(1.0, 3.0, size=g.shape)
    check_grads(
        lambda p: tracker.tracker_loss(p, jnp.asarray(g), 2.0),
        (jnp.asarray(p),),
        order=1,
        modes=("rev",),
        eps=1e-3,
    )
    grad = jax.grad(lambda p: tracker.tracker_loss(p, jnp.asarray(g), 4.0))(jnp.asarray(p))
    under = (p[:, 2] < g[:, 2]) | (p[:, 3] < g[:, 3])
    want = np.sign(p - g) * np.where(under, 4.0, 1.0)[:, None] / len(p)
    np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_predict_boxes_is_one_step_ahead(params):
    track = jnp.asarray(np.random.default_rng(3).uniform(0, 60, size=(2, 6, 4)), jnp.float32)
    pred = tracker.predict_boxes(params, track)
    assert pred.shape == (2, 4, 4)
    motion = np.asarray(track[:, 1:-1] - track[:, :-2])
    np.testing.assert_allclose(pred, track[:, 1:-1] + np_mlp(params, motion), rtol=1e-5, atol=1e-4)


def test_errors(params):
    with pytest.raises(VosjaxError, match="variables"):
        tracker.make_motion_fn({"kernel": 1})
    bare = tracker.make_motion_fn(params["params"])  # the bare parameter tree works too
    np.testing.assert_allclose(bare(jnp.ones((4,))), tracker.make_motion_fn(params)(jnp.ones((4,))))
    with pytest.raises(VosjaxError, match="layers"):
        cfg3 = tracker.default_config()
        cfg3.num_layers = 3
        tracker.make_motion_fn(params, cfg3)
    with pytest.raises(VosjaxError, match=r"\[\.\.\., 4\]"):
        tracker.make_motion_fn(params)(jnp.zeros((3, 2)))
    with pytest.raises(VosjaxError, match="under_weight"):
        tracker.tracker_loss(jnp.zeros((2, 4)), jnp.zeros((2, 4)), 0.5)
    with pytest.raises(VosjaxError, match="same shape"):
        tracker.tracker_loss(jnp.zeros((2, 4)), jnp.zeros((3, 4)))
    with pytest.raises(VosjaxError, match="valid"):
        tracker.tracker_loss(jnp.zeros((2, 4)), jnp.zeros((2, 4)), valid=jnp.ones((3,), bool))
    with pytest.raises(VosjaxError, match="T >= 3"):
        tracker.predict_boxes(params, jnp.zeros((2, 4)))
    cfg = tracker.default_config()
    cfg.hidden = 0
    with pytest.raises(VosjaxError, match="hidden"):
        tracker.init_tracker(jax.random.key(0), cfg)


def test_tracker_bundle_with_non_default_shape_loads_its_shape(tmp_path):
    """A tracker run stores its MLP shape under ``model`` (configs/tracker.py); the engine reads it back."""
    from vosjax.checkpoint import export_bundle
    from vosjax.inference.config import EngineConfig
    from vosjax.inference.segmenter import _tracker_motion_fn

    cfg = tracker.default_config()
    cfg.name = "tracker"
    cfg.num_layers, cfg.hidden, cfg.motion_scale = 3, 16, 8.0
    variables = tracker.init_tracker(jax.random.key(3), cfg)
    assert sorted(variables["params"]) == ["dense0", "dense1", "dense2"]
    bundle = export_bundle(tmp_path / "bundle", {"model": cfg.to_dict()}, variables)
    fn = _tracker_motion_fn(EngineConfig(box_filter="pt", tracker=str(bundle)), None)
    t = np.random.default_rng(1).normal(scale=5.0, size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(fn(jnp.asarray(t)), np_mlp(variables, t, scale=8.0), rtol=1e-5, atol=1e-4)
