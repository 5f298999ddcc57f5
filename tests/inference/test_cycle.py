"""Gradient correction inside the engine (cyclic VOS eq. 7-11)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from vosjax.data.normalize import normalize_frames
from vosjax.inference import EngineConfig, run_video
from vosjax.inference.cycle import correct_masks, cycle_erf_map, reconstruction_objective
from vosjax.inference.state import CorrectionRefs
from vosjax.losses import cycle_mask_loss
from vosjax.models.base import SegmentOptions

H, W, O = 16, 24, 3


def _sobel_np(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel x / y with replicated borders, written out."""
    p = np.pad(y, [(0, 0)] * (y.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    gx = np.zeros_like(y)
    gy = np.zeros_like(y)
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    for i in range(3):
        for j in range(3):
            win = p[..., i : i + y.shape[-2], j : j + y.shape[-1]]
            gx += kx[i, j] * win
            gy += kx.T[i, j] * win
    return gx, gy


@pytest.fixture(scope="module")
def problem(tk, toy_model, toy_variables):
    """A current frame with 3 objects and, per object, a reference frame and mask."""
    frames, labels = tk.make_video(6, (H, W), appear=(0, 0, 0), seed=3, speed=2.0, noise=5)
    x = normalize_frames(jnp.asarray(frames))  # [T, H, W, 3]
    cur = x[5][None]  # [1, H, W, 3]
    feats = toy_model.encode_key(toy_variables, cur[:, None])
    ref_t = np.array([0, 1, 2])  # each object its own reference frame
    refs = CorrectionRefs(
        frames=x[ref_t][None],
        masks=jnp.asarray(
            np.stack([labels[t] == k + 1 for k, t in enumerate(ref_t)])[None], jnp.float32
        ),
        valid=jnp.array([[True, True, False]]),  # object 3 has no reference yet
    )
    y0 = jnp.asarray(np.stack([labels[5] == k for k in (1, 2, 3)])[None], jnp.float32)
    y0 = jnp.clip(y0 + 0.2 * jax.random.normal(jax.random.PRNGKey(0), y0.shape), 0, 1)
    ref_feats = toy_model.encode_key(toy_variables, refs.frames.reshape(O, 1, H, W, 3))
    return cur, feats, refs, ref_feats, y0


def test_objective_equals_per_object_back_predictions(problem, toy_model, toy_variables):
    cur, feats, refs, ref_feats, y0 = problem
    gamma, smooth = 0.7, 0.5
    obj = reconstruction_objective(
        toy_model,
        toy_variables,
        cur,
        feats,
        refs,
        ref_feats,
        refs.valid,
        (H // 4, W // 4),
        gamma=gamma,
        smooth=smooth,
        top_k=None,
    )
    got = float(jax.jit(obj)(y0))

    @jax.jit
    def back_prediction(y_k, ref_frame):  # one object, with a memory of just (X_t, Y_k)
        mem = toy_model.init_memory(toy_variables, 1, 1, (H // 4, W // 4))
        mem = toy_model.memorize(
            toy_variables,
            mem,
            cur[:, None],
            y_k[None, None, None],
            jnp.ones((1, 1), bool),
            feats,
            jnp.ones(1, bool),
        )
        rf = toy_model.encode_key(toy_variables, ref_frame[None, None])
        lg = toy_model.segment(
            toy_variables, mem, rf, jnp.ones((1, 1), bool), SegmentOptions(top_k=None)
        )
        return jax.nn.sigmoid(lg[0, 0, 0])

    want = 0.0
    for k in range(O):
        if not bool(refs.valid[0, k]):
            continue
        pred = back_prediction(y0[0, k], refs.frames[0, k])
        want += float(cycle_mask_loss(pred, refs.masks[0, k], gamma))
        gx, gy = _sobel_np(np.asarray(y0[0, k], np.float64))
        want += smooth * float(np.mean(gx**2 + gy**2))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_objective_gradients(problem, toy_model, toy_variables):
    cur, feats, refs, ref_feats, y0 = problem
    obj = jax.jit(
        reconstruction_objective(
            toy_model,
            toy_variables,
            cur,
            feats,
            refs,
            ref_feats,
            refs.valid,
            (H // 4, W // 4),
            gamma=1.0,
            smooth=0.75,
            top_k=None,
        )
    )
    check_grads(
        obj, (jnp.clip(y0, 0.05, 0.95),), order=1, modes=("rev",), eps=1e-3, atol=2e-2, rtol=2e-2
    )
    g = jax.jit(jax.grad(obj))(y0)
    assert float(jnp.abs(g[0, 2]).max()) == 0.0  # no reference: no gradient
    assert float(jnp.abs(g[0, :2]).max()) > 0.0


def test_correction_lowers_the_objective(problem, toy_model, toy_variables):
    cur, feats, refs, ref_feats, y0 = problem
    rows = refs.valid
    kw = dict(gamma=1.0, smooth=0.75, top_k=None)
    obj = jax.jit(
        reconstruction_objective(
            toy_model, toy_variables, cur, feats, refs, ref_feats, rows, (H // 4, W // 4), **kw
        )
    )
    correct = jax.jit(
        lambda y: correct_masks(
            toy_model,
            toy_variables,
            cur,
            feats,
            y,
            refs,
            rows,
            (H // 4, W // 4),
            num_iters=5,
            rate=1e-3,
            **kw,
        )
    )
    y = correct(y0)
    assert float(obj(y)) < float(obj(y0))
    np.testing.assert_array_equal(y[0, 2], y0[0, 2])  # untouched row
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_engine_corrects_scheduled_frames_only(tk, toy_engine, toy_variables):
    frames, labels = tk.make_video(8, (48, 64), appear=(0, 0), seed=4, noise=4)
    given = tk.first_masks(labels)
    out = {}
    base = EngineConfig(max_objects=4, bucket_objects=False, return_probs=True)  # test_engine's
    for k in (0, 3):
        cfg = base.replace(correction_every=k, correction_iters=3, correction_rate=0.01)
        engine = toy_engine(cfg)
        preds = list(
            run_video(engine, toy_variables, ((f, given.get(t)) for t, f in enumerate(frames)))
        )
        out[k] = np.stack([p.probs for p in preds])
        assert engine.num_traces == 1
    # Frames 0-2 come before the first corrected frame (3); frames 3 and 6 are corrected.
    np.testing.assert_allclose(out[0][:3], out[3][:3], atol=1e-5)  # two programs: rounding
    assert np.abs(out[0][3] - out[3][3]).max() > 1e-3
    assert np.abs(out[0][6] - out[3][6]).max() > 1e-3


def test_cycle_erf_finds_the_object_on_the_reference_frame(tk, toy_model, toy_variables):
    """cycle-ERF (eq. 12) from an empty mask: the stand-in model matches colours, so the map
    must light up the object's pixels of the reference frame (and stay >= 0)."""
    frames, labels = tk.make_video(6, (H, W), appear=(0, 0), seed=9, speed=2.0, noise=3)
    x = normalize_frames(jnp.asarray(frames))
    target = jnp.asarray(np.stack([labels[5] == k for k in (1, 2)])[None], jnp.float32)
    erf = jax.jit(
        lambda r, t, m: cycle_erf_map(
            toy_model, toy_variables, r, t, m, (H // 4, W // 4), num_iters=10, rate=0.01
        )
    )(x[0][None], x[5][None], target)
    erf = np.asarray(erf[0])
    assert erf.min() >= 0.0
    for k in (1, 2):
        inside = labels[0] == k
        assert erf[k - 1][inside].mean() > 3 * erf[k - 1][~inside].mean() + 1e-6
