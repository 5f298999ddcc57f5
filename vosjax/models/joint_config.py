"""Configuration of JOINT (:mod:`vosjax.models.joint`): :func:`default_config` and its checked
form ``_Settings``."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from vosjax.errors import VosjaxError
from vosjax.models import checks
from vosjax.models import frtm_common as chk
from vosjax.models.backbone_segnet import config_reader
from vosjax.models.joint_transformer import TAU

__all__ = ["VARIANTS", "default_config"]

VARIANTS = ("full",)


def default_config(variant: str = "full", tiny: bool = False) -> ml_collections.ConfigDict:
    """The model config of JOINT (``"full"``: the paper's sizes); ``tiny=True`` gives a CPU-test
    size (ResNet-18, narrow branches, few learner steps, 3 template slots).

    Fields: backbone, dtype, train_bn, feature_dim (512), attn_dim (C/4), enc_dim (D = 16),
    tau (1/30), label_widths, channels (decoder width, 64), learner_kernel (3),
    learner_iters_init / learner_iters_update (inference, 20 / 3), train_learner_iters_init /
    train_learner_iters_update (training, 5 / 2), learner_reg_init (initial reg, 0.01; lambda =
    reg^2), induction_norm ("l2": the code's InstanceL2Norm; "relu": conv + ReLU variant),
    memory_frames (N_max = 20; the engine's ``joint`` policy adds a template every T = 5 frames);
    the released code's forms (:mod:`vosjax.models.joint_code`): label_encoder ("paper" /
    "code"; "code" takes 3 label_widths, (16, 32, 64)), decoder ("frtm" / "code"),
    input_format ("rgb": ImageNet-normalised / "caffe_bgr255"), stride_in_1x1 (backbone),
    learner_sample_weights ("uniform": every template 1 / "code": the tracker's temporal
    weights, :func:`vosjax.models.joint_code.code_sample_weights`).
    """
    if variant not in VARIANTS:
        raise VosjaxError(
            f"joint.default_config: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}."
        )
    c = ml_collections.ConfigDict()
    c.name = "joint"
    c.variant = variant
    c.backbone = "resnet50"
    c.dtype = "float32"
    c.train_bn = False
    c.feature_dim = 512
    c.attn_dim = 128
    c.enc_dim = 16
    c.tau = TAU
    c.label_widths = (16, 32, 64, 64)
    c.channels = 64
    c.learner_kernel = 3
    c.learner_iters_init = 20
    c.learner_iters_update = 3
    c.train_learner_iters_init = 5
    c.train_learner_iters_update = 2
    c.learner_reg_init = 0.01
    c.induction_norm = "l2"
    c.memory_frames = 20
    c.label_encoder = "paper"
    c.decoder = "frtm"
    c.input_format = "rgb"
    c.stride_in_1x1 = False
    c.learner_sample_weights = "uniform"
    if tiny:
        c.backbone = "resnet18"
        c.feature_dim = 16
        c.attn_dim = 8
        c.enc_dim = 4
        c.label_widths = (4, 8, 8, 8)
        c.channels = 8
        c.learner_iters_init = 2
        c.learner_iters_update = 1
        c.train_learner_iters_init = 2
        c.train_learner_iters_update = 1
        c.memory_frames = 3
    return c


@dataclasses.dataclass(frozen=True)
class _Settings:
    backbone: str
    dtype: Any
    train_bn: bool
    feature_dim: int
    attn_dim: int
    enc_dim: int
    tau: float
    label_widths: tuple[int, ...]
    channels: int
    learner_kernel: int
    learner_iters_init: int
    learner_iters_update: int
    train_learner_iters_init: int
    train_learner_iters_update: int
    learner_reg_init: float
    induction_norm: str
    memory_frames: int
    label_encoder: str = "paper"
    decoder: str = "frtm"
    input_format: str = "rgb"
    stride_in_1x1: bool = False
    learner_sample_weights: str = "uniform"


def _settings(config: Any) -> _Settings:
    fn = "JOINT"
    get = config_reader(fn, config, default_config("full"))
    pos = lambda k: checks.check_positive_int(fn, k, get(k))
    kernel = pos("learner_kernel")
    if kernel % 2 == 0:
        raise VosjaxError(f"{fn}: config 'learner_kernel' must be odd, got {kernel}.")
    forms = {"label_encoder": ("paper", "code"), "decoder": ("frtm", "code"),
             "input_format": ("rgb", "caffe_bgr255"),
             "learner_sample_weights": ("uniform", "code")}
    for k, allowed in forms.items():
        if str(get(k)) not in allowed:
            raise VosjaxError(f"{fn}: config {k!r} must be one of {allowed}, got {get(k)!r}.")
    widths = tuple(int(v) for v in get("label_widths"))
    n_widths = 4 if str(get("label_encoder")) == "paper" else 3
    if len(widths) != n_widths or min(widths) < 1:
        raise VosjaxError(
            f"{fn}: config 'label_widths' must list {n_widths} positive widths for "
            f"label_encoder={str(get('label_encoder'))!r}, got {widths}."
        )
    norm = str(get("induction_norm"))
    if norm not in ("l2", "relu"):
        raise VosjaxError(f"{fn}: config 'induction_norm' must be 'l2' or 'relu', got {norm!r}.")
    tau = float(get("tau"))
    if not tau > 0:
        raise VosjaxError(f"{fn}: config 'tau' must be positive, got {tau}.")
    return _Settings(
        backbone=str(get("backbone")),
        dtype=chk.parse_dtype(fn, get("dtype")),
        train_bn=bool(get("train_bn")),
        feature_dim=pos("feature_dim"),
        attn_dim=pos("attn_dim"),
        enc_dim=pos("enc_dim"),
        tau=tau,
        label_widths=widths,
        channels=pos("channels"),
        learner_kernel=kernel,
        learner_iters_init=pos("learner_iters_init"),
        learner_iters_update=pos("learner_iters_update"),
        train_learner_iters_init=pos("train_learner_iters_init"),
        train_learner_iters_update=pos("train_learner_iters_update"),
        learner_reg_init=float(get("learner_reg_init")),
        induction_norm=norm,
        memory_frames=pos("memory_frames"),
        label_encoder=str(get("label_encoder")),
        decoder=str(get("decoder")),
        input_format=str(get("input_format")),
        stride_in_1x1=bool(get("stride_in_1x1")),
        learner_sample_weights=str(get("learner_sample_weights")),
    )
