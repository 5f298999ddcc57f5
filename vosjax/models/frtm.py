"""FRTM: a target model learned at inference + the segmentation network S (FRTM sec. 3).

Per frame and object (FRTM Algorithm 1)::

    x = F(I)                                  frozen backbone; x^16 = conv4_x (stride 16)
    s = D(x^16; w) = w2 * (w1 * x^16)         target model, w1 1x1 C -> 96, w2 3x3 96 -> 1 (eq. 1)
    y = S(s, x^4, x^8, x^16, x^32)            segmentation network (sec. 3.2, models/frtm_decoder.py)

and w is learned at inference by Gauss-Newton + CG on the weighted sample
memory (eq. 2-4; vosjax.learners.frtm): the first time an object is memorized
its frame is augmented to 5 samples and D is fitted from random weights with
5 GN steps (5, 10, 10, 10, 10 CG iterations); every later memorize adds one
sample (weight growth eta = 0.1, capacity 80, lowest weight evicted) and,
where ``refit`` (the engine passes it every t_s = 8 frames), refits w2 with
w1 fixed (1 GN step, 10 CG iterations). The fast variant uses ResNet-18,
N_GN = 4 and 5 CG iterations in updates. The paper's final model uses
ResNet-101 (``backbone="resnet101"`` here); the variants default to ResNet-50
("full") and ResNet-18 ("fast"). The authors' released networks run with
``segnet="authors"``, ``init_refit=True``, ``memory_rule="authors"`` and
``label_upsample=16`` (vosjax.models.torch_import_frtm.authors_config).

Exact reformulation used for memory. Updates keep w1 fixed, so the sample
memory stores the projected features ``h_k = w1 * x_k`` (96 channels per
object) instead of ``x_k`` (1024 channels, shared by all objects but needed
per object since each object has its own w1), and an update fits
``w2 * (I * h_k)`` with the identity as first layer: the same residuals and
minimiser as eq. 2 with w1 frozen (the w1 regulariser is then a constant).
This cuts the memory of 80 samples at 480 x 854 from ~530 MB to ~50 MB per
object. Labels y_k live on a grid ``label_upsample`` (4) times the feature
grid, i.e. roughly stride 4; U (bilinear) maps scores onto it.

The backbone is frozen (``freeze_backbone``: features pass through
``stop_gradient`` and its batch norm uses running statistics), so gradients
of a training loss reach S only, as in FRTM's offline training; everything
stays differentiable w.r.t. the memorized masks (through the GN-CG fit).
Objects are independent: target models and sample memories are vmapped over
(batch, object), the backbone features are shared.

First-frame augmentation draws its transforms from a fixed key
(``config.seed``), the same for every video and object, so a run is
deterministic; each object's 5 augmented images (its target cut out, the
background inpainted, the target pasted back: vosjax.learners.frtm_samples)
are encoded per object.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
from jaxtyping import Array, Bool, Float

from vosjax.errors import VosjaxError
from vosjax.learners import frtm as tm
from vosjax.models import backbones, checks
from vosjax.models import frtm_common as chk
from vosjax.models.backbone_segnet import BackboneSegnetModel, config_reader
from vosjax.models.base import Feats, SegmentOptions, Variables
from vosjax.models.frtm_decoder import DEPTHS, SegmentationNetwork
from vosjax.models.frtm_decoder_authors import AuthorsSegmentationNetwork
from vosjax.ops.aggregate import INVALID_LOGIT

__all__ = ["FRTM", "FRTMMemory", "default_config"]

VARIANTS = ("full", "fast")
SEGNETS = ("vosjax", "authors")
MEMORY_RULES = ("vosjax", "authors")
_PROJ = {d: f"proj_{d}" for d in DEPTHS}
DEFAULT_OPTIONS = SegmentOptions()


def default_config(variant: str = "full", tiny: bool = False) -> ml_collections.ConfigDict:
    """The model config of FRTM: ``"full"`` (ResNet-50) or ``"fast"`` (ResNet-18, fewer GN / CG
    iterations); ``tiny=True`` gives a CPU-test size (ResNet-18, width 8, few iterations).

    Fields: backbone, dtype ("float32" / "bfloat16"), train_bn, freeze_backbone,
    channels (S width, 64), hidden (w1 channels, 96), kernel (w2 size, 3),
    num_gn_init / num_cg_init (first fit), num_cg_update (updates), update_interval
    (t_s, read by the engine), memory_frames (K_max), eta, kappa_min, reg_w1 / reg_w2
    (residual factors of the regulariser, frtm-vos evaluate.py filter_reg), precond_w1 /
    precond_w2 (diagonal CG preconditioner, evaluate.py precond), label_upsample (label grid / feature grid), augment (5 first-frame
    samples), seed (augmentation and initial target-model weights), segnet ("vosjax":
    :mod:`~vosjax.models.frtm_decoder`; "authors": the released networks' form,
    :mod:`~vosjax.models.frtm_decoder_authors`), init_refit (after the first fit, one
    more w2-only update on the first frame's samples, as the authors' ``Discriminator.init``),
    memory_rule ("vosjax"; "authors": their weight of the first sample added after the first
    frame, and pixel weights of later samples from the thresholded label).
    """
    if variant not in VARIANTS:
        raise VosjaxError(
            f"frtm.default_config: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}."
        )
    c = ml_collections.ConfigDict()
    c.name = "frtm"
    c.variant = variant
    c.backbone = "resnet50"
    c.dtype = "float32"
    c.train_bn = False
    c.freeze_backbone = True
    c.channels = 64
    c.hidden = tm.HIDDEN
    c.kernel = 3
    c.num_gn_init = tm.NUM_GN_INIT
    c.num_cg_init = tuple(tm.NUM_CG_INIT)
    c.num_cg_update = tm.NUM_CG_UPDATE
    c.update_interval = tm.UPDATE_INTERVAL
    c.memory_frames = tm.CAPACITY
    c.eta = tm.ETA
    c.kappa_min = tm.KAPPA_MIN
    c.reg_w1 = float(tm.DEFAULT_REG["w1"])
    c.reg_w2 = float(tm.DEFAULT_REG["w2"])
    c.precond_w1 = float(tm.DEFAULT_PRECOND["w1"])
    c.precond_w2 = float(tm.DEFAULT_PRECOND["w2"])
    c.label_upsample = 4
    c.augment = True
    c.seed = 0
    c.segnet = "vosjax"
    c.init_refit = False
    c.memory_rule = "vosjax"
    if variant == "fast":
        c.backbone = "resnet18"
        c.num_gn_init = 4
        c.num_cg_init = (5, 10, 10, 10)
        c.num_cg_update = 5
    if tiny:
        c.backbone = "resnet18"
        c.channels = 8
        c.hidden = 8
        c.num_gn_init = 2
        c.num_cg_init = (3, 3)
        c.num_cg_update = 2
        c.memory_frames = 8
    return c


@dataclasses.dataclass(frozen=True)
class _Settings:
    backbone: str
    dtype: Any
    train_bn: bool
    freeze_backbone: bool
    channels: int
    hidden: int
    kernel: int
    num_gn_init: int
    num_cg_init: tuple[int, ...]
    num_cg_update: int
    memory_frames: int
    eta: float
    kappa_min: float
    reg: tuple[float, float]
    precond: tuple[float, float]
    label_upsample: int
    augment: bool
    seed: int
    segnet: str
    init_refit: bool
    memory_rule: str


def _settings(config: Any) -> _Settings:
    fn = "FRTM"
    get = config_reader(fn, config, default_config("full"))
    num_gn = checks.check_positive_int(fn, "num_gn_init", get("num_gn_init"))
    cg = get("num_cg_init")
    cg = tuple(int(v) for v in (cg if isinstance(cg, (tuple, list)) else (cg,) * num_gn))
    if len(cg) != num_gn:
        raise VosjaxError(
            f"{fn}: config 'num_cg_init' lists {len(cg)} CG counts but num_gn_init={num_gn}; "
            "give one per GN step."
        )
    kernel = checks.check_positive_int(fn, "kernel", get("kernel"))
    if kernel % 2 == 0:
        raise VosjaxError(f"{fn}: config 'kernel' must be odd, got {kernel}.")
    if bool(get("augment")) and get("memory_frames") < 5:
        raise VosjaxError(
            f"{fn}: config 'memory_frames' = {get('memory_frames')} cannot hold the 5 augmented "
            "first-frame samples; use >= 5 or augment=False."
        )
    segnet = str(get("segnet"))
    if segnet not in SEGNETS:
        raise VosjaxError(f"{fn}: config 'segnet' is {segnet!r}; choose one of {', '.join(SEGNETS)}.")
    memory_rule = str(get("memory_rule"))
    if memory_rule not in MEMORY_RULES:
        raise VosjaxError(
            f"{fn}: config 'memory_rule' is {memory_rule!r}; choose one of {', '.join(MEMORY_RULES)}."
        )
    eta = float(get("eta"))
    if not 0.0 <= eta < 1.0:
        raise VosjaxError(f"{fn}: config 'eta' must be in [0, 1), got {eta}.")
    return _Settings(
        backbone=str(get("backbone")),
        dtype=chk.parse_dtype(fn, get("dtype")),
        train_bn=bool(get("train_bn")),
        freeze_backbone=bool(get("freeze_backbone")),
        channels=checks.check_positive_int(fn, "channels", get("channels")),
        hidden=checks.check_positive_int(fn, "hidden", get("hidden")),
        kernel=kernel,
        num_gn_init=num_gn,
        num_cg_init=cg,
        num_cg_update=checks.check_positive_int(fn, "num_cg_update", get("num_cg_update")),
        memory_frames=checks.check_positive_int(fn, "memory_frames", get("memory_frames")),
        eta=eta,
        kappa_min=float(get("kappa_min")),
        reg=(float(get("reg_w1")), float(get("reg_w2"))),
        precond=(float(get("precond_w1")), float(get("precond_w2"))),
        label_upsample=checks.check_positive_int(fn, "label_upsample", get("label_upsample")),
        augment=bool(get("augment")),
        seed=int(get("seed")),
        segnet=segnet,
        init_refit=bool(get("init_refit")),
        memory_rule=memory_rule,
    )


class _FRTMNet(nn.Module):
    """Backbone F and segmentation network S (the trained parts of FRTM)."""

    backbone_name: str
    train_bn: bool
    freeze_backbone: bool
    channels: int
    dtype: Any
    segnet_form: str = "vosjax"

    def setup(self):
        frozen = self.freeze_backbone or not self.train_bn
        self.backbone = backbones.make_backbone(
            self.backbone_name, stop_at="s32", frozen_bn=frozen, dtype=self.dtype
        )
        segnet = AuthorsSegmentationNetwork if self.segnet_form == "authors" else SegmentationNetwork
        self.segnet = segnet(self.channels, self.dtype)

    def features(self, x: Float[Array, "N H W 3"], train: bool = False) -> dict[str, Array]:
        f = self.backbone(x, train=train)
        if self.freeze_backbone:
            f = jax.tree_util.tree_map(lax.stop_gradient, f)
        return f

    def encode(self, x: Float[Array, "N H W 3"], train: bool = False) -> dict[str, Array]:
        f = self.features(x, train)
        out = {_PROJ[d]: p for d, p in self.segnet.project(f).items()}
        out["key"] = f["s16"]
        return out

    def decode(self, proj: dict[str, Array], scores: Array, out_hw: tuple[int, int]) -> Array:
        return self.segnet.decode(proj, scores, out_hw)

    def init_all(self, x: Float[Array, "N H W 3"]) -> Array:
        f = self.encode(x)
        proj = {d: f[_PROJ[d]] for d in DEPTHS}
        scores = jnp.zeros(f["key"].shape[:3] + (1,), self.dtype)
        return self.decode(proj, scores, x.shape[1:3])


class FRTMMemory(NamedTuple):
    """FRTM's memory state (a pytree of fixed-shape arrays), per (video b, object o).

    Attributes:
      target: target-model weights ``{"w1": [B, O, 1, 1, C, K], "w2": [B, O, k, k, K, 1]}``.
      samples: the weighted sample memory (:class:`vosjax.learners.frtm.SampleMemory`)
        with leaves ``features [B, O, S, h, w, K]`` (projected ``w1 * x``), ``labels
        [B, O, S, h', w']``, ``weights [B, O, S]``, ``count``, ``last`` ``int32[B, O]``.
      initialized: ``bool[B, O]``, True once the object's first-frame fit ran.
    """

    target: dict[str, Array]
    samples: tm.SampleMemory
    initialized: Bool[Array, "B O"]


def _bo(fn, in_axes_inner, in_axes_outer=None):
    """vmap over objects (inner) and videos (outer)."""
    inner = jax.vmap(fn, in_axes=in_axes_inner)
    return jax.vmap(inner, in_axes=in_axes_outer if in_axes_outer is not None else 0)


class FRTM(BackboneSegnetModel):
    """FRTM behind the :class:`~vosjax.models.base.VOSModel` interface.

    ``feats`` of :meth:`encode_key`: ``"key"`` backbone conv4_x (stride 16) features
    ``[B, T, h, w, C]`` (the target model's input), ``"proj_s4" .. "proj_s32"``
    the 64-channel projections of S (shared by all objects) and
    ``"frame_hw"`` (a zero-channel ``[B, T, H, W, 0]`` carrying H, W).
    """

    name = "frtm"
    stride = 16

    def __init__(self, config: Any):
        super().__init__(config)
        self.settings = _settings(config)
        s = self.settings
        self.net = _FRTMNet(s.backbone, s.train_bn, s.freeze_backbone, s.channels, s.dtype, s.segnet)
        self.feature_channels = backbones.feature_channels(s.backbone)["s16"]
        self.bn_trains = s.train_bn and not s.freeze_backbone
        self.bn_method = _FRTMNet.features

    # -- parameters ------------------------------------------------------------------------
    def init(
        self,
        rng: jax.Array,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
    ) -> Variables:
        """Variables ``{"params": {"backbone", "segnet"}, "batch_stats": {"backbone"}}``.

        Drawn by :func:`vosjax.models.frtm_common.init_variables` (one random
        draw; torchvision rule for the backbone, LeCun normal for S).
        """
        self._check_clip("FRTM.init", frames, masks, obj_valid)
        init = lambda key, x: self.net.init(key, x, method=_FRTMNet.init_all)
        return chk.init_variables(init, rng, frames[:1, 0])

    def trainable_paths(self) -> list[tuple[str, ...]]:
        """Param subtrees trained offline: S, plus the backbone unless it is frozen."""
        return [("segnet",)] if self.settings.freeze_backbone else [("segnet",), ("backbone",)]

    # -- memory samples --------------------------------------------------------------------
    def _labels(self, masks: Array, grid: tuple[int, int]) -> Array:
        """Masks ``[..., H, W]`` on the label grid (bilinear, antialiased), float32."""
        lead = masks.shape[:-2]
        flat = masks.reshape((-1,) + masks.shape[-2:]).astype(jnp.float32)
        out = jax.image.resize(flat, (flat.shape[0], *grid), "linear")
        return out.reshape(lead + tuple(grid))

    def encode_value(
        self,
        variables: Variables,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        *,
        train: bool = False,
    ) -> dict[str, Array]:
        """The training samples a frame contributes: ``{"features": x^16 [B, T, h, w, C],
        "labels": [B, O, T, h', w']}`` (masks on the label grid of eq. 2)."""
        fn = "FRTM.encode_value"
        shape = checks.check_frames(fn, frames)
        checks.check_masks(fn, masks, shape)
        checks.check_feats(fn, feats, ["key"])
        hh, ww = feats["key"].shape[2:4]
        u = self.settings.label_upsample
        return {"features": feats["key"], "labels": self._labels(masks, (u * hh, u * ww))}

    # -- memory ----------------------------------------------------------------------------
    def init_memory(
        self, variables: Variables, batch: int, num_objects: int, feat_shape: tuple[int, int]
    ) -> FRTMMemory:
        """Empty memory: zero target models, empty sample memories of ``memory_frames`` slots."""
        fn = "FRTM.init_memory"
        batch = checks.check_positive_int(fn, "batch", batch)
        num_objects = checks.check_positive_int(fn, "num_objects", num_objects)
        h, w = checks.check_feat_shape(fn, feat_shape)
        s = self.settings
        c, k = self.feature_channels, s.hidden
        u = s.label_upsample
        lead = (batch, num_objects)
        empty = tm.memory_empty((h, w, k), (u * h, u * w), self.memory_frames)
        return FRTMMemory(
            target={
                "w1": jnp.zeros(lead + (1, 1, c, k), jnp.float32),
                "w2": jnp.zeros(lead + (s.kernel, s.kernel, k, 1), jnp.float32),
            },
            samples=jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, lead + x.shape), empty),
            initialized=jnp.zeros(lead, bool),
        )

    def _reg(self) -> dict[str, float]:
        return {"w1": self.settings.reg[0], "w2": self.settings.reg[1]}

    def _solver(self) -> dict[str, Any]:
        """reg, precond and the data scale (stride-16 / label grid)^2: the labels here live on
        a grid ``label_upsample`` times the feature grid, the authors' at the image grid, so
        each label pixel stands for (16 / label_upsample)^2 image pixels of their sum."""
        s = self.settings
        return {
            "reg": self._reg(),
            "precond": {"w1": s.precond[0], "w2": s.precond[1]},
            "data_scale": float((self.stride / s.label_upsample) ** 2),
        }

    def _initial(self, variables, memory, frame, masks, x, grid):
        """First-frame samples and fit for every (video, object): 5 augmented samples (sec. 3.5)."""
        s = self.settings
        key_aug, key_w = jax.random.split(jax.random.PRNGKey(s.seed))
        if s.augment:
            aug = jax.vmap(jax.vmap(tm.augment_first_frame, (None, 0, None)), (0, 0, None))
            images, masks5 = aug(frame.astype(jnp.float32), masks.astype(jnp.float32), key_aug)
            # each object's augmented images differ (its target is cut out and pasted back),
            # so they are encoded per object, as the authors' Tracker.initialize does
            b, o, n = images.shape[:3]
            x5 = self.net.apply(
                variables,
                images.reshape((b * o * n,) + images.shape[3:]).astype(frame.dtype),
                method=_FRTMNet.features,
            )["s16"]
            x5 = x5.reshape((b, o, n) + x5.shape[1:]).astype(jnp.float32)
        else:
            x5, masks5 = x[:, None], masks[:, :, None]
        y5 = self._labels(masks5, grid)  # [B, O, K0, h', w']
        w0 = tm.init_params(key_w, self.feature_channels, s.hidden, s.kernel)

        def fit_one(x_k, y_k):
            return tm.initial_fit(
                w0,
                x_k,
                y_k,
                num_gn=s.num_gn_init,
                num_cg=s.num_cg_init,
                kappa_min=s.kappa_min,
                **self._solver(),
            )

        if s.augment:
            target = _bo(fit_one, (0, 0))(x5, y5)
            proj = jnp.einsum("bonhwc,boce->bonhwe", x5, target["w1"][:, :, 0, 0])
        else:
            target = _bo(fit_one, (None, 0))(x5, y5)
            proj = jnp.einsum("bnhwc,boce->bonhwe", x5, target["w1"][:, :, 0, 0])
        samples = _bo(lambda f, y: tm.memory_init(f, y, self.memory_frames), (0, 0))(proj, y5)
        if s.init_refit:
            target = {"w1": target["w1"], "w2": _bo(self._refit_w2, (0, 0))(target["w2"], samples)}
        if s.memory_rule == "authors":
            samples = tm.authors_restart(samples)
        return target, samples

    def _refit_w2(self, w2, mem):
        """w2 refitted with w1 fixed (1 GN step) on a memory of projected samples."""
        s = self.settings
        eye = jnp.eye(s.hidden, dtype=jnp.float32)[None, None]
        fitted = tm.update({"w1": eye, "w2": w2}, mem, num_cg=s.num_cg_update,
                           kappa_min=s.kappa_min, binary_pixel_weights=s.memory_rule == "authors",
                           **self._solver())
        return fitted["w2"]

    def _memorize_frame(self, variables, memory, frame, masks, obj_valid, x, write, refit):
        s = self.settings
        grid = memory.samples.labels.shape[-2:]
        x = x.astype(jnp.float32)
        y = self._labels(masks, grid)  # [B, O, h', w']
        need_init = write[:, None] & obj_valid & ~memory.initialized
        ready = obj_valid & memory.initialized

        target, samples = lax.cond(
            jnp.any(need_init),
            lambda: self._initial(variables, memory, frame, masks, x, grid),
            lambda: (memory.target, memory.samples),
        )
        target = chk.select_rows(need_init, target, memory.target)
        samples = chk.select_rows(need_init, samples, memory.samples)

        # extend the dataset (Algorithm 1, line 7) with the projected features w1 * x
        add = write[:, None] & ready
        # the authors skip labels with < 10 foreground pixels at image resolution
        min_pixels = tm.MIN_TARGET_PIXELS / self._solver()["data_scale"]
        proj = jnp.einsum("bhwc,boce->bohwe", x, target["w1"][:, :, 0, 0])
        added = _bo(lambda m, f, l: tm.memory_add(m, f, l, s.eta, min_pixels), (0, 0, 0))(samples, proj, y)
        samples = chk.select_rows(add, added, samples)

        # update w2 with w1 fixed (line 9), on the projected samples
        do_refit = refit[:, None] & ready
        w2 = lax.cond(
            jnp.any(do_refit),
            lambda: _bo(self._refit_w2, (0, 0))(target["w2"], samples),
            lambda: target["w2"],
        )
        target = {"w1": target["w1"], "w2": chk.select_rows(do_refit, w2, target["w2"])}
        return FRTMMemory(target, samples, memory.initialized | need_init)

    def memorize(
        self,
        variables: Variables,
        memory: FRTMMemory,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        write: Bool[Array, " B"],
        refit: Bool[Array, " B"] | None = None,
        *,
        train: bool = False,
    ) -> FRTMMemory:
        """Add the frames (in order) to each object's sample memory and fit its target model.

        An object memorized for the first time (``write & obj_valid`` and not yet
        initialized) gets the first-frame fit on 5 augmented samples; an
        initialized one gets its sample added and, where ``refit`` (default:
        ``write``), w2 refitted with w1 fixed. Rows with ``write`` False and
        ``refit`` False are returned unchanged. Differentiable w.r.t. ``masks``.
        """
        fn = "FRTM.memorize"
        if not isinstance(memory, FRTMMemory):
            raise VosjaxError(
                f"{fn}: 'memory' must come from FRTM.init_memory, got {type(memory).__name__}."
            )
        shape = checks.check_frames(fn, frames)
        o = checks.check_masks(fn, masks, shape)
        b, t = shape[:2]
        checks.check_obj_valid(fn, obj_valid, b, o)
        checks.check_feats(fn, feats, ["key"])
        checks.check_row_flags(fn, "write", write, b)
        refit = write if refit is None else refit
        checks.check_row_flags(fn, "refit", refit, b)
        if memory.initialized.shape != (b, o):
            raise VosjaxError(
                f"{fn}: memory holds {memory.initialized.shape} (videos, objects) but the masks have "
                f"{(b, o)}; build it with init_memory(batch={b}, num_objects={o})."
            )
        for i in range(t):
            memory = self._memorize_frame(
                variables,
                memory,
                frames[:, i],
                masks[:, :, i],
                obj_valid,
                feats["key"][:, i],
                write,
                refit,
            )
        return memory

    # -- segmentation ----------------------------------------------------------------------
    def target_scores(self, memory: FRTMMemory, feats: Feats) -> Float[Array, "B O T h w"]:
        """Coarse target scores ``s = D(x^16; w)`` (eq. 1) of every object on the feature grid."""
        checks.check_feats("FRTM.target_scores", feats, ["key"])
        return self._target_scores(memory, feats)

    def _target_scores(self, memory: FRTMMemory, feats: Feats) -> Float[Array, "B O T h w"]:
        x = feats["key"].astype(jnp.float32)
        return _bo(tm.apply, (0, None), (0, 0))(memory.target, x)

    def segment(
        self,
        variables: Variables,
        memory: FRTMMemory,
        feats: Feats,
        obj_valid: Bool[Array, "B O"],
        options: SegmentOptions = DEFAULT_OPTIONS,
    ) -> Float[Array, "B O T H W"]:
        """Per-object logits ``S(D(x^16; w_o), x)`` at full resolution ``[B, O, T, H, W]``.

        Slots with ``obj_valid`` False get :data:`~vosjax.ops.aggregate.INVALID_LOGIT`.
        """
        fn = "FRTM.segment"
        b, t, h, w = checks.check_feats(fn, feats, ["key", *(_PROJ[d] for d in DEPTHS)])
        o = checks.check_obj_valid(fn, obj_valid, b)
        if memory.initialized.shape != (b, o):
            raise VosjaxError(
                f"{fn}: memory holds {memory.initialized.shape} (videos, objects) but obj_valid is "
                f"{(b, o)}; build it with init_memory(batch={b}, num_objects={o})."
            )
        scores = self._target_scores(memory, feats)  # [B, O, T, h, w]

        def per_object(a: Array) -> Array:
            a = jnp.broadcast_to(a[:, None], (b, o) + a.shape[1:])
            return a.reshape((b * o * t,) + a.shape[3:])

        proj = {d: per_object(feats[_PROJ[d]]) for d in DEPTHS}
        smap = scores.reshape(b * o * t, *scores.shape[3:], 1)
        logits = self.net.apply(variables, proj, smap, (h, w), method=_FRTMNet.decode)
        logits = logits.reshape(b, o, t, h, w)
        return jnp.where(obj_valid[:, :, None, None, None], logits, INVALID_LOGIT)
