"""The STCN-style memory network (and its TrickVOS / cyclic forms) behind the VOSModel interface.

Every jitted function is compiled once per module (module-scoped fixtures) at a
small size (2 videos, 2 object slots, 3 frames, 64 x 96); the tests reuse
those compilations with other values of the same shapes.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from vosjax.errors import VosjaxError
from vosjax.methods import get_method
from vosjax.models import get_model, modules, stcn
from vosjax.models.base import SegmentOptions
from vosjax.ops import memory as mem_ops
from vosjax.ops.aggregate import INVALID_LOGIT

B, O, T, H, W = 2, 2, 3, 64, 96
h, w = math.ceil(H / 16), math.ceil(W / 16)
OBJ_VALID = np.array([[True, True], [True, False]])
WRITE_ALL = jnp.ones((B,), bool)


def make_inputs(seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """Frames and disjoint rectangle masks of 2 objects moving over 3 frames."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(B, T, H, W, 3)).astype(np.float32)
    masks = np.zeros((B, O, T, H, W), np.float32)
    for b in range(B):
        for t in range(T):
            masks[b, 0, t, 8 + 2 * t : 30 + 2 * t, 10 : 40 + 3 * t] = 1.0
            masks[b, 1, t, 36 : 60 - t, 50 + 4 * t : 90] = 1.0
    return jnp.asarray(frames), jnp.asarray(masks)


def first(feats, sl):
    return {k: v[:, sl] for k, v in feats.items()}


class Setup:
    """One tiny model, its variables and the jitted interface functions."""

    def __init__(self, config):
        self.model = stcn.STCN(config)
        self.frames, self.masks = make_inputs()
        self.obj_valid = jnp.asarray(OBJ_VALID)
        self.variables = jax.jit(self.model.init)(
            jax.random.key(0, impl="rbg"), self.frames, self.masks, self.obj_valid
        )
        self.encode_key = jax.jit(self.model.encode_key)
        self.memorize = jax.jit(self.model.memorize)
        self.segment = jax.jit(self.model.segment, static_argnames="options")
        self.feats = self.encode_key(self.variables, self.frames)
        self.empty = self.model.init_memory(self.variables, B, O, (h, w))

    def run(self, masks, obj_valid, options=stcn.DEFAULT_OPTIONS):
        """Memorise frame 0 with ``masks``, segment frames 1..2."""
        mem = self.memorize(
            self.variables,
            self.empty,
            self.frames[:, :1],
            masks[:, :, :1],
            obj_valid,
            first(self.feats, slice(0, 1)),
            WRITE_ALL,
        )
        return mem, self.segment(
            self.variables, mem, first(self.feats, slice(1, None)), obj_valid, options
        )


@pytest.fixture(scope="module")
def tiny():
    return Setup(stcn.default_config("stcn", tiny=True))


@pytest.fixture(scope="module")
def tiny_run(tiny):
    return tiny.run(tiny.masks, tiny.obj_valid)


# ----------------------------------------------------------------------------- shapes


