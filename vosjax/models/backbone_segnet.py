"""The shell FRTM and JOINT share: a backbone plus the segmentation network S.

Both methods run a ResNet over each frame, keep its stride-16 features for
their target branch(es) and S's projections of the four backbone depths for
decoding (FRTM sec. 3.2, JOINT eq. 7). :class:`BackboneSegnetModel` holds the
plumbing that is the same for both: applying the Flax network with or
without batch statistics, moving the running statistics, encoding the query
frames, the parameter subtrees the trainer initialises from ImageNet or from
another run, and the config reader. The methods add their memory, learner
and ``segment``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
from jaxtyping import Array, Bool, Float

from vosjax.errors import VosjaxError
from vosjax.models import backbones, checks
from vosjax.models.base import Feats, Variables, VOSModel
from vosjax.models.frtm_common import size_marker

__all__ = ["BackboneSegnetModel", "config_reader"]


def config_reader(fn: str, config: Any, base: Mapping[str, Any]) -> Callable[[str], Any]:
    """``get(field)`` over ``config`` with ``base`` (the full default config) as fallback.

    Raises for fields ``base`` does not have and for an unknown backbone.
    """
    unknown = sorted(set(config.keys()) - set(base.keys()))
    if unknown:
        raise VosjaxError(f"{fn}: unknown model config fields {unknown}; valid: {sorted(base.keys())}.")

    def get(key: str) -> Any:
        return config.get(key, base[key])

    if get("backbone") not in backbones.BACKBONES:
        raise VosjaxError(
            f"{fn}: config 'backbone' is {get('backbone')!r}; choose one of {backbones.BACKBONES}."
        )
    return get


class BackboneSegnetModel(VOSModel):
    """Shared part of a backbone + S model. Subclasses set, in ``__init__``:

    - ``net``: the Flax module, with an ``encode(x, train)`` method returning a dict
      of ``[N, ...]`` query features, a ``backbone`` submodule and S under ``segnet``;
    - ``settings``: with ``backbone`` (the architecture name);
    - ``bn_trains``: whether a training-mode pass uses (and may move) batch statistics;
    - ``bn_method``: the ``net`` method run by :meth:`update_batch_stats`.
    """

    stride = 16
    net: nn.Module
    bn_trains: bool
    bn_method: Callable[..., Any]

    def _apply(self, variables: Variables, *args: Any, method: Callable[..., Any], train: bool = False):
        """``net.apply``; a training-mode pass with trainable batch norm normalises with the
        batch statistics (running statistics move only through :meth:`update_batch_stats`)."""
        if train and self.bn_trains:
            return self.net.apply(variables, *args, train, method=method, mutable=["batch_stats"])[0]
        return self.net.apply(variables, *args, train, method=method)

    def _check_clip(
        self, fn: str, frames: Any, masks: Any, obj_valid: Any
    ) -> tuple[int, int, int, int]:
        """Shapes of ``frames [B, T, H, W, 3]``, ``masks [B, O, T, H, W]``, ``obj_valid [B, O]``."""
        b, t, h, w = checks.check_frames(fn, frames)
        o = checks.check_masks(fn, masks, (b, t, h, w))
        checks.check_obj_valid(fn, obj_valid, b, o)
        return b, t, h, w

    def update_batch_stats(
        self,
        variables: Variables,
        frames: Float[Array, "B T H W 3"],
        masks: Float[Array, "B O T H W"],
        obj_valid: Bool[Array, "B O"],
    ) -> Variables:
        """With trainable batch norm: one training-mode pass over ``frames`` that returns
        ``variables`` with the backbone's running statistics moved towards this batch's
        (r <- 0.9 r + 0.1 stat). Otherwise ``variables`` unchanged."""
        if not self.bn_trains:
            return variables
        b, t, h, w = checks.check_frames(f"{self.name.upper()}.update_batch_stats", frames)
        _, upd = self.net.apply(
            variables, frames.reshape(b * t, h, w, 3), True, method=self.bn_method,
            mutable=["batch_stats"],
        )
        return {**variables, "batch_stats": upd["batch_stats"]}

    def backbone_paths(self) -> dict[str, tuple[tuple[str, ...], str, int]]:
        """``{"backbone": (("backbone",), arch, 3)}``: where ImageNet weights go."""
        return {"backbone": (("backbone",), self.settings.backbone, 3)}

    def decoder_paths(self) -> list[tuple[str, ...]]:
        """The decoder (segmentation network S) subtree, for TrickVOS decoder pretraining."""
        return [("segnet",)]

    def encode_key(
        self, variables: Variables, frames: Float[Array, "B T H W 3"], *, train: bool = False
    ) -> Feats:
        """``net.encode`` of every frame, reshaped to ``[B, T, ...]``, plus ``frame_hw``."""
        b, t, h, w = checks.check_frames(f"{self.name.upper()}.encode_key", frames)
        out = self._apply(variables, frames.reshape(b * t, h, w, 3), method=type(self.net).encode,
                          train=train)
        feats: dict[str, jax.Array] = {k: v.reshape((b, t) + v.shape[1:]) for k, v in out.items()}
        feats[checks.SIZE_KEY] = size_marker(b, t, h, w)
        return feats
