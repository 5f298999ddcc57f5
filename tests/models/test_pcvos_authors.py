"""The authors' PCVOS network, converted into vosjax, gives the authors' outputs.

``tests/fixtures/pcvos/`` was written by ``tools/make_pcvos_fixture.py`` from the
authors' own code (their ``eval_network.PCVOS`` with the options of their
inference script, and ``InferenceCore_Per_Clip``, the driver of their
``eval_youtube.py``: top-k 20, clips of L frames with a memory frame at each
clip's end, progressive memory matching every 5 frames) on seeded random
weights and real DAVIS frames (``bike``, 2 objects, frames played forward and
back, a 232 x 408 crop of the 480p frames; L = 6, so PMM acts). Here the same
weights are re-created from ``spec.json`` with NumPy
(:func:`vosjax.models.torch_import_pcvos.seeded_state_dict`), written as a
``.safetensors`` file (no PyTorch), converted by the library function behind
``tools/convert_torch_weights.py --arch pcvos`` into a bundle, and run:

- frame 0's key and values, the first clip's keys and local keys:
  ``max |ours - theirs| / max |theirs| <= 1e-4``; the clip's memory read-out
  (with PMM) and refined read-out (after the intra-clip refinement) the same
  on >= 99.5 % of the query positions (the others would be top-k ties, see
  ``test_stcn_authors.py``; measured: all, max 9e-7); the clip's aggregated
  probabilities within 1e-3 (measured 2e-6);
- under ``-m slow``: the bundle through :class:`vosjax.inference.VideoSegmenter`
  (at the crop's own size: ``resolution=None``): probabilities of all 13 frames
  within 1e-3 on >= 99.9 % of the stored pixels, label maps equal on >= 99.5 %
  (measured: the first clip within 2e-6; the second, after a memory frame,
  within 5e-4, from near-ties of the top-k; labels equal on 99.99 %).
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from vosjax.models import torch_import_pcvos as tip

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "pcvos"
DAVIS_DEMO = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "davis_demo"
FEATURE_RTOL = 1e-4
PROB_ATOL = 1e-3
LABEL_AGREEMENT = 0.995
N_VARIABLES = 385  # STCN's 347 + the local-key head's 2 + the refinement's 36


def _json(name):
    return json.loads((FIXTURE / name).read_text())


def _rel(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def _seeded() -> dict[str, np.ndarray]:
    spec = _json("spec.json")
    return tip.seeded_state_dict(spec["tensors"], spec["seed"])


def _ch(info, name):
    return slice(*info[name])


@pytest.fixture(scope="module")
def clip():
    if not (DAVIS_DEMO / "JPEGImages").is_dir():
        pytest.skip(f"real DAVIS demo data not found at {DAVIS_DEMO}")
    from PIL import Image

    info = _json("clip.json")
    seq = info["sequence"]
    top, bottom, left, right = info["crop"]
    img = DAVIS_DEMO / "JPEGImages" / "480p" / seq
    frames = np.stack(
        [np.asarray(Image.open(img / f"{i:05d}.jpg").convert("RGB")) for i in info["frames"]]
    )[:, top:bottom, left:right]
    first = np.asarray(
        Image.open(DAVIS_DEMO / "Annotations" / "480p" / seq / f"{info['frames'][0]:05d}.png")
    )[top:bottom, left:right]
    return info, np.ascontiguousarray(frames), np.ascontiguousarray(first)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pcvos_authors")
    src = tmp / "pcvos.safetensors"
    save_file(_seeded(), src)
    out, report = tip.convert_pcvos(src, tmp / "bundle", clip_length=_json("clip.json")["clip_length"])
    assert len(report.converted) == N_VARIABLES and not report.unmatched and not report.unused
    return out


def test_conversion_maps_every_tensor_and_sets_the_authors_settings(bundle):
    from vosjax.checkpoint import load_bundle

    meta = json.loads((bundle / tip.torch_import_stcn.REPORT_FILE).read_text())
    spec = {name for name, *_ in _json("spec.json")["tensors"]}
    assert set(meta["converted"]) | set(meta["ignored"]) == spec
    assert len(set(meta["converted"].values())) == len(meta["converted"])  # one-to-one
    assert sum(k.endswith("relative_position_index") for k in meta["ignored"]) == 2
    model, variables, config = load_bundle(bundle)
    s = model.spec
    assert (s.icr_value_width, s.icr_ffn_dim, s.icr_rel_pos_bias, s.icr_final_norm, s.icr_padding) == (
        512, 2048, True, True, "swin")
    inf = config.inference
    assert (inf.top_k, inf.clip_length, inf.mem_every, inf.segment_len, inf.pad_to) == (20, 6, 6, 5, 16)
    w = _seeded()
    icr = variables["params"]["icr"]
    np.testing.assert_array_equal(
        icr["layer1"]["rel_bias"], w["refine_transformer.layers.0.blocks.1.attn.relative_position_bias_table"])
    np.testing.assert_array_equal(icr["layer0"]["psi"]["kernel"], w["refine_transformer.layers.0.blocks.0.attn.v.weight"].T)
    np.testing.assert_array_equal(icr["norm"]["scale"], w["refine_transformer.norm.weight"])
    np.testing.assert_array_equal(
        variables["params"]["intra_key"]["kernel"], w["input_proj.key_proj.weight"].transpose(2, 3, 1, 0))


def _per_position(ours, theirs):
    """Per query position (the last three axes) max |ours - theirs| / max |theirs|."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    lead = tuple(range(ours.ndim - 3))
    return np.abs(ours - theirs).max(axis=lead) / np.abs(theirs).max()


