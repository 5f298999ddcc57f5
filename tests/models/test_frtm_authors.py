"""The authors' FRTM network, converted into vosjax, gives the authors' outputs.

``tests/fixtures/frtm/`` was written by ``tools/make_frtm_fixture.py`` from the
authors' own code (their ``evaluate.Parameters`` settings and assembly, their
``Tracker`` driver, target model, GN-CG and segmentation network) on seeded
random weights (ResNet-18 backbone) and real DAVIS frames (``dog``, cropped to
320 x 448), with vosjax's first-frame augmentation and initial target-model
weights handed to their tracker. Here the same weights are re-created from
``spec.json`` with NumPy, written as two ``.safetensors`` files (their refiner;
the torchvision backbone) without PyTorch, converted by the library function
behind ``tools/convert_torch_weights.py --arch frtm`` into a bundle, and run:

- backbone features of frame 1 (s4 .. s32 = their layer2 .. layer5) within
  ``max |ours - theirs| / max |theirs| <= 1e-4``;
- S alone (our projections, THEIR target scores of frame 1): logits within 1e-4
  of the largest, foreground probabilities within 1e-3;
- the whole first frame (augmentation, the GN-CG fit from the same initial
  weights, their w2-only update, S): target scores within 5e-2 of the largest,
  probabilities within 5e-2, labels equal on >= 99 % (measured 2.6e-2, 2e-2,
  99.25 %). The fit cannot agree closer: 45 CG iterations amplify rounding
  (see ``SCORE_RTOL``);
- under ``-m slow``: frames 0-9 through the model's memorize / segment loop with
  their single-object aggregation (a sample per frame, w2 refitted after frame 8)
  against their tracker's label maps: >= 99 % equal per frame (measured 99.1 -
  99.7 %; the differences are the first-frame fit's, above, on pixels whose
  seeded logits sit near 0); frame 9's target scores are printed (2.9e-2).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from vosjax.models import torch_import_frtm as tif
from vosjax.models import torch_import_stcn as tis

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "frtm"
DAVIS_DEMO = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "davis_demo"
FEATURE_RTOL = 1e-4
PROB_ATOL = 1e-3
# The first-frame fit (45 CG iterations in 5 GN steps, then 10) amplifies float32 rounding:
# the same problem solved by their PyTorch GN-CG and vosjax's agrees to ~1e-11 in float64
# for the first GN steps, but in float32 the weights after the full schedule differ by
# ~2 % of their largest entry (Polak-Ribiere's clamp of beta at 0 flips on rounding).
# The seeded S centres its logits at 0, so many pixels sit near the decision boundary
# (measured: scores 2.6e-2, max |dP| 2e-2, 99.25 % of the frame-1 labels agree).
SCORE_RTOL = 5e-2
SCORE_PROB_ATOL = 5e-2
FIT_LABEL_AGREEMENT = 0.99
LABEL_AGREEMENT_FRAMES = 0.99
_DEPTH = {"s4": "layer2", "s8": "layer3", "s16": "layer4", "s32": "layer5"}


def _json(name):
    return json.loads((FIXTURE / name).read_text())


def _seeded() -> dict[str, np.ndarray]:
    spec = _json("spec.json")
    w = tis.seeded_state_dict(spec["tensors"], spec["seed"])
    return tif.adjust_seeded(w, spec["score_gain"], spec["logit_offset"])


def _split(weights):
    """(their checkpoint as their evaluate.py reads it: {"model": refiner.*}, torchvision ResNet)."""
    ckpt = {"model." + k: v for k, v in weights.items() if k.startswith("refiner.")}
    backbone = {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}
    return ckpt, backbone


def _rel(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


@pytest.fixture(scope="module")
def clip():
    if not (DAVIS_DEMO / "JPEGImages").is_dir():
        pytest.skip(f"real DAVIS demo data not found at {DAVIS_DEMO}")
    from PIL import Image

    info = _json("clip.json")
    r0, r1, c0, c1 = info["crop"]
    img = DAVIS_DEMO / "JPEGImages" / "480p" / info["sequence"]
    frames = np.stack([np.asarray(Image.open(img / f"{i:05d}.jpg").convert("RGB"))
                       for i in range(info["frames"])])[:, r0:r1, c0:c1]
    first = np.asarray(Image.open(DAVIS_DEMO / "Annotations" / "480p" / info["sequence"] / "00000.png"))
    return info, frames, first[r0:r1, c0:c1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frtm_authors")
    ckpt, backbone = _split(_seeded())
    save_file(ckpt, tmp / "rn18_seeded.safetensors")
    save_file(backbone, tmp / "resnet18.safetensors")
    out, report = tif.convert_frtm(tmp / "rn18_seeded.safetensors", tmp / "bundle",
                                   backbone=tmp / "resnet18.safetensors")
    assert not report.unmatched and not report.unused
    return out


def test_conversion_maps_every_tensor_and_sets_the_authors_settings(bundle):
    from vosjax.checkpoint import load_bundle

    meta = json.loads((bundle / tif.REPORT_FILE).read_text())
    spec = {name for name, *_ in _json("spec.json")["tensors"]}
    used, ignored = set(meta["converted"]), set(meta["ignored"])  # refiner.* and backbone.* names
    assert used | ignored == spec and not used & ignored
    assert len(set(meta["converted"].values())) == len(meta["converted"])  # one-to-one
    assert meta["backbone"] == "resnet18"
    model, variables, config = load_bundle(bundle)
    s = model.settings
    assert (s.segnet, s.init_refit, s.memory_rule) == ("authors", True, "authors")
    assert (s.label_upsample, s.memory_frames) == (16, 80)
    assert s.num_cg_init == (5, 10, 10, 10, 10) and s.num_cg_update == 10
    assert (s.reg, s.precond, s.eta) == ((1e-4, 1e-2), (1e-4, 1e-2), 0.1)
    w = _seeded()["refiner.CAB.layer3.convreluconv.2.weight"]
    np.testing.assert_array_equal(variables["params"]["segnet"]["cab_s8"]["crc2"]["kernel"],
                                  w.transpose(2, 3, 1, 0))


def _first_frame(bundle, clip):
    """Model, variables, normalised frames 0-1, their features and the memory after frame 0."""
    from vosjax.checkpoint import load_bundle
    from vosjax.data.normalize import normalize_frames

    info, frames, first = clip
    model, variables, _ = load_bundle(bundle)
    x = normalize_frames(jnp.asarray(frames[None, :2]))
    feats = model.encode_key(variables, x)
    mask = jnp.asarray(first == 1, jnp.float32)[None, None, None]
    valid = jnp.ones((1, 1), bool)
    memory = model.init_memory(variables, 1, 1, feats["key"].shape[2:4])
    f0 = {k: v[:, :1] for k, v in feats.items()}
    memory = model.memorize(variables, memory, x[:, :1], mask, valid, f0, jnp.ones((1,), bool))
    return model, variables, x, feats, memory


def test_features_scores_and_logits_match_the_authors(bundle, clip):
    from vosjax.models.frtm import _FRTMNet, _PROJ
    from vosjax.models.frtm_decoder import DEPTHS

    info, frames, first = clip
    ref = np.load(FIXTURE / "features.npz")
    model, variables, x, feats, memory = _first_frame(bundle, clip)
    f = model.net.apply(variables, x[0, 1:2], method=_FRTMNet.features)
    for d, layer in _DEPTH.items():
        step = info["channel_step"][layer]
        err = _rel(f[d][0].transpose(2, 0, 1)[::step], ref[f"{layer}_f1"])
        assert err < FEATURE_RTOL, f"{d}: {err:.2e}"

    # S alone, on their target scores: the segmentation network's form and weights
    f1 = {k: v[:, 1:] for k, v in feats.items()}
    proj = {d: f1[_PROJ[d]][:, 0] for d in DEPTHS}
    smap = jnp.asarray(ref["scores_f1"])[None, :, :, None]
    logits = model.net.apply(variables, proj, smap, x.shape[2:4], method=_FRTMNet.decode)[0]
    s = info["logit_stride"]
    err = _rel(logits[::s, ::s], ref["logits_f1"])
    assert err < FEATURE_RTOL, f"S on their target scores: logits {err:.2e}"
    dp = np.abs(jax.nn.sigmoid(logits[::s, ::s]) - jax.nn.sigmoid(ref["logits_f1"])).max()
    assert dp < PROB_ATOL, f"S on their target scores: probabilities {dp:.2e}"

    # the whole first frame: augmentation, GN-CG fit from the same weights, then S
    scores = model.target_scores(memory, f1)[0, 0, 0]
    err = _rel(scores, ref["scores_f1"])
    assert err < SCORE_RTOL, f"target scores after the first-frame fit: {err:.2e}"
    logits = model.segment(variables, memory, f1, jnp.ones((1, 1), bool))[0, 0, 0]
    p_ours = np.asarray(jax.nn.sigmoid(logits[::s, ::s]))
    p_theirs = np.asarray(jax.nn.sigmoid(ref["logits_f1"]))
    dp = np.abs(p_ours - p_theirs)
    agree = np.mean((p_ours > 0.5) == (p_theirs > 0.5))
    print(f"first frame fit: scores {err:.2e}, max |dP| {dp.max():.2e}, labels agree {agree:.4%}")
    assert dp.max() < SCORE_PROB_ATOL and agree >= FIT_LABEL_AGREEMENT, (dp.max(), agree)


def test_conversion_refuses_unplaceable_and_missing_tensors():
    from vosjax.errors import VosjaxError

    ckpt, backbone = _split(_seeded())
    key = "model.refiner.RRB2.layer2.bblock.3.weight"
    extra = {**ckpt, "model.refiner.TSE.layer1.reduce.0.weight": ckpt[key]}
    with pytest.raises(VosjaxError, match="cannot be placed.*layer1"):
        tif.convert_frtm_state_dict(extra, backbone)
    bad = {**ckpt, key: ckpt[key][:, :32]}
    with pytest.raises(VosjaxError, match="RRB2.layer2.bblock.3.weight: shape"):
        tif.convert_frtm_state_dict(bad, backbone)
    with pytest.raises(VosjaxError, match="segmentation network only.*resnet18"):
        tif.convert_frtm_state_dict(ckpt, None)
    partial = {k: v for k, v in backbone.items() if not k.startswith("layer4.")}
    with pytest.raises(VosjaxError, match="have no source tensor.*backbone.layer4"):
        tif.convert_frtm_state_dict(ckpt, partial)
    missing = {k: v for k, v in ckpt.items() if k != "model.refiner.project.conv2.bias"}
    variables, report = tif.convert_frtm_state_dict(missing, backbone, allow_missing=True)
    assert report.unmatched == ["refiner.project.conv2.bias"]
    with pytest.raises(VosjaxError, match="no 'refiner.TSE.layer4.reduce.0.weight'"):
        tif.convert_frtm_state_dict(backbone, backbone)


def test_cli_converts_with_the_backbone_file_and_refuses_without(tmp_path, capsys):
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[2] / "tools" / "convert_torch_weights.py"
    spec = importlib.util.spec_from_file_location("convert_torch_weights", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    ckpt, backbone = _split(_seeded())
    save_file(ckpt, tmp_path / "rn18.safetensors")
    save_file(backbone, tmp_path / "resnet18.safetensors")
    base = ["--arch", "frtm", "--input", str(tmp_path / "rn18.safetensors")]
    assert cli.main(base + ["--output", str(tmp_path / "none")]) == 1
    assert "--backbone-weights" in capsys.readouterr().err
    assert cli.main(base + ["--output", str(tmp_path / "b"), "--fast",
                            "--backbone-weights", str(tmp_path / "resnet18.safetensors")]) == 0
    meta = json.loads((tmp_path / "b" / tif.REPORT_FILE).read_text())
    assert meta["backbone"] == "resnet18" and meta["backbone_sha256"] and not meta["unmatched"]
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["model"]["num_cg_update"] == 5 and cfg["model"]["num_cg_init"] == [5, 10, 10, 10]


def test_torch_checkpoint_converts_like_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    ckpt, backbone = _split(_seeded())
    src = tmp_path / "rn18.pth"
    torch.save({"model": {k[len("model."):]: torch.from_numpy(v) for k, v in ckpt.items()}}, src)
    sd = tif.torch_import.read_state_dict(src)  # torch.load(weights_only=True), flattened
    variables, report = tif.convert_frtm_state_dict(sd, backbone)
    assert not report.unmatched
    np.testing.assert_array_equal(variables["batch_stats"]["segnet"]["rrb2_s4"]["bb1"]["var"],
                                  ckpt["model.refiner.RRB2.layer2.bblock.1.running_var"])


def _authors_update_label(p):
    """Their tracker's single-object aggregation (``Tracker.track``): the object's
    probability after ``softmax([(1 - p) / p, p / (1 - p)])``, kept where it wins."""
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    a, b = p / (1 - p), (1 - p) / p
    return jnp.where(a > b, jax.nn.sigmoid(a - b), 0.0)


@pytest.mark.slow  # 10 frames of memorize / segment: minutes on 2 CPU cores
def test_frames_match_the_authors_tracker(bundle, clip):
    from vosjax.checkpoint import load_bundle
    from vosjax.data.normalize import normalize_frames

    info, frames, first = clip
    ref = np.load(FIXTURE / "outputs.npz")
    feat_ref = np.load(FIXTURE / "features.npz")
    model, variables, _ = load_bundle(bundle)
    x = normalize_frames(jnp.asarray(frames[None]))
    feats = model.encode_key(variables, x)
    valid = jnp.ones((1, 1), bool)
    memory = model.init_memory(variables, 1, 1, feats["key"].shape[2:4])
    at = lambda t: {k: v[:, t:t + 1] for k, v in feats.items()}
    y = jnp.asarray(first == 1, jnp.float32)
    memory = model.memorize(variables, memory, x[:, :1], y[None, None, None], valid, at(0),
                            jnp.ones((1,), bool))
    s = info["prob_stride"]
    agree, dps = [], []
    for t in range(1, info["frames"]):
        if t == 9:
            err = _rel(model.target_scores(memory, at(t))[0, 0, 0], feat_ref["scores_f9"])
            print(f"frame 9 target scores (after the update at frame 8): {err:.2e}")
        logits = model.segment(variables, memory, at(t), valid)[0, 0, 0]
        y = _authors_update_label(jax.nn.sigmoid(logits))
        agree.append(np.mean(np.asarray(y > 0.5) == (ref["labels"][t] > 0)))
        dps.append(float(np.abs(np.asarray(y)[::s, ::s] - ref["probs"][t]).max()))
        memory = model.memorize(variables, memory, x[:, t:t + 1], y[None, None, None], valid, at(t),
                                jnp.ones((1,), bool), jnp.asarray([t % 8 == 0]))
    print("labels agree per frame:", [f"{a:.4f}" for a in agree], "max |dP|:", [f"{d:.3f}" for d in dps])
    assert min(agree) >= LABEL_AGREEMENT_FRAMES, agree


def test_authors_memory_rule_weights_the_first_added_sample_like_their_memory():
    from vosjax.learners import frtm as tm

    k0, eta = 5, 0.1
    mem = tm.memory_init(jnp.zeros((k0, 2, 2, 3)), jnp.zeros((k0, 4, 4)), 8)
    fg = jnp.ones((4, 4))
    # their Memory.update_sample_weights: no previous index -> w /= (1 - lr); w[new] = lr; normalise;
    # later: w[new] = w[prev] / (1 - lr); normalise
    w = np.asarray(tm.first_frame_weights(k0), np.float64).tolist() + [0.0] * 3
    w = [v / (1 - eta) for v in w]
    w[k0] = eta
    w = np.asarray(w) / sum(w)
    w[k0 + 1] = w[k0] / (1 - eta)
    w = w / w.sum()
    a = tm.memory_add(tm.memory_add(tm.authors_restart(mem), jnp.zeros((2, 2, 3)), fg, eta),
                      jnp.zeros((2, 2, 3)), fg, eta)
    np.testing.assert_allclose(a.weights, w, rtol=1e-6)
    b = tm.memory_add(tm.memory_add(mem, jnp.zeros((2, 2, 3)), fg, eta), jnp.zeros((2, 2, 3)), fg, eta)
    assert not np.allclose(b.weights, w, rtol=1e-3)  # vosjax's default rule differs
