"""Robustness study of cyclic VOS (sec. 4.3.4, Tables 5-6) for any bundle, in one command.

    python tools/robustness.py --checkpoint BUNDLE [--data synthetic:val | DAVIS_ROOT]
        [--surrogate BUNDLE2] [--max-videos N] [--every 5] [--eps 20]

The MEM strategy (STM): frame 0 with its ground truth is memorised, then every
K-th predicted frame is appended to the memory, its mask REPLACED by a noisy
version (paper sec. 4.3.4):

- ``clean``: the prediction itself (no noise);
- ``low-quality``: the ground truth of the frame, eroded / dilated and speckled
  (:func:`vosjax.robustness.low_quality_masks`);
- ``box``: the ground truth's bounding boxes (:func:`vosjax.robustness.box_masks`);
- ``fgsm`` / ``mi-fgsm`` (white box): the prediction perturbed (|eps| <= 20 of
  255) to maximise the loss (eq. 4) of the next frame read from the memory
  with it, gradients from the evaluated model;
- ``fgsm-bb`` / ``mi-fgsm-bb`` (black box): the same noise computed with the
  surrogate bundle (``--surrogate``; default: the same network re-initialised,
  a stand-in for the paper's ResNet-18 model attacking the ResNet-50 one).

Each setting runs without and with gradient correction of the noisy mask
before it is appended (+GC, :func:`vosjax.inference.cycle.correct_masks`, the
authors' update), and is scored with the DAVIS protocol (:mod:`vosjax.metrics`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vosjax import correction, metrics, robustness
from vosjax.checkpoint import load_bundle
from vosjax.data import DavisSource, SyntheticSource, load_spec
from vosjax.data.normalize import normalize_frames
from vosjax.inference.cycle import correct_masks
from vosjax.inference.state import CorrectionRefs
from vosjax.models.base import SegmentOptions
from vosjax.ops.aggregate import soft_aggregate

SETTINGS = ("clean", "low-quality", "box", "fgsm", "mi-fgsm", "fgsm-bb", "mi-fgsm-bb")


def open_source(data: str):
    if data.startswith("synthetic"):
        split = data.split(":", 1)[1] if ":" in data else "val"
        return SyntheticSource(load_spec("demo"), split)
    return DavisSource(data, year="2017", split="val")


class _Net:
    """The jitted pieces of one model: encode, read, memorise, the attack loss."""

    def __init__(self, model, variables, feat_shape, o):
        self.model, self.v, self.fs, self.o = model, variables, feat_shape, o
        opts = SegmentOptions(top_k=20)
        ones = jnp.ones((1, o), bool)
        self.encode = jax.jit(lambda x: model.encode_key(variables, x[None, None]))

        def read(mem, feats):
            p = jax.nn.sigmoid(model.segment(variables, mem, feats, ones, opts)[:, :, 0])
            return jax.nn.softmax(soft_aggregate(p, ones), axis=1)  # [1, K, h, w]

        def write(mem, x, feats, y):
            return model.memorize(variables, mem, x[None, None], y[:, :, None], ones, feats,
                                  jnp.ones((1,), bool))

        def attack_loss(mem, x, feats, y, next_feats, next_gt):
            big = read(write(mem, x, feats, y), next_feats)
            return jnp.sum(correction.correction_criterion(big, next_gt, ones))

        def attack(kind, eps, mem, x, feats, y, next_feats, next_gt):
            loss = lambda m: attack_loss(mem, x, feats, m, next_feats, next_gt)  # noqa: E731
            fn = correction.fgsm if kind == "fgsm" else correction.mi_fgsm
            return fn(loss, y, eps)

        def gc(x, feats, y, refs):
            full = jnp.concatenate([jnp.clip(1 - y.sum(1, keepdims=True), 0, 1), y], 1)
            return correct_masks(model, variables, x[None], feats, full, refs, refs.valid,
                                 feat_shape, num_iters=correction.NUM_ITERS,
                                 rate=correction.CORRECTION_RATE, gamma=1.0, smooth=0.0,
                                 top_k=20)[:, 1:]

        self.read, self.write = jax.jit(read), jax.jit(write)
        self.attack = jax.jit(attack, static_argnums=(0, 1))
        self.gc = jax.jit(gc)
        self.init = lambda: model.init_memory(variables, 1, o, feat_shape)


def run_video(net, surrogate, video, setting, gc, every, eps, key):
    T = video.num_frames
    ids = list(video.object_ids)
    o = net.o
    gt = np.asarray(video.masks)
    onehot = np.stack([gt == i for i in ids] + [np.zeros_like(gt, bool)] * (o - len(ids)), 1)
    onehot = jnp.asarray(onehot, jnp.float32)  # [T, O, H, W]
    target = jnp.concatenate([1 - onehot.max(1, keepdims=True), onehot], 1)  # [T, K, H, W]
    xs = normalize_frames(jnp.asarray(np.asarray(video.frames)))
    feats = [net.encode(xs[t]) for t in range(T)]
    sfeats = feats if surrogate is net else [surrogate.encode(xs[t]) for t in range(T)]
    mem = net.write(net.init(), xs[0], feats[0], onehot[:1])
    smem = mem if surrogate is net else surrogate.write(surrogate.init(), xs[0], sfeats[0], onehot[:1])
    refs = CorrectionRefs(jnp.broadcast_to(xs[0], (1, o) + xs[0].shape), onehot[:1],
                          jnp.asarray([[i < len(ids) for i in range(o)]]))
    labels = [np.asarray(gt[0])]
    table = np.array([0] + ids, np.uint8)
    for t in range(1, T):
        big = net.read(mem, feats[t])
        labels.append(table[np.asarray(jnp.argmax(big[0], 0))])
        if t % every or t == T - 1:
            continue
        y = big[:, 1:]
        key, k1 = jax.random.split(key)
        if setting == "low-quality":
            y = robustness.low_quality_masks(k1, onehot[t])[None]
        elif setting == "box":
            y = robustness.box_masks(onehot[t])[None]
        elif setting != "clean":
            att = net if not setting.endswith("-bb") else surrogate
            am, af = (mem, feats) if att is net else (smem, sfeats)
            kind = "fgsm" if setting.startswith("fgsm") else "mi-fgsm"
            y = att.attack(kind, float(eps), am, xs[t], af[t], y, af[t + 1], target[t + 1:t + 2])
        if gc:
            y = net.gc(xs[t], feats[t], y, refs)
        mem = net.write(mem, xs[t], feats[t], y)
        if surrogate is not net:
            smem = surrogate.write(smem, xs[t], sfeats[t], y)
    return metrics.evaluate_sequence(gt, np.stack(labels), object_ids=ids)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="bundle folder")
    ap.add_argument("--data", default="synthetic:val", help="synthetic:SPLIT or a DAVIS 2017 root")
    ap.add_argument("--surrogate", default=None, help="bundle that makes the black-box noise")
    ap.add_argument("--max-videos", type=int, default=None)
    ap.add_argument("--every", type=int, default=5, help="K: append a frame every K frames")
    ap.add_argument("--eps", type=float, default=20.0, help="attack radius on the 0-255 scale")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    args = ap.parse_args(argv)
    model, variables, _ = load_bundle(args.checkpoint)
    if args.surrogate:
        smodel, svars, _ = load_bundle(args.surrogate)
    else:
        # stand-in surrogate: the same network with its weights jittered by 10 %
        leaves, tree = jax.tree_util.tree_flatten(variables)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        leaves = [a * (1 + 0.1 * jax.random.normal(k, a.shape, a.dtype))
                  if jnp.issubdtype(a.dtype, jnp.floating) else a for a, k in zip(leaves, keys)]
        smodel, svars = model, jax.tree_util.tree_unflatten(tree, leaves)
    source = open_source(args.data)
    n = len(source) if args.max_videos is None else min(len(source), args.max_videos)
    videos = [source[i] for i in range(n)]
    o = max(len(v.object_ids) for v in videos)
    stride = int(getattr(model, "stride", 16))
    nets = {}
    rows = []
    for setting in args.settings.split(","):
        for gc in (False, True):
            scores = {}
            for v in videos:
                h, w = np.asarray(v.masks).shape[1:]
                fs = (-(-h // stride), -(-w // stride))
                if (fs, "n") not in nets:
                    nets[fs, "n"] = _Net(model, variables, fs, o)
                    nets[fs, "s"] = _Net(smodel, svars, fs, o)
                net = nets[fs, "n"]
                sur = nets[fs, "s"] if setting.endswith("-bb") else net
                scores[v.name] = run_video(net, sur, v, setting, gc, args.every, args.eps,
                                           jax.random.PRNGKey(0))
            g = metrics.summarize(scores).global_metrics
            rows.append((setting, gc, g["J&F-Mean"], g["J-Mean"], g["F-Mean"]))
    print(f"{'setting':<12} {'+GC':<4} {'J&F':>6} {'J':>6} {'F':>6}")
    for s, gc, jf, j, f in rows:
        print(f"{s:<12} {'yes' if gc else '':<4} {100 * jf:6.1f} {100 * j:6.1f} {100 * f:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
