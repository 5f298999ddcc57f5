"""Building blocks for ``configs/*.py``: trainer sections, stages and data sources.

Config files stay short and read like the papers' training recipes::

    c = presets.base(seed=0)
    c.model = stcn.default_config("stcn")
    c.objective = ml_collections.ConfigDict(dict(name="stcn", top_p=0.15, ...))
    presets.add_stage(c, "static", steps=..., data=presets.data(presets.static_source(), ...),
                      optim=presets.optim(lr=1e-5, weight_decay=1e-7))

Paths of real datasets default to ``data/DAVIS``, ``data/YouTube`` and
``data/static`` below the working directory; override them on the command
line (``--config.stages.video.data.source.sources.0.root=/path``), or point
``VOSJAX_DATA`` at the folder holding them. The full configs start from
converted ImageNet encoders under ``$VOSJAX_DATA/weights`` (:func:`imagenet`;
training stops at once, with the commands that make them, where they are
missing; ``--config.init.from_scratch=True`` trains from random encoders).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from vosjax.training.optim import default_optim
from vosjax.training.schema import SECTION_DEFAULTS
from vosjax.training.weights import imagenet_backbones

__all__ = [
    "add_stage",
    "base",
    "data",
    "data_root",
    "davis_source",
    "davis_youtube_source",
    "imagenet",
    "joint_search_augment",
    "stcn_video_augment",
    "optim",
    "static_source",
    "synthetic_source",
    "tiny_trainer",
    "youtube_source",
]


def data_root(name: str) -> str:
    """``$VOSJAX_DATA/<name>`` (default ``data/<name>``)."""
    return os.path.join(os.environ.get("VOSJAX_DATA", "data"), name)


def imagenet(**backbones: tuple[str, int, str]) -> dict[str, str]:
    """``init.backbones`` of converted ImageNet encoders: ``name=(arch, in_channels, stop_at)``.

    E.g. ``imagenet(key_encoder=("resnet50", 3, "s16"))`` ->
    ``{"key_encoder": "$VOSJAX_DATA/weights/resnet50_imagenet_s16"}``
    (:func:`vosjax.training.weights.backbone_folder`).
    """
    return imagenet_backbones(backbones)


def stcn_video_augment() -> dict:
    """STCN's video-stage augmentation (dataset/vos_dataset.py:49-87) as :class:`AugmentConfig` fields.

    Per clip: mirror, a random resized crop of 0.36-1 of the frame area,
    ``ColorJitter(0.1, 0.03, 0.03, 0)``; per frame on top: ``RandomAffine(degrees=15,
    shear=10)`` (no clip-level rotation / shear). STCN also jitters colour by 0.01
    per frame and turns 5 % of clips gray; those two are not modelled here.
    """
    return {"crop_scale": (0.36, 1.0), "rotation_deg": 0.0, "shear_deg": 0.0, "flip_prob": 0.5,
            "brightness": 0.1, "contrast": 0.03, "saturation": 0.03, "hue_deg": 0.0,
            "frame_rotation_deg": 15.0, "frame_shear_deg": 10.0}


def joint_search_augment() -> dict:
    """JOINT's training augmentation (``ltr/train_settings/joint/joint_stage1.py``) as :class:`AugmentConfig` fields.

    Per frame, a search region of 5x the jittered target box (``search_area_factor=5``,
    ``inside_major``; the reference frame jittered by scale 0.25 / centre 3, the other
    frames by 0.5 / (5.5, 4.5)), then ``RandomAffine`` rotation 15 deg and zoom
    ``exp(U[-0.2, 0.2])`` per frame; mirror with probability 0.5, the reference frame by
    a draw of its own (``new_roll=True``); brightness x U[0.8, 1.2]
    (``ToTensorAndJitter(0.2)``). The authors also jitter brightness per frame, pad
    regions that leave the frame by replicating its border and turn 5 % of samples
    gray; here the brightness is per clip, the padding is black and there is no gray.
    """
    return {"search_area_factor": 5.0, "search_scale_jitter": (0.25, 0.5),
            "search_center_jitter": ((3.0, 3.0), (5.5, 4.5)), "search_crop": "inside_major",
            "rotation_deg": 0.0, "shear_deg": 0.0, "flip_prob": 0.5,
            "brightness": 0.2, "contrast": 0.0, "saturation": 0.0, "hue_deg": 0.0,
            "frame_rotation_deg": 15.0, "frame_shear_deg": 0.0, "frame_scale": 0.2,
            "reference_own_flip": True}


def base(seed: int = 0) -> ml_collections.ConfigDict:
    """A config with every trainer section at its defaults (model / objective / stages to add)."""
    c = ml_collections.ConfigDict()
    c.seed = seed
    for section, defaults in SECTION_DEFAULTS.items():
        c[section] = ml_collections.ConfigDict(dict(defaults))
    c.stages = ml_collections.ConfigDict()
    c.stage_order = ()
    c.inference = ml_collections.ConfigDict()
    return c


def add_stage(c: ml_collections.ConfigDict, name: str, *, steps: int, data: dict, optim: dict,
              objective: dict | None = None) -> None:
    """Append stage ``name`` (run after the stages added before it)."""
    stage = {"steps": int(steps), "data": dict(data), "optim": dict(optim)}
    if objective is not None:
        stage["objective"] = dict(objective)
    c.stages[name] = ml_collections.ConfigDict(stage)
    c.stage_order = tuple(c.stage_order) + (name,)


def data(source: dict, **fields: Any) -> dict:
    """A stage's data section: ``source`` plus :class:`vosjax.data.TrainDataConfig` fields."""
    return {"source": dict(source), **fields}


def optim(**fields: Any) -> dict:
    """An optim section with every field (:mod:`vosjax.training.optim`)."""
    return default_optim(**fields)


def synthetic_source(spec: str = "demo", split: str = "train") -> dict:
    return {"kind": "synthetic", "spec": spec, "split": split}


def static_source(folder: str | None = None) -> dict:
    return {"kind": "static", "folder": folder or data_root("static")}


def davis_source(split: str = "train", year: str = "2017", root: str | None = None) -> dict:
    return {"kind": "davis", "root": root or data_root("DAVIS"), "year": year, "split": split,
            "resolution": "480p"}


def youtube_source(split: str = "train", root: str | None = None) -> dict:
    return {"kind": "youtube", "root": root or data_root("YouTube"), "split": split}


def davis_youtube_source(davis_repeats: int = 5) -> dict:
    """DAVIS 2017 train x ``davis_repeats`` + YouTube-VOS train (STCN's main-training mix)."""
    return {"kind": "concat", "sources": [davis_source("train"), youtube_source("train")],
            "repeats": [int(davis_repeats), 1]}


def tiny_trainer(c: ml_collections.ConfigDict, *, eval_videos: int = 2) -> None:
    """CPU-sized trainer settings: frequent logs, few checkpoints, small evaluation on synthetic val."""
    c.log.every_steps = 5
    c.checkpoint.every_steps = 20
    c.checkpoint.keep = 2
    c.eval.every_steps = 0
    c.eval.source = synthetic_source("demo", "val")
    c.eval.max_videos = eval_videos
