"""The sections of a run config that the trainer reads, their defaults, and their checks.

A run config (``configs/*.py``) has these top-level sections:

==============  ==================================================================
section         fields
==============  ==================================================================
seed            int: model init, data order and the step RNG derive from it
model           the model's own config (``vosjax.models.get_model``); checked there
objective       ``name`` + that objective's options (:mod:`vosjax.objectives`)
stages          one sub-section per training stage (e.g. ``static`` and
                ``video``); a stage with ``steps = 0`` is skipped. Fields: ``steps``; ``data`` = ``source`` (a
                :func:`vosjax.data.make_source` mapping) + any field of
                :class:`vosjax.data.TrainDataConfig` (``batch_size`` is the GLOBAL
                batch); ``optim`` (:mod:`vosjax.training.optim`); optionally
                ``objective`` (overrides the run's objective for this stage)
stage_order     the stage names in run order (ConfigDict sorts its keys, so
                the order is spelled out); may be omitted with one stage
init            ``backbones``: {backbone name of ``model.backbone_paths()``: folder
                of a converted ImageNet backbone} (the full configs name them;
                a missing folder stops the run at once with the commands that
                make it, :mod:`vosjax.training.weights`); ``from_scratch``:
                True trains from random encoders, ignoring ``backbones``; ``checkpoint``: a bundle
                folder (or a run workdir holding ``bundle/``) to copy variables
                from; ``include``: regexes over variable paths
                ``"collection/module/.../leaf"`` choosing what to copy (empty:
                everything), or ``"@decoder"`` for the model's decoder (TrickVOS
                decoder pretraining, Trick 2)
eval            ``every_steps`` (0: only at the end), ``at_end``, ``source`` (a
                make_source mapping; empty: no evaluation), ``max_videos``,
                ``baseline`` (also score copy-the-first-mask)
inference       :class:`vosjax.inference.EngineConfig` fields (1:1)
checkpoint      ``every_steps``, ``keep`` (latest N), ``keep_best`` (best N by
                ``best_metric``)
log             ``every_steps``, ``progress`` (tqdm bar)
parallel        ``fsdp`` (shard large parameters over the data axis),
                ``fsdp_min_size`` (elements), ``num_devices`` (use the first N
                devices of each process; 0: all)
export          ``bundle``: write ``WORKDIR/bundle`` at the end; ``tracker``: a
                bundle of a configs/tracker.py run whose MLP is added to this
                bundle as ``variables["tracker"]`` (for ``box_filter = "pt"``)
==============  ==================================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from vosjax.config_utils import check_fields
from vosjax.data.pipeline import TrainDataConfig
from vosjax.errors import VosjaxError
from vosjax.training.optim import OPTIM_FIELDS

__all__ = [
    "SECTION_DEFAULTS",
    "TOP_FIELDS",
    "data_pipeline_config",
    "stage_list",
    "validate_config",
    "with_defaults",
]

SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "init": {"backbones": {}, "from_scratch": False, "checkpoint": "", "include": ()},
    "eval": {"every_steps": 0, "at_end": True, "source": {}, "max_videos": 0, "baseline": True},
    "checkpoint": {"every_steps": 1000, "keep": 3, "keep_best": 1, "best_metric": "J&F-Mean"},
    "log": {"every_steps": 50, "progress": True},
    "parallel": {"fsdp": False, "fsdp_min_size": 2**16, "num_devices": 0},
    "export": {"bundle": True, "tracker": ""},
}
TOP_FIELDS = ("seed", "model", "objective", "stages", "stage_order", "inference") + tuple(
    SECTION_DEFAULTS
)
STAGE_FIELDS = ("steps", "data", "optim", "objective")
DATA_FIELDS = ("source",) + tuple(f.name for f in dataclasses.fields(TrainDataConfig))


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with every optional section / field filled in (so that each can be
    overridden on the command line), including every data-pipeline field of each stage."""
    d = config.to_dict()
    d.setdefault("seed", 0)
    d.setdefault("inference", {})
    for section, defaults in SECTION_DEFAULTS.items():
        given = d.get(section) or {}
        check_fields(given, defaults, section)
        d[section] = {**defaults, **given}
    for name, stage in (d.get("stages") or {}).items():
        if not isinstance(stage, dict):
            continue
        if "optim" in stage:
            check_fields(stage["optim"], OPTIM_FIELDS, f"stages.{name}.optim")
            stage["optim"] = {**OPTIM_FIELDS, **stage["optim"]}
        if isinstance(stage.get("data"), dict):
            check_fields(stage["data"], DATA_FIELDS, f"stages.{name}.data")
            data = {**_data_defaults(), **stage["data"]}
            for key in ("augment", "deform"):
                if isinstance(stage["data"].get(key), dict):
                    data[key] = {**_data_defaults()[key], **stage["data"][key]}
            stage["data"] = data
    return ml_collections.ConfigDict(d, type_safe=False)


