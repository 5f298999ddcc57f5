"""Tests of vosjax.losses against slow, explicit NumPy references (float64).

Each loss is checked on random inputs (hypothesis over a few fixed shapes),
its gradient against finite differences (jax.test_util.check_grads and a full
per-coordinate central difference, in float64), on the edge cases (all
background, all foreground, probabilities exactly 0 / 1, empty objects), on
known hand values, and jit against eager.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from vosjax import losses as L
from vosjax.errors import VosjaxError

# A few fixed shapes keep XLA compilations bounded; values vary per example.
MAP_SHAPES = [(2, 6, 7), (2, 2, 12, 13)]  # [..., H, W]
CLS_SHAPES = [(2, 3, 6, 7), (1, 4, 2, 5, 6)]  # [B, C, ...]
seeds = st.integers(0, 2**31 - 1)


def _probs(rng, shape, kind):
    """Probabilities in [0, 1]; 'extreme' puts exact 0s and 1s in a third of the pixels."""
    p = rng.uniform(0.02, 0.98, shape)
    if kind == "extreme":
        pick = rng.uniform(size=shape)
        p = np.where(pick < 0.15, 0.0, np.where(pick > 0.85, 1.0, p))
    return p


def _mask(rng, shape, kind="random"):
    if kind == "empty":
        return np.zeros(shape)
    if kind == "full":
        return np.ones(shape)
    return (rng.uniform(size=shape) < 0.4).astype(np.float64)


# ----------------------------------------------------------------------------- references


def ref_pixel_ce(logits, labels, obj_valid=None):
    """Cross entropy per pixel by an explicit loop over pixels and classes."""
    c = logits.shape[1]
    out = np.zeros(labels.shape)
    for idx in np.ndindex(*labels.shape):
        b, rest = idx[0], idx[1:]
        classes = [k for k in range(c) if k == 0 or obj_valid is None or obj_valid[b, k - 1]]
        z = {k: float(logits[(b, k) + rest]) for k in classes}
        top = max(z.values())
        lse = top + math.log(sum(math.exp(v - top) for v in z.values()))
        out[idx] = lse - z[int(labels[idx])]
    return out


def ref_bootstrapped_ce(logits, labels, top_p, obj_valid=None):
    losses = np.sort(ref_pixel_ce(logits, labels, obj_valid).ravel())[::-1]
    k = min(max(int(round(top_p * losses.size)), 1), losses.size)
    return losses[:k].mean()


def ref_ssim_map(x, y, window=11, sigma=1.5):
    """SSIM map of two 2-D maps: explicit 2-D Gaussian filter loops, zero padding."""
    r = window // 2
    g = np.array([math.exp(-((i - r) ** 2) / (2 * sigma**2)) for i in range(window)])
    g = g / g.sum()
    kernel = np.outer(g, g)
    h, w = x.shape

    def filt(a):
        padded = np.zeros((h + 2 * r, w + 2 * r))
        padded[r:r + h, r:r + w] = a
        out = np.zeros((h, w))
        for i in range(window):
            for j in range(window):
                out += kernel[i, j] * padded[i:i + h, j:j + w]
        return out

    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    sx, sy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sx + sy + c2))


def _per_map(fn, *arrays, valid=None):
    """Apply fn to every [H, W] map and average over (valid) maps."""
    lead = arrays[0].shape[:-2]
    vals, weights = [], []
    for idx in np.ndindex(*lead):
        vals.append(fn(*(a[idx] for a in arrays)))
        weights.append(1.0 if valid is None else float(valid[idx[: valid.ndim]]))
    vals, weights = np.array(vals), np.array(weights)
    return (vals * weights).sum() / max(weights.sum(), 1.0)


def ref_ssim_loss(x, y, valid=None, window=11, sigma=1.5):
    return 1.0 - _per_map(lambda a, b: ref_ssim_map(a, b, window, sigma).mean(), x, y, valid=valid)


def ref_iou_map(p, g):
    inter = sum(p[i, j] * g[i, j] for i in range(p.shape[0]) for j in range(p.shape[1]))
    union = p.sum() + g.sum() - inter
    return 0.0 if union == 0 else 1.0 - inter / union


def ref_dice_clip(p, g, obj_valid=None, smooth=1.0):
    total = 0.0
    for b in range(p.shape[0]):
        for k in range(p.shape[1]):
            if obj_valid is not None and not obj_valid[b, k]:
                continue
            inter = (p[b, k] * g[b, k]).sum()
            dice = (2 * inter + smooth) / (p[b, k].sum() + g[b, k].sum() + smooth)
            total += 1.0 - dice
    return total / p.shape[0]


def ref_jaccard_set_loss(fg, wrong):
    """Delta_J(M) of Berman et al.: Jaccard loss of the prediction fg XOR M."""
    pred = fg ^ wrong
    union = (fg | pred).sum()
    return 0.0 if union == 0 else 1.0 - (fg & pred).sum() / union


def ref_lovasz_extension(errors, fg):
    """Lovasz extension by its definition: sum_i e_(i) (Delta(S_i) - Delta(S_{i-1}))."""
    errors, fg = errors.ravel(), fg.ravel().astype(bool)
    total, prev, chosen = 0.0, 0.0, np.zeros(errors.size, bool)
    for idx in np.argsort(-errors, kind="stable"):
        chosen[idx] = True
        cur = ref_jaccard_set_loss(fg, chosen)
        total += errors[idx] * (cur - prev)
        prev = cur
    return total


def ref_lovasz_hinge_map(logits, labels):
    errors = np.maximum(0.0, 1.0 - logits * (2.0 * labels - 1.0))
    return ref_lovasz_extension(errors, labels > 0)


def ref_lovasz_softmax(probs, labels, classes="present", per_image=False):
    groups = [(probs[b:b + 1], labels[b:b + 1]) for b in range(probs.shape[0])] if per_image \
        else [(probs, labels)]
    out = []
    for p, lab in groups:
        c = p.shape[1]
        ids = range(c) if isinstance(classes, str) else classes
        losses = []
        for k in ids:
            fg = lab == k
            if classes == "present" and not fg.any():
                continue
            losses.append(ref_lovasz_extension(np.abs(fg - p[:, k]), fg))
        out.append(np.mean(losses) if losses else 0.0)
    return np.mean(out)


def ref_cosine(e1, e2):
    out = []
    for a, b in zip(e1.reshape(e1.shape[0], -1), e2.reshape(e2.shape[0], -1)):
        na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
        out.append(0.0 if na == 0 or nb == 0 else sum(a * b) / (na * nb))
    return np.mean(out)


def ref_cycle_map(p, y, gamma=1.0, eps=1e-6):
    big = np.maximum(p, y).sum()
    iou = 0.0 if big == 0 else 1.0 - np.minimum(p, y).sum() / big
    pc = np.clip(p, eps, 1 - eps)
    bce = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    return iou + gamma * bce


def ref_softmax(logits, obj_valid=None):
    z = logits.copy()
    if obj_valid is not None:
        mask = np.concatenate([np.ones((z.shape[0], 1), bool), obj_valid], 1)
        z = np.where(mask.reshape(mask.shape + (1,) * (z.ndim - 2)), z, -np.inf)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_hybrid(logits, labels, top_p=1.0, weights=(1, 1, 1), obj_valid=None):
    ce = ref_bootstrapped_ce(logits, labels, top_p, obj_valid)
    c = logits.shape[1]
    probs = ref_softmax(logits, obj_valid)[:, 1:]
    gt = np.stack([(labels == k).astype(np.float64) for k in range(1, c)], axis=1)
    ssim = ref_ssim_loss(probs, gt, valid=obj_valid)
    iou = _per_map(ref_iou_map, probs, gt, valid=obj_valid)
    return weights[0] * ce + weights[1] * ssim + weights[2] * iou


# ----------------------------------------------------------------------------- helpers


def assert_grads_fd(f, x, eps=1e-6, rtol=1e-5, atol=1e-8):
    """check_grads, then the whole gradient against per-coordinate central differences.

    Runs in float64 so that the differences are accurate; ``f`` is compiled once
    and the difference quotients reuse the compiled function.
    """
    with jax.enable_x64(True):
        x = np.asarray(x, np.float64)
        jf = jax.jit(f)
        check_grads(jf, (jnp.asarray(x),), order=1, modes=("rev",), eps=eps)
        grad = np.asarray(jax.grad(jf)(jnp.asarray(x)))
        fd = np.zeros_like(x)
        for i in np.ndindex(*x.shape):
            step = np.zeros_like(x)
            step[i] = eps
            fd[i] = (float(jf(x + step)) - float(jf(x - step))) / (2 * eps)
        np.testing.assert_allclose(grad, fd, rtol=rtol, atol=atol)


def assert_finite_values_and_grads(f, cases, argnums=(0, 1)):
    """f(*args) and its gradients w.r.t. ``argnums`` are finite for each case (one compile)."""
    vg = jax.jit(jax.value_and_grad(f, argnums=argnums))
    values = []
    for args in cases:
        value, grads = vg(*args)
        assert np.isfinite(value), (value, args)
        for g in grads:
            assert np.all(np.isfinite(g)), g
        values.append(float(value))
    return values


def f32(x):
    return jnp.asarray(x, jnp.float32)


# Jitted entry points: one compilation per shape, shared by all examples (eager
# execution of the same functions is compared with these in test_jit_equals_eager).
ce_static = jax.jit(L.bootstrapped_ce, static_argnames="top_p")
ce_traced = jax.jit(L.bootstrapped_ce)
ssim = jax.jit(L.ssim_loss, static_argnames=("window", "sigma"))
iou = jax.jit(L.iou_loss)
dice = jax.jit(L.dice_loss_clip, static_argnames="smooth")
hinge = jax.jit(L.lovasz_hinge)
lovasz = jax.jit(L.lovasz_softmax, static_argnames=("classes", "per_image"))
cosine = jax.jit(L.cosine_decoupling)
cycle_mask = jax.jit(L.cycle_mask_loss)
cycle = jax.jit(L.cycle_loss)
hybrid = jax.jit(L.hybrid_loss, static_argnames=("top_p", "weights"))
hybrid_terms = jax.jit(L.hybrid_loss_terms, static_argnames="top_p")


# ----------------------------------------------------------------------------- bootstrapped CE


@given(shape=st.sampled_from(CLS_SHAPES), seed=seeds, p_static=st.sampled_from([1.0, 0.5, 0.15]),
       p_traced=st.floats(0.01, 1.0))
def test_bootstrapped_ce_matches_reference(shape, seed, p_static, p_traced):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, shape)
    labels = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    np.testing.assert_allclose(ce_static(f32(logits), labels, p_static),
                               ref_bootstrapped_ce(logits, labels, p_static), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(ce_traced(f32(logits), labels, jnp.float32(p_traced)),
                               ref_bootstrapped_ce(logits, labels, p_traced), rtol=2e-5, atol=1e-5)


ce_sample_static = jax.jit(lambda x, y, p, v=None: L.bootstrapped_ce(x, y, p, v, per_sample=True),
                           static_argnums=2)
ce_sample_traced = jax.jit(lambda x, y, p: L.bootstrapped_ce(x, y, p, per_sample=True))


def ref_bootstrapped_ce_per_sample(logits, labels, top_p, obj_valid=None):
    """STCN's form: the hardest top_p of EACH sample's pixels, averaged over the samples (loops)."""
    out = []
    for b in range(logits.shape[0]):
        valid = None if obj_valid is None else obj_valid[b:b + 1]
        out.append(ref_bootstrapped_ce(logits[b:b + 1], labels[b:b + 1], top_p, valid))
    return float(np.mean(out))


@given(seed=seeds, p_static=st.sampled_from([1.0, 0.5, 0.15]), p_traced=st.floats(0.01, 1.0))
def test_bootstrapped_ce_per_sample_matches_reference(seed, p_static, p_traced):
    rng = np.random.default_rng(seed)
    shape = CLS_SHAPES[0]
    # samples of very different difficulty: the whole-batch form would keep mostly the hard one
    logits = rng.normal(0, 3, shape) * np.array([0.2, 5.0]).reshape(2, 1, 1, 1)
    labels = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    np.testing.assert_allclose(ce_sample_static(f32(logits), labels, p_static),
                               ref_bootstrapped_ce_per_sample(logits, labels, p_static), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(ce_sample_traced(f32(logits), labels, jnp.float32(p_traced)),
                               ref_bootstrapped_ce_per_sample(logits, labels, p_traced), rtol=2e-5, atol=1e-5)


def test_bootstrapped_ce_per_sample_differs_from_batch_and_masks_objects():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 4, 5, 6)) * np.array([0.1, 4.0]).reshape(2, 1, 1, 1)
    labels = rng.choice([0, 1, 3], size=(2, 5, 6))
    per = float(ce_sample_static(f32(logits), labels, 0.15))
    whole = float(ce_static(f32(logits), labels, 0.15))
    assert per == pytest.approx(ref_bootstrapped_ce_per_sample(logits, labels, 0.15), rel=1e-5)
    assert abs(per - whole) > 0.1 * whole
    valid = np.array([[True, False, True], [True, True, True]])
    np.testing.assert_allclose(ce_sample_static(f32(logits), labels, 0.3, jnp.asarray(valid)),
                               ref_bootstrapped_ce_per_sample(logits, labels, 0.3, valid), rtol=1e-5)
    # the hybrid loss passes the option through to its CE term
    t = L.hybrid_loss_terms(f32(logits), labels, 0.15, per_sample=True)
    np.testing.assert_allclose(t["ce"], per, rtol=1e-6)


def test_bootstrapped_ce_hand_values_and_obj_valid():
    # Uniform logits: every pixel has loss log C, whatever fraction is kept.
    logits = jnp.zeros((2, 4, 3, 5))
    labels = jnp.ones((2, 3, 5), jnp.int32)
    for p in (1.0, 0.4, 0.01):
        np.testing.assert_allclose(ce_static(logits, labels, p), math.log(4), rtol=1e-6)
    # Two pixels of label 1, class logits (2, 0) and (-2, 0): losses log(1 + e^2) and
    # log(1 + e^-2); the top 50 % keeps the larger one.
    logits = jnp.array([[[2.0, -2.0]], [[0.0, 0.0]]])[None, :, 0]  # [1, 2, 2]
    labels = jnp.array([[1, 1]])
    np.testing.assert_allclose(ce_static(logits, labels, 0.5), math.log1p(math.e**2), rtol=1e-6)
    np.testing.assert_allclose(ce_static(logits, labels, 1.0),
                               (math.log1p(math.e**2) + math.log1p(math.e**-2)) / 2, rtol=1e-6)
    # Padded object classes leave the softmax: same as dropping their channel.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5, 6))
    labels = rng.choice([0, 1, 3], size=(2, 5, 6))
    valid = np.array([[True, False, True], [True, False, True]])
    got = ce_static(f32(logits), labels, 0.3, obj_valid=jnp.asarray(valid))
    dropped = ce_static(f32(logits[:, [0, 1, 3]]), np.where(labels == 3, 2, labels), 0.3)
    np.testing.assert_allclose(got, dropped, rtol=1e-6)
    np.testing.assert_allclose(got, ref_bootstrapped_ce(logits, labels, 0.3, valid), rtol=1e-5)


def test_bootstrapped_ce_gradients():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 4, 5))
    labels = jnp.asarray(rng.integers(0, 3, (2, 4, 5)))
    valid = jnp.array([[True, True], [False, True]])
    labels = labels.at[1].set(jnp.where(labels[1] == 1, 0, labels[1]))
    assert_grads_fd(lambda x: L.bootstrapped_ce(x, labels, 0.4), logits)
    assert_grads_fd(lambda x: L.bootstrapped_ce(x, labels, jnp.asarray(0.4), obj_valid=valid),
                    logits)
    # Padded classes receive exactly zero gradient; all values and gradients finite.
    g = jax.jit(jax.grad(lambda x: L.bootstrapped_ce(x, labels, 0.5, obj_valid=valid)))(f32(logits))
    assert np.all(np.isfinite(g)) and np.all(g[1, 1] == 0)


def test_bootstrap_p_schedule():
    want = {0: 1.0, 19999: 1.0, 20000: 1.0, 45000: 0.575, 70000: 0.15, 10**6: 0.15}
    for step, p in want.items():
        np.testing.assert_allclose(L.bootstrap_p_schedule(step, 20000, 70000), p, rtol=1e-6)
    jitted = jax.jit(lambda s: L.bootstrap_p_schedule(s, 20000, 70000, top_p=0.4))
    np.testing.assert_allclose(jitted(jnp.asarray(45000)), 0.7, rtol=1e-6)
    np.testing.assert_allclose(L.bootstrap_p_schedule(5, 5, 5), 0.15, rtol=1e-6)  # start == end
    np.testing.assert_allclose(L.bootstrap_p_schedule(4, 5, 5), 1.0)
    with pytest.raises(VosjaxError, match="bootstrap_p_schedule"):
        L.bootstrap_p_schedule(0, 70000, 20000)
    with pytest.raises(VosjaxError, match="top_p"):
        L.bootstrap_p_schedule(0, 1, 2, top_p=0.0)


def test_bootstrapped_ce_traced_top_p_under_vmap():
    rng = np.random.default_rng(2)
    logits, labels = f32(rng.normal(size=(2, 3, 6, 7))), rng.integers(0, 3, (2, 6, 7))
    ps = [1.0, 0.5, 0.15, 0.01]
    batched = jax.jit(jax.vmap(lambda p: L.bootstrapped_ce(logits, labels, p)))(jnp.array(ps))
    for p, got in zip(ps, batched):
        np.testing.assert_allclose(got, ref_bootstrapped_ce(np.asarray(logits, np.float64), labels,
                                                            p), rtol=1e-5)


# ----------------------------------------------------------------------------- SSIM


def test_ssim_reference_agrees_with_skimage_in_the_interior():
    """The NumPy reference itself vs scikit-image where zero padding plays no role."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    x, y = rng.uniform(size=(20, 23)), rng.uniform(size=(20, 23))
    ours = ref_ssim_map(x, y)[5:-5, 5:-5].mean()
    theirs = structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, data_range=1.0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