def test_shapes_dtypes_and_finiteness(tiny, tiny_run):
    m, v = tiny.model, tiny.variables
    spec = m.spec
    assert {x.dtype for x in jax.tree_util.tree_leaves(v)} == {jnp.dtype(jnp.float32)}
    f = tiny.feats
    c16 = 256  # resnet18 layer3
    chex.assert_shape(f["key"], (B, T, h, w, spec.key_dim))
    chex.assert_shape(f["s16"], (B, T, h, w, c16))
    chex.assert_shape(f["s8"], (B, T, H // 8, W // 8, 128))
    chex.assert_shape(f["s4"], (B, T, H // 4, W // 4, 64))
    chex.assert_shape(f["frame_hw"], (B, T, H, W, 0))
    values = jax.eval_shape(m.encode_value, v, tiny.frames, tiny.masks, tiny.obj_valid, f)
    chex.assert_shape(values, (B, O, T, h, w, spec.value_dim))
    mem, logits = tiny_run
    chex.assert_shape(mem.keys, (B, spec.memory_frames, h * w, spec.key_dim))
    chex.assert_shape(mem.values, (B, spec.memory_frames, h * w, O * spec.value_dim))
    np.testing.assert_array_equal(mem.valid, [[True, False, False]] * B)
    chex.assert_shape(logits, (B, O, T - 1, H, W))
    assert logits.dtype == jnp.float32
    for x in (f["key"], f["s16"], f["s8"], f["s4"], mem.values, logits):
        assert bool(jnp.all(jnp.isfinite(x)))
    # The invalid slot (video 1, slot 1) has zero values (object-major channels) and the
    # sentinel logit; the valid ones do not.
    cv = spec.value_dim
    assert float(jnp.abs(mem.values[1, 0, :, cv:]).max()) == 0.0
    assert float(jnp.abs(mem.values[1, 0, :, :cv]).max()) > 0.0
    np.testing.assert_array_equal(logits[1, 1], INVALID_LOGIT)
    np.testing.assert_allclose(mem.keys[:, 0], f["key"][:, 0].reshape(B, h * w, -1), rtol=1e-6)


def test_backbone_and_decoder_paths_point_into_params(tiny):
    params = tiny.variables["params"]
    paths = tiny.model.backbone_paths()
    assert paths["key_encoder"][1:] == ("resnet18", 3)
    assert paths["value_encoder"][1:] == ("resnet18", 5)
    for path, arch, cin in paths.values():
        node = params
        for p in path:
            node = node[p]
        assert node["conv1"]["kernel"].shape[2] == cin
        assert "layer3" in node and "layer4" not in node
        assert path[0] in tiny.variables["batch_stats"]
    for path in tiny.model.decoder_paths():
        assert path[0] in params and "pred" in params[path[0]]


def np_readout(mem, query, top_k):
    """Loop reference of the bank readout: softmax over the valid top-k of (2 k.q - |k|^2)/sqrt(Ck)."""
    keys = np.asarray(mem.keys, np.float64)
    vals = np.asarray(mem.values, np.float64)
    valid = np.asarray(mem.valid)
    bsz, _, _, ck = keys.shape
    out = np.zeros((bsz, query.shape[1], vals.shape[-1]))
    for b in range(bsz):
        k = keys[b][valid[b]].reshape(-1, ck)
        v = vals[b][valid[b]].reshape(-1, vals.shape[-1])
        for n in range(query.shape[1]):
            q = np.asarray(query[b, n], np.float64)
            a = np.array([(2 * km @ q - km @ km) / math.sqrt(ck) for km in k])
            keep = np.argsort(-a, kind="stable")[: (top_k or len(a))]
            e = np.exp(a[keep] - a[keep].max())
            out[b, n] = (e / e.sum()) @ v[keep]
    return out


@pytest.mark.parametrize("top_k", [None, 5])
def test_read_memory_matches_loop_reference_per_object(tiny, tiny_run, top_k):
    mem, _ = tiny_run
    query = first(tiny.feats, slice(1, None))
    got = tiny.model.read_memory(mem, query, O, SegmentOptions(top_k=top_k))
    chex.assert_shape(got, (B, O, T - 1, h, w, tiny.model.spec.value_dim))
    ref = np_readout(mem, np.asarray(query["key"]).reshape(B, -1, tiny.model.spec.key_dim), top_k)
    ref = ref.reshape(B, T - 1, h, w, O, -1).transpose(0, 4, 1, 2, 3, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- blocks


def np_conv_same(x, kernel, bias):
    """Stride-1 'same' conv with zero padding (k - 1) // 2, NHWC x HWIO, by loops over taps."""
    kh, kw, _, cout = kernel.shape
    p = (kh - 1) // 2
    n, hh, ww, _ = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, hh, ww, cout)) + bias
    for dy in range(kh):
        for dx in range(kw):
            out += xp[:, dy : dy + hh, dx : dx + ww] @ kernel[dy, dx]
    return out


def np_resize(x, size):
    """Bilinear resize with half-pixel centres, coordinates clamped to the border (loops)."""
    n, hh, ww, c = x.shape
    out = np.zeros((n, size[0], size[1], c))
    for i in range(size[0]):
        for j in range(size[1]):
            y = min(max((i + 0.5) * hh / size[0] - 0.5, 0), hh - 1)
            xx = min(max((j + 0.5) * ww / size[1] - 0.5, 0), ww - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(xx))
            y1, x1 = min(y0 + 1, hh - 1), min(x0 + 1, ww - 1)
            a, b = y - y0, xx - x0
            out[:, i, j] = (
                (1 - a) * (1 - b) * x[:, y0, x0]
                + (1 - a) * b * x[:, y0, x1]
                + a * (1 - b) * x[:, y1, x0]
                + a * b * x[:, y1, x1]
            )
    return out


def test_blocks_match_numpy_references():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 6)).astype(np.float32)
    relu = lambda z: np.maximum(z, 0)
    sig = lambda z: 1 / (1 + np.exp(-z))

    res = modules.ResBlock(4)
    p = jax.jit(res.init)(jax.random.key(0), x)["params"]
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    r = np_conv_same(relu(x), p["conv1"]["kernel"], p["conv1"]["bias"])
    r = np_conv_same(relu(r), p["conv2"]["kernel"], p["conv2"]["bias"])
    ref = np_conv_same(x, p["downsample"]["kernel"], p["downsample"]["bias"]) + r
    np.testing.assert_allclose(jax.jit(res.apply)({"params": p}, x), ref, rtol=1e-4, atol=1e-4)
    pr = p

    cbam = modules.CBAM(reduction=2)
    p = jax.jit(cbam.init)(jax.random.key(1), x)["params"]
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    c = p["channel"]

    def mlp(z):
        z = relu(z @ c["mlp_in"]["kernel"] + c["mlp_in"]["bias"])
        return z @ c["mlp_out"]["kernel"] + c["mlp_out"]["bias"]

    y = x * sig(mlp(x.mean((1, 2))) + mlp(x.max((1, 2))))[:, None, None]
    pooled = np.stack([y.max(-1), y.mean(-1)], -1)
    sp = p["spatial"]["conv"]
    ref = y * sig(np_conv_same(pooled, sp["kernel"], sp["bias"]))
    np.testing.assert_allclose(jax.jit(cbam.apply)({"params": p}, x), ref, rtol=1e-4, atol=1e-5)
    both = jax.jit(lambda z: res.apply({"params": pr}, cbam.apply({"params": p}, z)))
    check_grads(both, (jnp.asarray(x),), order=1, modes=("rev",), eps=1e-3, atol=2e-2, rtol=2e-2)

    for size in [(10, 14), (9, 13), (5, 7)]:
        got = modules.resize_bilinear(jnp.asarray(x), size)
        np.testing.assert_allclose(got, np_resize(x.astype(np.float64), size), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- semantics


def test_jit_equals_no_jit(tiny, tiny_run):
    mem, logits = tiny_run
    query = first(tiny.feats, slice(1, None))
    eager = tiny.model.segment(tiny.variables, mem, query, tiny.obj_valid)
    np.testing.assert_allclose(eager, logits, rtol=1e-4, atol=1e-4)
    values = tiny.model.encode_value(
        tiny.variables,
        tiny.frames[:, :1],
        tiny.masks[:, :, :1],
        tiny.obj_valid,
        first(tiny.feats, slice(0, 1)),
    )
    np.testing.assert_allclose(
        jnp.moveaxis(values[:, :, 0], 1, 3).reshape(B, h * w, -1),
        mem.values[:, 0],
        rtol=1e-4,
        atol=1e-5,
    )


def test_object_permutation_equivariance(tiny, tiny_run):
    _, logits = tiny_run
    perm = np.array([1, 0])
    _, permuted = tiny.run(tiny.masks[:, perm], tiny.obj_valid[:, perm])
    np.testing.assert_allclose(permuted, logits[:, perm], rtol=1e-5, atol=1e-5)


def test_invalid_slot_does_not_affect_valid_ones(tiny, tiny_run):
    _, logits = tiny_run
    rng = np.random.default_rng(3)
    garbage = tiny.masks.at[1, 1].set(jnp.asarray(rng.uniform(size=(T, H, W)), jnp.float32))
    _, got = tiny.run(garbage, tiny.obj_valid)
    np.testing.assert_array_equal(got[1, 0], logits[1, 0])
    np.testing.assert_array_equal(got[0], logits[0])
    np.testing.assert_array_equal(got[1, 1], INVALID_LOGIT)
    # A VALID other object does change the value input ("others" plane), hence the output.
    changed = tiny.masks.at[0, 1].set(garbage[1, 1])
    _, got2 = tiny.run(changed, tiny.obj_valid)
    assert float(jnp.abs(got2[0, 0] - logits[0, 0]).max()) > 1e-6


def test_write_false_rows_are_untouched_and_keep_first_order(tiny):
    v, f = tiny.variables, tiny.feats
    write = jnp.array([True, False])
    mem = tiny.empty
    for t in range(T):  # 3 frames into a 3-slot bank, video 1 never written
        mem = tiny.memorize(
            v,
            mem,
            tiny.frames[:, t : t + 1],
            tiny.masks[:, :, t : t + 1],
            tiny.obj_valid,
            first(f, slice(t, t + 1)),
            write,
        )
    chex.assert_trees_all_equal(
        jax.tree_util.tree_map(lambda x: x[1], mem),
        jax.tree_util.tree_map(lambda x: x[1], tiny.empty),
    )
    np.testing.assert_array_equal(mem.count, [T, 0])
    np.testing.assert_array_equal(mem.valid[0], [True, True, True])
    for t in range(T):
        np.testing.assert_allclose(mem.keys[0, t], f["key"][0, t].reshape(h * w, -1), rtol=1e-6)
    # One more frame overwrites the oldest non-first slot (1), never slot 0.
    mem = tiny.memorize(
        v,
        mem,
        tiny.frames[:, :1],
        tiny.masks[:, :, :1],
        tiny.obj_valid,
        first(f, slice(0, 1)),
        write,
    )
    np.testing.assert_allclose(mem.keys[0, 1], f["key"][0, 0].reshape(h * w, -1), rtol=1e-6)
    np.testing.assert_allclose(mem.keys[0, 2], f["key"][0, 2].reshape(h * w, -1), rtol=1e-6)


def test_progressive_matching_option(tiny, tiny_run):
    mem, _ = tiny_run
    query = first(tiny.feats, slice(1, None))
    same = tiny.model.read_memory(mem, query, O, SegmentOptions(segment_len=T))
    np.testing.assert_allclose(same, tiny.model.read_memory(mem, query, O), rtol=1e-6, atol=1e-6)
    pmm = tiny.model.read_memory(mem, query, O, SegmentOptions(top_k=None, segment_len=1))
    keys, vals, valid = mem_ops.bank_flatten(mem)
    q = query["key"].reshape(B, T - 1, h * w, -1)
    ref = mem_ops.progressive_readout(keys, vals, q, 1, None, valid)
    np.testing.assert_allclose(
        pmm, jnp.moveaxis(ref.reshape(B, T - 1, h, w, O, -1), 4, 1), rtol=1e-6, atol=1e-6
    )
    # Frame 2 now also reads frame 1's read-out, so it differs from the plain readout.
    plain = tiny.model.read_memory(mem, query, O, SegmentOptions(top_k=None))
    np.testing.assert_allclose(pmm[:, :, 0], plain[:, :, 0], rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(pmm[:, :, 1] - plain[:, :, 1]).max()) > 1e-4


def test_gradients_reach_every_param_and_the_memory_masks(tiny):
    """Cycle loss / gradient correction: grad of a loss of segment(memorize(empty, X_t, Y_t), X_1)."""
    m, v = tiny.model, tiny.variables
    target = tiny.masks[:, :, :1]

    def loss(params, mask_t):
        var = {**v, "params": params}
        feats = m.encode_key(var, tiny.frames)
        mem = m.memorize(
            var,
            tiny.empty,
            tiny.frames[:, 2:3],
            mask_t,
            tiny.obj_valid,
            first(feats, slice(2, 3)),
            WRITE_ALL,
        )
        logits = m.segment(var, mem, first(feats, slice(0, 1)), tiny.obj_valid)
        p = jax.nn.sigmoid(logits)
        bce = -(target * jnp.log(p + 1e-6) + (1 - target) * jnp.log(1 - p + 1e-6))
        return jnp.sum(bce * tiny.obj_valid[:, :, None, None, None]) / bce.size

    g_params, g_mask = jax.jit(jax.grad(loss, argnums=(0, 1)))(v["params"], tiny.masks[:, :, 2:3])
    dead = [
        jax.tree_util.keystr(p)
        for p, x in jax.tree_util.tree_leaves_with_path(g_params)
        if not float(jnp.abs(x).max()) > 0
    ]
    assert not dead, f"parameters without gradient: {dead}"
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(g_params))
    assert bool(jnp.all(jnp.isfinite(g_mask)))
    assert float(jnp.abs(g_mask[0, 0]).max()) > 0 and float(jnp.abs(g_mask[1, 0]).max()) > 0
    # The invalid slot's mask has no influence at all.
    assert float(jnp.abs(g_mask[1, 1]).max()) == 0.0


# ----------------------------------------------------------------------------- variants


def _trickvos_setup(tiny: bool):
    model = get_model(stcn.default_config("trickvos", tiny))
    frames, masks = make_inputs(1)
    ov = jnp.asarray(OBJ_VALID)
    variables = jax.jit(model.init)(jax.random.key(1, impl="rbg"), frames, masks, ov)

    def run(params):
        """Memorise frames 0 and 1 (in order), segment frame 2."""
        var = {**variables, "params": params}
        feats = model.encode_key(var, frames)
        mem = model.init_memory(var, B, O, feats["key"].shape[2:4])
        mem = model.memorize(
            var, mem, frames[:, :2], masks[:, :, :2], ov, first(feats, slice(0, 2)), WRITE_ALL
        )
        logits = model.segment(var, mem, first(feats, slice(2, 3)), ov)
        return jnp.mean(jax.nn.sigmoid(logits) * ov[:, :, None, None, None]), (feats, mem, logits)

    return model, variables, run


def _check_trickvos_run(model, feats, mem, logits):
    chex.assert_shape(feats["key"], (B, T, h, w, 32))
    chex.assert_shape(logits, (B, O, 1, H, W))
    assert bool(jnp.all(jnp.isfinite(logits)))
    np.testing.assert_array_equal(logits[1, 1], INVALID_LOGIT)
    # memory = first + last frame: 2 slots, frame 0 kept in slot 0, the latest in slot 1.
    chex.assert_shape(mem.keys, (B, 2, h * w, 32))
    np.testing.assert_allclose(mem.keys[:, 0], feats["key"][:, 0].reshape(B, h * w, 32), rtol=1e-6)
    np.testing.assert_allclose(mem.keys[:, 1], feats["key"][:, 1].reshape(B, h * w, 32), rtol=1e-6)


def test_trickvos_lightweight_form():
    # Full size: MobileNetV2 encoders with a 2-plane (mask-only) value input, ~1.9M params.
    full = get_model(stcn.default_config("trickvos"))
    assert isinstance(full, stcn.STCN) and full.name == "trickvos"
    frames, masks = make_inputs(1)
    shapes = jax.eval_shape(full.init, jax.random.key(0), frames, masks, jnp.asarray(OBJ_VALID))
    n = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes["params"]))
    assert 1.8e6 < n < 2.0e6, n  # the paper's ~1.9M
    assert shapes["params"]["value_encoder"]["features"]["0"]["0"]["kernel"].shape[2] == 2
    assert full.backbone_paths()["value_encoder"][1:] == ("mobilenet_v2", 2)
    assert full.spec.memory_frames == 2 and full.spec.key_dim == 32
    # The same switches at CPU-test size (ResNet-18 encoders; MobileNetV2 runs in the slow test).
    model, variables, run = _trickvos_setup(tiny=True)
    assert variables["params"]["value_encoder"]["conv1"]["kernel"].shape[2] == 2
    _, (feats, mem, logits) = jax.jit(run)(variables["params"])
    _check_trickvos_run(model, feats, mem, logits)


