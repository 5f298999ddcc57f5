"""PyTorch weight import: torchvision-layout nets built here in plain torch.nn (no
torchvision), random weights and BN statistics, converted through .pth and
.safetensors files and compared feature by feature (and gradient by gradient)."""

from __future__ import annotations

import copy
import importlib.util
import json
import pathlib
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vosjax.errors import VosjaxError
from vosjax.models import torch_import
from vosjax.models.backbones import MOBILENET_V2_TAPS, STRIDES, make_backbone
from vosjax.models.torch_import import convert_state_dict, load_backbone_checkpoint, read_state_dict

try:
    import torch
    from torch import nn as tnn
except ImportError:  # pragma: no cover - CI installs the torch extra
    torch = None

requires_torch = pytest.mark.skipif(
    torch is None,
    reason="PyTorch is not installed (pip install -e '.[torch]'); the reference nets need it",
)
REPO = pathlib.Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- torch reference nets

if torch is not None:

    def conv_bn_act(cin, cout, k, stride, groups=1):
        """torchvision's Conv2dNormActivation with ReLU6: children 0 (conv), 1 (BN), 2 (act)."""
        return tnn.Sequential(
            tnn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            tnn.BatchNorm2d(cout),
            tnn.ReLU6(inplace=True),
        )

    class TBasicBlock(tnn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or cin != planes:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(cin, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    class TBottleneck(tnn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride):
            super().__init__()
            out = planes * 4
            self.conv1 = tnn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(
                planes, planes, 3, stride, 1, bias=False
            )  # v1.5: stride on the 3x3
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(out)
            self.downsample = None
            if stride != 1 or cin != out:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(cin, out, 1, stride, bias=False), tnn.BatchNorm2d(out)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    class TResNet(tnn.Module):
        def __init__(self, block, sizes, in_channels=3):
            super().__init__()
            self.conv1 = tnn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, n in enumerate(sizes):
                blocks = []
                for j in range(n):
                    blocks.append(block(cin, 64 * 2**i, 2 if (i > 0 and j == 0) else 1))
                    cin = 64 * 2**i * block.expansion
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.fc = tnn.Linear(cin, 1000)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            feats = {}
            for i, s in enumerate(STRIDES):
                x = getattr(self, f"layer{i + 1}")(x)
                feats[s] = x
            return feats

    class TInvertedResidual(tnn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [conv_bn_act(cin, hidden, 1, 1)] if t != 1 else []
            layers += [
                conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                tnn.Conv2d(hidden, cout, 1, bias=False),
                tnn.BatchNorm2d(cout),
            ]
            self.conv = tnn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class TMobileNetV2(tnn.Module):
        SETTINGS = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]

        def __init__(self):
            super().__init__()
            layers, cin = [conv_bn_act(3, 32, 3, 2)], 32
            for t, c, n, s in self.SETTINGS:
                for j in range(n):
                    layers.append(TInvertedResidual(cin, c, s if j == 0 else 1, t))
                    cin = c
            layers.append(conv_bn_act(cin, 1280, 1, 1))
            self.features = tnn.Sequential(*layers)
            self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(1280, 1000))

        def forward(self, x):
            taps, feats = {i: s for s, i in MOBILENET_V2_TAPS.items()}, {}
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in taps:
                    feats[taps[i]] = x
            return feats

    def torch_net(arch, in_channels=3, seed=0):
        """A torchvision-layout net with random weights and random-but-sane BN statistics.

        BN affine parameters are drawn first; the running statistics are then set to the
        batch statistics of a random batch and perturbed, so that in eval mode every stage
        has O(1) activations (the comparison is neither vacuous nor dominated by float32
        rounding of huge values) and BN is far from the identity.
        """
        torch.manual_seed(seed)
        if arch == "mobilenet_v2":
            net, in_channels = TMobileNetV2(), 3
        else:
            block, sizes = {
                "resnet18": (TBasicBlock, (2, 2, 2, 2)),
                "resnet50": (TBottleneck, (3, 4, 6, 3)),
            }[arch]
            net = TResNet(block, sizes, in_channels)
        bns = [m for m in net.modules() if isinstance(m, tnn.BatchNorm2d)]
        with torch.no_grad():
            for m in bns:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.momentum = 1.0  # running stats := this batch's stats
            net.train()(torch.randn(4, in_channels, 64, 64))
            for m in bns:
                m.momentum = 0.1
                m.running_mean += 0.1 * torch.randn(m.num_features) * m.running_var.sqrt()
                m.running_var *= torch.empty(m.num_features).uniform_(0.8, 1.25)
        return net.eval()

    def state_dict_numpy(net):
        return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}

    def torch_features(net, x_nhwc, **kw):
        with torch.no_grad():
            out = net(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))), **kw)
        return {k: v.numpy().transpose(0, 2, 3, 1) for k, v in out.items()}