@given(shape=st.sampled_from(MAP_SHAPES), seed=seeds, kind=st.sampled_from(["soft", "extreme"]),
       target=st.sampled_from(["random", "empty", "full"]))
def test_ssim_loss_matches_reference(shape, seed, kind, target):
    rng = np.random.default_rng(seed)
    p, g = _probs(rng, shape, kind), _mask(rng, shape, target)
    np.testing.assert_allclose(ssim(f32(p), f32(g)), ref_ssim_loss(p, g), atol=2e-5)


def test_ssim_loss_hand_values_window_and_valid():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(3, 9, 10))
    assert abs(float(ssim(f32(x), f32(x)))) < 1e-6  # SSIM(x, x) = 1
    assert abs(float(ssim(jnp.zeros((3, 9, 10)), jnp.zeros((3, 9, 10))))) < 1e-7
    y = rng.uniform(size=(3, 9, 10))
    np.testing.assert_allclose(ssim(f32(x), f32(y), window=5, sigma=0.8),
                               ref_ssim_loss(x, y, window=5, sigma=0.8), atol=2e-6)
    valid = np.array([True, False, True])
    np.testing.assert_allclose(ssim(f32(x), f32(y), valid=jnp.asarray(valid)),
                               ref_ssim_loss(x[valid], y[valid]), atol=2e-6)
    with pytest.raises(VosjaxError, match="window"):
        L.ssim_loss(f32(x), f32(y), window=4)


