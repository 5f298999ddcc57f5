"""PCVOS: the intra-clip refinement layer against a loop reference, and the full model.

The model is compiled once per module at a small size (2 videos, 2 object
slots, 3 frames of 64 x 96: frame 0 is memorised, frames 1-2 form the clip).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.special import erf

from vosjax.errors import VosjaxError
from vosjax.methods import get_method
from vosjax.models import get_model, pcvos, stcn
from vosjax.models.base import SegmentOptions
from vosjax.ops.aggregate import INVALID_LOGIT

B, O, T, H, W = 2, 2, 3, 64, 96
h, w = math.ceil(H / 16), math.ceil(W / 16)
OBJ_VALID = np.array([[True, True], [True, False]])
WRITE_ALL = jnp.ones((B,), bool)


# ----------------------------------------------------------------------------- ICR reference


def np_layer_norm(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def np_dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_groups(size, window, shift):
    """Window index of each position on one axis (windows clamped to the axis, Video Swin)."""
    if size <= window:
        window, shift = size, 0
    return np.floor_divide(np.arange(size) - shift, window)


def np_icr_layer(params, v, k_intra, heads, window, shift):
    """ICR layer by loops: v_attn = Attn(phi(k), phi(k)) psi(v) W_o + v; v + FFN(v_attn)."""
    p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
    v = np.asarray(v, np.float64)
    k_intra = np.asarray(k_intra, np.float64)
    b_, o_, t_, h_, w_, _ = v.shape
    k = np_dense(np_layer_norm(k_intra, p["phi_norm"]), p["phi"])  # [B, T, h, w, width]
    width = k.shape[-1]
    d = width // heads
    g = [np_groups(n, wn, s) for n, wn, s in zip((t_, h_, w_), window, shift)]
    pos = [(t, y, x) for t in range(t_) for y in range(h_) for x in range(w_)]
    out = np.zeros_like(v)
    for b in range(b_):
        for o in range(o_):
            u = np_dense(np_layer_norm(v[b, o], p["psi_norm"]), p["psi"])
            attn = np.zeros(v.shape[2:5] + (width,))
            for pt in pos:
                nbrs = [q for q in pos if all(g[a][pt[a]] == g[a][q[a]] for a in range(3))]
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    logits = np.array([k[b][pt][sl] @ k[b][q][sl] / math.sqrt(d) for q in nbrs])
                    e = np.exp(logits - logits.max())
                    wts = e / e.sum()
                    attn[pt][sl] = sum(wt * u[q][sl] for wt, q in zip(wts, nbrs))
            va = v[b, o] + np_dense(attn, p["out"])
            f = np_dense(np_layer_norm(va, p["ffn_in_norm"]), p["ffn_in"])
            f = 0.5 * f * (1 + erf(f / math.sqrt(2)))
            out[b, o] = va + np_dense(f, p["ffn_out"])
    return out


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 1)])
def test_icr_layer_matches_loop_reference(shift):
    # T=3, h=5, w=4 with window (2, 3, 3): every axis is padded, and shifted windows wrap.
    window, heads = (2, 3, 3), 2
    layer = pcvos.ICRLayer(width=8, heads=heads, ffn_dim=12, window=window, shift=shift)
    rng = np.random.default_rng(0)
    v = jnp.asarray(rng.normal(size=(2, 2, 3, 5, 4, 6)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 3, 5, 4, 5)), jnp.float32)
    params = jax.jit(layer.init)(jax.random.key(0), v, k)
    # Non-trivial LayerNorm affine parameters too.
    params = jax.tree_util.tree_map(
        lambda x: x + 0.1 * jnp.asarray(rng.normal(size=x.shape), jnp.float32), params
    )
    got = jax.jit(layer.apply)(params, v, k)
    ref = np_icr_layer(params["params"], v, k, heads, window, shift)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    if shift == (1, 1, 1):
        check_grads(
            jax.jit(lambda v, k: layer.apply(params, v, k)),
            (v, k),
            order=1,
            modes=("rev",),
            atol=5e-2,
            rtol=5e-2,
            eps=1e-2,
        )


# ----------------------------------------------------------------------------- the model


def make_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(B, T, H, W, 3)).astype(np.float32)
    masks = np.zeros((B, O, T, H, W), np.float32)
    for b in range(B):
        for t in range(T):
            masks[b, 0, t, 8 + 2 * t : 30 + 2 * t, 10 : 40 + 3 * t] = 1.0
            masks[b, 1, t, 36 : 60 - t, 50 + 4 * t : 90] = 1.0
    return jnp.asarray(frames), jnp.asarray(masks)


def sl(feats, s):
    return {k: v[:, s] for k, v in feats.items()}


@pytest.fixture(scope="module")
def setup():
    model = get_model(pcvos.default_config(tiny=True))
    frames, masks = make_inputs()
    ov = jnp.asarray(OBJ_VALID)
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), frames, masks, ov)
    encode_key = jax.jit(model.encode_key)
    memorize = jax.jit(model.memorize)
    segment = jax.jit(model.segment, static_argnames="options")
    feats = encode_key(variables, frames)
    empty = model.init_memory(variables, B, O, (h, w))

    def run(masks, ov, feats=feats, options=stcn.DEFAULT_OPTIONS):
        mem = memorize(
            variables, empty, frames[:, :1], masks[:, :, :1], ov, sl(feats, slice(0, 1)), WRITE_ALL
        )
        return mem, segment(variables, mem, sl(feats, slice(1, None)), ov, options)

    mem, logits = run(masks, ov)
    return {
        "model": model,
        "frames": frames,
        "masks": masks,
        "ov": ov,
        "variables": variables,
        "feats": feats,
        "empty": empty,
        "run": run,
        "mem": mem,
        "logits": logits,
    }


def test_shapes_and_registry(setup):
    s, m = setup, setup["model"]
    assert get_method("pcvos").model == "vosjax.models.pcvos:PCVOS" and isinstance(m, pcvos.PCVOS)
    f = s["feats"]
    chex.assert_shape(f["k_intra"], (B, T, h, w, m.spec.intra_key_dim))
    chex.assert_shape(f["key"], (B, T, h, w, m.spec.key_dim))
    chex.assert_shape(s["logits"], (B, O, T - 1, H, W))
    assert s["logits"].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(s["logits"])))
    np.testing.assert_array_equal(s["logits"][1, 1], INVALID_LOGIT)
    params = s["variables"]["params"]
    assert {"intra_key", "icr"} <= set(params) and set(params["icr"]) == {"layer0", "layer1"}
    assert m.decoder_paths() == [("decoder",)]


def test_refinement_couples_the_frames_of_a_clip(setup):
    """Perturbing query frame 2 changes frame 1's prediction (ICR), not so without ICR."""
    s, m = setup, setup["model"]
    rng = np.random.default_rng(1)
    feats2 = dict(s["feats"])
    for k in ("key", "k_intra"):
        noise = jnp.asarray(rng.normal(size=feats2[k][:, 2].shape), jnp.float32)
        feats2[k] = feats2[k].at[:, 2].add(noise)
    _, logits2 = s["run"](s["masks"], s["ov"], feats2)
    valid = np.asarray(OBJ_VALID)
    assert float(jnp.abs(logits2[:, :, 0] - s["logits"][:, :, 0])[valid].max()) > 1e-4
    # The same change without the refinement leaves frame 1 alone.
    plain = m.read_memory(s["mem"], sl(feats2, slice(1, None)), O)
    ref = m.read_memory(s["mem"], sl(s["feats"], slice(1, None)), O)
    np.testing.assert_array_equal(plain[:, :, 0], ref[:, :, 0])


