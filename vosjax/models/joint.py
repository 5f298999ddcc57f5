"""JOINT: joint inductive and transductive learning (JOINT sec. 3, 4.1).

Per search frame, for every object (JOINT Fig. 2, eq. 1-7)::

    x^1..x^4 = F(I)                      ResNet-50 layer1..layer4 (strides 4..32)
    X_tra, X_ind = R_tra(x^3), R_ind(x^3)     one conv block per branch: layer3 1024 -> 512 channels
    E_tra, E_ind, W = L(Y)               two-head label encoder of each template mask (D = 16, ReLU ends)
    E_tra* = TB(X_tra; Z_tra, E_tra)     transduction: transformer over the templates (models/joint_transformer.py)
    w      = argmin_w 0.5 sum_i |W_i (T_w(Z_ind,i) - E_ind,i)|^2 + 0.5 lambda |w|^2     (eq. 6)
    E_ind* = T_w(X_ind)                  induction: LWL learner (vosjax.learners.lwl), steepest descent
    logit  = S(E_tra* + E_ind*, x^1..x^4)                (eq. 7; S = FRTM's segmentation network)

Memory: the templates (reduced features of both branches and each object's
E_tra, E_ind, W) sit in a keep-first :class:`~vosjax.ops.memory.MemoryBank` of
``memory_frames`` = 20 slots (the engine adds one every T = 5 frames); the
transformer-encoded templates ``Z_enc`` (eq. 3) are recomputed by
``memorize`` whenever a template is written and cached, so ``segment`` runs
only the decoder. The learner is refitted in ``memorize``: an object's first
memorize fits from a zero kernel with ``learner_iters_init`` (20) steepest
descent steps, later refits warm-start from the current kernel with
``learner_iters_update`` (3) steps (JOINT ``pytracking/parameter/joint/joint_davis.py``
``net_opt_iter = 20``, ``net_opt_update_iter = 3``); in training (``memorize(train=True)``)
``train_learner_iters_init`` (5) / ``train_learner_iters_update`` (2) (JOINT
``ltr/train_settings/joint/joint_stage*.py``: ``optim_iter=5``, ``SegActor(num_refinement_iter=2)``).
The learned regulariser starts at ``reg = 0.01`` (``joint_net.py``
``steepest_descent_resnet50(optim_init_reg=0.01)``, ``loss_residual_modules.Residual``:
residual ``filter_reg * filter``). Invalid template slots get importance weight 0. The bank
is per object (``bank_init(num_objects=O)``): an object that appears later attends to
(transduction) and fits its learner on (induction) only the templates written since its own
first frame, which stays kept (:mod:`vosjax.memory_policy`); the template encoder (eq. 3)
runs over all templates, shared. The fit is
differentiable (w.r.t. features, encodings, weights and the learned
regulariser lambda = reg^2), so the whole network trains end to end.

The per-branch "convolutional block" follows the authors' code
(``joint_net.py`` ``residual_basic_block(num_blocks=0, final_conv=True)``): a bias-free 3x3
conv, for the induction branch followed by InstanceL2Norm
(``ltr/models/layers/normalization.py``: ``x * scale * sqrt(C h w / (sum x^2 + 1e-5))``
per image, ``scale = sqrt(1 / (C k^2))``), for the transduction branch plain
(``l2norm=False``); ``induction_norm="relu"`` keeps the paper-reading variant
(conv + ReLU on both). Predicted masks are detached before they are re-encoded as
templates in training (``joint_net.py`` ``mask_pred_prob = torch.sigmoid(mask_pred.clone().detach())``):
``memorize(train=True)`` applies ``lax.stop_gradient`` to its masks.
Choices the papers leave open, made here (``label_encoder = "paper"``, ``decoder = "frtm"``,
the defaults): the label encoder is four stride-2 3x3 convs
(16, 32, 64, 64 channels) over the mask, then a head per branch (3x3 conv +
ReLU, 3x3 conv to D + ReLU) and the importance weights W from the induction
head (3x3 conv to D + sigmoid); the decoder is FRTM's S; the learner starts from a zero
kernel (as in the code). The released code's label encoder (``ResidualDS16SW``: per-branch
residual blocks after a shared conv + max pool, linear W), its decoder (LWL's
``SegDecoder``), its Mask R-CNN backbone (stride on the 1x1 conv, BGR 0..255 input) are
the switches ``label_encoder = "code"``, ``decoder = "code"``, ``stride_in_1x1``,
``input_format = "caffe_bgr255"`` (:mod:`vosjax.models.joint_code`), set together by
:func:`vosjax.models.torch_import_joint.authors_config` for the released checkpoints. The
paper crops a search region around the target (5x its size, resized to
832 x 480; JOINT ``ltr/data/processing.py`` ``SegProcessing`` with
``search_area_factor=5.0``, ``output_sz=(832, 480)``, ``crop_type='inside_major'``,
center / scale jitter train 3 / 0.25, test (5.5, 4.5) / 0.5): that crop is on the
data side (``AugmentConfig.search_area_factor``, :mod:`vosjax.data.search_crop`, used by
configs/joint.py); the model sees whatever frames the caller gives it.

The cosine decoupling loss (eq. 8) needs both heads' encodings:
:meth:`JOINT.encode_value` returns them
(``vosjax.losses.cosine_decoupling(enc["e_tra"], enc["e_ind"])``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float

from vosjax.errors import VosjaxError
from vosjax.learners import lwl
from vosjax.models import backbones, checks, joint_code
from vosjax.models import frtm_common as chk
from vosjax.models.backbone_segnet import BackboneSegnetModel
from vosjax.models.base import Feats, SegmentOptions, Variables
from vosjax.models.frtm_decoder import DEPTHS, SegmentationNetwork
from vosjax.models.joint_config import _Settings, _settings, default_config
from vosjax.models.joint_transformer import TransformerDecoder, TransformerEncoder
from vosjax.ops.aggregate import INVALID_LOGIT
from vosjax.ops.memory import MemoryBank, bank_init, bank_insert
from vosjax.ops.object_memory import bank_validity, object_recent

__all__ = ["JOINT", "JointMemory", "LabelEncoder", "default_config"]

_PROJ = {d: f"proj_{d}" for d in DEPTHS}
DEFAULT_OPTIONS = SegmentOptions()


def instance_l2_norm(x: Float[Array, "N h w C"], scale: float, eps: float = 1e-5) -> Array:
    """InstanceL2Norm of the authors' code: ``x * scale * sqrt(C h w / (sum_{h,w,C} x^2 + eps))``
    per image (RMS of the output = scale)."""
    n = x.shape[1] * x.shape[2] * x.shape[3]
    ss = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(1, 2, 3), keepdims=True)
    return (x * (scale * jnp.sqrt(n / (ss + eps))).astype(x.dtype)).astype(x.dtype)


def _conv(features: int, kernel: int, dtype: Any, stride: int = 1, bias: bool = True) -> nn.Conv:
    p = (kernel - 1) // 2  # torch-style symmetric padding: size ceil(n / stride)
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=chk.KERNEL_INIT,
    )


class LabelEncoder(nn.Module):
    """Two-head label encoder: mask ``[N, H, W]`` -> ``E_tra, E_ind, W`` ``[N, h, w, D]`` at stride 16.

    Trunk: four stride-2 3x3 convs + ReLU (``widths``); transduction head:
    3x3 conv + ReLU, 3x3 conv to D + ReLU; induction head: 3x3 conv + ReLU,
    then 3x3 conv to D + ReLU (E_ind) and 3x3 conv to D + sigmoid (W).
    """

    enc_dim: int
    widths: tuple[int, ...] = (16, 32, 64, 64)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, masks: Float[Array, "N H W"]) -> tuple[Array, Array, Array]:
        x = masks[..., None].astype(self.dtype)
        for c in self.widths:
            x = nn.relu(_conv(c, 3, self.dtype, stride=2)(x))
        c = self.widths[-1]
        e_tra = nn.relu(_conv(self.enc_dim, 3, self.dtype)(nn.relu(_conv(c, 3, self.dtype)(x))))
        hid = nn.relu(_conv(c, 3, self.dtype)(x))
        e_ind = nn.relu(_conv(self.enc_dim, 3, self.dtype)(hid))
        weights = nn.sigmoid(_conv(self.enc_dim, 3, self.dtype)(hid))
        return e_tra, e_ind, weights


class _JointNet(nn.Module):
    s: _Settings

    def setup(self):
        s = self.s
        self.backbone = backbones.make_backbone(
            s.backbone,
            stop_at="s32",
            frozen_bn=not s.train_bn,
            dtype=s.dtype,
            stride_in_1x1=s.stride_in_1x1,
        )
        code = s.induction_norm == "l2"  # the code's final_conv has bias=False
        self.reduce_tra = _conv(s.feature_dim, 3, s.dtype, bias=not code)
        self.reduce_ind = _conv(s.feature_dim, 3, s.dtype, bias=not code)
        # joint_net.py: norm_scale = sqrt(1 / (out_feature_dim * filter_size^2))
        self.ind_scale = (1.0 / (s.feature_dim * s.learner_kernel**2)) ** 0.5
        if s.label_encoder == "code":
            self.label_encoder = joint_code.CodeLabelEncoder(s.enc_dim, s.label_widths, s.dtype)
        else:
            self.label_encoder = LabelEncoder(s.enc_dim, s.label_widths, s.dtype)
        self.encoder = TransformerEncoder(s.attn_dim, s.tau, s.dtype)
        self.decoder = TransformerDecoder(s.attn_dim, s.tau, s.dtype)
        if s.decoder == "code":
            self.segnet = joint_code.CodeDecoder(s.channels, s.dtype)
        else:
            self.segnet = SegmentationNetwork(s.channels, s.dtype)
        self.learner_reg = self.param(
            "learner_reg", nn.initializers.constant(s.learner_reg_init), (), jnp.float32
        )

    def encode(self, x: Float[Array, "N H W 3"], train: bool = False) -> dict[str, Array]:
        if self.s.input_format == "caffe_bgr255":
            x = joint_code.caffe_bgr255(x).astype(x.dtype)
        f = self.backbone(x, train=train)
        if self.s.decoder == "code":
            proj = self.segnet(f, None, None)
        else:
            proj = self.segnet.project(f)
        out = {_PROJ[d]: p for d, p in proj.items()}
        if self.s.induction_norm == "l2":  # the authors' code
            out["key"] = self.reduce_tra(f["s16"])
            out["key_ind"] = instance_l2_norm(self.reduce_ind(f["s16"]), self.ind_scale)
        else:  # paper-reading variant
            out["key"] = nn.relu(self.reduce_tra(f["s16"]))
            out["key_ind"] = nn.relu(self.reduce_ind(f["s16"]))
        return out

    def labels(self, masks: Float[Array, "N H W"]) -> tuple[Array, Array, Array]:
        return self.label_encoder(masks)

    def encode_templates(self, z: Array, valid: Array) -> Array:
        return self.encoder(z, valid)

    def transduce(self, x: Array, z_enc: Array, e_tra: Array, valid: Array) -> Array:
        return self.decoder(x, z_enc, e_tra, valid)

    def decode(self, proj: dict[str, Array], enc: Array, out_hw: tuple[int, int]) -> Array:
        if self.s.decoder == "code":
            return self.segnet(None, enc, out_hw, proj)
        return self.segnet.decode(proj, enc, out_hw)

    def reg(self) -> Array:
        return self.learner_reg

    def init_all(
        self, x: Float[Array, "N H W 3"], masks: Float[Array, "N H W"]
    ) -> tuple[Array, Array]:
        """Touch every submodule once (for ``init``)."""
        f = self.encode(x)
        e_tra, e_ind, w = self.labels(masks)
        n, h, wd, c = f["key"].shape
        z = f["key"].reshape(1, n, h * wd, c)
        valid = jnp.ones((1, n), bool)
        z_enc = self.encode_templates(z, valid)
        e = e_tra.reshape(1, n, h * wd, -1)
        star = self.transduce(z, z_enc, e, valid).reshape(n, h, wd, -1)
        proj = {d: f[_PROJ[d]] for d in DEPTHS}
        return self.decode(proj, star + e_ind * w, x.shape[1:3]), self.reg()


class JointMemory(NamedTuple):
    """JOINT's memory state (fixed-shape pytree).

    Attributes:
      templates: keep-first bank of S = ``memory_frames`` slots, P = h * w positions:
        keys ``[B, S, P, 2C]`` = the reduced template features of the two branches
        ``[Z_tra | Z_ind]``, values ``[B, S, P, O * 3 * D]`` = per object ``[E_tra | E_ind | W]``.
      encoded: ``[B, S, P, C]`` the encoder output Z_enc (eq. 3) of the current templates.
      filters: ``[B, O, k, k, C, D]`` the induction kernels w of eq. 6.
      initialized: ``bool[B, O]``, True once the object's learner had its first fit.
    """

    templates: MemoryBank
    encoded: Float[Array, "B S P C"]
    filters: Float[Array, "B O k k C D"]
    initialized: Bool[Array, "B O"]


class JOINT(BackboneSegnetModel):
    """JOINT behind the :class:`~vosjax.models.base.VOSModel` interface.

    ``feats`` of :meth:`encode_key`: ``"key"`` (transduction) and ``"key_ind"``
    (induction), the reduced layer3 features of the two branches
    ``[B, T, h, w, C]``, ``"proj_s4" .. "proj_s32"`` the decoder's projections
    of layer1..4 and ``"frame_hw"`` (zero channels, carries H, W).
    """

    name = "joint"
    stride = 16

    def __init__(self, config: Any):
        super().__init__(config)
        self.settings = _settings(config)
        self.net = _JointNet(self.settings)
        self.bn_trains = self.settings.train_bn
        self.bn_method = _JointNet.encode

    # -- parameters ------------------------------------------------------------------------
    def init(
        self,
        rng: jax.Array,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
    ) -> Variables:
        """Variables ``{"params": {backbone, reduce_*, label_encoder, encoder, decoder, segnet,
        learner_reg}, "batch_stats": {"backbone"}}``.

        Drawn by :func:`vosjax.models.frtm_common.init_variables` (one random
        draw; torchvision rule for the backbone, LeCun normal for the rest,
        ``learner_reg = learner_reg_init``).
        """
        self._check_clip("JOINT.init", frames, masks, obj_valid)
        init = lambda key, x, m: self.net.init(key, x, m, method=_JointNet.init_all)
        return chk.init_variables(
            init,
            rng,
            frames[0],
            masks[0, 0],
            constants={"learner_reg": self.settings.learner_reg_init},
        )

    def encode_value(
        self,
        variables: Variables,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        *,
        train: bool = False,
    ) -> dict[str, Float[Array, "B O T h w D"]]:
        """The two-head label encodings of each mask: ``{"e_tra", "e_ind", "weights"}``,
        each ``[B, O, T, h, w, D]`` (E_tra, E_ind >= 0; W in (0, 1))."""
        fn = "JOINT.encode_value"
        shape = checks.check_frames(fn, frames)
        checks.check_masks(fn, masks, shape)
        return self._labels(variables, masks)

    def _labels(self, variables, masks: Array) -> dict[str, Array]:
        lead = masks.shape[:-2]
        flat = masks.reshape((-1,) + masks.shape[-2:])
        outs = self.net.apply(variables, flat, method=_JointNet.labels)
        names = ("e_tra", "e_ind", "weights")
        return {k: v.reshape(lead + v.shape[1:]) for k, v in zip(names, outs)}

    # -- memory ----------------------------------------------------------------------------
    def init_memory(
        self, variables: Variables, batch: int, num_objects: int, feat_shape: tuple[int, int]
    ) -> JointMemory:
        """Empty memory: ``memory_frames`` empty template slots, zero kernels."""
        fn = "JOINT.init_memory"
        batch = checks.check_positive_int(fn, "batch", batch)
        num_objects = checks.check_positive_int(fn, "num_objects", num_objects)
        h, w = checks.check_feat_shape(fn, feat_shape)
        s = self.settings
        c, d, k = s.feature_dim, s.enc_dim, s.learner_kernel
        slots = self.memory_slots
        return JointMemory(
            templates=bank_init(
                batch, slots, h * w, 2 * c, num_objects * 3 * d, num_objects=num_objects
            ),
            encoded=jnp.zeros((batch, slots, h * w, c), jnp.float32),
            filters=jnp.zeros((batch, num_objects, k, k, c, d), jnp.float32),
            initialized=jnp.zeros((batch, num_objects), bool),
        )

    def _template_validity(self, bank: MemoryBank) -> tuple[Array, Array]:
        """``(valid [B, S], per object [B, S, O])``: the templates each object reads, those written
        since its own first frame (:func:`vosjax.ops.object_memory.bank_validity`)."""
        keep = self.policy.keep_first
        recent = object_recent(self.memory_frames, keep, self.policy.late_slots)
        return bank_validity(bank, recent, keep)

    def _fit(self, variables, z_ind, e_ind, weights, init, iters):
        """Eq. 6 for every (video, object): vmapped :func:`vosjax.learners.lwl.fit`."""
        reg = self.net.apply(variables, method=_JointNet.reg)

        def fit_one(z, e, wts, f0):
            return lwl.fit(z, e, wts, reg, f0, iters)

        return jax.vmap(jax.vmap(fit_one, (None, 0, 0, 0)))(z_ind, e_ind, weights, init)

    def memorize(
        self,
        variables: Variables,
        memory: JointMemory,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        write: Bool[Array, " B"],
        refit: Bool[Array, " B"] | None = None,
        *,
        train: bool = False,
    ) -> JointMemory:
        """Add the frames (in order) as templates and refit the induction learners.

        Rows with ``write`` insert their template(s) (keep-first bank) and get
        Z_enc recomputed; an object memorized for the first time
        (``write & obj_valid`` and not initialized) is fitted from a zero kernel
        (``learner_iters_init`` steps), an initialized one is refitted where
        ``refit`` (default: ``write``) from its kernel (``learner_iters_update``
        steps). Rows with ``write`` and ``refit`` False are returned unchanged.
        """
        fn = "JOINT.memorize"
        if not isinstance(memory, JointMemory):
            raise VosjaxError(
                f"{fn}: 'memory' must come from JOINT.init_memory, got {type(memory).__name__}."
            )
        shape = checks.check_frames(fn, frames)
        o = checks.check_masks(fn, masks, shape)
        b, t = shape[:2]
        checks.check_obj_valid(fn, obj_valid, b, o)
        checks.check_feats(fn, feats, ["key", "key_ind"])
        checks.check_row_flags(fn, "write", write, b)
        refit = write if refit is None else refit
        checks.check_row_flags(fn, "refit", refit, b)
        if memory.initialized.shape != (b, o):
            raise VosjaxError(
                f"{fn}: memory holds {memory.initialized.shape} (videos, objects) but the masks have "
                f"{(b, o)}; build it with init_memory(batch={b}, num_objects={o})."
            )
        s = self.settings
        c, d = s.feature_dim, s.enc_dim
        bank = memory.templates
        hh, ww = feats["key"].shape[2:4]
        p = hh * ww
        if bank.keys.shape[2] != p:
            raise VosjaxError(
                f"{fn}: memory was built for feat_shape with {bank.keys.shape[2]} positions, the "
                f"features have {hh} x {ww}; call init_memory with feat_shape=({hh}, {ww})."
            )
        if train:  # joint_net.py re-encodes sigmoid(mask_pred.detach())
            masks = lax.stop_gradient(masks)
        enc = self._labels(variables, masks)  # [B, O, T, h, w, D]
        for i in range(t):
            keys = jnp.concatenate([feats["key"][:, i], feats["key_ind"][:, i]], axis=-1)
            vals = jnp.stack([enc[k][:, :, i] for k in ("e_tra", "e_ind", "weights")], axis=-2)
            vals = jnp.moveaxis(vals, 1, 3)  # [B, h, w, O, 3, D]
            bank = bank_insert(
                bank,
                keys.reshape(b, p, 2 * c),
                vals.reshape(b, p, o * 3 * d),
                self.policy.keep_first,
                write,
                objects=obj_valid,
            )

        z_tra = bank.keys[..., :c]
        encoded = lax.cond(
            jnp.any(write),
            lambda: self.net.apply(variables, z_tra, bank.valid, method=_JointNet.encode_templates),
            lambda: memory.encoded.astype(z_tra.dtype),
        )
        encoded = chk.select_rows(write, encoded.astype(jnp.float32), memory.encoded)

        # the learner's training set: all valid templates, invalid slots weighted 0
        sm = bank.keys.shape[1]
        z_ind = bank.keys[..., c:].reshape(b, sm, hh, ww, c).astype(jnp.float32)
        v = bank.values.reshape(b, sm, hh, ww, o, 3, d).astype(jnp.float32)
        v = jnp.moveaxis(v, 4, 1)  # [B, O, S, h, w, 3, D]
        # per object: only the templates written since its first frame (its own memory)
        slot = jnp.moveaxis(self._template_validity(bank)[1], 2, 1).astype(jnp.float32)  # [B, O, S]
        if s.learner_sample_weights == "code":  # their tracker's temporal template weights
            slot = slot * joint_code.code_weights_for(bank.count, sm)[:, None, :]
        slot = slot[..., None, None, None]
        e_ind, wts = v[..., 1, :], v[..., 2, :] * slot

        iters_init = s.train_learner_iters_init if train else s.learner_iters_init
        iters_update = s.train_learner_iters_update if train else s.learner_iters_update
        need_init = write[:, None] & obj_valid & ~memory.initialized
        do_refit = refit[:, None] & obj_valid & memory.initialized
        zeros = jnp.zeros_like(memory.filters)
        f_init = lax.cond(
            jnp.any(need_init),
            lambda: self._fit(variables, z_ind, e_ind, wts, zeros, iters_init),
            lambda: zeros,
        )
        f_upd = lax.cond(
            jnp.any(do_refit),
            lambda: self._fit(variables, z_ind, e_ind, wts, memory.filters, iters_update),
            lambda: memory.filters,
        )
        filters = chk.select_rows(do_refit, f_upd, memory.filters)
        filters = chk.select_rows(need_init, f_init, filters)
        return JointMemory(bank, encoded, filters, memory.initialized | need_init)

    # -- segmentation ----------------------------------------------------------------------
    def mask_encodings(
        self, variables, memory: JointMemory, feats: Feats
    ) -> tuple[Float[Array, "B O T h w D"], Float[Array, "B O T h w D"]]:
        """``(E_tra*, E_ind*)`` of the query frames: the two branches' outputs before eq. 7."""
        fn = "JOINT.mask_encodings"
        checks.check_feats(fn, feats, ["key", "key_ind"])
        return self._mask_encodings(fn, variables, memory, feats)

    def _mask_encodings(self, fn: str, variables, memory: JointMemory, feats: Feats):
        b, t = feats["key"].shape[:2]
        s = self.settings
        c, d = s.feature_dim, s.enc_dim
        bank = memory.templates
        o = memory.filters.shape[1]
        hh, ww = feats["key"].shape[2:4]
        p, sm = hh * ww, bank.keys.shape[1]
        if bank.keys.shape[2] != p or bank.keys.shape[0] != b:
            raise VosjaxError(
                f"{fn}: memory was built for batch {bank.keys.shape[0]} and {bank.keys.shape[2]} "
                f"positions, the features have batch {b} and {hh} x {ww}."
            )
        e_tra = bank.values.reshape(b, sm, p, o, 3, d)[..., 0, :].reshape(b, sm, p, o * d)
        x = feats["key"].reshape(b, t, p, c)
        star = self.net.apply(
            variables,
            x,
            memory.encoded.astype(x.dtype),
            e_tra,
            self._template_validity(bank)[1],
            method=_JointNet.transduce,
        )
        e_tra_star = jnp.moveaxis(star.reshape(b, t, hh, ww, o, d), 4, 1).astype(jnp.float32)
        x_ind = feats["key_ind"].astype(jnp.float32)
        e_ind_star = jax.vmap(jax.vmap(lwl.apply, (0, None)))(memory.filters, x_ind)
        return e_tra_star, e_ind_star

    def segment(
        self,
        variables: Variables,
        memory: JointMemory,
        feats: Feats,
        obj_valid: Bool[Array, "B O"],
        options: SegmentOptions = DEFAULT_OPTIONS,
    ) -> Float[Array, "B O T H W"]:
        """Per-object logits ``S(E_tra* + E_ind*, x^1..x^4)`` (eq. 7) at full resolution.

        Slots with ``obj_valid`` False get :data:`~vosjax.ops.aggregate.INVALID_LOGIT`.
        """
        fn = "JOINT.segment"
        if not isinstance(memory, JointMemory):
            raise VosjaxError(
                f"{fn}: 'memory' must come from JOINT.init_memory, got {type(memory).__name__}."
            )
        b, t, h, w = checks.check_feats(fn, feats, ["key", "key_ind", *_PROJ.values()])
        o = checks.check_obj_valid(fn, obj_valid, b, memory.filters.shape[1])
        e_tra_star, e_ind_star = self._mask_encodings(fn, variables, memory, feats)
        enc = e_tra_star + e_ind_star  # [B, O, T, h, w, D]

        def per_object(a: Array) -> Array:
            a = jnp.broadcast_to(a[:, None], (b, o) + a.shape[1:])
            return a.reshape((b * o * t,) + a.shape[3:])

        proj = {d: per_object(feats[_PROJ[d]]) for d in DEPTHS}
        logits = self.net.apply(
            variables,
            proj,
            enc.reshape((b * o * t,) + enc.shape[3:]),
            (h, w),
            method=_JointNet.decode,
        )
        logits = logits.reshape(b, o, t, h, w)
        return jnp.where(obj_valid[:, :, None, None, None], logits, INVALID_LOGIT)