def test_features_and_clip_probabilities_match_the_authors(bundle, clip):
    from vosjax.checkpoint import load_bundle
    from vosjax.data.normalize import normalize_frames
    from vosjax.inference import steps
    from vosjax.models.base import SegmentOptions
    from vosjax.ops.aggregate import soft_aggregate

    info, frames, first = clip
    ref = np.load(FIXTURE / "features.npz")
    kc, lc, vc = _ch(info, "key_channels"), _ch(info, "local_key_channels"), _ch(info, "value_channels")
    L = info["clip_length"]
    model, variables, _ = load_bundle(bundle)
    pads = steps.pad_amounts(frames.shape[1:3], 16)
    assert [pads[1][0], pads[1][1], pads[0][0], pads[0][1]] == info["pad"]
    x = steps.pad_hw(normalize_frames(jnp.asarray(frames[None, : L + 1])), pads, 2)
    feats = model.encode_key(variables, x)
    chw = lambda a: np.moveaxis(np.asarray(a), -1, -3)  # [..., h, w, C] -> [..., C, h, w]
    assert _rel(chw(feats["key"][0, 0])[kc], ref["key_f0"]) < FEATURE_RTOL
    assert _rel(chw(feats["key"][0, 1:])[:, kc], ref["key_clip"]) < FEATURE_RTOL
    assert _rel(chw(feats["k_intra"][0, 1:])[:, lc], ref["k_intra_clip"]) < FEATURE_RTOL

    onehot = jnp.asarray(np.stack([first == v for v in info["labels"]]), jnp.float32)[None]
    o = onehot.shape[1]
    valid = jnp.ones((1, o), bool)
    probs0 = jax.nn.softmax(soft_aggregate(onehot, valid), axis=1)[:, 1:]
    masks = steps.pad_hw(probs0, pads, 2)[:, :, None]  # [1, O, 1, H, W]
    f0 = {k: v[:, :1] for k, v in feats.items()}
    values = model.encode_value(variables, x[:, :1], masks, valid, f0)
    assert _rel(chw(values[0, :, 0])[:, vc], ref["value_f0"]) < FEATURE_RTOL

    memory = model.init_memory(variables, 1, o, feats["key"].shape[2:4])
    memory = model.memorize(variables, memory, x[:, :1], masks, valid, f0, jnp.ones((1,), bool))
    fc = {k: v[:, 1:] for k, v in feats.items()}
    r = model.read_memory(memory, fc, o, SegmentOptions(top_k=20, segment_len=5))  # [1, O, L, h, w, C]
    err = _per_position(np.moveaxis(np.asarray(r[0]), -1, 1)[:, vc], ref["readout_clip"])
    print(f"read-out: max rel err {err.max():.2e}, within 1e-4 on {np.mean(err <= FEATURE_RTOL):.4%}")
    assert np.mean(err <= FEATURE_RTOL) >= 0.995 and err.max() < 0.05
    refined = model.net.apply(variables, r, fc, method=model.net_cls.refine_readout)
    err = _per_position(np.moveaxis(np.asarray(refined[0]), -1, 1)[:, vc], ref["refined_clip"])
    print(f"refined: max rel err {err.max():.2e}, within 1e-4 on {np.mean(err <= FEATURE_RTOL):.4%}")
    assert np.mean(err <= FEATURE_RTOL) >= 0.995 and err.max() < 0.05

    logits = model.net.apply(variables, refined, fc, method=model.net_cls.decode)  # [1, O, L, H, W]
    agg = jax.nn.softmax(soft_aggregate(jax.nn.sigmoid(logits), valid), axis=1)[0]
    (top, bottom), (left, right) = pads
    agg = np.asarray(agg)[:, :, top : agg.shape[2] - bottom, left : agg.shape[3] - right]
    s = info["prob_stride"]
    want = np.load(FIXTURE / "outputs.npz")["probs"][:, 1 : L + 1]
    perr = np.abs(agg[:, :, ::s, ::s] - want)
    print(f"clip probabilities: max |dP| {perr.max():.2e}, within {PROB_ATOL}: {np.mean(perr.max(0) <= PROB_ATOL):.4%}")
    assert np.mean(perr.max(axis=0) <= PROB_ATOL) >= 0.999 and perr.max() < 1e-2