@pytest.mark.slow
def test_trickvos_mobilenet_runs_and_gradients_reach_every_param():
    model, variables, run = _trickvos_setup(tiny=False)
    grads, (feats, mem, logits) = jax.jit(jax.grad(run, has_aux=True))(variables["params"])
    chex.assert_shape(feats["s16"], (B, T, h, w, 96))
    _check_trickvos_run(model, feats, mem, logits)
    dead = [
        jax.tree_util.keystr(p)
        for p, x in jax.tree_util.tree_leaves_with_path(grads)
        if not float(jnp.abs(x).max()) > 0
    ]
    assert not dead, dead


def test_bfloat16_compute(tiny, tiny_run):
    cfg = stcn.default_config("stcn", tiny=True)
    cfg.dtype = "bfloat16"
    model = stcn.STCN(cfg)
    v = tiny.variables  # same params: bfloat16 changes the compute dtype only

    @jax.jit
    def run(v):
        feats = model.encode_key(v, tiny.frames)
        mem = model.init_memory(v, B, O, (h, w))
        mem = model.memorize(
            v,
            mem,
            tiny.frames[:, :1],
            tiny.masks[:, :, :1],
            tiny.obj_valid,
            first(feats, slice(0, 1)),
            WRITE_ALL,
        )
        return feats, mem, model.segment(v, mem, first(feats, slice(1, None)), tiny.obj_valid)

    feats, mem, logits = run(v)
    assert feats["key"].dtype == jnp.bfloat16 and mem.values.dtype == jnp.bfloat16
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
    _, ref = tiny_run
    valid = np.asarray(OBJ_VALID)
    a, b = np.asarray(logits)[valid].ravel(), np.asarray(ref)[valid].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.98