def test_jit_equals_no_jit(setup):
    s, m = setup, setup["model"]
    eager = m.segment(s["variables"], s["mem"], sl(s["feats"], slice(1, None)), s["ov"])
    np.testing.assert_allclose(eager, s["logits"], rtol=1e-4, atol=1e-4)


def test_object_permutation_equivariance(setup):
    s = setup
    perm = np.array([1, 0])
    _, got = s["run"](s["masks"][:, perm], s["ov"][:, perm])
    np.testing.assert_allclose(got, s["logits"][:, perm], rtol=1e-5, atol=1e-5)


def test_invalid_slot_does_not_affect_valid_ones(setup):
    s = setup
    rng = np.random.default_rng(2)
    garbage = s["masks"].at[1, 1].set(jnp.asarray(rng.uniform(size=(T, H, W)), jnp.float32))
    _, got = s["run"](garbage, s["ov"])
    np.testing.assert_array_equal(got[1, 0], s["logits"][1, 0])
    np.testing.assert_array_equal(got[0], s["logits"][0])


def test_progressive_matching(setup):
    s = setup
    _, pmm = s["run"](s["masks"], s["ov"], options=SegmentOptions(segment_len=1))
    valid = np.asarray(OBJ_VALID)
    # Frame 2 also reads frame 1's (query key, read-out value) from the temporary memory.
    assert float(jnp.abs(pmm[:, :, 1] - s["logits"][:, :, 1])[valid].max()) > 1e-4
    assert bool(jnp.all(jnp.isfinite(pmm)))
    np.testing.assert_array_equal(pmm[1, 1], INVALID_LOGIT)


