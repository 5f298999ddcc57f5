"""Pretrained encoder weights of a run: where the full configs expect them, and the check at start.

The full configs name converted ImageNet encoders in ``init.backbones``
(``{backbone name of model.backbone_paths(): folder}``), folders made by
``tools/convert_torch_weights.py`` from torchvision's ImageNet checkpoints
and laid out by :func:`backbone_folder` as
``$VOSJAX_DATA/weights/<arch>_imagenet[_in<C>]_<stop>`` (``_in<C>`` only when
the first conv takes other than 3 planes). :func:`check_backbones` runs before
any data is read or anything is compiled and raises a
:class:`~vosjax.errors.VosjaxError` naming every missing folder with the
commands that make it. ``init.from_scratch = True`` trains from random
encoders instead (the folders are then neither checked nor read).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

from vosjax.errors import VosjaxError

__all__ = ["TORCHVISION_IMAGENET", "backbone_folder", "check_backbones", "conversion_commands"]

# torchvision's ImageNet checkpoints (the legacy ``model_urls`` names; STCN's
# model/mod_resnet.py loads exactly the resnet18 / resnet50 files).
TORCHVISION_IMAGENET: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-333f7ec4.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}

_METADATA = "vosjax_backbone.json"  # what tools/convert_torch_weights.py writes (torch_import.METADATA_FILE)


def backbone_folder(arch: str, in_channels: int = 3, stop_at: str = "s16", root: str | None = None) -> str:
    """``<root>/weights/<arch>_imagenet[_in<C>]_<stop_at>``; root defaults to ``$VOSJAX_DATA`` or ``data``."""
    if arch not in TORCHVISION_IMAGENET:
        raise VosjaxError(f"backbone_folder: arch {arch!r} has no ImageNet checkpoint listed; choose one of "
                          f"{sorted(TORCHVISION_IMAGENET)}.")
    base = root if root is not None else os.environ.get("VOSJAX_DATA", "data")
    chans = "" if int(in_channels) == 3 else f"_in{int(in_channels)}"
    return os.path.join(base, "weights", f"{arch}_imagenet{chans}_{stop_at}")


def conversion_commands(folder: str, arch: str, in_channels: int, stop_at: str) -> str:
    """The two commands that make ``folder`` (download on a machine with internet, then convert)."""
    url = TORCHVISION_IMAGENET.get(arch)
    src = url.rsplit("/", 1)[-1] if url else f"<{arch} ImageNet .pth>"
    flags = f" --stop-at {stop_at}"
    if int(in_channels) != 3:
        flags += f" --in-channels {int(in_channels)}"
    if int(in_channels) < 3:  # fewer planes than RGB: the stem cannot be copied, it starts random
        flags += " --allow-missing"
    get = f"curl -L -o {src} {url}" if url else f"download torchvision's ImageNet {arch} weights as {src}"
    return (f"(on a machine with internet) {get}\n"
            f"    python tools/convert_torch_weights.py --arch {arch} --input {src} --output {folder}{flags}")


def _stop_at(folder: str) -> str:
    m = re.search(r"_(s\d+)/*$", str(folder))
    return m.group(1) if m else "s16"


def check_backbones(config: Any, model: Any) -> dict[str, str]:
    """The ``init.backbones`` to load: ``{}`` with ``init.from_scratch``, else all of them, each present.

    Raises :class:`VosjaxError` listing every folder without a converted
    backbone (no ``vosjax_backbone.json``) and how to make it.
    """
    init = config.get("init", {}) or {}
    backbones = dict(init.get("backbones", {}) or {})
    if bool(init.get("from_scratch", False)) or not backbones:
        return {}
    table = model.backbone_paths() if hasattr(model, "backbone_paths") else {}
    missing = []
    for name, folder in backbones.items():
        if not isinstance(folder, (str, os.PathLike)) or not str(folder):
            raise VosjaxError(f"config: init.backbones.{name} must be a folder, got {folder!r}.")
        if (pathlib.Path(folder) / _METADATA).is_file():
            continue
        _, arch, in_ch = table.get(name, (None, "<arch>", 3))
        missing.append(f"  init.backbones.{name} = {folder}: no converted {arch} there. Make it:\n    "
                       + conversion_commands(str(folder), arch, in_ch, _stop_at(folder)))
    if missing:
        raise VosjaxError(
            "vosjax.train: the config starts from pretrained ImageNet encoders, but "
            f"{len(missing)} converted backbone folder(s) are missing (set VOSJAX_DATA to the folder "
            "holding weights/, or point init.backbones.<name> elsewhere):\n" + "\n".join(missing)
            + "\nTo train from random encoders instead, pass --config.init.from_scratch=True."
        )
    return backbones


def imagenet_backbones(specs: Mapping[str, tuple[str, int, str]], root: str | None = None) -> dict[str, str]:
    """``{name: backbone_folder(arch, in_channels, stop_at)}`` for ``{name: (arch, in_channels, stop_at)}``."""
    return {name: backbone_folder(a, c, s, root) for name, (a, c, s) in specs.items()}