def _data_defaults() -> dict[str, Any]:
    """Every :class:`TrainDataConfig` field at its default (``augment`` / ``deform`` as mappings)."""
    cfg = TrainDataConfig()
    out = {}
    for f in dataclasses.fields(TrainDataConfig):
        if f.name == "total_steps":  # the stage's steps unless given (data_pipeline_config)
            continue
        v = getattr(cfg, f.name)
        out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    return out


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check every trainer-owned field name (typos name the closest valid fields) and basic values."""
    check_fields(config, TOP_FIELDS, "config")
    for key in ("model", "objective", "stages"):
        if key not in config or not config[key]:
            raise VosjaxError(f"config: section '{key}' is missing; every run config needs model, objective and stages.")
    if "name" not in config.model:
        raise VosjaxError("config: 'model.name' is missing (e.g. 'stcn').")
    if "name" not in config.objective:
        raise VosjaxError("config: 'objective.name' is missing (e.g. 'stcn').")
    for section, defaults in SECTION_DEFAULTS.items():
        if section in config:
            check_fields(config[section], defaults, section)
    stages = stage_list(config, include_empty=True)
    if not any(s.steps > 0 for _, s in stages):
        raise VosjaxError("config: every stage has steps = 0; nothing to train.")
    for name, stage in stages:
        where = f"stages.{name}"
        check_fields(stage, STAGE_FIELDS, where)
        for key in ("steps", "data", "optim"):
            if key not in stage:
                raise VosjaxError(f"config: '{where}.{key}' is missing.")
        if not isinstance(stage.steps, int) or stage.steps < 0:
            raise VosjaxError(f"config: '{where}.steps' must be an int >= 0, got {stage.steps!r}.")
        check_fields(stage.data, DATA_FIELDS, f"{where}.data")
        if "source" not in stage.data or not stage.data.source:
            raise VosjaxError(f"config: '{where}.data.source' is missing (a make_source mapping with a 'kind').")
        check_fields(stage.optim, OPTIM_FIELDS, f"{where}.optim")
    ck = config.get("checkpoint", {})
    if ck and (ck.get("every_steps", 1) < 0 or ck.get("keep", 1) < 1):
        raise VosjaxError("config: 'checkpoint.every_steps' must be >= 0 and 'checkpoint.keep' >= 1.")
    lg = config.get("log", {})
    if lg and lg.get("every_steps", 1) < 1:
        raise VosjaxError("config: 'log.every_steps' must be >= 1.")


def stage_list(config: ml_collections.ConfigDict, include_empty: bool = False) -> list[tuple[str, Any]]:
    """``[(name, stage section)]`` in run order (stages with ``steps = 0`` dropped unless asked)."""
    stages = config.stages
    if not isinstance(stages, ml_collections.ConfigDict):
        raise VosjaxError("config: 'stages' must be a section of named stages, e.g. stages.video.steps=...")
    names = list(stages.keys())
    order = tuple(config.get("stage_order") or ())
    if not order:
        if len(names) > 1:
            raise VosjaxError(
                f"config: {len(names)} stages ({', '.join(names)}) but no 'stage_order'; set "
                "config.stage_order to the stage names in run order."
            )
        order = tuple(names)
    for name in order:
        if name not in stages:
            raise VosjaxError(
                f"config: 'stage_order' names stage {name!r}, which 'stages' does not define "
                f"(stages: {', '.join(names)})."
            )
    missing = sorted(set(names) - set(order))
    if missing:
        raise VosjaxError(f"config: stage(s) {missing} are not in 'stage_order' {order}; add them or delete them.")
    out = [(name, stages[name]) for name in order]
    return out if include_empty else [(n, s) for n, s in out if s.steps > 0]


def data_pipeline_config(stage: Any, total_steps: int) -> TrainDataConfig:
    """The :class:`TrainDataConfig` of a stage (its data fields without ``source``)."""
    d = stage.data.to_dict()
    d.pop("source", None)
    d.setdefault("total_steps", max(int(total_steps), 1))
    return TrainDataConfig.from_config(d)
