"""Initialisation of a run's variables: ImageNet backbones and partial copies from a bundle."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

from vosjax.checkpoint import abstract_model_variables, export_bundle
from vosjax.errors import VosjaxError
from vosjax.models import backbones, get_model
from vosjax.models.stcn import default_config
from vosjax.models.torch_import import ConversionReport, save_backbone_checkpoint
from vosjax.training.state import copy_from_bundle, expand_include, load_backbones, path_str


def random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), tree)


def flat(tree):
    return {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def stcn_tiny():
    model = get_model(default_config("stcn", tiny=True))
    return model, random_like(abstract_model_variables(model), 0)


def converted_backbone(folder, arch, in_channels, seed):
    """What tools/convert_torch_weights.py writes, from random weights (no download)."""
    net = backbones.make_backbone(arch, in_channels=in_channels, stop_at="s16")
    shapes = jax.eval_shape(net.init, jax.random.key(0), np.zeros((1, 32, 32, in_channels), np.float32))
    weights = random_like(shapes, seed)
    report = ConversionReport(arch=arch, in_channels=in_channels, stop_at="s16", prefix="")
    save_backbone_checkpoint(folder, weights, report)
    return weights


def test_imagenet_backbone_replaces_only_its_subtree(tmp_path, stcn_tiny):
    model, variables = stcn_tiny
    path, arch, in_ch = model.backbone_paths()["value_encoder"]
    weights = converted_backbone(tmp_path / "r18", arch, in_ch, seed=1)
    out = load_backbones(model, variables, {"value_encoder": str(tmp_path / "r18")})
    before, after = flat(variables), flat(out)
    assert before.keys() == after.keys()
    prefix = "/".join(path) + "/"
    moved = 0
    for key, new in after.items():
        coll, rest = key.split("/", 1)
        if rest.startswith(prefix):
            np.testing.assert_array_equal(new, flat(weights[coll])[rest[len(prefix):]])
            moved += 1
        else:
            np.testing.assert_array_equal(new, before[key])
    assert moved == len(flat(weights))


def test_backbone_mismatch_is_reported(tmp_path, stcn_tiny):
    model, variables = stcn_tiny
    converted_backbone(tmp_path / "r18_rgb", "resnet18", 3, seed=2)
    with pytest.raises(VosjaxError, match="in_channels=5"):
        load_backbones(model, variables, {"value_encoder": str(tmp_path / "r18_rgb")})
    with pytest.raises(VosjaxError, match=r"'decoder'.*key_encoder"):
        load_backbones(model, variables, {"decoder": str(tmp_path / "r18_rgb")})


def test_decoder_pretraining_copies_the_decoder_only(tmp_path, stcn_tiny):
    model, fresh = stcn_tiny
    trained = random_like(abstract_model_variables(model), 5)
    export_bundle(tmp_path / "run" / "bundle", ml_collections.ConfigDict({"model": model.config.to_dict()}), trained)
    include = expand_include(model, ("@decoder",))
    out, n = copy_from_bundle(fresh, str(tmp_path / "run"), include)  # a workdir with bundle/ works
    got, src, old = flat(out), flat(trained), flat(fresh)
    copied = [k for k in got if k.split("/")[1] == "decoder"]
    assert n == len(copied) > 0
    for k in got:
        np.testing.assert_array_equal(got[k], src[k] if k in copied else old[k])
    with pytest.raises(VosjaxError, match="matches no variable"):
        copy_from_bundle(fresh, str(tmp_path / "run"), ("^params/decodr/",))
    with pytest.raises(VosjaxError, match="only named group"):
        expand_include(model, ("@encoder",))
    with pytest.raises(VosjaxError, match="neither a bundle"):
        copy_from_bundle(fresh, str(tmp_path), ())