def test_ssim_loss_gradients_and_edges():
    rng = np.random.default_rng(5)
    g = _mask(rng, (2, 8, 9))
    assert_grads_fd(lambda x: L.ssim_loss(x, g), rng.uniform(0.05, 0.95, (2, 8, 9)))
    zero, one = jnp.zeros((2, 8, 9)), jnp.ones((2, 8, 9))
    assert_finite_values_and_grads(L.ssim_loss, [(p, t) for p in (zero, one)
                                                 for t in (zero, one, f32(g))])


# ----------------------------------------------------------------------------- IoU and Dice


@given(shape=st.sampled_from(MAP_SHAPES), seed=seeds, kind=st.sampled_from(["soft", "extreme"]),
       target=st.sampled_from(["random", "empty", "full"]))
def test_iou_loss_matches_reference(shape, seed, kind, target):
    rng = np.random.default_rng(seed)
    p, g = _probs(rng, shape, kind), _mask(rng, shape, target)
    np.testing.assert_allclose(iou(f32(p), f32(g)), _per_map(ref_iou_map, p, g), atol=1e-6)
    valid = rng.uniform(size=shape[:1]) < 0.5
    np.testing.assert_allclose(iou(f32(p), f32(g), valid=jnp.asarray(valid)),
                               _per_map(ref_iou_map, p, g, valid=valid), atol=1e-6)