def _segment(bundle, clip):
    from vosjax.inference import VideoSegmenter

    info, frames, first = clip
    seg = VideoSegmenter(str(bundle), {"return_probs": True, "resolution": None})
    assert seg.config.clip_length == info["clip_length"] and seg.config.segment_len == 5
    preds = []
    for t in range(len(frames)):
        preds += seg.step(frames[t], first if t == 0 else None)
    preds += seg.flush()
    assert [p.index for p in preds] == list(range(len(frames)))
    return np.stack([p.probs for p in preds], 1), np.stack([p.labels for p in preds])


@pytest.mark.slow  # the engine's clip step compiles and runs for minutes on 2 CPU cores
def test_segmenter_matches_the_authors_clip_by_clip(bundle, clip):
    info = clip[0]
    ref = np.load(FIXTURE / "outputs.npz")
    probs, labels = _segment(bundle, clip)
    s = info["prob_stride"]
    err = np.abs(probs[:, :, ::s, ::s] - ref["probs"])
    ids = np.asarray([0] + info["labels"], np.uint8)
    agree = np.mean(labels == ids[ref["labels"]])
    close = np.mean(err.max(axis=0) <= PROB_ATOL)
    print(f"max |dP| = {err.max():.2e}, within {PROB_ATOL}: {close:.4%}, labels agree on {agree:.4%}")
    print("per frame max |dP|:", " ".join(f"{e:.1e}" for e in err.max(axis=(0, 2, 3))))
    print("per frame label agreement:", " ".join(
        f"{a:.4f}" for a in np.mean(labels == ids[ref["labels"]], axis=(1, 2))))
    assert close >= 0.999 and err.max() < 1e-2
    assert agree >= LABEL_AGREEMENT


def test_torch_checkpoint_converts_like_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    weights = _seeded()
    src = tmp_path / "pcvos.pth"
    torch.save({"module." + k: torch.from_numpy(v) for k, v in weights.items()}, src)
    sd = tip.torch_import.read_state_dict(src)  # torch.load(weights_only=True)
    variables, report = tip.convert_pcvos_state_dict(sd)
    assert report.prefix == "module." and len(report.converted) == N_VARIABLES
    np.testing.assert_array_equal(
        variables["params"]["icr"]["layer0"]["ffn_out"]["kernel"],
        weights["refine_transformer.layers.0.blocks.0.mlp.fc2.weight"].T,
    )


def test_conversion_refuses_unplaceable_wrong_and_missing_tensors():
    from vosjax.errors import VosjaxError

    weights = _seeded()
    table = "refine_transformer.layers.0.blocks.0.attn.relative_position_bias_table"
    extra = {**weights, "refine_transformer.layers.0.blocks.2.norm1.weight": weights["refine_transformer.norm.weight"]}
    with pytest.raises(VosjaxError, match="cannot be placed in vosjax's PCVOS.*blocks.2.norm1.weight"):
        tip.convert_pcvos_state_dict(extra)
    bad = {**weights, table: weights[table][:100]}
    with pytest.raises(VosjaxError, match="relative_position_bias_table: shape"):
        tip.convert_pcvos_state_dict(bad)
    index = "refine_transformer.layers.0.blocks.1.attn.relative_position_index"
    with pytest.raises(VosjaxError, match="relative_position_index"):
        tip.convert_pcvos_state_dict({**weights, index: weights[index][:49, :49]})
    missing = {k: v for k, v in weights.items() if k not in (table, "input_proj.key_proj.bias")}
    with pytest.raises(VosjaxError, match="2 of 385 variables have no source"):
        tip.convert_pcvos_state_dict(missing)
    variables, report = tip.convert_pcvos_state_dict(missing, allow_missing=True)
    assert sorted(report.unmatched) == ["input_proj.key_proj.bias", table]
    assert not np.any(variables["params"]["icr"]["layer0"]["rel_bias"])


def test_cli_converts_with_a_chosen_clip_length(tmp_path, capsys):
    import importlib.util

    from vosjax.checkpoint import load_bundle

    path = pathlib.Path(__file__).resolve().parents[2] / "tools" / "convert_torch_weights.py"
    spec = importlib.util.spec_from_file_location("convert_torch_weights", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    src = tmp_path / "pcvos.safetensors"
    save_file(_seeded(), src)
    out = tmp_path / "bundle"
    argv = ["--arch", "pcvos", "--input", str(src), "--output", str(out), "--clip-length", "10"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "385 source tensors used" in text and "input_proj.key_proj.weight -> params/intra_key/kernel" in text
    _, _, config = load_bundle(out)
    assert (config.inference.clip_length, config.inference.mem_every, config.inference.segment_len) == (10, 10, 5)
    assert cli.main(argv) == 1  # the bundle exists: --overwrite needed
    assert "overwrite" in capsys.readouterr().err
    assert cli.main(["--arch", "stcn", "--input", str(src), "--output", str(tmp_path / "s"), "--clip-length", "5"]) == 1
