"""Regenerate ``tests/fixtures/joint/``: JOINT's own network outputs on seeded random weights.

    python tools/make_joint_fixture.py --joint PATH/TO/JOINT --out tests/fixtures/joint/ \
        [--data ../shared/data/davis_demo] [--sequence bike] [--frames 0,1]

Needs PyTorch and a checkout of the authors' repository (github.com/maoyunyao/JOINT); the
tests do NOT run this script, they read what it wrote. The checkout is used as it is
(nothing is copied from it): ``ltr/models/joint/joint_net.py`` (``steepest_descent_resnet50``)
is imported from ``--joint`` with the arguments of ``ltr/train_settings/joint/joint_stage2.py``
(Mask R-CNN ResNet-50 backbone, 16-channel encodings, 3x3 filter). Stand-ins make it
import on a CPU-only PyTorch without torchvision or matplotlib:

- ``torchvision.models.resnet``: only ``model_urls`` (an empty dict) is read by their
  backbones; ``BasicBlock`` / ``Bottleneck`` (used by their ``residual_basic_block`` only
  when ``num_blocks > 0``, which JOINT does not use) raise if built;
- the ``pytracking`` package is registered without running its ``__init__`` (which imports
  the evaluation toolkit); ``pytracking.TensorList`` is their ``libs/tensorlist.py``;
- ``torch.autograd.grad`` gets its ``TensorList`` arguments as tuples (recent PyTorch
  rejects the list subclass; the values are unchanged).

Every tensor of the network's ``state_dict`` is replaced by
:func:`vosjax.models.torch_import_joint.seeded_state_dict` (STCN's seeded rule, BatchNorm
statistics randomised, the stem scaled by 1/64 since it reads 0..255 inputs, filter_reg
0.05); names, shapes and the seed go to ``spec.json``.

The run is their network's inference as ``pytracking/tracker/joint/joint.py`` calls it,
on fixed crops instead of their search-region sampling (to keep CPU time small): frames are
the 480p DAVIS frames cropped to rows 112..367, columns 200..647 (256 x 448, around the
bike) and subsampled by 2 to 128 x 224 (stride-16 grid 8 x 14); the first frame's mask
(the union of its objects, single-target mode) the same way. Frame 0: backbone, the
target-model features, the label encoder, ``get_filter`` with 20 iterations
(``net_opt_iter``). Frame 1: the transformer (encoder over frame 0's features, decoder
with frame 0's transduction encodings), the target model, the decoder
(``segment_target``), the sigmoid probability. Frame 2: their ``update_target_model`` at
the third frame (DAVIS ``train_sample_interval = 3``): frame 1 joins the memory with its
merged probability as the mask, the label encoder re-encodes both masks, the filter takes
3 steps (``net_opt_update_iter``) from frame 0's with the residuals scaled by their
``update_sample_weights`` (called here), the transformer reads both templates, then
``segment_target``.

Written (float32, compressed): ``spec.json``; ``features.npz`` (frame 0: backbone layer1..4
(channels subsampled), both branches' reduced features, label encodings and weights, the
fitted filter, the transformer encoder output; frame 1: the transferred encoding, the target
model's encoding, the decoder logits, the sigmoid probabilities and the probabilities after
their tracker's ``merge_results``, the soft aggregation with the background that their DAVIS
runs apply also to a single object; frame 2: the temporal weights, the updated filter, both
encodings, the logits and the merged probabilities), ``frames.npz`` (the three crops and the first mask, uint8) and
``clip.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CROP = (slice(112, 368, 2), slice(200, 648, 2))  # 256 x 448 crop, every 2nd pixel
CH = slice(0, None, 32)  # stored backbone channels


def _install_stubs(torch, joint_dir: pathlib.Path) -> None:
    class _Unused(torch.nn.Module):
        def __init__(self, *a, **k):
            raise RuntimeError("make_joint_fixture: torchvision blocks are not used by JOINT")

    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.model_urls = {}
    resnet.BasicBlock = resnet.Bottleneck = _Unused
    tv.models, models.resnet = models, resnet
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet})
    pt = types.ModuleType("pytracking")
    pt.__path__ = [str(joint_dir / "pytracking")]
    sys.modules["pytracking"] = pt
    sys.path.insert(0, str(joint_dir))
    from pytracking.libs.tensorlist import TensorList

    pt.TensorList = TensorList
    grad = torch.autograd.grad

    def plain_grad(outputs, inputs, grad_outputs=None, **kw):
        # their TensorList (a list subclass) is no longer accepted by torch.autograd.grad
        as_tuple = lambda v: tuple(v) if isinstance(v, TensorList) else v
        return grad(as_tuple(outputs), as_tuple(inputs), as_tuple(grad_outputs), **kw)

    torch.autograd.grad = plain_grad


def read_clip(data: pathlib.Path, sequence: str, frames: list[int]):
    """uint8 crops ``[T, 128, 224, 3]`` and the first frame's binary mask ``[128, 224]``."""
    from PIL import Image

    img = data / "JPEGImages" / "480p" / sequence
    ann = data / "Annotations" / "480p" / sequence
    rgb = np.stack([np.asarray(Image.open(img / f"{i:05d}.jpg").convert("RGB"))[CROP] for i in frames])
    labels = np.asarray(Image.open(ann / f"{frames[0]:05d}.png").convert("P"))[CROP]
    return rgb, (labels > 0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--joint", required=True, type=pathlib.Path, help="the authors' JOINT checkout")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "tests" / "fixtures" / "joint")
    p.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "davis_demo")
    p.add_argument("--sequence", default="bike")
    p.add_argument("--frames", default="0,1,2")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import torch

    from vosjax.models import torch_import_joint as tij

    joint_dir = args.joint.resolve()
    if not (joint_dir / "ltr" / "models" / "joint" / "joint_net.py").is_file():
        raise SystemExit(f"make_joint_fixture: {joint_dir} has no ltr/models/joint/joint_net.py.")
    _install_stubs(torch, joint_dir)
    from ltr.models.joint import joint_net
    from pytracking import TensorList

    torch.set_grad_enabled(False)
    net = joint_net.steepest_descent_resnet50(
        filter_size=3, num_filters=16, optim_iter=5, out_feature_dim=512,
        label_encoder_dims=(16, 32, 64), use_bn_in_label_enc=False, clf_feat_blocks=0,
        final_conv=True, backbone_type="mrcnn", backbone_pretrained=False,
    ).eval()
    sd = net.state_dict()
    spec = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    weights = tij.seeded_state_dict(spec, args.seed)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})

    frames = [int(f) for f in args.frames.split(",")]
    rgb_u8, mask0 = read_clip(args.data, args.sequence, frames)
    mean = torch.tensor([102.9801, 115.9465, 122.7717]).view(1, 3, 1, 1)
    ims = torch.from_numpy(rgb_u8[..., ::-1].copy()).float().permute(0, 3, 1, 2) - mean  # bgr255
    mask = torch.from_numpy(mask0)[None, None]  # frames, seq, H, W

    rec: dict[str, np.ndarray] = {}
    layers = ["layer1", "layer2", "layer3", "layer4"]
    # frame 0 (JOINT.init_target_model)
    bb0 = net.extract_backbone_features(ims[0:1], layers)
    for k in layers:
        rec[f"f0_{k}"] = bb0[k][0, CH].numpy()
    x_bb = net.get_backbone_target_model_features(bb0)
    x = net.target_model.extract_target_model_features(x_bb)
    label_tm, label_tr, sw = net.label_encoder(mask, x.unsqueeze(1))
    filt, _, losses = net.target_model.get_filter(x.unsqueeze(1), label_tm, sw, num_iter=20)
    train_bb = x_bb.unsqueeze(1)
    rec["f0_key_ind"] = x[0].numpy()
    rec["f0_e_ind"], rec["f0_e_tra"], rec["f0_weights"] = (
        label_tm[0, 0].numpy(), label_tr[0, 0].numpy(), sw[0, 0].numpy())
    rec["filter"] = filt[0].numpy()  # [16, 512, 3, 3]
    rec["learner_losses"] = torch.stack(losses).numpy()
    adj = net.transformer.feature_adjustor(x_bb)
    rec["f0_key"] = adj[0].numpy()
    rec["encoded"] = net.transformer.encode(train_bb)[0, 0].numpy()
    # frame 1 (JOINT.segment_target)
    bb1 = net.extract_backbone_features(ims[1:2], layers)
    test_bb = net.get_backbone_target_model_features(bb1)
    transferred = net.transformer(test_bb.unsqueeze(1), train_bb, train_mask_enc=label_tr)
    tm_feat = net.target_model.extract_target_model_features(test_bb)
    logits, enc_pred = net.segment_target(filt, tm_feat, bb1, transferred)
    rec["f1_e_tra_star"] = transferred[0, 0].numpy()
    rec["f1_e_ind_star"] = enc_pred[0, 0].numpy()
    rec["f1_logits"] = logits[0, 0].numpy()
    rec["f1_probs"] = torch.sigmoid(logits)[0, 0].numpy()
    # their multi-object merge (soft aggregation with the background), which their DAVIS
    # evaluation applies also to a single object; it reads nothing of the tracker's state
    from pytracking.tracker.joint.joint import JOINT

    merged = JOINT.merge_results(None, {"1": {"segmentation_raw": rec["f1_logits"]}})
    rec["f1_merged_probs"] = merged["segmentation_raw"]["1"]

    # frame 2 (JOINT.update_target_model at frame_num 3 = train_sample_interval: frame 1 and its
    # merged probability join the memory, the filter takes net_opt_update_iter = 3 steps with
    # the temporal sample weights of their update_sample_weights, then segment_target)
    params = types.SimpleNamespace(learning_rate=0.1)
    params.get = {"init_samples_minimum_weight": 0.25}.get
    sample_w = torch.zeros(20)
    sample_w[0] = 1.0
    JOINT.update_sample_weights(types.SimpleNamespace(params=params), [sample_w], [None], [1], [1], 0.1)
    samples_bb = torch.cat([x_bb, test_bb])
    masks = torch.stack([mask[0], torch.from_numpy(rec["f1_merged_probs"])[None]])  # [2, 1, H, W]
    samples = net.target_model.extract_target_model_features(samples_bb)
    label_tm2, label_tr2, sw2 = net.label_encoder(masks, samples.unsqueeze(1))
    weights2 = sw2 * sample_w[:2].view(-1, 1, 1, 1, 1)
    filt2, _, _ = net.target_model.filter_optimizer(
        TensorList([filt]), num_iter=3, feat=samples.unsqueeze(1), label=label_tm2, sample_weight=weights2)
    filt2 = filt2[0]
    bb2 = net.extract_backbone_features(ims[2:3], layers)
    test_bb2 = net.get_backbone_target_model_features(bb2)
    transferred2 = net.transformer(test_bb2.unsqueeze(1), samples_bb.unsqueeze(1), train_mask_enc=label_tr2)
    logits2, enc_pred2 = net.segment_target(
        filt2, net.target_model.extract_target_model_features(test_bb2), bb2, transferred2)
    rec["sample_weights_f2"] = sample_w[:2].numpy()
    rec["filter_f2"] = filt2[0].numpy()
    rec["f2_e_tra_star"] = transferred2[0, 0].numpy()
    rec["f2_e_ind_star"] = enc_pred2[0, 0].numpy()
    rec["f2_logits"] = logits2[0, 0].numpy()
    merged2 = JOINT.merge_results(None, {"1": {"segmentation_raw": rec["f2_logits"]}})
    rec["f2_merged_probs"] = merged2["segmentation_raw"]["1"]

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(
        {"seed": args.seed, "rule": tij.torch_import_stcn.SEED_RULE, "gains": tij.SEED_GAINS,
         "filter_reg": tij.SEED_FILTER_REG, "tensors": spec}, indent=0) + "\n")
    clip = {"sequence": args.sequence, "frames": frames, "crop_rows": [112, 368, 2],
            "crop_cols": [200, 648, 2], "backbone_channels": [CH.start, CH.stop, CH.step],
            "learner_iters": 20}
    (out / "clip.json").write_text(json.dumps(clip, indent=1) + "\n")
    np.savez_compressed(out / "features.npz", **{k: v.astype(np.float32) for k, v in rec.items()})
    np.savez_compressed(out / "frames.npz", rgb=rgb_u8, mask=mask0.astype(np.uint8))
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size / 1024:.0f} KiB")
    for k, v in rec.items():
        print(f"{k}: {v.shape} mean|.| {np.abs(v).mean():.4g} max {np.abs(v).max():.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
