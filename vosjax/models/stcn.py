"""The space-time memory network (STCN-style) and its TrickVOS / cyclic forms.

One class, :class:`STCN`, serves three registry names; they differ only in
configuration (:func:`default_config`):

``"stcn"`` (the baseline)
    * key encoder: ResNet-50 up to ``layer3`` (stride 16, 1024 channels; skips
      s4 = 256 and s8 = 512 channels) + a 3x3 key projection to ``Ck = 64``
      (orthogonal initialisation). One key per frame, shared by all objects.
    * value encoder: ResNet-18 up to ``layer3`` over 5 planes per object: the
      frame (3), the object's mask, and the sum of the OTHER valid objects'
      masks. Its stride-16 output (256 ch) is fused with the key encoder's
      stride-16 features of the same frame:
      ``x = ResBlock([v, f16]); x = ResBlock(x + CBAM(x))`` -> ``Cv = 512``.
    * readout: :func:`vosjax.ops.memory.readout` (L2 affinity, softmax over the
      memory, top-k at inference, ``SegmentOptions.top_k = 20``) of the
      memory bank, all objects at once (objects folded into value channels).
    * decoder: ``x = ResBlock_512([readout, conv3x3_{1024->512}(f16_query)])``,
      then two upsampling steps ``x = ResBlock(conv3x3(skip) + up(x))`` with
      the s8 skip (-> 256 ch) and the s4 skip (-> 256 ch), ``conv3x3 -> 1``
      logit per object, and a bilinear resize to the input size (x4 when the
      input size is a multiple of 4; for other sizes the stride-4 map, of size
      ceil(H/4) x ceil(W/4), is resized to exactly H x W).
    * memory: :class:`vosjax.ops.memory.MemoryBank` with ``memory_frames``
      slots (plus the policy's ``late_slots``), keep-first policy (slot 0
      keeps the first frame written, the others form a ring of the latest
      frames). The bank is per object: an object that appears later reads
      only the frames written since its own first frame, which is kept too
      (:mod:`vosjax.memory_policy`; the readout masks per object,
      :mod:`vosjax.ops.object_memory`, as STCN's YouTube-VOS driver keeps one
      memory per object). The engine decides WHEN to write (``write`` masks).
``"trickvos"`` (TrickVOS sec. 4.1 lightweight baseline)
    MobileNetV2 key and value encoders (stride-16 taps: 96 channels, skips
    s8 = 32, s4 = 24), key dim 32, memory = first + last frame
    (``memory_frames = 2`` with keep-first), and a value encoder that sees the
    masks only: 2 planes per object, the object's mask and the sum of the
    other objects' masks (the frame reaches the values only through the
    fusion with the key encoder's stride-16 features, as in the baseline).
    Narrower value / decoder widths bring the whole network to ~1.9M
    parameters (the paper's figure). There is no ASPP in any form here.
``"cyclic"`` (cyclic VOS, sec. 4.1)
    The baseline network, run at half resolution (``configs/cyclic.py`` sets
    ``inference.resolution = 240``: 240 x 427 frames), with
    a lighter value dimension (``Cv = 256``) and decoder. What the cycle loss
    and gradient correction need is part of every form: ``memorize`` and
    ``segment`` are differentiable w.r.t. the masks given to ``memorize``.

Shapes (``h, w = ceil(H/16), ceil(W/16)``): ``encode_key`` returns
``{"key": [B,T,h,w,Ck], "s16": [B,T,h,w,C16], "s8", "s4", "frame_hw": [B,T,H,W,0]}``
where ``frame_hw`` is an EMPTY array whose shape carries the input size to
``segment`` (slicing or concatenating feats along T keeps it consistent).
``encode_value`` returns per-object values ``[B, O, T, h, w, Cv]`` (zero for
invalid object slots). ``segment`` returns per-object logits
``f32[B, O, T, H, W]`` before soft aggregation; invalid slots get
:data:`vosjax.ops.aggregate.INVALID_LOGIT`.

Batch norm of the backbones is frozen (running statistics, never updated)
unless ``train_bn`` is set; then training-mode calls normalise with batch
statistics and :meth:`STCN.update_batch_stats` moves the running statistics.
``dtype = "bfloat16"`` computes in bfloat16 (params stay float32, the memory
bank is stored in bfloat16, logits are float32).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jaxtyping import Array, Bool, Float

from vosjax.errors import VosjaxError
from vosjax.models import backbones, checks
from vosjax.models.base import Feats, SegmentOptions, Variables, VOSModel
from vosjax.models.modules import Decoder, FeatureFusion, conv3x3, resize_bilinear
from vosjax.ops import memory as mem_ops
from vosjax.ops import object_memory as obj_ops
from vosjax.ops.aggregate import INVALID_LOGIT

VARIANTS = ("stcn", "trickvos", "cyclic")
VALUE_INPUTS = {"frame_mask": 5, "mask": 2}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DEFAULT_OPTIONS = SegmentOptions()


# ----------------------------------------------------------------------------- configuration


def default_config(variant: str = "stcn", tiny: bool = False) -> ml_collections.ConfigDict:
    """Model config of a memory-network variant: ``"stcn"``, ``"trickvos"`` or ``"cyclic"``.

    ``tiny=True`` gives a CPU-test size of the same variant: ResNet-18 key and
    value encoders (they compile several times faster on CPU than ResNet-50 or
    MobileNetV2, whose depthwise convolutions are slow to compile), narrow
    value / decoder widths and 3 memory slots. The variant's other switches
    stay (``"trickvos"``: mask-only value input, key dim 32, 2 slots).

    Fields: ``name``; ``key_backbone`` / ``value_backbone`` (names of
    :data:`vosjax.models.backbones.BACKBONES`); ``key_dim`` (Ck);
    ``value_dim`` (Cv per object); ``value_input`` (``"frame_mask"``: frame +
    mask + others, 5 planes; ``"mask"``: mask + others, 2 planes);
    ``query_comp_dim`` (the decoder's compression of the query's stride-16
    features); ``decoder_dims`` (widths after the stride-16 ResBlock and the
    two upsampling steps); ``cbam_reduction``; ``memory_frames`` (bank slots,
    the default capacity; the memory policy may set another); ``train_bn``;
    ``dtype`` (``"float32"`` / ``"bfloat16"``); ``value_conv_bias`` (the value
    encoder's ResNet convolutions carry biases, as in the authors' STCN, whose
    value encoder is their own ResNet-18 with biased convolutions; False =
    torchvision's bias-free layout, the default here; a config without the field
    means False). The resolution a method runs at is an inference option
    (``inference.resolution``), not the model's.
    """
    if variant not in VARIANTS:
        raise VosjaxError(
            f"stcn.default_config: variant={variant!r} is not one of {', '.join(VARIANTS)}."
        )
    c = ml_collections.ConfigDict()
    c.name = variant
    c.key_backbone = "resnet50"
    c.value_backbone = "resnet18"
    c.key_dim = 64
    c.value_dim = 512
    c.value_input = "frame_mask"
    c.query_comp_dim = 512
    c.decoder_dims = (512, 256, 256)
    c.cbam_reduction = 16
    c.memory_frames = 16
    c.train_bn = False
    c.dtype = "float32"
    c.value_conv_bias = False
    if variant == "trickvos":
        c.key_backbone = c.value_backbone = "mobilenet_v2"
        c.key_dim = 32
        c.value_dim = 64
        c.value_input = "mask"
        c.query_comp_dim = 64
        c.decoder_dims = (64, 64, 64)
        c.memory_frames = 2
    elif variant == "cyclic":
        c.value_dim = 256
        c.query_comp_dim = 256
        c.decoder_dims = (256, 128, 128)
    if tiny:
        c.key_backbone = c.value_backbone = "resnet18"
        if variant != "trickvos":
            c.memory_frames = 3
            c.key_dim = 16
        c.value_dim = 32
        c.query_comp_dim = 32
        c.decoder_dims = (32, 16, 16)
        c.cbam_reduction = 4
    return c


@dataclasses.dataclass(frozen=True)
class MemoryNetSpec:
    """The static, hashable form of a memory-network config (see :func:`default_config`)."""

    key_backbone: str
    value_backbone: str
    key_dim: int
    value_dim: int
    value_input: str
    query_comp_dim: int
    decoder_dims: tuple[int, int, int]
    cbam_reduction: int
    memory_frames: int
    train_bn: bool
    dtype: str
    value_conv_bias: bool = False

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.dtype]

    @property
    def value_in_channels(self) -> int:
        return VALUE_INPUTS[self.value_input]


def _field(config: Any, name: str, owner: str) -> Any:
    try:
        return config[name]
    except (KeyError, AttributeError, TypeError) as err:
        raise VosjaxError(
            f"{owner}: the model config has no field '{name}'; start from "
            f"default_config() of the model's module and override fields from there."
        ) from err


def _positive_int(config: Any, name: str, owner: str) -> int:
    v = _field(config, name, owner)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise VosjaxError(
            f"{owner}: config field 'model.{name}' must be a positive int, got {v!r}."
        )
    return v


def _choice(config: Any, name: str, choices: Any, owner: str) -> Any:
    v = _field(config, name, owner)
    if v not in choices:
        raise VosjaxError(
            f"{owner}: config field 'model.{name}' = {v!r} is not one of "
            f"{', '.join(map(repr, choices))}."
        )
    return v


def spec_fields(config: Any, owner: str = "STCN") -> dict[str, Any]:
    """Validate the memory-network fields of ``config`` (raises VosjaxError naming the field)."""
    dims = tuple(_field(config, "decoder_dims", owner))
    if len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise VosjaxError(
            f"{owner}: config field 'model.decoder_dims' must be three positive ints, got {dims!r}."
        )
    train_bn = _field(config, "train_bn", owner)
    if not isinstance(train_bn, bool):
        raise VosjaxError(
            f"{owner}: config field 'model.train_bn' must be a bool, got {train_bn!r}."
        )
    return {
        "key_backbone": _choice(config, "key_backbone", backbones.BACKBONES, owner),
        "value_backbone": _choice(config, "value_backbone", backbones.BACKBONES, owner),
        "key_dim": _positive_int(config, "key_dim", owner),
        "value_dim": _positive_int(config, "value_dim", owner),
        "value_input": _choice(config, "value_input", tuple(VALUE_INPUTS), owner),
        "query_comp_dim": _positive_int(config, "query_comp_dim", owner),
        "decoder_dims": dims,
        "cbam_reduction": _positive_int(config, "cbam_reduction", owner),
        "memory_frames": _positive_int(config, "memory_frames", owner),
        "train_bn": train_bn,
        "dtype": _choice(config, "dtype", tuple(DTYPES), owner),
        "value_conv_bias": _optional_bool(config, "value_conv_bias", owner),
    }


def _optional_bool(config: Any, name: str, owner: str) -> bool:
    """A bool field that older configs (bundles written before it existed) lack: False then."""
    try:
        v = config[name]
    except (KeyError, AttributeError, TypeError):
        return False
    if not isinstance(v, bool):
        raise VosjaxError(f"{owner}: config field 'model.{name}' must be a bool, got {v!r}.")
    return v


# ----------------------------------------------------------------------------- Flax modules


def _merge_bt(x: Array) -> Array:
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


class MemoryNet(nn.Module):
    """The Flax side of :class:`STCN`: encoders, fusion and decoder (no memory logic)."""

    spec: MemoryNetSpec

    def setup(self) -> None:
        s = self.spec
        dt = s.compute_dtype
        self.key_encoder = backbones.make_backbone(
            s.key_backbone, in_channels=3, stop_at="s16", frozen_bn=not s.train_bn, dtype=dt
        )
        self.key_proj = conv3x3(s.key_dim, dt, kernel_init=nn.initializers.orthogonal())
        self.value_encoder = backbones.make_backbone(
            s.value_backbone,
            in_channels=s.value_in_channels,
            stop_at="s16",
            frozen_bn=not s.train_bn,
            dtype=dt,
            conv_bias=s.value_conv_bias,
        )
        self.fuser = FeatureFusion(s.value_dim, s.cbam_reduction, dt)
        self.query_comp = conv3x3(s.query_comp_dim, dt)
        self.decoder = Decoder(s.decoder_dims, dt)

    def encode_key(self, frames: Float[Array, "B T H W 3"], train: bool = False) -> Feats:
        b, t, hh, ww, _ = frames.shape
        f = self.key_encoder(_merge_bt(frames).astype(self.spec.compute_dtype), train=train)
        out = {
            "key": self.key_proj(f["s16"]),
            "s16": f["s16"],
            "s8": f["s8"],
            "s4": f["s4"],
        }
        out = {k: v.reshape((b, t) + v.shape[1:]) for k, v in out.items()}
        out["frame_hw"] = jnp.zeros((b, t, hh, ww, 0), jnp.float32)
        return out

    def encode_value(
        self,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        s16: Float[Array, "B T h w C16"],
        train: bool = False,
    ) -> Float[Array, "B O T h w Cv"]:
        dt = self.spec.compute_dtype
        b, o, t, hh, ww = masks.shape
        valid = obj_valid[:, :, None, None, None].astype(masks.dtype)
        m = masks * valid
        others = jnp.sum(m, axis=1, keepdims=True) - m
        planes = jnp.stack([m, others], axis=-1)  # [B, O, T, H, W, 2]
        if self.spec.value_input == "frame_mask":
            img = jnp.broadcast_to(frames[:, None].astype(planes.dtype), (b, o, t, hh, ww, 3))
            planes = jnp.concatenate([img, planes], axis=-1)
        x = planes.reshape((b * o * t, hh, ww, planes.shape[-1])).astype(dt)
        v = self.value_encoder(x, train=train)["s16"]
        f16 = jnp.broadcast_to(s16[:, None], (b, o) + s16.shape[1:]).reshape(
            (b * o * t,) + s16.shape[2:]
        )
        v = self.fuser(v, f16.astype(dt))
        v = v.reshape((b, o, t) + v.shape[1:])
        return v * valid[..., None].astype(v.dtype)

    def refine_readout(
        self, readout: Float[Array, "B O T h w Cv"], feats: Feats
    ) -> Float[Array, "B O T h w Cv"]:
        """Hook between memory readout and decoder (identity here; PCVOS refines)."""
        del feats
        return readout

    def decode(
        self, readout: Float[Array, "B O T h w Cv"], feats: Feats
    ) -> Float[Array, "B O T H W"]:
        dt = self.spec.compute_dtype
        b, o, t, h, w, _ = readout.shape
        hh, ww = feats["frame_hw"].shape[2:4]
        q = self.query_comp(_merge_bt(feats["s16"]).astype(dt))  # [B*T, h, w, Cq]
        r = jnp.swapaxes(readout, 1, 2).reshape((b * t, o, h, w, readout.shape[-1])).astype(dt)
        q = jnp.broadcast_to(q[:, None], (b * t, o) + q.shape[1:])
        x = self.decoder(
            jnp.concatenate([r, q], axis=-1),
            _merge_bt(feats["s8"]).astype(dt),
            _merge_bt(feats["s4"]).astype(dt),
        )  # [B*T, O, h4, w4]
        x = resize_bilinear(_merge_bt(x)[..., None].astype(jnp.float32), (hh, ww))
        return jnp.swapaxes(x.reshape(b, t, o, hh, ww), 1, 2)

    def segment_readout(
        self, readout: Float[Array, "B O T h w Cv"], feats: Feats
    ) -> Float[Array, "B O T H W"]:
        return self.decode(self.refine_readout(readout, feats), feats)

    def __call__(
        self,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        train: bool = False,
    ) -> Float[Array, "B O T H W"]:
        """Full pass used by ``init``: memorise frame 0, segment frames 1..T-1 (or 0 if T=1)."""
        feats = self.encode_key(frames, train)
        values = self.encode_value(
            frames[:, :1], masks[:, :, :1], obj_valid, feats["s16"][:, :1], train
        )
        b, o, _, h, w, cv = values.shape
        keys = feats["key"][:, 0].reshape(b, h * w, -1)
        vals = jnp.moveaxis(values[:, :, 0], 1, 3).reshape(b, h * w, o * cv)
        q_t = slice(1, None) if frames.shape[1] > 1 else slice(0, 1)
        query = {k: v[:, q_t] for k, v in feats.items()}
        t = query["key"].shape[1]
        r = mem_ops.readout(keys, vals, query["key"].reshape(b, t * h * w, -1))
        r = jnp.moveaxis(r.reshape(b, t, h, w, o, cv), 4, 1)
        return self.segment_readout(r, query)


# ----------------------------------------------------------------------------- input checks
# The checks are vosjax.models.checks; STCN.memorize calls them under these names.


# ----------------------------------------------------------------------------- the model


class STCN(VOSModel):
    """STCN-style memory network behind the :class:`VOSModel` interface (module docstring).

    ``config`` is a model config (:func:`default_config`); ``config.name`` is
    the registry name (``"stcn"``, ``"trickvos"`` or ``"cyclic"``).
    """

    net_cls: type[MemoryNet] = MemoryNet
    spec_cls: type[MemoryNetSpec] = MemoryNetSpec
    feat_keys: tuple[str, ...] = ("key", "s16", "s8", "s4", "frame_hw")

    def __init__(self, config: Any):
        super().__init__(config)
        self.name = str(_field(config, "name", type(self).__name__))
        self.spec = self.spec_cls(**self._spec_fields(config))
        self.net = self.net_cls(self.spec)

    @staticmethod
    def _spec_fields(config: Any) -> dict[str, Any]:
        return spec_fields(config, "STCN")

    # -- parameters -------------------------------------------------------------------------
    def init(
        self,
        rng: jax.Array,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
    ) -> Variables:
        """All variables ``{"params", "batch_stats"}`` from example inputs (any T >= 1)."""
        fn = f"{type(self).__name__}.init"
        shape = checks.check_frames(fn, frames)
        o = checks.check_obj_valid(fn, obj_valid, shape[0])
        checks.check_masks(fn, masks, shape, o)
        return dict(self.net.init(rng, frames, masks, obj_valid))

    def update_batch_stats(
        self,
        variables: Variables,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
    ) -> Variables:
        """With ``train_bn``: one training-mode pass that returns ``variables`` with the
        backbones' running statistics moved towards this batch's (r <- 0.9 r + 0.1 stat).
        With frozen batch norm it returns ``variables`` unchanged."""
        if not self.spec.train_bn:
            return variables
        _, updates = self.net.apply(
            variables, frames, masks, obj_valid, True, mutable=["batch_stats"]
        )
        return {**variables, "batch_stats": updates["batch_stats"]}

    def backbone_paths(self) -> dict[str, tuple[tuple[str, ...], str, int]]:
        """``{name: (path into params / batch_stats, arch, in_channels)}`` of the ImageNet
        backbones (both end at stride 16: convert with ``stop_at="s16"``)."""
        s = self.spec
        return {
            "key_encoder": (("key_encoder",), s.key_backbone, 3),
            "value_encoder": (("value_encoder",), s.value_backbone, s.value_in_channels),
        }

    def decoder_paths(self) -> list[tuple[str, ...]]:
        """Param paths of the decoder (TrickVOS Trick 2 initialises only these)."""
        return [("decoder",)]

    # -- features ---------------------------------------------------------------------------
    def encode_key(
        self, variables: Variables, frames: Float[Array, "B T H W 3"], *, train: bool = False
    ) -> Feats:
        """Per-frame features: the key ``[B,T,h,w,Ck]`` and the decoder's skips (module doc)."""
        checks.check_frames(f"{type(self).__name__}.encode_key", frames)
        return self.net.apply(variables, frames, train, method=self.net_cls.encode_key)

    def encode_value(
        self,
        variables: Variables,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        *,
        train: bool = False,
    ) -> Float[Array, "B O T h w Cv"]:
        """Per-object memory values ``[B, O, T, h, w, Cv]`` of (frame, mask) pairs.

        ``feats`` are the frames' :meth:`encode_key` features (their ``s16`` is
        fused into the values). The value encoder of object ``i`` sees its mask
        and ``sum_{j != i, valid} mask_j`` (plus the frame with
        ``value_input = "frame_mask"``); invalid slots give zeros and do not
        enter the other objects' sums. Differentiable w.r.t. ``masks``.
        """
        fn = f"{type(self).__name__}.encode_value"
        shape = checks.check_frames(fn, frames)
        o = checks.check_obj_valid(fn, obj_valid, shape[0])
        checks.check_masks(fn, masks, shape, o)
        checks.check_feats(fn, feats, ("key", "s16"), frames_shape=shape)
        return self.net.apply(
            variables,
            frames,
            masks,
            obj_valid,
            feats["s16"],
            train,
            method=self.net_cls.encode_value,
        )

    # -- memory -----------------------------------------------------------------------------
    def init_memory(
        self, variables: Variables, batch: int, num_objects: int, feat_shape: tuple[int, int]
    ) -> mem_ops.MemoryBank:
        """An empty bank: :attr:`memory_frames` slots (the policy's capacity) of ``h*w``
        positions, keys ``Ck``, values ``num_objects * Cv`` (objects folded into channels,
        object-major)."""
        del variables
        h, w = feat_shape
        dtype = jnp.float32 if self.spec.dtype == "float32" else jnp.bfloat16
        return mem_ops.bank_init(
            batch,
            self.memory_slots,
            h * w,
            self.spec.key_dim,
            num_objects * self.spec.value_dim,
            dtype,
            num_objects=num_objects,
        )

    def memorize(
        self,
        variables: Variables,
        memory: mem_ops.MemoryBank,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
        feats: Feats,
        write: Bool[Array, " B"],
        refit: Bool[Array, " B"] | None = None,
        *,
        train: bool = False,
    ) -> mem_ops.MemoryBank:
        """Encode the values of the T given frames and insert them in order (the policy's keep rule).

        Rows with ``write = False`` are returned unchanged. ``refit`` is unused
        (no learner). Differentiable w.r.t. ``masks`` and params.
        """
        del refit
        fn = f"{type(self).__name__}.memorize"
        shape = checks.check_frames(fn, frames)
        o = checks.check_obj_valid(fn, obj_valid, shape[0])
        checks.check_masks(fn, masks, shape, o)
        checks.check_feats(fn, feats, self.feat_keys, frames_shape=shape)
        self._check_bank(fn, memory, obj_valid, feats)
        write = jnp.asarray(write)
        if write.shape != (frames.shape[0],) or write.dtype != jnp.bool_:
            raise VosjaxError(
                f"{fn}: argument 'write' must be bool[B={frames.shape[0]}], got "
                f"{write.dtype}{list(write.shape)}."
            )
        values = self.net.apply(  # the inputs are checked above: the network directly
            variables, frames, masks, obj_valid, feats["s16"], train, method=self.net_cls.encode_value
        )
        b, o, t, h, w, cv = values.shape
        for i in range(t):
            k = feats["key"][:, i].reshape(b, h * w, -1)
            v = jnp.moveaxis(values[:, :, i], 1, 3).reshape(b, h * w, o * cv)
            memory = mem_ops.bank_insert(
                memory, k, v, keep_first=self.policy.keep_first, write=write, objects=obj_valid
            )
        return memory

    def _check_bank(self, fn: str, memory: Any, obj_valid: Any, feats: Any) -> None:
        """``memory`` is a bank of init_memory for these checked ``feats`` and ``obj_valid``."""
        if not isinstance(memory, mem_ops.MemoryBank):
            raise VosjaxError(
                f"{fn}: argument 'memory' must be the MemoryBank from init_memory, got "
                f"{type(memory).__name__}."
            )
        b, _, h, w, ck = feats["key"].shape
        want = (b, h * w, ck, obj_valid.shape[1] * self.spec.value_dim)
        have = (
            memory.keys.shape[0],
            memory.keys.shape[2],
            memory.keys.shape[3],
            memory.values.shape[3],
        )
        if have != want:
            raise VosjaxError(
                f"{fn}: the memory was made for (B, h*w, Ck, O*Cv) = {have} but the inputs give "
                f"{want}; call init_memory(variables, B, O, (h, w)) with this video's sizes."
            )

    # -- segmentation -----------------------------------------------------------------------
    def read_memory(
        self,
        memory: mem_ops.MemoryBank,
        feats: Feats,
        num_objects: int,
        options: SegmentOptions = DEFAULT_OPTIONS,
    ) -> Float[Array, "B O T h w Cv"]:
        """Read-out values of the T query frames in ``feats``, per object.

        All T frames read the bank together (:func:`vosjax.ops.memory.bank_read`,
        ``top_k = options.top_k``); with ``options.segment_len = F`` the clip
        uses progressive memory matching (PCVOS eq. 4,
        :func:`vosjax.ops.memory.progressive_readout`): after each segment of F
        frames, the last frame's query key and read-out value join a temporary
        memory for the following segments.
        """
        b, t, h, w, ck = feats["key"].shape
        q = feats["key"].reshape(b, t, h * w, ck)
        keep = self.policy.keep_first
        # each object's own memory: its first frame + the capacity's other frames
        recent = obj_ops.object_recent(self.memory_frames, keep, self.policy.late_slots)
        if memory.obj is not None and options.segment_len is not None:
            r = obj_ops.progressive_object_readout(
                memory, q, options.segment_len, options.top_k, recent=recent, keep_first=keep
            )
        elif memory.obj is not None:
            r = obj_ops.bank_read_objects(
                memory, q.reshape(b, t * h * w, ck), options.top_k, recent=recent, keep_first=keep
            )
        elif options.segment_len is not None:
            keys, values, valid = mem_ops.bank_flatten(memory)
            r = mem_ops.progressive_readout(
                keys, values, q, options.segment_len, options.top_k, valid
            )
        else:
            r = mem_ops.bank_read(memory, q.reshape(b, t * h * w, ck), options.top_k)
        r = r.reshape(b, t, h, w, num_objects, self.spec.value_dim)
        return jnp.moveaxis(r, 4, 1)

    def segment(
        self,
        variables: Variables,
        memory: mem_ops.MemoryBank,
        feats: Feats,
        obj_valid: Bool[Array, "B O"],
        options: SegmentOptions = DEFAULT_OPTIONS,
    ) -> Float[Array, "B O T H W"]:
        """Per-object logits ``f32[B, O, T, H, W]`` of the query frames in ``feats``.

        ``readout -> refine_readout (PCVOS only) -> decoder``; invalid slots get
        ``INVALID_LOGIT``. Merge objects with ``soft_aggregate(sigmoid(logits))``.
        ``options.train`` changes nothing here: nothing after the encoders has
        dropout or batch norm.
        """
        fn = f"{type(self).__name__}.segment"
        b = checks.check_feats(fn, feats, self.feat_keys)[0]
        checks.check_obj_valid(fn, obj_valid, b)
        self._check_bank(fn, memory, obj_valid, feats)
        r = self.read_memory(memory, feats, obj_valid.shape[1], options)
        logits = self.net.apply(variables, r, feats, method=self.net_cls.segment_readout)
        return jnp.where(obj_valid[:, :, None, None, None], logits, INVALID_LOGIT)
