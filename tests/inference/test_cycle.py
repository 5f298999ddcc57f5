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


def _back_predictions(toy_model, toy_variables, cur, feats, y, ref_frames):
    """Per object, a memory of just (X_t, Y_k) predicting the object on its reference frame."""

    @jax.jit
    def one(y_k, ref_frame):
        mem = toy_model.init_memory(toy_variables, 1, 1, (H // 4, W // 4))
        mem = toy_model.memorize(
            toy_variables, mem, cur[:, None], y_k[None, None, None], jnp.ones((1, 1), bool),
            feats, jnp.ones(1, bool),
        )
        rf = toy_model.encode_key(toy_variables, ref_frame[None, None])
        lg = toy_model.segment(
            toy_variables, mem, rf, jnp.ones((1, 1), bool), SegmentOptions(top_k=None)
        )
        return jax.nn.sigmoid(lg[0, 0, 0])

    return np.stack([np.asarray(one(y[k], ref_frames[k]), np.float64) for k in range(len(y))])


def _authors_loss_np(pred, ref_masks, rows, gamma, top_p, y, smooth):
    """The authors' criterion (libs/utils/loss.py) on Soft_aggregation (libs/models/models.py:19)."""
    k = np.flatnonzero(rows)
    ps = pred[k]
    em = np.concatenate([np.prod(1 - ps, axis=0, keepdims=True), ps])
    em = np.clip(em, 1e-7, 1 - 1e-7)
    logit = np.log(em / (1 - em))
    e = np.exp(logit - logit.max(0))
    fout = e / e.sum(0)
    masks = ref_masks[k].astype(np.float64)
    target = np.concatenate([np.clip(1 - masks.sum(0, keepdims=True), 0, 1), masks])
    ce_pix = np.sum(-np.log(fout) * target, axis=0).ravel()
    num = int(H * W * top_p)
    ce = np.sort(ce_pix)[::-1][:num].mean()
    iou = [1 - np.minimum(fout[i], target[i]).sum() / np.maximum(fout[i], target[i]).sum()
           for i in range(1, len(k) + 1)]
    loss = np.mean(iou) + gamma * ce
    sm = []
    for i in k:
        gx, gy = _sobel_np(np.asarray(y[i], np.float64))
        sm.append(np.mean(gx**2 + gy**2))
    return loss + smooth * np.mean(sm)


def _objective(toy_model, toy_variables, problem, rows, **kw):
    cur, feats, refs, ref_feats, _ = problem
    return reconstruction_objective(
        toy_model, toy_variables, cur, feats, refs, ref_feats, rows, (H // 4, W // 4), **kw
    )


def test_objective_equals_authors_criterion_on_aggregated_back_predictions(
    problem, toy_model, toy_variables
):
    cur, feats, refs, ref_feats, y0 = problem
    gamma, smooth, top_p = 0.7, 0.5, 0.4
    obj = _objective(toy_model, toy_variables, problem, refs.valid, gamma=gamma, smooth=smooth,
                     top_p=top_p, top_k=None)
    got = float(jax.jit(obj)(y0))
    pred = _back_predictions(toy_model, toy_variables, cur, feats, y0[0], refs.frames[0])
    want = _authors_loss_np(pred, np.asarray(refs.masks[0]), np.asarray(refs.valid[0]), gamma,
                            top_p, np.asarray(y0[0]), smooth)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # no rows: nothing to correct, the objective is 0 and flat
    none = jnp.zeros_like(refs.valid)
    obj0 = jax.jit(_objective(toy_model, toy_variables, problem, none, top_k=None))
    assert float(obj0(y0)) == 0.0
    assert float(jnp.abs(jax.grad(obj0)(y0)).max()) == 0.0


def test_objective_gradients(problem, toy_model, toy_variables):
    _, _, refs, _, y0 = problem
    obj = jax.jit(_objective(toy_model, toy_variables, problem, refs.valid, gamma=1.0,
                             smooth=0.75, top_k=None))
    check_grads(
        obj, (jnp.clip(y0, 0.05, 0.95),), order=1, modes=("rev",), eps=1e-3, atol=2e-2, rtol=2e-2
    )
    g = jax.jit(jax.grad(obj))(y0)
    assert float(jnp.abs(g[0, 2]).max()) == 0.0  # no reference: no gradient
    assert float(jnp.abs(g[0, :2]).max()) > 0.0


def test_correct_masks_is_the_authors_update_loop(problem, toy_model, toy_variables):
    """test.py:175-187: ``for m in range(loop): out = out - rate * d loss / d out`` on the
    aggregated probabilities, no clip; the background channel and other rows are kept."""
    cur, feats, refs, _, y0 = problem
    rows = refs.valid
    bg = jnp.prod(1 - y0, axis=1, keepdims=True)
    big = jax.nn.softmax(jnp.log(jnp.clip(jnp.concatenate([bg, y0], 1), 1e-7, 1 - 1e-7)), 1)
    rate, n = 150.0, 3
    got = jax.jit(
        lambda p: correct_masks(
            toy_model, toy_variables, cur, feats, p, refs, rows, (H // 4, W // 4),
            num_iters=n, rate=rate, gamma=1.0, smooth=0.0, top_k=None,
        )
    )(big)
    obj = _objective(toy_model, toy_variables, problem, rows, top_k=None)
    grad = jax.jit(jax.grad(obj))
    out = np.asarray(big[:, 1:], np.float64)
    for _ in range(n):
        out = out - rate * np.asarray(grad(jnp.asarray(out, jnp.float32)), np.float64)
    np.testing.assert_allclose(np.asarray(got[:, 1:3]), out[:, :2], rtol=2e-4, atol=2e-4)
    np.testing.assert_array_equal(got[:, 0], big[:, 0])  # background untouched
    np.testing.assert_array_equal(got[:, 3], big[:, 3])  # object without a reference
    assert np.abs(out[:, :2] - np.asarray(big[:, 1:3])).max() > 1e-3  # it moved
    # alpha = 150 is the authors' step for their network at 240 x 427; on this toy model a
    # small step shows that the update descends the objective
    y = big[:, 1:]
    assert float(obj(y - 0.5 * grad(y))) < float(obj(y))


def test_engine_corrects_scheduled_frames_only(tk, toy_engine, toy_variables):
    frames, labels = tk.make_video(6, (48, 64), appear=(0, 0), seed=4, noise=4)
    given = tk.first_masks(labels)
    out = {}
    base = EngineConfig(max_objects=4, bucket_objects=False, return_probs=True,
                        memory_policy="every_k", mem_every=3)
    for k, show in ((0, False), (3, False), (3, True)):
        cfg = base.replace(correction_every=k, correction_iters=3, correction_output=show)
        engine = toy_engine(cfg)
        preds = list(
            run_video(engine, toy_variables, ((f, given.get(t)) for t, f in enumerate(frames)))
        )
        out[k, show] = np.stack([p.probs for p in preds])
        assert engine.num_traces == 1
    plain, corr, shown = out[0, False], out[3, False], out[3, True]
    # Frames 0-3 come before the first corrected frame enters the memory (3 is corrected,
    # but by default its output is the uncorrected prediction, as the authors' test.py).
    np.testing.assert_allclose(plain[:4], corr[:4], atol=1e-5)  # two programs: rounding
    assert np.abs(plain[4] - corr[4]).max() > 1e-3  # the memory holds corrected frame 3
    assert np.abs(shown[3] - plain[3]).max() > 1e-3  # correction_output shows it
    np.testing.assert_allclose(shown[4:], corr[4:], atol=1e-5)  # same memory either way


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