def test_iou_loss_hand_values_gradients_and_edges():
    g = np.zeros((2, 4, 4))
    g[0, :2] = 1  # map 0: 8 foreground pixels; map 1 empty
    assert float(iou(f32(g), f32(g))) == 0.0  # perfect, and empty-vs-empty counts as 0
    p = g.copy()
    p[0, 2, 0] = 1  # one false positive: IoU 8/9, map 1 still perfect
    np.testing.assert_allclose(iou(f32(p), f32(g)), (1 - 8 / 9) / 2, rtol=1e-6)
    rng = np.random.default_rng(6)
    t = _mask(rng, (2, 5, 6))
    assert_grads_fd(lambda x: L.iou_loss(x, t), rng.uniform(0.05, 0.95, (2, 5, 6)))
    zero, one = jnp.zeros((2, 5, 6)), jnp.ones((2, 5, 6))
    edges = [(a, b) for a in (zero, one, f32(t)) for b in (zero, one, f32(t))]
    assert_finite_values_and_grads(L.iou_loss, edges)
    assert np.all(jax.grad(L.iou_loss)(zero, zero) == 0)


@given(seed=seeds, kind=st.sampled_from(["soft", "extreme"]), rank5=st.booleans())
def test_dice_loss_clip_matches_reference(seed, kind, rank5):
    rng = np.random.default_rng(seed)
    shape = (2, 3, 3, 5, 6) if rank5 else (2, 3, 5, 6)
    p, g = _probs(rng, shape, kind), _mask(rng, shape)
    g[0, 1] = 0  # an object absent from the whole clip
    valid = rng.uniform(size=(2, 3)) < 0.7
    np.testing.assert_allclose(dice(f32(p), f32(g)), ref_dice_clip(p, g), rtol=1e-5)
    np.testing.assert_allclose(dice(f32(p), f32(g), jnp.asarray(valid)),
                               ref_dice_clip(p, g, valid), rtol=1e-5, atol=1e-6)


