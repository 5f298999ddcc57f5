"""Import the authors' released JOINT networks (``joint_davis.pth.tar``, ``joint_ytvos.pth.tar``)
as a vosjax bundle.

The authors' network (``ltr/models/joint/joint_net.py`` ``steepest_descent_resnet50`` with
``ltr/train_settings/joint/joint_stage2.py``'s arguments: ``filter_size=3, num_filters=16,
out_feature_dim=512, label_encoder_dims=(16, 32, 64), use_bn_in_label_enc=False,
clf_feat_blocks=0, final_conv=True, backbone_type='mrcnn'``) is vosjax's ``"joint"``
model with the switches of :func:`authors_config`:

- ``stride_in_1x1 = True`` and ``input_format = "caffe_bgr255"``: the Mask R-CNN ResNet-50
  (``ltr/models/backbone/resnet_mrcnn.py``: stride on the first 1x1 conv of each stage,
  BGR 0..255 input minus (102.98, 115.95, 122.77), std 1);
- ``label_encoder = "code"`` (``label_widths = (16, 32, 64)``) and ``decoder = "code"``: the
  code's ``ResidualDS16SW`` and LWL ``SegDecoder(use_bn=True)``
  (:mod:`vosjax.models.joint_code`).

The remaining parts already follow the code: both branches' 3x3 bias-free conv 1024 -> 512 on
layer3 (InstanceL2Norm with scale ``sqrt(1 / (512 * 9))`` on the induction branch), the
transformer (one L2-normalised attention map with bias for query and key, tau = 1/30, values
un-projected, instance norm without affine; the encoder's and the decoder's self-attention
share ``WK``, which the state_dict holds twice and vosjax as ``encoder/phi`` and
``decoder/phi``), the zero-initialised 3x3 filter fitted by Gauss-Newton steepest descent on
``[W (T_w(Z) - E), filter_reg * w]``, and the decoder input ``E_ind* + E_tra*``.

Checkpoint. An ltr checkpoint is ``torch.save`` of a dict whose ``"net"`` is the
``state_dict``; ``"constructor"`` (an ``ltr.admin.model_constructor.NetConstructor``),
``"net_info"``, ``"settings"``, ``"stats"`` and ``"optimizer"`` may sit beside it.
:func:`read_joint_checkpoint` first tries ``torch.load(weights_only=True)``; if torch refuses
it (a pickled Python object such as the constructor), it reads the file again with an
unpickler that resolves only PyTorch's tensor / storage rebuild functions, ``torch.Size``
and ``collections.OrderedDict``, and resolves every other class or function the file names
to an inert placeholder class whose construction ignores its arguments: no module is
imported and no code named by the file runs (``tests/models/test_joint_authors.py`` checks
this with a pickled ``os.system`` call, zip and legacy formats). Only the tensors under
``"net"`` are kept. ``.safetensors`` files are
read without torch. ``num_batches_tracked`` and the three unused ``WV`` value maps of the
transformer (built, never called in the authors' forward) are listed as ignored.

The learner's temporal template weights (``learner_sample_weights = "code"``: learning rate
0.1, first frame kept at weight >= 0.25, the oldest after the first replaced when 20 are
stored) follow their tracker (:func:`vosjax.models.joint_code.code_sample_weights`); vosjax
keeps one template bank for all objects, so they are exact for objects present from the
first frame (their tracker keeps one memory per object).

Their tracker stores frame ``t - 1`` (with the merged mask) before segmenting frame ``t``
when ``t + 1`` is a multiple of ``train_sample_interval`` (DAVIS 3, YouTube-VOS 5), i.e.
frames 1, 4, 7, ... (DAVIS) / 3, 8, 13, ... (YouTube-VOS), and refits; vosjax's engine
stores a frame right after segmenting it, which is the same, with ``mem_every`` and
``first_write`` (1 / 3) in the bundle's inference section.

Known difference from the authors' tracker (the network and the schedule match): their
search region is a crop around each target (5x its size, resized to 832 x 480;
``pytracking/parameter/joint/joint_*.py``), vosjax segments the whole frame. The tests
(``tests/models/test_joint_authors.py``) compare on frames the size of their crops.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from vosjax.errors import VosjaxError
from vosjax.models import joint_code, torch_import, torch_import_stcn

__all__ = [
    "REPORT_FILE",
    "SEED_GAINS",
    "authors_config",
    "convert_joint",
    "convert_joint_state_dict",
    "expected_variables",
    "read_joint_checkpoint",
    "seeded_state_dict",
    "torch_key",
]

REPORT_FILE = "conversion.json"
FILTER_REG = "target_model.filter_optimizer.residual_module.filter_reg"
_IGNORED = ("num_batches_tracked", ".WV.weight", ".WV.bias")
#: (ours, theirs) module-path renames of the flat ``a.b.`` paths, most specific first.
_RENAMES = (
    ("backbone.", "feature_extractor."),
    ("reduce_tra.", "transformer.feature_adjustor.0."),
    ("reduce_ind.", "target_model.feature_extractor.0."),
    ("encoder.phi.", "transformer.encoder.self_attn.WK."),
    ("decoder.phi.", "transformer.decoder.self_attn.WK."),
    ("decoder.psi.", "transformer.decoder.cross_attn.WK."),
    *((f"label_encoder.{k}.", f"label_encoder.{v}.") for k, v in joint_code.LABEL_ENCODER_NAMES.items()),
    *((f"segnet.{k}.", f"decoder.{v}.") for k, v in joint_code.decoder_names().items()),
)

#: Gains of :func:`seeded_state_dict` on top of STCN's rule: the backbone's stem sees
#: 0..255 inputs, so it is scaled down to keep the seeded network's activations O(1).
SEED_GAINS = {"feature_extractor.conv1.weight": 1.0 / 64.0}
#: The transformer's self-attention module is one object in the encoder and the decoder, so the
#: state_dict holds each of its tensors under two names with one value: {decoder name: encoder name}.
SHARED = {
    f"transformer.decoder.self_attn.{m}.{leaf}": f"transformer.encoder.self_attn.{m}.{leaf}"
    for m in ("WK", "WV")
    for leaf in ("weight", "bias")
}
#: The seeded learner regulariser (their initial value is 0.01).
SEED_FILTER_REG = 0.05


def authors_config(dataset: str = "davis") -> ml_collections.ConfigDict:
    """The run config of a converted JOINT bundle (``dataset``: "davis" or "ytvos")."""
    from vosjax.models import joint

    if dataset not in ("davis", "ytvos"):
        raise VosjaxError(f"authors_config: dataset must be 'davis' or 'ytvos', got {dataset!r}.")
    model = joint.default_config("full")
    model.label_encoder = "code"
    model.label_widths = (16, 32, 64)
    model.decoder = "code"
    model.input_format = "caffe_bgr255"
    model.stride_in_1x1 = True
    model.learner_sample_weights = "code"
    c = ml_collections.ConfigDict()
    c.model = model
    # pytracking/parameter/joint/joint_{davis,ytvos}.py: train_sample_interval 3 / 5,
    # sample_memory_size 20, net_opt_iter 20 / net_opt_update_iter 3 (the model's
    # learner_iters_init / learner_iters_update defaults)
    c.inference = ml_collections.ConfigDict(
        {
            "memory_policy": "joint",
            "mem_every": 3 if dataset == "davis" else 5,
            # frame t - 1 joins before frame t when (t + 1) % mem_every == 0: t - 1 = 1, 4, 7 ...
            "first_write": 1 if dataset == "davis" else 3,
            "memory_frames": 20,
            "top_k": None,
        }
    )
    c.source = ml_collections.ConfigDict(
        {
            "method": "JOINT (Mao et al., ICCV 2021)",
            "code": "github.com/maoyunyao/JOINT",
            "dataset": dataset,
            "not_reproduced": "search-region crop per target (search_area_scale 5, "
            "832 x 480 samples); vosjax segments the whole frame",
        }
    )
    return c


def seeded_state_dict(spec: Sequence[Sequence[Any]], seed: int) -> dict[str, np.ndarray]:
    """Seeded weights for JOINT's state-dict layout: :func:`torch_import_stcn.seeded_state_dict`'s
    rule, then :data:`SEED_GAINS`; ``filter_reg`` (no rule there) is :data:`SEED_FILTER_REG`;
    the decoder's self-attention ``WK`` (the encoder's module, saved twice) copies the
    encoder's."""
    plain = [s for s in spec if s[0] != FILTER_REG]
    out = torch_import_stcn.seeded_state_dict(plain, seed)
    for ours, theirs in SHARED.items():  # one module under two names: one value
        if ours in out and theirs in out:
            out[ours] = out[theirs].copy()
    for name, gain in SEED_GAINS.items():
        if name in out:
            out[name] = (out[name] * gain).astype(np.float32)
    if len(plain) != len(spec):
        out[FILTER_REG] = np.full((1,), SEED_FILTER_REG, np.float32)
    return out