def test_cyclic_and_registry_entries():
    for name in ("stcn", "trickvos", "cyclic"):
        assert get_method(name).model == "vosjax.models.stcn:STCN"
    cfg = stcn.default_config("cyclic")
    assert cfg.value_dim < stcn.default_config("stcn").value_dim
    model = get_model(cfg)
    assert isinstance(model, stcn.STCN) and model.name == "cyclic"
    assert stcn.default_config("trickvos").memory_frames == 2


# ----------------------------------------------------------------------------- errors


def test_config_errors():
    cfg = stcn.default_config("stcn", tiny=True)
    for field, bad, needle in [
        ("key_backbone", "vgg16", "key_backbone"),
        ("key_dim", 0, "key_dim"),
        ("value_input", "image", "value_input"),
        ("dtype", "float16", "dtype"),
        ("decoder_dims", (8, 8), "decoder_dims"),
        ("train_bn", "yes", "train_bn"),
    ]:
        c = cfg.to_dict()  # a plain mapping: ConfigDict itself refuses some wrong types
        c[field] = bad
        with pytest.raises(VosjaxError, match=needle):
            stcn.STCN(c)
    with pytest.raises(VosjaxError, match="variant"):
        stcn.default_config("stm")


def test_input_errors(tiny, tiny_run):
    m, v = tiny.model, tiny.variables
    mem, _ = tiny_run
    with pytest.raises(VosjaxError, match="frames"):
        m.encode_key(v, tiny.frames[0])
    with pytest.raises(VosjaxError, match="masks"):
        m.encode_value(v, tiny.frames, tiny.masks[:, :, :2], tiny.obj_valid, tiny.feats)
    with pytest.raises(VosjaxError, match="obj_valid"):
        m.encode_value(v, tiny.frames, tiny.masks, tiny.obj_valid.astype(jnp.int32), tiny.feats)
    with pytest.raises(VosjaxError, match="write"):
        m.memorize(
            v,
            mem,
            tiny.frames[:, :1],
            tiny.masks[:, :, :1],
            tiny.obj_valid,
            first(tiny.feats, slice(0, 1)),
            jnp.ones((B,), jnp.int32),
        )
    with pytest.raises(VosjaxError, match="init_memory"):
        m.segment(v, m.init_memory(v, B, 3, (h, w)), tiny.feats, tiny.obj_valid)
    with pytest.raises(VosjaxError, match="feats"):
        m.segment(v, mem, {"key": tiny.feats["key"]}, tiny.obj_valid)