def test_dice_loss_clip_hand_values_gradients_and_edges():
    rng = np.random.default_rng(7)
    g = _mask(rng, (2, 2, 3, 4, 5))
    g[1, 0] = 0
    assert abs(float(dice(f32(g), f32(g)))) < 1e-6  # perfect, incl. empty vs empty
    # one object of 10 pixels, prediction covers 5 of them: Dice = (10 + 1) / (15 + 1)
    t = np.zeros((1, 1, 1, 4, 5))
    t[..., :2, :] = 1
    p = np.zeros_like(t)
    p[..., 0, :] = 1
    np.testing.assert_allclose(dice(f32(p), f32(t)), 1 - 11 / 16, rtol=1e-6)
    np.testing.assert_allclose(dice(f32(p), f32(t), smooth=0.5), 1 - 10.5 / 15.5, rtol=1e-6)
    valid = jnp.array([[True, False], [True, True]])
    assert_grads_fd(lambda x: L.dice_loss_clip(x, g, valid), rng.uniform(0.05, 0.95, g.shape))
    grad = jax.jit(jax.grad(L.dice_loss_clip))(f32(rng.uniform(size=g.shape)), f32(g), valid)
    assert np.all(grad[0, 1] == 0)  # padded slot contributes nothing
    zero, one = jnp.zeros(g.shape), jnp.ones(g.shape)
    edges = [(a, b) for a in (zero, one) for b in (zero, one, f32(g))]
    assert_finite_values_and_grads(lambda a, b: L.dice_loss_clip(a, b, valid), edges)


# ----------------------------------------------------------------------------- Lovasz


@given(shape=st.sampled_from(MAP_SHAPES), seed=seeds,
       target=st.sampled_from(["random", "empty", "full"]))
def test_lovasz_hinge_matches_reference(shape, seed, target):
    rng = np.random.default_rng(seed)
    logits, labels = rng.normal(0, 2, shape), _mask(rng, shape, target)
    want = _per_map(ref_lovasz_hinge_map, logits, labels)
    np.testing.assert_allclose(hinge(f32(logits), labels.astype(np.int32)), want,
                               rtol=1e-5, atol=1e-6)
    valid = np.array([True, False])
    np.testing.assert_allclose(hinge(f32(logits), labels > 0, valid=jnp.asarray(valid)),
                               _per_map(ref_lovasz_hinge_map, logits, labels, valid=valid),
                               rtol=1e-5, atol=1e-6)