def _image(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _assert_same_features(arch, variables, net, x, in_channels=3, torch_x=None):
    """Our float32 features equal torch's at every stride.

    The bound: max |ours - exact| <= max(1e-4, 3 * max |torch_f32 - exact|), "exact" being
    torch in float64. Up to stride 8-16 this is the plain 1e-4; deeper, random-weight
    nets amplify float32 round-off (torch's own float32 error reaches ~1e-3 at ResNet-50's
    s32), and we ask to be as accurate as torch there. A wrong layout or key costs O(1).
    """
    model = make_backbone(arch, in_channels=in_channels)
    ours = jax.jit(model.apply)(variables, x)
    tx = x if torch_x is None else torch_x
    ref32 = torch_features(net, tx)
    ref64 = torch_features(copy.deepcopy(net).double(), tx.astype(np.float64))
    assert set(ours) == set(ref32) == set(STRIDES)
    for k in STRIDES:
        assert ours[k].shape == ref32[k].shape, (k, ours[k].shape, ref32[k].shape)
        assert np.std(ref64[k]) > 0.5, f"{k}: degenerate reference features"
        err = float(np.max(np.abs(np.asarray(ours[k], np.float64) - ref64[k])))
        torch_err = float(np.max(np.abs(ref32[k] - ref64[k])))
        assert err <= max(1e-4, 3 * torch_err), (k, err, torch_err)


def _assert_exact_in_float64(arch, variables, net, x):
    """With float64 on both sides the converted network is the torch network to 1e-9."""
    x = x.astype(np.float64)
    with jax.enable_x64(True):
        model = make_backbone(arch, dtype=jnp.float64)
        v64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables)
        ours = jax.jit(model.apply)(v64, x)
        ref = torch_features(copy.deepcopy(net).double(), x)
        for k in STRIDES:
            assert ours[k].dtype == jnp.float64
            err = float(np.max(np.abs(np.asarray(ours[k]) - ref[k])))
            assert err < 1e-9, (k, err)


def _save_safetensors(state_dict, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path))


# ------------------------------------------------------------------------ equivalence with torch


@requires_torch
@pytest.mark.parametrize(
    "arch,fmt,hw",
    [
        ("resnet18", "pth", (65, 97)),
        ("resnet50", "safetensors", (64, 96)),
        ("mobilenet_v2", "pth", (65, 97)),
    ],
)
def test_converted_weights_give_torch_features_at_every_stride(tmp_path, arch, fmt, hw):
    net = torch_net(arch, seed=1)
    path = tmp_path / f"{arch}.{fmt}"
    if fmt == "pth":
        torch.save(net.state_dict(), path)
    else:
        pytest.importorskip(
            "safetensors", reason="the safetensors package (test extra) writes the file"
        )
        _save_safetensors(state_dict_numpy(net), path)
    variables, report = torch_import.convert_file(arch, path)
    assert not report.unmatched
    head = (
        ["fc.weight", "fc.bias"]
        if arch != "mobilenet_v2"
        else ["classifier.1.weight", "classifier.1.bias"]
    )
    assert sorted(report.unused) == sorted(head)
    assert report.ignored and all(k.endswith("num_batches_tracked") for k in report.ignored)
    _assert_same_features(arch, variables, net, _image((2, *hw, 3), seed=2))