def test_gradients_reach_every_head_param_and_the_memory_masks(setup):
    """Gradients w.r.t. every non-backbone parameter (the backbones' share of the graph is
    the STCN one, checked in test_stcn.py; leaving them out keeps the compile small) and
    w.r.t. the memorised masks, through the value encoder."""
    s, m = setup, setup["model"]
    v, ov = s["variables"], s["ov"]
    target = s["masks"][:, :, 1:]
    backbone_names = {path[0] for path, _, _ in m.backbone_paths().values()}
    heads = {k: x for k, x in v["params"].items() if k not in backbone_names}
    assert {"intra_key", "icr", "decoder", "fuser", "key_proj", "query_comp"} <= set(heads)

    def loss(heads, mask0):
        var = {**v, "params": {**v["params"], **heads}}
        feats = m.encode_key(var, s["frames"])
        mem = m.memorize(
            var, s["empty"], s["frames"][:, :1], mask0, ov, sl(feats, slice(0, 1)), WRITE_ALL
        )
        p = jax.nn.sigmoid(m.segment(var, mem, sl(feats, slice(1, None)), ov))
        bce = -(target * jnp.log(p + 1e-6) + (1 - target) * jnp.log(1 - p + 1e-6))
        return jnp.sum(bce * ov[:, :, None, None, None]) / bce.size

    g_params, g_mask = jax.jit(jax.grad(loss, argnums=(0, 1)))(heads, s["masks"][:, :, :1])
    dead = [
        jax.tree_util.keystr(p)
        for p, x in jax.tree_util.tree_leaves_with_path(g_params)
        if not float(jnp.abs(x).max()) > 0
    ]
    assert not dead, f"parameters without gradient: {dead}"
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(g_params))
    assert bool(jnp.all(jnp.isfinite(g_mask))) and float(jnp.abs(g_mask[0, 0]).max()) > 0
    assert float(jnp.abs(g_mask[1, 1]).max()) == 0.0


def test_config_errors():
    cfg = pcvos.default_config(tiny=True).to_dict()
    cfg["icr_heads"] = 3
    with pytest.raises(VosjaxError, match="icr_heads"):
        pcvos.PCVOS(cfg)
    cfg = pcvos.default_config(tiny=True).to_dict()
    cfg["icr_window"] = (2, 7)
    with pytest.raises(VosjaxError, match="icr_window"):
        pcvos.PCVOS(cfg)
    cfg = pcvos.default_config(tiny=True).to_dict()
    del cfg["icr_width"]
    with pytest.raises(VosjaxError, match="icr_width"):
        pcvos.PCVOS(cfg)


def test_full_config_matches_the_paper():
    c = pcvos.default_config()
    assert (c.key_dim, c.value_dim, c.intra_key_dim) == (64, 512, 256)
    assert (c.icr_layers, c.icr_width, tuple(c.icr_window)) == (2, 256, (2, 7, 7))
    assert (c.key_backbone, c.value_backbone) == ("resnet50", "resnet18")