@given(shape=st.sampled_from(CLS_SHAPES), seed=seeds, per_image=st.booleans(),
       classes=st.sampled_from(["present", (0, 2)]), hard=st.booleans())
def test_lovasz_softmax_matches_reference(shape, seed, per_image, classes, hard):
    rng = np.random.default_rng(seed)
    c = shape[1]
    labels = rng.integers(0, c - 1, (shape[0],) + shape[2:])  # class c-1 never present
    if hard:  # one-hot predictions: errors are exactly 0 or 1
        probs = np.moveaxis(np.eye(c)[rng.integers(0, c, labels.shape)], -1, 1)
    else:
        probs = ref_softmax(rng.normal(0, 2, shape))
    want = ref_lovasz_softmax(probs, labels, classes, per_image)
    got = lovasz(f32(probs), labels, classes, per_image=per_image)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lovasz_hand_values():
    rng = np.random.default_rng(8)
    labels = (rng.uniform(size=(3, 6, 7)) < 0.5).astype(np.int32)
    labels[1] = 0  # all background
    labels[2] = 1  # all foreground
    perfect = 2.0 * (2 * labels - 1)  # margin 2 > 1 everywhere
    assert float(hinge(f32(perfect), labels)) == 0.0
    onehot = np.moveaxis(np.eye(3)[labels], -1, 1)
    assert float(lovasz(f32(onehot), labels)) == 0.0
    # Hard predictions: Lovasz-softmax equals 1 - mean IoU over the present classes.
    lab = np.array([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    pred = np.array([[[0, 1, 1, 1], [0, 2, 0, 1]]])
    ious = [2 / 4, 3 / 4, 1 / 2]  # class 0: {00,01,10,12} vs {00,10,12}; class 1; class 2
    probs = np.moveaxis(np.eye(4)[pred], -1, 1)
    np.testing.assert_allclose(lovasz(f32(probs), lab), 1 - np.mean(ious), rtol=1e-6)
    np.testing.assert_allclose(lovasz(f32(probs), lab, "all"),
                               1 - np.mean(ious + [1.0]), rtol=1e-6)  # absent + unpredicted: 0
    # All logits 0: every hinge error is 1, so the loss is Delta_J(all pixels) = 1.
    np.testing.assert_allclose(hinge(jnp.zeros((1, 3, 3)), labels[:1, :3, :3]), 1.0)


def test_lovasz_gradients_and_edges():
    rng = np.random.default_rng(9)
    labels = (rng.uniform(size=(2, 5, 6)) < 0.4).astype(np.int32)
    assert_grads_fd(lambda x: L.lovasz_hinge(x, labels), rng.normal(0, 2, (2, 5, 6)))
    cls = rng.integers(0, 3, (2, 4, 5))
    assert_grads_fd(lambda x: L.lovasz_softmax(x, cls), ref_softmax(rng.normal(size=(2, 3, 4, 5))))
    assert_grads_fd(lambda x: L.lovasz_softmax(x, cls, per_image=True),
                    ref_softmax(rng.normal(size=(2, 3, 4, 5))))
    zero_lab, one_lab = np.zeros((2, 5, 6), np.int32), np.ones((2, 5, 6), np.int32)
    edges = [(x, lab) for x in (jnp.zeros((2, 5, 6)), f32(rng.normal(size=(2, 5, 6))))
             for lab in (zero_lab, one_lab)]
    assert_finite_values_and_grads(L.lovasz_hinge, edges, argnums=(0,))
    edges = [(p, lab) for p in (jnp.zeros((2, 2, 5, 6)), jnp.ones((2, 2, 5, 6)))
             for lab in (zero_lab, one_lab)]
    assert_finite_values_and_grads(L.lovasz_softmax, edges, argnums=(0,))


# ----------------------------------------------------------------------------- cosine decoupling


@given(seed=seeds, shape=st.sampled_from([(3, 4, 5, 2), (2, 7)]), zero=st.booleans())
def test_cosine_decoupling_matches_reference(seed, shape, zero):
    rng = np.random.default_rng(seed)
    e1, e2 = np.maximum(rng.normal(size=shape), 0), np.maximum(rng.normal(size=shape), 0)
    if zero:
        e1[0] = 0
    np.testing.assert_allclose(cosine(f32(e1), f32(e2)), ref_cosine(e1, e2), rtol=1e-5, atol=1e-7)
    valid = np.arange(shape[0]) != 1
    np.testing.assert_allclose(cosine(f32(e1), f32(e2), jnp.asarray(valid)),
                               ref_cosine(e1[valid], e2[valid]), rtol=1e-5, atol=1e-7)


def test_cosine_decoupling_hand_values_gradients_and_edges():
    a = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(cosine(a, 3 * a), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cosine(a, jnp.array([[0.0, 0.0, 5.0], [1.0, 0, 0]])), 0.0,
                               atol=1e-7)
    np.testing.assert_allclose(cosine(a, -a), -1.0, rtol=1e-6)
    rng = np.random.default_rng(10)
    e2 = rng.normal(size=(2, 3, 4))
    assert_grads_fd(lambda x: L.cosine_decoupling(x, e2), rng.normal(size=(2, 3, 4)))
    zero = jnp.zeros((2, 3, 4))
    values = assert_finite_values_and_grads(L.cosine_decoupling, [(zero, f32(e2)), (zero, zero)])
    assert values == [0.0, 0.0]
    assert np.all(jax.grad(L.cosine_decoupling)(zero, f32(e2)) == 0)


# ----------------------------------------------------------------------------- cyclic


@given(shape=st.sampled_from(MAP_SHAPES), seed=seeds, kind=st.sampled_from(["soft", "extreme"]),
       target=st.sampled_from(["random", "empty", "full"]), gamma=st.sampled_from([1.0, 0.3]))
def test_cycle_losses_match_reference(shape, seed, kind, target, gamma):
    rng = np.random.default_rng(seed)
    p, g = _probs(rng, shape, kind), _mask(rng, shape, target)
    q, h = _probs(rng, shape, "soft"), _mask(rng, shape)
    want = _per_map(lambda a, b: ref_cycle_map(a, b, gamma), p, g)
    np.testing.assert_allclose(cycle_mask(f32(p), f32(g), gamma), want, rtol=1e-5)
    want_back = _per_map(lambda a, b: ref_cycle_map(a, b, gamma), q, h)
    np.testing.assert_allclose(cycle(f32(p), f32(g), f32(q), f32(h), gamma), want + want_back,
                               rtol=1e-5)
    valid = np.array([False, True])
    np.testing.assert_allclose(cycle_mask(f32(p), f32(g), gamma, jnp.asarray(valid)),
                               _per_map(lambda a, b: ref_cycle_map(a, b, gamma), p, g, valid=valid),
                               rtol=1e-5)


def test_cycle_loss_hand_values_gradients_and_edges():
    g = jnp.zeros((2, 4, 4)).at[0, 1:3, 1:3].set(1.0)
    assert float(cycle_mask(g, g)) == 0.0  # perfect hard prediction: IoU and CE terms are 0
    np.testing.assert_allclose(cycle_mask(0.5 * g, g, 0.0), 0.25)  # map 0: 1 - 2/4, map 1: 0
    # CE of p = 1/2 everywhere is log 2 per pixel
    # p = 1/2 everywhere vs 4 of 16 pixels: IoU term 1 - 2/10, CE log 2 per pixel
    np.testing.assert_allclose(cycle_mask(0.5 * jnp.ones((1, 4, 4)), g[:1], 1.0),
                               (1 - 2 / 10) + math.log(2), rtol=1e-6)
    rng = np.random.default_rng(11)
    t = _mask(rng, (2, 5, 6))
    assert_grads_fd(lambda x: L.cycle_mask_loss(x, t), rng.uniform(0.05, 0.95, (2, 5, 6)))
    zero, one = jnp.zeros((2, 5, 6)), jnp.ones((2, 5, 6))
    edges = [(a, b) for a in (zero, one, f32(t)) for b in (zero, one, f32(t))]
    assert_finite_values_and_grads(lambda a, b: L.cycle_loss(a, b, a, b), edges)


# ----------------------------------------------------------------------------- hybrid


@given(shape=st.sampled_from(CLS_SHAPES), seed=seeds, top_p=st.sampled_from([1.0, 0.4]),
       with_valid=st.booleans())
def test_hybrid_loss_matches_reference(shape, seed, top_p, with_valid):
    rng = np.random.default_rng(seed)
    b, c = shape[:2]
    logits = rng.normal(0, 2, shape)
    labels = rng.integers(0, c, (b,) + shape[2:])
    valid = None
    if with_valid:
        valid = rng.uniform(size=(b, c - 1)) < 0.6
        padded = np.concatenate([np.zeros((b, 1), bool), ~valid], 1)
        in_padded = np.take_along_axis(padded, labels.reshape(b, -1), 1).reshape(labels.shape)
        labels = np.where(in_padded, 0, labels)
    got = hybrid(f32(logits), labels, top_p, (1.0, 0.5, 2.0),
                 obj_valid=None if valid is None else jnp.asarray(valid))
    want = ref_hybrid(logits, labels, top_p, (1.0, 0.5, 2.0), valid)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_hybrid_loss_terms_obj_valid_and_gradients():
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(2, 4, 2, 6, 7))
    labels = rng.choice([0, 1, 3], size=(2, 2, 6, 7))
    valid = jnp.array([[True, False, True], [True, False, True]])
    terms = hybrid_terms(f32(logits), labels, 0.4, valid)
    dropped = hybrid_terms(f32(logits[:, [0, 1, 3]]), np.where(labels == 3, 2, labels), 0.4)
    for k in ("ce", "ssim", "iou"):
        np.testing.assert_allclose(terms[k], dropped[k], rtol=1e-5)
    np.testing.assert_allclose(hybrid(f32(logits), labels, 0.4, obj_valid=valid),
                               sum(terms.values()), rtol=1e-6)
    small = rng.normal(size=(1, 3, 5, 6))
    small_labels = rng.integers(0, 3, (1, 5, 6))
    assert_grads_fd(lambda x: L.hybrid_loss(x, small_labels, 0.5), small, rtol=1e-4)

    def loss(x, lab):
        return L.hybrid_loss(x, lab, 0.4, obj_valid=valid)

    grad = jax.jit(jax.grad(loss))(f32(logits), labels)
    assert np.all(np.isfinite(grad)) and np.all(grad[:, 2] == 0)
    # all background / all one object, with saturated logits: finite values and gradients
    labs = [np.zeros((2, 2, 6, 7), int), np.ones((2, 2, 6, 7), int)]
    edges = [(x, lab) for lab in labs
             for x in (f32(logits), f32(100.0 * np.moveaxis(np.eye(4)[lab], -1, 1)))]
    assert_finite_values_and_grads(loss, edges, argnums=(0,))
    perfect = 100.0 * np.moveaxis(np.eye(4)[labels], -1, 1)
    out = hybrid_terms(f32(perfect), labels, obj_valid=valid)
    assert float(out["ce"]) < 1e-6 and float(out["iou"]) < 1e-6 and float(out["ssim"]) < 1e-6


# ----------------------------------------------------------------------------- jit, vmap, errors


def test_jit_equals_eager_and_vmap():
    rng = np.random.default_rng(13)
    logits, labels = f32(rng.normal(size=(2, 3, 6, 7))), rng.integers(0, 3, (2, 6, 7))
    p, g = f32(rng.uniform(size=(2, 3, 6, 7))), f32(_mask(rng, (2, 3, 6, 7)))
    valid = jnp.array([[True, False, True], [True, True, False]])
    top_p = jnp.float32(0.3)  # traced
    cases = [  # the hybrid loss runs bootstrapped CE, SSIM and IoU; cycle_loss cycle_mask_loss
        (lambda a, b: L.hybrid_loss(a, b, top_p, obj_valid=valid[:, :2]), (logits, labels)),
        (lambda a, b: L.bootstrapped_ce(a, b, 0.3), (logits, labels)),
        (lambda a, b: L.lovasz_softmax(jax.nn.softmax(a, 1), b), (logits, labels)),
        (lambda a, b: L.dice_loss_clip(a, b, valid), (p, g)),
        (lambda a, b: L.lovasz_hinge(a, b, valid), (p - 0.5, g)),
        (lambda a, b: L.cosine_decoupling(a, b), (p, g)),
        (lambda a, b: L.cycle_loss(a, b, a, b, 1.0, valid), (p, g)),
    ]
    for fn, args in cases:
        eager = fn(*args)
        np.testing.assert_allclose(jax.jit(fn)(*args), eager, rtol=1e-6, atol=1e-7)
        chex.assert_shape(fn(*args), ())
    per_item = jax.jit(jax.vmap(L.iou_loss))(p, g)
    np.testing.assert_allclose(per_item, [iou(p[i], g[i]) for i in range(2)], rtol=1e-6)
    # bf16 inputs are computed in float32
    low = ssim(p.astype(jnp.bfloat16), g)
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, ssim(p.astype(jnp.bfloat16).astype(jnp.float32), g))