def test_train_bn_switch(tiny):
    frozen = tiny.model.update_batch_stats(tiny.variables, tiny.frames, tiny.masks, tiny.obj_valid)
    assert frozen is tiny.variables
    cfg = stcn.default_config("stcn", tiny=True)
    cfg.train_bn = True
    model = stcn.STCN(cfg)
    new = jax.jit(model.update_batch_stats)(tiny.variables, tiny.frames, tiny.masks, tiny.obj_valid)
    old_mean = tiny.variables["batch_stats"]["key_encoder"]["bn1"]["mean"]
    new_mean = new["batch_stats"]["key_encoder"]["bn1"]["mean"]
    assert float(jnp.abs(new_mean - old_mean).max()) > 0
    chex.assert_trees_all_equal(new["params"], tiny.variables["params"])


# ----------------------------------------------------------------------------- full size


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["stcn", "trickvos", "cyclic"])
def test_full_size_480x854(variant):
    model = get_model(stcn.default_config(variant))
    bsz, nobj, hh, ww = 1, 2, 480, 854
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.normal(size=(bsz, 3, hh, ww, 3)), jnp.float32)
    masks = np.zeros((bsz, nobj, 3, hh, ww), np.float32)
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
            first(feats, slice(0, 1)),
            jnp.ones((bsz,), bool),
        )
        return feats, model.segment(v, mem, first(feats, slice(1, None)), ov)

    feats, logits = run(v)
    chex.assert_shape(feats["key"], (bsz, 3, 30, 54, model.spec.key_dim))
    chex.assert_shape(logits, (bsz, nobj, 2, hh, ww))
    assert bool(jnp.all(jnp.isfinite(logits)))