def torch_key(path: Sequence[str]) -> str:
    """The authors' state-dict key of our variable ``(collection, module..., leaf)``."""
    if tuple(path[1:]) == ("learner_reg",):
        return FILTER_REG
    mods = ".".join(path[1:-1]) + "."
    for ours, theirs in _RENAMES:
        if mods.startswith(ours):
            mods = theirs + mods[len(ours) :]
            break
    return mods + torch_import._LEAF_TO_TORCH[path[-1]]


def expected_variables(config: Any | None = None) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """``{their key: (our path, our shape)}`` for every variable of the converted model."""
    from vosjax.models import joint

    return torch_import_stcn.variables_by_torch_key(
        joint.JOINT, (config or authors_config()).model, torch_key, size=64
    )


def convert_joint_state_dict(
    state_dict: Mapping[str, Any],
    *,
    config: Any | None = None,
    allow_missing: bool = False,
    seed: int = 0,
) -> tuple[dict[str, Any], torch_import_stcn.STCNConversionReport]:
    """The authors' JOINT state_dict (name -> array) as vosjax ``{"params", "batch_stats"}``.

    A leading ``"net."`` (a flattened ltr checkpoint) or ``"module."`` is stripped.
    Raises :class:`VosjaxError` when a source tensor cannot be placed or, unless
    ``allow_missing``, when one of our variables has no source tensor.
    """
    if not isinstance(state_dict, Mapping):
        raise VosjaxError(
            f"convert_joint_state_dict: state_dict must be a mapping, got {type(state_dict).__name__}."
        )
    keys = list(state_dict)
    if keys and all(k.startswith("net.") for k in keys):
        state_dict = {k[4:]: v for k, v in state_dict.items()}
    sd = dict(state_dict)
    for dec, enc in SHARED.items():
        if dec in sd and enc in sd and not np.array_equal(np.asarray(sd[dec]), np.asarray(sd[enc])):
            raise VosjaxError(
                f"convert_joint_state_dict: {dec} differs from {enc}; in JOINT they are one shared "
                "module, so a checkpoint saved from the network holds equal values."
            )
    if FILTER_REG in sd:  # their [1] parameter is our scalar
        sd[FILTER_REG] = np.asarray(sd[FILTER_REG]).reshape(())
    return torch_import_stcn.place_state_dict(
        sd,
        expected_variables(config),
        fn="convert_joint_state_dict",
        network="JOINT",
        hint="Is this the authors' JOINT checkpoint (joint_davis.pth.tar / joint_ytvos.pth.tar)?",
        allow_missing=allow_missing,
        seed=seed,
        ignore=_IGNORED,
    )