@requires_torch
@pytest.mark.parametrize("arch", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_converted_network_is_exact_in_float64(arch):
    net = torch_net(arch, seed=8)
    variables, _ = convert_state_dict(arch, state_dict_numpy(net))
    _assert_exact_in_float64(arch, variables, net, _image((1, 33, 47, 3), seed=9))


@requires_torch
def test_extra_input_channels_are_zero_initialised_and_ignored(tmp_path):
    net = torch_net("resnet18", seed=3)
    variables, report = convert_state_dict("resnet18", state_dict_numpy(net), in_channels=5)
    kernel = variables["params"]["conv1"]["kernel"]
    assert kernel.shape == (7, 7, 5, 64)
    np.testing.assert_array_equal(kernel[:, :, 3:], 0.0)
    np.testing.assert_array_equal(
        kernel[:, :, :3], net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    assert len(report.zero_initialised) == 1 and "conv1.weight" in report.zero_initialised[0]
    rgb = _image((1, 33, 41, 3), seed=4)
    x = np.concatenate(
        [rgb, _image((1, 33, 41, 2), seed=5)], axis=-1
    )  # frame + mask + other-objects mask
    _assert_same_features("resnet18", variables, net, x, in_channels=5, torch_x=rgb)


@requires_torch
def test_gradients_match_torch_autograd():
    """d/dtheta sum_s <feature_s, R_s> in eval mode (frozen BN), mapped through the same conversion.

    MobileNetV2 up to stride 8 (features.0-6): plain, depthwise and residual blocks.
    """
    net = torch_net("mobilenet_v2", seed=6)
    x = _image((1, 33, 47, 3), seed=7)
    feats = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    weights = {k: _image(tuple(feats[k].shape), seed=10 + i) for i, k in enumerate(("s4", "s8"))}
    sum(torch.sum(feats[k] * torch.from_numpy(w)) for k, w in weights.items()).backward()
    torch_grads = state_dict_numpy(
        net
    )  # buffers as they are; parameters replaced by their gradients
    torch_grads.update(
        {k: p.grad.numpy().copy() for k, p in net.named_parameters() if p.grad is not None}
    )
    want = convert_state_dict("mobilenet_v2", torch_grads, stop_at="s8")[0]["params"]
    variables = convert_state_dict("mobilenet_v2", state_dict_numpy(net), stop_at="s8")[0]
    model = make_backbone("mobilenet_v2", stop_at="s8", frozen_bn=True)

    def loss(params):
        out = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True
        )
        return sum(jnp.sum(out[k] * w.transpose(0, 2, 3, 1)) for k, w in weights.items())

    got = jax.jit(jax.grad(loss))(variables["params"])
    # features.0: 1 conv, features.1: 2, features.2-6: 3 each; every conv has a BN (scale, bias).
    assert len(jax.tree_util.tree_leaves(got)) == 3 * (1 + 2 + 5 * 3)
    want_leaves = jax.tree_util.tree_leaves(want)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), want_leaves, strict=True):
        scale = np.max(np.abs(w))
        assert scale > 0, jax.tree_util.keystr(path)
        np.testing.assert_allclose(
            np.asarray(g), w, atol=1e-4 * scale, rtol=1e-3, err_msg=jax.tree_util.keystr(path)
        )


# ----------------------------------------------------------------------- keys, prefixes, reports


