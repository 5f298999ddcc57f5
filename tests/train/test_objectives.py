"""Training objectives vs slow NumPy references, on a toy model whose rollout is computable by hand.

The toy model (tests/train/conftest.py) gives per-object logits
``z = w * mean(memorised masks) + b0 + c * key``; the references below redo the
rollout (memory contents, soft aggregation, losses) with NumPy loops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vosjax.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from vosjax.errors import VosjaxError
from vosjax.objectives import make_objective

EPS = 1e-7


# ----------------------------------------------------------------------------- NumPy references


def np_key(frames):
    x = frames.astype(np.float64) / 255.0
    return ((x - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD))[..., 0]  # [B, T, H, W]


def np_masks(labels, O):
    return np.stack([(labels == i + 1).astype(np.float64) for i in range(O)], axis=1)  # [B,O,T,H,W]


def np_aggregate(z, valid):
    """z [B, O, H, W] per-object logits -> (agg logits [B, O+1, H, W], object probs [B, O, H, W])."""
    B, O = valid.shape
    agg = np.zeros((B, O + 1) + z.shape[2:])
    for b in range(B):
        p = [1 / (1 + np.exp(-z[b, o])) if valid[b, o] else np.zeros(z.shape[2:]) for o in range(O)]
        bg = np.ones(z.shape[2:])
        for o in range(O):
            bg = bg * (1 - p[o])
        for k, q in enumerate([bg] + p):
            q = np.clip(q, EPS, 1 - EPS)
            agg[b, k] = np.log(q) - np.log(1 - q)
        for o in range(O):
            if not valid[b, o]:
                agg[b, o + 1] = -1e4
    e = np.exp(agg - agg.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True))[:, 1:] * valid[:, :, None, None]
    return agg, probs


def np_boot_ce(agg, labels, valid, top_p, per_sample=False):
    """Mean of the hardest round(top_p * N) pixel CE values; invalid classes excluded.

    ``per_sample``: ranked within each sample, averaged over the batch (STCN model/losses.py).
    """
    B = agg.shape[0]
    if per_sample:
        return np.mean([np_boot_ce(agg[b:b + 1], labels[b:b + 1], valid[b:b + 1], top_p) for b in range(B)])
    vals = []
    for b in range(B):
        keep = np.concatenate([[True], valid[b]])
        a = np.where(keep[:, None, None], agg[b], -np.inf)
        m = a.max(axis=0)
        lse = m + np.log(np.exp(a - m).sum(axis=0))
        for (i, j), lab in np.ndenumerate(labels[b]):
            vals.append(lse[i, j] - a[lab, i, j])
    vals = np.sort(np.asarray(vals))[::-1]
    k = min(max(round(top_p * len(vals)), 1), len(vals))
    return vals[:k].mean()


def np_ssim_loss(p, g, valid, window=11, sigma=1.5):
    """1 - mean SSIM per map (zero-padded 'same' Gaussian filtering), mean over valid maps."""
    r = window // 2
    k = np.exp(-((np.arange(window) - r) ** 2) / (2 * sigma**2))
    k = k / k.sum()

    def blur(x):
        H, W = x.shape
        out = np.zeros_like(x)
        for i in range(H):
            for j in range(W):
                acc = 0.0
                for a in range(window):
                    for b in range(window):
                        ii, jj = i + a - r, j + b - r
                        if 0 <= ii < H and 0 <= jj < W:
                            acc += k[a] * k[b] * x[ii, jj]
                out[i, j] = acc
        return out

    vals = []
    for b, o in zip(*np.nonzero(valid)):
        x, y = p[b, o], g[b, o]
        mx, my = blur(x), blur(y)
        sx, sy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        ssim = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sx + sy + c2))
        vals.append(1 - ssim.mean())
    return np.mean(vals)


def np_rollout(params, batch, groups, ref=0):
    """Per query frame: (frame index, agg [B, O+1, H, W], probs [B, O, H, W]), memory as the toy keeps it."""
    key = np_key(batch["frames"])
    valid = batch["obj_valid"]
    masks = np_masks(batch["labels"], valid.shape[1])
    mem = [masks[:, :, ref]]
    out = []
    for g, group in enumerate(groups):
        mean = sum(mem) / len(mem)
        res = []
        for t in group:
            z = params["w"] * mean + params["b0"] + params["c"] * key[:, t][:, None]
            agg, probs = np_aggregate(z, valid)
            res.append((t, agg, probs))
        out += res
        if g + 1 < len(groups):
            mem.append(res[-1][2])
    return out, masks, key


def minmax_iou_loss(p, g, valid):
    """Cyclic VOS eq. 5 per map, mean over valid objects: 1 - sum min / sum max."""
    vals = []
    for b, o in zip(*np.nonzero(valid)):
        den = np.maximum(p[b, o], g[b, o]).sum()
        vals.append(1 - np.minimum(p[b, o], g[b, o]).sum() / den if den > 0 else 0.0)
    return np.mean(vals)


def params_of(model):
    return {k: float(v) for k, v in model.init(None, None, None, None)["params"].items()}


_CACHE: dict = {}


def _compiled(model, obj):
    """One jitted value_and_grad per objective (the step is traced, so it does not recompile)."""
    if obj not in _CACHE:
        _CACHE[obj] = jax.jit(lambda params, b, step: jax.value_and_grad(
            lambda p: obj(model, {"params": p}, b, jax.random.key(0), step), has_aux=True)(params))
    return _CACHE[obj]


def run(model, name, batch, step=0, **options):
    """``(loss, metrics, grads)`` of the objective, one compilation (value_and_grad under jit)."""
    obj = make_objective(ml_collections.ConfigDict({"name": name, **options}))

    fn = _compiled(model, obj)
    (loss, metrics), grads = fn(model.init(None, None, None, None)["params"], batch, jnp.int32(step))
    return float(loss), {k: float(v) for k, v in metrics.items()}, {k: float(g) for k, g in grads.items()}


def check_against(model, ref_fn, loss, grads, rtol=1e-4):
    """Loss equals ``ref_fn(params)``; gradients equal central differences of the float64 reference."""
    prm = params_of(model)
    np.testing.assert_allclose(loss, ref_fn(prm), rtol=rtol)
    h = 1e-5
    for k in prm:
        up, dn = dict(prm), dict(prm)
        up[k] += h
        dn[k] -= h
        fd = (ref_fn(up) - ref_fn(dn)) / (2 * h)
        np.testing.assert_allclose(grads[k], fd, rtol=2e-3, atol=1e-5, err_msg=f"d loss / d {k}")


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("top_p,bootstrap", [(1.0, "sample"), (0.3, "sample"), (0.3, "batch")])
def test_stcn_objective_matches_reference(toy_model, batch_factory, top_p, bootstrap):
    batch = batch_factory(0)
    # start_warm = end_warm = 0: p = top_p from step 0
    loss, metrics, grads = run(toy_model, "stcn", batch, step=5, top_p=top_p, start_warm=0, end_warm=0,
                               bootstrap=bootstrap)

    def ref(prm):
        out, _, _ = np_rollout(prm, batch, [[1], [2]])
        return np.mean([np_boot_ce(agg, batch["labels"][:, t], batch["obj_valid"], top_p,
                                   per_sample=bootstrap == "sample") for t, agg, _ in out])

    check_against(toy_model, ref, loss, grads)
    assert metrics["top_p"] == pytest.approx(top_p)


def test_stcn_bootstrap_warmup_follows_step(toy_model, batch_factory):
    batch = batch_factory(1)
    out, _, _ = np_rollout(params_of(toy_model), batch, [[1], [2]])
    for step, p in [(0, 1.0), (15, 0.575), (40, 0.15)]:
        loss, metrics, _ = run(toy_model, "stcn", batch, step=step, top_p=0.15, start_warm=10, end_warm=20)
        assert metrics["top_p"] == pytest.approx(p, abs=1e-6)
        ref = np.mean([np_boot_ce(a, batch["labels"][:, t], batch["obj_valid"], p, per_sample=True)
                       for t, a, _ in out])
        np.testing.assert_allclose(loss, ref, rtol=1e-4)


def test_trickvos_hybrid_objective(toy_model, batch_factory):
    batch = batch_factory(2, T=3, H=12, W=12)
    loss, metrics, grads = run(toy_model, "trickvos", batch, weights=(1.0, 0.5, 2.0),
                               start_warm=0, end_warm=0, top_p=1.0)
    valid = batch["obj_valid"]

    def ref(prm, part=None):
        out, masks, _ = np_rollout(prm, batch, [[1], [2]])
        ce, ssim, iou = [], [], []
        for t, agg, probs in out:
            ce.append(np_boot_ce(agg, batch["labels"][:, t], valid, 1.0))
            ssim.append(np_ssim_loss(probs, masks[:, :, t], valid))
            vals = []
            for b, o in zip(*np.nonzero(valid)):
                pg = (probs[b, o] * masks[b, o, t]).sum()
                vals.append(1 - pg / (probs[b, o].sum() + masks[b, o, t].sum() - pg))
            iou.append(np.mean(vals))
        parts = {"ce": np.mean(ce), "ssim": np.mean(ssim), "iou_loss": np.mean(iou)}
        return parts.get(part, parts["ce"] + 0.5 * parts["ssim"] + 2.0 * parts["iou_loss"])

    prm = params_of(toy_model)
    for part in ("ce", "ssim", "iou_loss"):
        np.testing.assert_allclose(metrics[part], ref(prm, part), rtol=1e-4, err_msg=part)
    check_against(toy_model, ref, loss, grads)


def test_cyclic_objective_predicts_frame_one_back_from_every_frame(toy_model, batch_factory):
    batch = batch_factory(3)
    # object 2 of sample 0 leaves frame 1 (it is the sample's highest object: that frame's
    # cycle term is not counted, train.py:328); object 1 of sample 1 leaves frame 2
    labels_in = np.array(batch["labels"])
    valid_np = np.asarray(batch["obj_valid"])
    last0 = int(np.flatnonzero(valid_np[0])[-1])
    for b, o, t in ((0, last0, 1), (1, 0, 2)):
        labels_in[b, t][labels_in[b, t] == o + 1] = 0
    batch = {**batch, "labels": jnp.asarray(labels_in, batch["labels"].dtype)}
    gamma, p = 0.7, 0.4
    loss, metrics, grads = run(toy_model, "cyclic", batch, gamma=gamma)
    valid = batch["obj_valid"]
    B = valid.shape[0]

    def ref(prm, part=None):
        out, masks, key = np_rollout(prm, batch, [[1], [2]])

        def term(agg, probs, t, iou_valid=valid, sl=slice(None)):
            return (minmax_iou_loss(probs[sl], masks[sl, :, t], iou_valid[sl])
                    + gamma * np_boot_ce(agg[sl], batch["labels"][sl, t], valid[sl], p))

        forward = np.mean([term(agg, probs, t) for t, agg, probs in out])
        # backward: for each t the memory holds only frame t and its prediction
        backward = 0.0
        for t, _, probs_t in out:
            z0 = prm["w"] * probs_t + prm["b0"] + prm["c"] * key[:, 0][:, None]
            agg0, probs0 = np_aggregate(z0, valid)
            present = np.asarray(masks[:, :, t] > 0.5).any(axis=(-2, -1))
            for b in range(B):
                last = int(np.flatnonzero(np.asarray(valid[b]))[-1])
                if not present[b, last]:
                    continue
                sl = slice(b, b + 1)
                backward += term(agg0, probs0, 0, np.asarray(valid) & present, sl) / (B * len(out))
        return {"forward": forward, "backward": backward}.get(part, forward + backward)

    prm = params_of(toy_model)
    np.testing.assert_allclose(metrics["forward"], ref(prm, "forward"), rtol=1e-4)
    np.testing.assert_allclose(metrics["backward"], ref(prm, "backward"), rtol=1e-4)
    check_against(toy_model, ref, loss, grads)


def test_pcvos_objective_clip_by_clip(toy_model, batch_factory):
    batch = batch_factory(4, T=7)
    loss, metrics, grads = run(toy_model, "pcvos", batch, top_p=1.0, start_warm=0, end_warm=0)
    valid = batch["obj_valid"]

    def ref(prm, part=None):
        out, masks, _ = np_rollout(prm, batch, [[1, 2, 3], [4, 5, 6]])
        ce = np.mean([np_boot_ce(agg, batch["labels"][:, t], valid, 1.0) for t, agg, _ in out])
        probs = np.stack([pr for _, _, pr in out], axis=2)  # [B, O, 6, H, W]
        dice = []
        for c in range(2):
            pc, g = probs[:, :, 3 * c:3 * c + 3], masks[:, :, 1 + 3 * c:4 + 3 * c]
            per_b = []
            for b in range(pc.shape[0]):
                per_b.append(sum(1 - (2 * (pc[b, o] * g[b, o]).sum() + 1) / (pc[b, o].sum() + g[b, o].sum() + 1)
                                 for o in range(pc.shape[1]) if valid[b, o]))
            dice.append(np.mean(per_b))
        return np.mean(dice) if part == "dice" else ce + np.mean(dice)

    np.testing.assert_allclose(metrics["dice"], ref(params_of(toy_model), "dice"), rtol=1e-4)
    check_against(toy_model, ref, loss, grads)
    with pytest.raises(VosjaxError, match="clips of equal length"):
        run(toy_model, "pcvos", batch_factory(4, T=6))


def np_lovasz_class(errors, fg):
    order = np.argsort(-errors, kind="stable")
    e, g = errors[order], fg[order]
    gts = g.sum()
    inter = gts - np.cumsum(g)
    union = gts + np.cumsum(1 - g)
    jac = 1 - inter / union
    grad = np.concatenate([jac[:1], jac[1:] - jac[:-1]])
    return float(np.dot(e, grad))


def test_joint_objective_lovasz_plus_cosine(toy_model, batch_factory):
    batch = batch_factory(5, T=4)
    # the paper-reading Lovasz (softmax, present classes); the default, the authors'
    # foreground-on-sigmoid Lovasz, is checked against a reference in tests/models/test_joint.py
    loss, metrics, grads = run(toy_model, "joint", batch, cosine_weight=0.5, lovasz="softmax_present")
    valid = batch["obj_valid"]

    def ref(prm, part=None):
        # JOINT memorises every predicted frame: the memory grows by one frame per step
        out, masks, _ = np_rollout(prm, batch, [[1], [2], [3]])
        seg = []
        for t, agg, _ in out:
            e = np.exp(agg - agg.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
            lab = batch["labels"][:, t]
            per_class = []
            for c in range(probs.shape[1]):
                fg = (lab == c).astype(np.float64).ravel()
                if fg.sum() > 0:
                    per_class.append(np_lovasz_class(np.abs(fg - probs[:, c].ravel()), fg))
            seg.append(np.mean(per_class))
        cos = []
        for m in [masks[:, :, 0]] + [pr for _, _, pr in out]:
            e1, e2 = np.maximum(2 * m - 1 + prm["c"], 0), np.maximum(1 - 2 * m + prm["c"], 0)
            vals = []
            for b, o in zip(*np.nonzero(valid)):
                a, bb = e1[b, o].ravel(), e2[b, o].ravel()
                den = np.linalg.norm(a) * np.linalg.norm(bb)
                vals.append(a @ bb / den if den > 0 else 0.0)
            cos.append(np.mean(vals))
        return {"lovasz": np.mean(seg), "cosine": np.mean(cos)}.get(part, np.mean(seg) + 0.5 * np.mean(cos))

    prm = params_of(toy_model)
    np.testing.assert_allclose(metrics["lovasz"], ref(prm, "lovasz"), rtol=1e-4)
    np.testing.assert_allclose(metrics["cosine"], ref(prm, "cosine"), rtol=1e-4)
    check_against(toy_model, ref, loss, grads)


def test_frtm_objective_reference_only(toy_model, batch_factory):
    batch = batch_factory(6, T=4)
    loss, _, grads = run(toy_model, "frtm", batch)
    key = np_key(batch["frames"])
    valid = batch["obj_valid"]
    masks = np_masks(batch["labels"], valid.shape[1])

    def ref(prm):
        vals = []
        for b, o in zip(*np.nonzero(valid)):
            z = prm["w"] * masks[b, o, 0] + prm["b0"] + prm["c"] * key[b, 1:]  # memory: reference only
            vals.append(np.mean(np.logaddexp(0, z) - masks[b, o, 1:] * z))
        return np.mean(vals)

    check_against(toy_model, ref, loss, grads)


def test_objectives_reject_unknown_names_and_options():
    with pytest.raises(VosjaxError, match=r"'stcnn'.*Did you mean 'stcn'"):
        make_objective(ml_collections.ConfigDict({"name": "stcnn"}))
    with pytest.raises(VosjaxError, match=r"objective: unknown field 'topp'.*'top_p'"):
        make_objective(ml_collections.ConfigDict({"name": "stcn", "topp": 0.2}))
