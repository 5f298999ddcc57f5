"""The authors' STCN network, converted into vosjax, gives the authors' outputs.

``tests/fixtures/stcn/`` was written by ``tools/make_stcn_fixture.py`` from the
authors' own code (their ``eval_network.STCN`` and DAVIS ``InferenceCore``,
top-k 20, a memory frame every 5) on seeded random weights and real 480p DAVIS
frames (``bike``, 2 objects, frames played 0,1,2,3,2,1,0,1). Here the same
weights are re-created from ``spec.json`` with NumPy
(:func:`vosjax.models.torch_import_stcn.seeded_state_dict`), written as a
``.safetensors`` file (no PyTorch), converted by the library function behind
``tools/convert_torch_weights.py --arch stcn`` into a bundle, and run:

- features (frame 0's key and values, frame 1's key and key_comp):
  ``max |ours - theirs| / max |theirs| <= 1e-4``; frame 1's memory readout the
  same on >= 99.5 % of the query positions (the others: a tie between the 20th
  and 21st affinity, where two top-k's may keep different entries);
- under ``-m slow`` (the 480p engine takes minutes on 2 CPU cores): the bundle
  through :class:`vosjax.inference.VideoSegmenter` with no options but
  ``return_probs``: aggregated probabilities within 1e-3 on >= 99.5 % of the
  pixels (all within 1e-2: the readout's top-k ties), label maps equal on
  >= 99.5 % of the pixels (frames 0-2; and all 8, with a memory frame at 5).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from vosjax.models import torch_import_stcn as tis

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "stcn"
DAVIS_DEMO = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "davis_demo"
FEATURE_RTOL = 1e-4
PROB_ATOL = 1e-3
LABEL_AGREEMENT = 0.995


def _json(name):
    return json.loads((FIXTURE / name).read_text())


def _seeded() -> dict[str, np.ndarray]:
    spec = _json("spec.json")
    return tis.seeded_state_dict(spec["tensors"], spec["seed"])


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
    seq = info["sequence"]
    img = DAVIS_DEMO / "JPEGImages" / "480p" / seq
    frames = np.stack(
        [np.asarray(Image.open(img / f"{i:05d}.jpg").convert("RGB")) for i in info["frames"]]
    )
    first = np.asarray(
        Image.open(DAVIS_DEMO / "Annotations" / "480p" / seq / f"{info['frames'][0]:05d}.png")
    )
    return info, frames, first


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stcn_authors")
    src = tmp / "stcn.safetensors"
    save_file(_seeded(), src)
    out, report = tis.convert_stcn(src, tmp / "bundle")
    assert len(report.converted) == 347 and not report.unmatched and not report.unused
    assert (out / tis.REPORT_FILE).is_file()
    return out


def test_conversion_maps_every_tensor_and_sets_the_authors_settings(bundle):
    from vosjax.checkpoint import load_bundle

    meta = json.loads((bundle / tis.REPORT_FILE).read_text())
    spec = {name for name, *_ in _json("spec.json")["tensors"]}
    assert set(meta["converted"]) | set(meta["ignored"]) == spec
    assert len(set(meta["converted"].values())) == len(meta["converted"])  # one-to-one
    # the 15 biases of the value encoder's ResNet-18 convolutions are kept
    biases = [k for k in meta["converted"] if k.startswith("value_encoder.") and "fuser" not in k
              and k.endswith(".bias") and ("conv" in k or "downsample.0" in k)]
    assert len(biases) == 15
    model, variables, config = load_bundle(bundle)
    assert model.spec.value_conv_bias and model.memory_frames == tis.MEMORY_FRAMES
    inf = config.inference
    assert (inf.top_k, inf.mem_every, inf.pad_to, inf.resolution) == (20, 5, 16, 480)
    w = _seeded()["key_comp.weight"]
    np.testing.assert_array_equal(variables["params"]["query_comp"]["kernel"], w.transpose(2, 3, 1, 0))


def test_features_match_the_authors(bundle, clip):
    from vosjax.checkpoint import load_bundle
    from vosjax.data.normalize import normalize_frames
    from vosjax.inference import steps
    from vosjax.models.base import SegmentOptions
    from vosjax.ops.aggregate import soft_aggregate

    info, frames, first = clip
    ref = np.load(FIXTURE / "features.npz")
    ch = slice(*info["value_channels"])
    model, variables, _ = load_bundle(bundle)
    size = frames.shape[1:3]
    pads = steps.pad_amounts(size, 16)
    assert [pads[1][0], pads[1][1], pads[0][0], pads[0][1]] == info["pad"]  # STCN's pad order
    x = steps.pad_hw(normalize_frames(jnp.asarray(frames[None, :2])), pads, 2)
    feats = model.encode_key(variables, x)
    assert _rel(feats["key"][0, 0].transpose(2, 0, 1), ref["key_f0"]) < FEATURE_RTOL
    assert _rel(feats["key"][0, 1].transpose(2, 0, 1), ref["key_f1"]) < FEATURE_RTOL
    comp = model.net.apply(variables, feats["s16"][0, 1:2], method=lambda m, s: m.query_comp(s))
    assert _rel(comp[0].transpose(2, 0, 1)[ch], ref["key_comp_f1"]) < FEATURE_RTOL

    onehot = jnp.asarray(np.stack([first == v for v in info["labels"]]), jnp.float32)[None]
    o = onehot.shape[1]
    probs = jax.nn.softmax(soft_aggregate(onehot, jnp.ones((1, o), bool)), axis=1)[:, 1:]
    masks = steps.pad_hw(probs, pads, 2)[:, :, None]  # [1, O, 1, H, W]
    valid = jnp.ones((1, o), bool)
    f0 = {k: v[:, :1] for k, v in feats.items()}
    values = model.encode_value(variables, x[:, :1], masks, valid, f0)
    assert _rel(values[0, :, 0].transpose(0, 3, 1, 2)[:, ch], ref["value_f0"]) < FEATURE_RTOL

    memory = model.init_memory(variables, 1, o, feats["key"].shape[2:4])
    memory = model.memorize(variables, memory, x[:, :1], masks, valid, f0, jnp.ones((1,), bool))
    f1 = {k: v[:, 1:] for k, v in feats.items()}
    r = model.read_memory(memory, f1, o, SegmentOptions(top_k=20))
    r = np.asarray(r[0, :, 0].transpose(0, 3, 1, 2)[:, ch], np.float64)
    want = ref["readout_f1"].astype(np.float64)
    err = np.abs(r - want).max(axis=(0, 1)) / np.abs(want).max()  # per query position
    # Where the 20th and 21st affinities tie in float32 the two top-k's may keep different
    # entries (2 of the 1620 positions here); everywhere else the readout agrees to 1e-4.
    assert np.mean(err <= FEATURE_RTOL) >= 0.995, f"{np.mean(err <= FEATURE_RTOL):.4%}"
    assert err.max() < 0.05


def _segment(bundle, clip, n_frames):
    from vosjax.inference import VideoSegmenter

    info, frames, first = clip
    seg = VideoSegmenter(str(bundle), {"return_probs": True})
    preds = []
    for t in range(n_frames):
        preds += seg.step(frames[t], first if t == 0 else None)
    preds += seg.flush()
    assert [p.index for p in preds] == list(range(n_frames))
    assert preds[0].object_ids == tuple(info["labels"])
    return np.stack([p.probs for p in preds], 1), np.stack([p.labels for p in preds])


def _check_outputs(bundle, clip, n_frames):
    info, _, _ = clip
    ref = np.load(FIXTURE / "outputs.npz")
    probs, labels = _segment(bundle, clip, n_frames)
    s = info["prob_stride"]
    err = np.abs(probs[:, :, ::s, ::s] - ref["probs"][:, :n_frames])
    ids = np.asarray([0] + info["labels"], np.uint8)
    agree = np.mean(labels == ids[ref["labels"][:n_frames]])
    close = np.mean(err.max(axis=0) <= PROB_ATOL)  # per stored pixel and frame
    print(f"{n_frames} frames: max |dP| = {err.max():.2e}, within {PROB_ATOL}: {close:.4%}, "
          f"labels agree on {agree:.4%}")
    # The top-k ties of the readout (test above: 2 of 1620 query positions of frame 1 keep a
    # different 20th entry) change the decoder's output around those positions: measured
    # max |dP| 6.8e-3 with 99.75 % of the stored pixels within 1e-3 over the 8 frames;
    # elsewhere the outputs agree to ~1e-6.
    assert close >= 0.995 and err.max() < 1e-2, f"max |dP| = {err.max():.2e}, {close:.4%}"
    assert agree >= LABEL_AGREEMENT, f"labels agree on {agree:.4%}"
    return err.max(), agree


@pytest.mark.slow  # the 480p ResNet-50 engine step compiles and runs for minutes on 2 CPU cores
def test_segmenter_matches_the_authors_on_the_first_frames(bundle, clip):
    _check_outputs(bundle, clip, 3)


@pytest.mark.slow
def test_segmenter_matches_the_authors_through_a_memory_frame(bundle, clip):
    _check_outputs(bundle, clip, len(clip[0]["frames"]))


def test_torch_checkpoint_converts_like_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    weights = _seeded()
    src = tmp_path / "stcn.pth"
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, src)
    sd = tis.torch_import.read_state_dict(src)  # torch.load(weights_only=True)
    variables, report = tis.convert_stcn_state_dict(sd)
    assert len(report.converted) == 347 and not report.unmatched
    np.testing.assert_array_equal(
        variables["params"]["value_encoder"]["layer2"]["0"]["downsample"]["0"]["bias"],
        weights["value_encoder.layer2.0.downsample.0.bias"],
    )
    # stcn_s0.pth: a 4-channel value stem, the others' mask channel zero-filled
    s0 = dict(weights)
    s0["value_encoder.conv1.weight"] = weights["value_encoder.conv1.weight"][:, :4]
    v0, r0 = tis.convert_stcn_state_dict(s0)
    k = v0["params"]["value_encoder"]["conv1"]["kernel"]
    assert k.shape[2] == 5 and not np.any(k[:, :, 4]) and r0.notes


def test_conversion_refuses_unplaceable_and_missing_tensors():
    from vosjax.errors import VosjaxError

    weights = _seeded()
    extra = {**weights, "aspp.conv.weight": weights["key_comp.weight"]}
    with pytest.raises(VosjaxError, match="cannot be placed.*aspp.conv.weight"):
        tis.convert_stcn_state_dict(extra)
    bad = {**weights, "key_comp.weight": weights["key_comp.weight"][:, :512]}
    with pytest.raises(VosjaxError, match="key_comp.weight: shape"):
        tis.convert_stcn_state_dict(bad)
    missing = {k: v for k, v in weights.items() if k != "decoder.pred.bias"}
    with pytest.raises(VosjaxError, match="decoder.pred.bias"):
        tis.convert_stcn_state_dict(missing)
    variables, report = tis.convert_stcn_state_dict(missing, allow_missing=True)
    assert report.unmatched == ["decoder.pred.bias"]
    assert not np.any(variables["params"]["decoder"]["pred"]["bias"])
