"""Backbones against a loop-based NumPy reference (no torch needed; the torch comparison
of converted weights lives in test_convert_torch_weights.py)."""

from __future__ import annotations

import copy
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from vosjax.errors import VosjaxError
from vosjax.models import backbones
from vosjax.models.backbones import MOBILENET_V2_TAPS, STRIDES, feature_channels, make_backbone

EPS = 1e-5
# torchvision parameter counts (classifier excluded): resnet18 11,689,512 - 513,000;
# resnet34 21,797,672 - 513,000; resnet50 25,557,032 - 2,049,000;
# resnet101 44,549,160 - 2,049,000; mobilenet_v2 3,504,872 - 1,281,000.
TORCHVISION_COUNTS = {
    "resnet18": 11_176_512,
    "resnet34": 21_284_672,
    "resnet50": 23_508_032,
    "resnet101": 42_500_160,
    "mobilenet_v2": 2_223_872,
}


# ----------------------------------------------------------------------------- NumPy reference


def np_conv(x, kernel, stride, groups=1):
    """Strided grouped conv, NHWC x HWIO, zero padding (k - 1) // 2 per side; loops over offsets."""
    kh, kw, cin_g, cout = kernel.shape
    p = (kh - 1) // 2
    n, h, w, cin = x.shape
    assert cin == cin_g * groups
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = (h + 2 * p - kh) // stride + 1, (w + 2 * p - kw) // stride + 1
    out = np.zeros((n, ho, wo, groups, cout // groups), np.float64)
    wk = kernel.reshape(kh, kw, cin_g, groups, cout // groups).astype(np.float64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[
                :,
                dy : dy + stride * (ho - 1) + 1 : stride,
                dx : dx + stride * (wo - 1) + 1 : stride,
            ]
            patch = patch.reshape(n, ho, wo, groups, cin_g)
            out += np.einsum("nhwgi,igo->nhwgo", patch, wk[dy, dx])
    return out.reshape(n, ho, wo, cout)


def np_maxpool(x):
    """3x3 / 2 max pool, padding 1 filled with -inf (torch's MaxPool2d(3, 2, 1))."""
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = np.full((n, ho, wo, c), -np.inf)
    for dy in range(3):
        for dx in range(3):
            out = np.maximum(
                out, xp[:, dy : dy + 2 * (ho - 1) + 1 : 2, dx : dx + 2 * (wo - 1) + 1 : 2]
            )
    return out


class NpNet:
    """Walks the variables tree by torchvision names; BN frozen or with batch statistics."""

    def __init__(self, variables, train):
        self.p, self.s, self.train = variables["params"], variables["batch_stats"], train
        self.new_stats = copy.deepcopy(jax.tree_util.tree_map(np.asarray, variables["batch_stats"]))

    def bn(self, path, x):
        p, s = _get(self.p, path), _get(self.s, path)
        if self.train:
            mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
            node = _get(self.new_stats, path)
            node["mean"] = 0.9 * np.asarray(s["mean"]) + 0.1 * mean
            node["var"] = 0.9 * np.asarray(s["var"]) + 0.1 * var
        else:
            mean, var = np.asarray(s["mean"]), np.asarray(s["var"])
        return (x - mean) / np.sqrt(var + EPS) * np.asarray(p["scale"]) + np.asarray(p["bias"])

    def conv(self, path, x, stride, groups=1):
        node = _get(self.p, path)
        y = np_conv(x, np.asarray(node["kernel"]), stride, groups)
        return y + np.asarray(node["bias"]) if "bias" in node else y

    def conv_bn(self, path, x, stride, groups=1, act=None):
        y = self.bn(path + ("1",), self.conv(path + ("0",), x, stride, groups))
        return {"relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6), None: y}[act]

    def resnet(self, x, block, sizes):
        relu = lambda v: np.maximum(v, 0)  # noqa: E731
        x = np_maxpool(relu(self.bn(("bn1",), self.conv(("conv1",), x, 2))))
        feats = {}
        for i, n in enumerate(sizes):
            for j in range(n):
                b = (f"layer{i + 1}", str(j))
                stride = 2 if (i > 0 and j == 0) else 1
                if block == "basic":
                    y = relu(self.bn(b + ("bn1",), self.conv(b + ("conv1",), x, stride)))
                    y = self.bn(b + ("bn2",), self.conv(b + ("conv2",), y, 1))
                else:
                    y = relu(self.bn(b + ("bn1",), self.conv(b + ("conv1",), x, 1)))
                    y = relu(self.bn(b + ("bn2",), self.conv(b + ("conv2",), y, stride)))
                    y = self.bn(b + ("bn3",), self.conv(b + ("conv3",), y, 1))
                if "downsample" in _get(self.p, b):
                    x = self.conv_bn(b + ("downsample",), x, stride)
                x = relu(y + x)
            feats[STRIDES[i]] = x
        return feats

    def mobilenet_v2(self, x):
        f = ("features",)
        x = self.conv_bn(f + ("0",), x, 2, act="relu6")
        out, idx = {}, 1
        for t, c, n, s in backbones._MBV2_SETTINGS:
            for j in range(n):
                b, stride, cin = f + (str(idx), "conv"), (s if j == 0 else 1), x.shape[-1]
                y, k = x, 0
                if t != 1:
                    y, k = self.conv_bn(b + ("0",), y, 1, act="relu6"), 1
                y = self.conv_bn(b + (str(k),), y, stride, groups=cin * t, act="relu6")
                y = self.bn(b + (str(k + 2),), self.conv(b + (str(k + 1),), y, 1))
                x = x + y if stride == 1 and cin == c else y
                out[idx] = x
                idx += 1
        out[idx] = self.conv_bn(f + (str(idx),), x, 1, act="relu6")
        return {k: out[i] for k, i in MOBILENET_V2_TAPS.items()}


def _get(tree, path):
    for name in path:
        tree = tree[name]
    return tree


def randomise_bn(variables, seed):
    """Random BN scale/bias and running statistics, so that frozen BN is not the identity."""
    rng = np.random.default_rng(seed)
    out = jax.tree_util.tree_map(np.asarray, variables)

    def visit(p, s):
        for k in p:
            if "scale" in p[k]:
                c = p[k]["scale"].shape
                p[k]["scale"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
                p[k]["bias"] = (0.2 * rng.standard_normal(c)).astype(np.float32)
                s[k]["mean"] = (0.2 * rng.standard_normal(c)).astype(np.float32)
                s[k]["var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            elif isinstance(p[k], dict) and k in s:
                visit(p[k], s[k])

    visit(out["params"], out["batch_stats"])
    return out


def _init(model, shape, seed=0):
    """Variables of ``model`` drawn with NumPy (He-normal kernels, unit BN), no compiled init."""
    abstract = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    rng = np.random.default_rng(seed)

    def draw(path, a):
        leaf = path[-1].key
        if leaf == "kernel":
            return (
                rng.standard_normal(a.shape) * np.sqrt(2.0 / (a.shape[0] * a.shape[1] * a.shape[3]))
            ).astype(np.float32)
        return (np.ones if leaf in ("scale", "var") else np.zeros)(a.shape, np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def _image(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", backbones.BACKBONES)
def test_param_counts_match_torchvision_and_channels(name):
    model = make_backbone(name)
    x = jax.ShapeDtypeStruct((1, 65, 97, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    count = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(variables["params"]))
    assert count == TORCHVISION_COUNTS[name]
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
    feats = jax.eval_shape(model.apply, variables, x)
    # 65 x 97: each stride-2 layer maps n -> ceil(n / 2), so stride s gives ceil(n / s).
    expected_hw = {"s4": (17, 25), "s8": (9, 13), "s16": (5, 7), "s32": (3, 4)}
    assert {k: v.shape for k, v in feats.items()} == {
        k: (1, *expected_hw[k], c) for k, c in feature_channels(name).items()
    }


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
@pytest.mark.parametrize("stop_at", ["s4", "s8", "s16"])
def test_stop_at_returns_prefix_of_strides_and_builds_no_later_stage(name, stop_at):
    model = make_backbone(name, stop_at=stop_at)
    x = jax.ShapeDtypeStruct((2, 33, 50, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    feats = jax.eval_shape(model.apply, variables, x)
    keep = STRIDES[: STRIDES.index(stop_at) + 1]
    assert set(feats) == set(keep)
    for s, f in feats.items():
        stride = int(s[1:])
        assert f.shape[1:3] == (math.ceil(33 / stride), math.ceil(50 / stride))
    if name == "mobilenet_v2":
        built = sorted(int(k) for k in variables["params"]["features"])
        assert built == list(range(MOBILENET_V2_TAPS[stop_at] + 1))
    else:
        assert sorted(k for k in variables["params"] if k.startswith("layer")) == [
            f"layer{i + 1}" for i in range(len(keep))
        ]


def _randomise_conv_biases(variables, seed):
    """Random conv biases (leaves 'bias' next to a 'kernel'), so that they are not vacuous."""
    rng = np.random.default_rng(seed)

    def visit(p):
        for k, v in p.items():
            if isinstance(v, dict) and "kernel" in v and "bias" in v:
                v["bias"] = (0.2 * rng.standard_normal(v["bias"].shape)).astype(np.float32)
            elif isinstance(v, dict):
                visit(v)

    visit(variables["params"])
    return variables


@pytest.mark.parametrize(
    "name,in_channels,conv_bias",
    [("resnet18", 5, False), ("resnet18", 5, True), ("mobilenet_v2", 3, False)],
    ids=["resnet18-in5", "resnet18-in5-conv-bias", "mobilenet_v2"],
)
def test_frozen_forward_matches_numpy_reference(name, in_channels, conv_bias):
    model = make_backbone(name, in_channels=in_channels, conv_bias=conv_bias)
    x = _image((2, 13, 11, in_channels))
    variables = randomise_bn(_init(model, x.shape), seed=3)
    if conv_bias:  # STCN's value encoder: a bias on every conv (stem, blocks, shortcuts)
        n_bias = sum(
            1
            for path, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
            if path[-1].key == "bias" and "bn" not in path[-2].key and path[-2].key != "1"
        )
        assert n_bias == 1 + 2 * 8 + 3  # stem, two convs per block, three shortcut convs
        variables = _randomise_conv_biases(variables, seed=4)
    got = jax.jit(model.apply)(variables, x)
    ref = NpNet(variables, train=False)
    want = ref.mobilenet_v2(x) if name == "mobilenet_v2" else ref.resnet(x, "basic", (2, 2, 2, 2))
    assert set(got) == set(want)
    for k in want:
        chex.assert_shape(got[k], want[k].shape)
        assert np.std(want[k]) > 0.05, (
            "reference features are degenerate; the comparison would be vacuous"
        )
        np.testing.assert_allclose(np.asarray(got[k]), want[k], atol=1e-4, rtol=1e-4, err_msg=k)


def test_training_batch_norm_uses_batch_statistics_and_updates_running_ones():
    model = make_backbone("resnet50", stop_at="s8")
    x = _image((2, 13, 11, 3), seed=5)
    variables = randomise_bn(_init(model, x.shape), seed=6)
    got, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x
    )
    ref = NpNet(variables, train=True)
    want = ref.resnet(x, "bottleneck", (3, 4))
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], atol=1e-4, rtol=1e-4, err_msg=k)
    flat_got = jax.tree_util.tree_leaves_with_path(updates["batch_stats"])
    flat_want = dict(jax.tree_util.tree_leaves_with_path(ref.new_stats))
    assert (
        len(flat_got) == len(flat_want) == 2 * 24
    )  # bn1 + 7 blocks x 3 + 2 downsample BNs; mean, var
    for path, value in flat_got:
        np.testing.assert_allclose(
            np.asarray(value), flat_want[path], atol=1e-5, rtol=1e-4, err_msg=str(path)
        )


def test_frozen_bn_in_training_keeps_batch_stats_and_equals_inference():
    model = make_backbone("mobilenet_v2", stop_at="s8", frozen_bn=True)
    x = _image((2, 17, 19, 3), seed=7)
    variables = randomise_bn(_init(model, x.shape), seed=8)
    train_out, updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, x)
    eval_out = jax.jit(model.apply)(variables, x)
    chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])
    chex.assert_trees_all_close(train_out, eval_out, atol=1e-6, rtol=1e-6)
    # The same input without frozen_bn normalises with batch statistics, i.e. differently.
    free = make_backbone("mobilenet_v2", stop_at="s8")
    free_out, free_updates = jax.jit(
        lambda v, x: free.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, x)
    assert float(jnp.max(jnp.abs(free_out["s8"] - eval_out["s8"]))) > 1e-2
    assert not np.allclose(
        free_updates["batch_stats"]["features"]["0"]["1"]["mean"],
        variables["batch_stats"]["features"]["0"]["1"]["mean"],
    )


def test_bfloat16_forward_is_close_to_float32_with_float32_params():
    x = _image((1, 48, 64, 3), seed=9)
    f32 = make_backbone("resnet18")
    bf16 = make_backbone("resnet18", dtype=jnp.bfloat16)
    variables = randomise_bn(_init(bf16, x.shape), seed=10)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
    ref = jax.jit(f32.apply)(variables, x)
    got = jax.jit(bf16.apply)(variables, x)
    for k in STRIDES:
        assert got[k].dtype == jnp.bfloat16
        a, b = np.asarray(got[k], np.float32), np.asarray(ref[k])
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert rel < 3e-2, (k, rel)


def test_gradients_reach_every_parameter_in_frozen_bn_training():
    model = make_backbone("resnet18", frozen_bn=True)
    x = _image((2, 32, 32, 3), seed=11)
    variables = randomise_bn(_init(model, x.shape), seed=12)
    weights = {
        k: _image(v.shape, seed=i) for i, (k, v) in enumerate(model.apply(variables, x).items())
    }

    def loss(params):
        feats = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True
        )
        return sum(jnp.sum(feats[k] * weights[k]) for k in feats)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_gradients_match_finite_differences_in_float64(name):
    x = _image((1, 9, 11, 3), seed=13).astype(np.float64)
    with jax.enable_x64(True):
        model = make_backbone(name, stop_at="s4", dtype=jnp.float64)
        variables = jax.tree_util.tree_map(
            lambda a: np.asarray(a, np.float64), randomise_bn(_init(model, x.shape), seed=14)
        )

        @jax.jit
        def f(params, x):
            return model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x)["s4"]

        # eps small enough that no ReLU / ReLU6 / max-pool kink is crossed.
        check_grads(
            f, (variables["params"], x), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6
        )


def test_init_leaf_follows_torchvision_initialisation():
    k = np.asarray(backbones.init_leaf("kernel", jax.random.key(0), (3, 3, 64, 128)))
    assert k.dtype == np.float32 and abs(k.mean()) < 0.01
    np.testing.assert_allclose(
        k.std(), np.sqrt(2.0 / (3 * 3 * 128)), rtol=0.02
    )  # kaiming normal, fan_out
    np.testing.assert_array_equal(backbones.init_leaf("scale", jax.random.key(0), (4,)), np.ones(4))
    np.testing.assert_array_equal(backbones.init_leaf("mean", jax.random.key(0), (4,)), np.zeros(4))
    with pytest.raises(VosjaxError, match="unknown leaf"):
        backbones.init_leaf("gamma", jax.random.key(0), (4,))


def test_bad_inputs_raise_named_errors():
    model = make_backbone("resnet18", in_channels=5)
    with pytest.raises(VosjaxError, match="in_channels=5"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(VosjaxError, match="rank 4"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((32, 32, 5)))
    with pytest.raises(VosjaxError, match="floating"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 5), jnp.int32))
    with pytest.raises(VosjaxError, match="unknown backbone 'resnet19'"):
        make_backbone("resnet19")
    with pytest.raises(VosjaxError, match="stop_at"):
        make_backbone("mobilenet_v2", stop_at="s64")
    with pytest.raises(VosjaxError, match="in_channels"):
        make_backbone("resnet50", in_channels=0)
    with pytest.raises(VosjaxError, match="stop_at"):
        feature_channels("resnet50", stop_at="s2")