# ----------------------------------------------------------------------------- reading


class _Inert:
    """Stand-in for every non-tensor class of a checkpoint: takes and keeps nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _restricted_pickle_module() -> Any:
    import torch

    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "Size"): torch.Size,
    }
    for dt in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"):
        allowed[("torch", f"{dt}Storage")] = getattr(torch, f"{dt}Storage")

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return allowed.get((module, name), _Inert)

    def load(file: Any, **kwargs: Any) -> Any:  # the legacy format's header records, too
        return Unpickler(file, **kwargs).load()

    mod = type(pickle)("vosjax_restricted_pickle")
    mod.Unpickler = Unpickler
    mod.load = load
    return mod


def read_joint_checkpoint(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Tensors of a JOINT checkpoint: ``.safetensors`` (no torch), or an ltr ``.pth.tar``
    (see the module docstring); returns the ``state_dict`` (the ``"net"`` entry when present)."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        sd = torch_import.read_safetensors(path)
    else:
        try:
            sd = torch_import.read_torch(path)
        except VosjaxError as e:
            if "refused" not in str(e):
                raise
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=False,
                             pickle_module=_restricted_pickle_module())
            sd = {}
            torch_import._flatten(torch, obj, "", sd)
    net = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
    if net:
        return net
    if not sd:
        raise VosjaxError(f"read_joint_checkpoint: {path} holds no tensors.")
    return sd


def convert_joint(
    source: str | pathlib.Path,
    output: str | pathlib.Path,
    *,
    dataset: str = "davis",
    allow_missing: bool = False,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[pathlib.Path, torch_import_stcn.STCNConversionReport]:
    """Read ``source`` (:func:`read_joint_checkpoint`), convert it and write a vosjax bundle
    to ``output`` with :func:`authors_config` (``dataset``), plus ``conversion.json``
    (:func:`vosjax.models.torch_import_stcn.export_network`)."""
    config = authors_config(dataset)
    return torch_import_stcn.export_network(
        "joint", source, output, config,
        lambda sd: convert_joint_state_dict(sd, config=config, allow_missing=allow_missing, seed=seed),
        overwrite=overwrite, read=read_joint_checkpoint,
    )