def _fake_resnet18_state_dict(seed=0):
    """Right names and shapes, random values, built from our own layout (no torch needed)."""
    shapes = torch_import._expected("resnet18", 3, "s32")
    rng = np.random.default_rng(seed)
    sd = {}
    for key, (path, shape) in shapes.items():
        if path[-1] == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1])
        sd[key] = rng.standard_normal(shape).astype(np.float32)
        if key.endswith("running_var"):
            sd[key.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
    return sd


def test_unmatched_and_unused_keys_are_reported_by_name():
    sd = _fake_resnet18_state_dict()
    del sd["layer1.0.bn1.running_mean"]
    sd["layer2.0.conv2.weight"] = sd["layer2.0.conv2.weight"][:, :64]  # wrong input channels
    sd["extra.head.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(VosjaxError) as info:
        convert_state_dict("resnet18", sd)
    msg = str(info.value)
    assert (
        "layer1.0.bn1.running_mean" in msg
        and "layer2.0.conv2.weight" in msg
        and "allow_missing" in msg
    )
    variables, report = convert_state_dict("resnet18", sd, allow_missing=True, seed=3)
    assert report.unmatched == ["layer1.0.bn1.running_mean", "layer2.0.conv2.weight"]
    assert report.unused == ["layer2.0.conv2.weight", "extra.head.weight"]
    assert any("(128, 64, 3, 3)" in p for p in report.problems)
    # Unmatched leaves come from the module's initialisers; matched ones are copied exactly.
    np.testing.assert_array_equal(
        variables["batch_stats"]["layer1"]["0"]["bn1"]["mean"], np.zeros(64)
    )
    k = variables["params"]["layer2"]["0"]["conv2"]["kernel"]
    assert k.shape == (3, 3, 128, 128) and 0.01 < k.std() < 0.1
    np.testing.assert_array_equal(
        variables["params"]["layer1"]["0"]["conv1"]["kernel"],
        sd["layer1.0.conv1.weight"].transpose(2, 3, 1, 0),
    )
    n_leaves = len(torch_import._expected("resnet18", 3, "s32"))
    assert n_leaves == 100  # 20 convs + 20 BNs x (scale, bias, mean, var)
    assert len(report.converted) == n_leaves - 2 and len(report.ignored) == 20
    assert len(jax.tree_util.tree_leaves(variables)) == n_leaves


def test_prefixes_explicit_and_auto():
    sd = _fake_resnet18_state_dict(seed=1)
    wrapped = {f"module.backbone.{k}": v for k, v in sd.items()}
    wrapped["module.head.weight"] = np.zeros((2, 512), np.float32)
    want, _ = convert_state_dict("resnet18", sd)
    for prefix in ("module.backbone.", "auto"):
        got, report = convert_state_dict("resnet18", wrapped, strip_prefix=prefix)
        assert report.prefix == "module.backbone." and report.unused == ["module.head.weight"]
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    with pytest.raises(VosjaxError, match="no source tensor"):
        convert_state_dict("resnet18", wrapped, strip_prefix="module.")


def test_auto_prefix_picks_the_encoder_whose_shapes_fit():
    """An STCN-like checkpoint: a ResNet-50 and a ResNet-18 under different names."""
    r18 = _fake_resnet18_state_dict(seed=2)
    r50 = {}
    for key, (path, shape) in torch_import._expected("resnet50", 3, "s16").items():
        r50[key] = np.zeros(
            (shape[3], shape[2], shape[0], shape[1]) if path[-1] == "kernel" else shape, np.float32
        )
    sd = {
        **{f"key_encoder.{k}": v for k, v in r50.items()},
        **{f"value_encoder.{k}": v for k, v in r18.items()},
    }
    _, report = convert_state_dict("resnet18", sd, strip_prefix="auto", stop_at="s16")
    assert report.prefix == "value_encoder."
    _, report = convert_state_dict("resnet50", sd, strip_prefix="auto", stop_at="s16")
    assert report.prefix == "key_encoder." and not any(
        k.startswith("key_encoder") for k in report.unused
    )
    twice = {**{f"a.{k}": v for k, v in r18.items()}, **{f"b.{k}": v for k, v in r18.items()}}
    with pytest.raises(VosjaxError, match="ambiguous"):
        convert_state_dict("resnet18", twice, strip_prefix="auto")


def test_fewer_input_channels_than_the_source_is_refused_with_advice():
    sd = _fake_resnet18_state_dict(seed=4)
    with pytest.raises(VosjaxError, match=r"conv1\.weight.*does not fit"):
        convert_state_dict("resnet18", sd, in_channels=1)
    with pytest.raises(VosjaxError, match="unknown backbone"):
        convert_state_dict("resnet19", sd)
    with pytest.raises(VosjaxError, match="mapping"):
        convert_state_dict("resnet18", list(sd.items()))


# ----------------------------------------------------------------------------- file formats


def test_safetensors_reader_matches_the_package_and_needs_no_torch(tmp_path, monkeypatch):
    st = pytest.importorskip(
        "safetensors.numpy", reason="the safetensors package (test extra) writes the file"
    )
    import ml_dtypes

    rng = np.random.default_rng(0)
    tensors = {
        "a.weight": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "b.half": rng.standard_normal((5,)).astype(np.float16),
        "c.bf16": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
        "d.count": np.array(42, np.int64),
        "e.empty": np.zeros((0, 4), np.float64),
    }
    path = tmp_path / "w.safetensors"
    st.save_file(tensors, str(path), metadata={"format": "pt"})
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    got = read_state_dict(path)
    want = st.load_file(str(path))
    assert sorted(got) == sorted(tensors) == sorted(want)
    for k in tensors:
        assert got[k].dtype == tensors[k].dtype and got[k].shape == tensors[k].shape
        np.testing.assert_array_equal(got[k], tensors[k])


def _write_raw_safetensors(path, header, data=b""):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_malformed_safetensors_are_refused(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(VosjaxError, match="too short"):
        read_state_dict(p)
    p.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(VosjaxError, match="truncated"):
        read_state_dict(p)
    p.write_bytes(struct.pack("<Q", 4) + b"{no}")
    with pytest.raises(VosjaxError, match="JSON"):
        read_state_dict(p)
    _write_raw_safetensors(
        p, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, bytes(16)
    )
    with pytest.raises(VosjaxError, match="'w' has data_offsets"):
        read_state_dict(p)
    _write_raw_safetensors(
        p, {"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)
    )
    with pytest.raises(VosjaxError, match="unsupported dtype 'C64'"):
        read_state_dict(p)
    blob = b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'  # noqa: E501
    p.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\x00")
    with pytest.raises(VosjaxError, match="repeats"):
        read_state_dict(p)
    # A well-formed file for contrast: little-endian float32 1.5 and -2.0.
    _write_raw_safetensors(
        p,
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
        struct.pack("<2f", 1.5, -2),
    )
    np.testing.assert_array_equal(read_state_dict(p)["w"], np.array([1.5, -2.0], np.float32))


def test_unknown_extension_and_missing_file_are_refused(tmp_path):
    for name in ("weights.ckpt", "weights.npz", "weights"):
        (tmp_path / name).write_bytes(b"\x00" * 16)
        with pytest.raises(VosjaxError, match=r"\.pth, \.pt, \.safetensors"):
            read_state_dict(tmp_path / name)
    with pytest.raises(VosjaxError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pth")


def test_missing_torch_gives_install_advice(tmp_path, monkeypatch):
    p = tmp_path / "w.pth"
    p.write_bytes(b"not really a torch file")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(VosjaxError, match=r"torch extra.*\.\[torch\]"):
        read_state_dict(p)


class _Payload:
    """Unpickling this would create a file: a weights_only load must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@requires_torch
def test_pickled_objects_are_refused_by_weights_only(tmp_path):
    marker = tmp_path / "unpickled-code-ran"
    p = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "extra": _Payload(marker)}, p)
    with pytest.raises(VosjaxError, match="weights_only=True.*refused.*Unsupported global"):
        read_state_dict(p)
    assert not marker.exists()
    p.write_bytes(b"definitely not a zip or pickle")
    with pytest.raises(VosjaxError, match="evil.pth.*not a torch file.*Unsupported operand"):
        read_state_dict(p)


@requires_torch
def test_nested_checkpoints_are_flattened(tmp_path):
    p = tmp_path / "ckpt.pt"
    w = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    torch.save(
        {"network": {"conv1.weight": w, "bn1.bias": torch.ones(2)}, "epoch": 3, "lrs": [0.1, 0.01]},
        p,
    )
    got = read_state_dict(p)
    assert sorted(got) == ["network.bn1.bias", "network.conv1.weight"]
    assert got["network.conv1.weight"].dtype == np.float32
    np.testing.assert_array_equal(
        got["network.conv1.weight"], np.arange(6, dtype=np.float32).reshape(2, 3)
    )
    torch.save({"conv1.weight": torch.zeros(4).to_sparse()}, p)
    with pytest.raises(VosjaxError, match="'conv1.weight'.*no dense NumPy equivalent"):
        read_state_dict(p)


# ----------------------------------------------------------------------------- CLI and checkpoint


def _cli():
    spec = importlib.util.spec_from_file_location(
        "convert_torch_weights", REPO / "tools" / "convert_torch_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_writes_checkpoint_and_description_and_loader_restores_it(tmp_path, capsys):
    pytest.importorskip(
        "safetensors", reason="the safetensors package (test extra) writes the file"
    )
    sd = _fake_resnet18_state_dict(seed=5)
    sd = {f"module.{k}": v for k, v in sd.items()}
    src = tmp_path / "r18.safetensors"
    _save_safetensors(sd, src)
    out = tmp_path / "converted"
    main = _cli()
    argv = [
        "--arch",
        "resnet18",
        "--input",
        str(src),
        "--output",
        str(out),
        "--in-channels",
        "5",
        "--strip-prefix",
        "module.",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "unmatched (left at initialisation): none" in printed and "zero-initialised" in printed
    meta = json.loads((out / torch_import.METADATA_FILE).read_text())
    assert meta["arch"] == "resnet18" and meta["in_channels"] == 5 and meta["prefix"] == "module."
    assert meta["source"] == str(src.resolve()) and len(meta["source_sha256"]) == 64
    assert meta["unmatched"] == [] and meta["unused"] == [] and len(meta["ignored"]) == 20
    assert len(meta["converted"]) == 100 and meta["num_params"] == 11_176_512 + 2 * 7 * 7 * 64
    restored = load_backbone_checkpoint(out)
    want, _ = convert_state_dict("resnet18", sd, in_channels=5, strip_prefix="module.")
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), restored, want
    )
    # A second run refuses to overwrite unless asked; errors go to stderr with exit code 1.
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert main(["--arch", "resnet50", "--input", str(src), "--output", str(tmp_path / "o2")]) == 1
    assert "no source tensor" in capsys.readouterr().err
    assert not (tmp_path / "o2" / torch_import.METADATA_FILE).exists()


def test_loader_refuses_directories_that_are_not_conversions(tmp_path):
    with pytest.raises(VosjaxError, match="not .*a converted backbone"):
        load_backbone_checkpoint(tmp_path)
    (tmp_path / torch_import.METADATA_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(VosjaxError, match="not a vosjax backbone"):
        load_backbone_checkpoint(tmp_path)
    meta = {
        "format": "vosjax_backbone",
        "version": 1,
        "arch": "resnet18",
        "in_channels": 3,
        "stop_at": "s32",
    }
    (tmp_path / torch_import.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(VosjaxError, match="could not restore"):
        load_backbone_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- full size (slow)


@pytest.mark.slow
@requires_torch
@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenet_v2"])
def test_full_size_480x854_matches_torch(arch):
    net = torch_net(arch, seed=20)
    variables, _ = convert_state_dict(arch, state_dict_numpy(net))
    _assert_same_features(arch, variables, net, _image((1, 480, 854, 3), seed=21))


@pytest.mark.slow
@requires_torch
def test_resnet50_is_exact_in_float64():
    net = torch_net("resnet50", seed=22)
    variables, _ = convert_state_dict("resnet50", state_dict_numpy(net))
    _assert_exact_in_float64("resnet50", variables, net, _image((1, 65, 97, 3), seed=23))