def test_bad_inputs_raise_vosjax_error():
    x, lab = jnp.zeros((2, 3, 4, 5)), jnp.zeros((2, 4, 5), jnp.int32)
    with pytest.raises(VosjaxError, match="bootstrapped_ce.*labels"):
        L.bootstrapped_ce(x, jnp.zeros((2, 4, 6), jnp.int32))
    with pytest.raises(VosjaxError, match="integer label map"):
        L.bootstrapped_ce(x, lab.astype(jnp.float32))
    with pytest.raises(VosjaxError, match="top_p"):
        L.bootstrapped_ce(x, lab, 1.5)
    with pytest.raises(VosjaxError, match="obj_valid"):
        L.hybrid_loss(x, lab, obj_valid=jnp.ones((2, 3), bool))
    with pytest.raises(VosjaxError, match="hybrid_loss.*spatial"):
        L.hybrid_loss(jnp.zeros((2, 3, 5)), jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(VosjaxError, match="iou_loss.*same shape"):
        L.iou_loss(x, x[..., :4])
    with pytest.raises(VosjaxError, match="valid"):
        L.iou_loss(x, x, valid=jnp.ones((3,), bool))
    with pytest.raises(VosjaxError, match="dice_loss_clip.*rank"):
        L.dice_loss_clip(x[0], x[0])
    with pytest.raises(VosjaxError, match="floating"):
        L.lovasz_hinge(lab, lab)
    with pytest.raises(VosjaxError, match="classes"):
        L.lovasz_softmax(x, lab, classes=(5,))
    with pytest.raises(VosjaxError, match="ssim_loss.*H, W"):
        L.ssim_loss(jnp.zeros(5), jnp.zeros(5))
    with pytest.raises(VosjaxError, match="cosine_decoupling"):
        L.cosine_decoupling(x, x[:1])