@pytest.mark.slow
def test_full_size_480x854_clip():
    model = get_model(pcvos.default_config())
    bsz, nobj, hh, ww, clip = 1, 2, 480, 854, 5
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.normal(size=(bsz, clip + 1, hh, ww, 3)), jnp.float32)
    masks = np.zeros((bsz, nobj, clip + 1, hh, ww), np.float32)
    masks[:, 0, :, 100:300, 200:400] = 1
    masks[:, 1, :, 250:450, 500:800] = 1
    masks = jnp.asarray(masks)
    ov = jnp.ones((bsz, nobj), bool)
    v = jax.jit(model.init)(jax.random.key(0, impl="rbg"), frames[:, :2], masks[:, :, :2], ov)

    @jax.jit
    def run(v):
        feats = model.encode_key(v, frames)
        mem = model.init_memory(v, bsz, nobj, feats["key"].shape[2:4])
        mem = model.memorize(
            v,
            mem,
            frames[:, :1],
            masks[:, :, :1],
            ov,
            sl(feats, slice(0, 1)),
            jnp.ones((bsz,), bool),
        )
        return model.segment(v, mem, sl(feats, slice(1, None)), ov, SegmentOptions(segment_len=2))

    logits = run(v)
    chex.assert_shape(logits, (bsz, nobj, clip, hh, ww))
    assert bool(jnp.all(jnp.isfinite(logits)))


# ----------------------------------------------------------------------------- the authors' form


def _swin_layer(padding, rel_pos_bias=False):
    return pcvos.ICRLayer(width=8, heads=1, ffn_dim=12, window=(2, 3, 3), shift=(1, 1, 1),
                          value_width=6, rel_pos_bias=rel_pos_bias, padding=padding)


@pytest.mark.parametrize("size", [(4, 6, 6), (3, 5, 4)])
def test_swin_padding_differs_from_masked_only_where_there_is_padding(size):
    # Video Swin's form pads the normalised inputs BEFORE the projections and lets the
    # padding be attended; on a grid of whole windows it is the exact form (the -100
    # region logit is below float32 resolution).
    rng = np.random.default_rng(1)
    v = jnp.asarray(rng.normal(size=(1, 2) + size + (6,)), jnp.float32)
    k = jnp.asarray(0.2 * rng.normal(size=(1,) + size + (5,)), jnp.float32)
    params = _swin_layer("masked").init(jax.random.key(0), v, k)
    params = jax.tree_util.tree_map(  # non-zero biases: padding projects to them
        lambda x: x + 0.3 * jnp.asarray(rng.normal(size=x.shape), jnp.float32), params
    )
    a = _swin_layer("masked").apply(params, v, k)
    b = _swin_layer("swin").apply(params, v, k)
    diff = float(jnp.abs(a - b).max())
    if size == (4, 6, 6):
        assert diff < 1e-5
    else:
        assert diff > 1e-3


def test_authors_form_has_their_shapes_and_defaults_are_unchanged():
    c = pcvos.default_config()
    assert (c.icr_value_width, c.icr_rel_pos_bias, c.icr_final_norm, c.icr_padding) == (
        0, False, False, "masked")
    spec = pcvos.PCVOS(c).spec
    assert spec.icr_value_width is None and spec.icr_ffn_dim == 1024
    a = pcvos.authors_icr(pcvos.default_config(tiny=True))
    a.icr_window = (2, 3, 3)
    m = pcvos.PCVOS(a)
    v = jnp.zeros((1, 1, 2, 5, 4, a.value_dim))
    k = jnp.zeros((1, 2, 5, 4, a.intra_key_dim))
    p = jax.eval_shape(lambda: pcvos.IntraClipRefinement(m.spec).init(jax.random.key(0), v, k))
    p = p["params"]
    cv = a.value_dim
    assert p["layer0"]["psi"]["kernel"].shape == (cv, cv) and p["layer0"]["out"]["kernel"].shape == (cv, cv)
    assert p["layer1"]["ffn_in"]["kernel"].shape == (cv, 4 * cv)
    assert p["layer1"]["phi"]["kernel"].shape == (a.intra_key_dim, a.icr_width)
    assert p["layer0"]["rel_bias"].shape == (3 * 5 * 5, 1) and p["norm"]["scale"].shape == (cv,)
    bad = a.to_dict()
    bad["icr_padding"] = "zeros"
    with pytest.raises(VosjaxError, match="icr_padding"):
        pcvos.PCVOS(bad)
