"""The method registry: ONE record per method, registered in one place.

A :class:`Method` says everything the rest of vosjax needs to know about a
method, as plain values and ``"module:attribute"`` references that are
imported only when used (so this module imports nothing of vosjax but its
error type, and every layer may read it without an import cycle):

==================  ===========================================================
field               read by
==================  ===========================================================
``model``           :func:`vosjax.models.get_model` (the network class)
``default_config``  the model's full-size config (``tools/bench/models.py``,
                    the configs)
``objective``       :func:`vosjax.objectives.make_objective` (loss function and
``options``         its options dataclass)
``sampler``         :mod:`vosjax.data.samplers` (which frames make a sample)
``memory_policy``   :mod:`vosjax.memory_policy` (when to write / refit, capacity,
                    what is kept) through the engine's ``memory_policy="auto"``
``bundle_key``      the trainer's bundle export: a method whose variables are an
                    add-on of other bundles (the box tracker) stores them under
                    this key
``paper_params``    the parameter count its paper states (the models benchmark)
==================  ===========================================================

Adding a method is one new module plus one :func:`register` call (see
``docs/DEVELOPING.md``, "Adding a method"); the built-in methods are the
entries at the end of this file. :func:`get_method` looks one up by name and
names the closest registered ones on a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any

from vosjax.errors import VosjaxError

__all__ = [
    "Method",
    "Sampler",
    "get_method",
    "load",
    "method_names",
    "register",
    "unregister",
]

Schedule = tuple[tuple[float, int], ...]
"""Piecewise-constant schedule ``((end_fraction, value), ...)`` over training progress."""

SAMPLER_KINDS = ("chain", "clips", "pool", "window", "static")


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How a method draws the frames of one training sample (:mod:`vosjax.data.samplers`).

    Attributes:
      kind: ``chain`` (increasing frames, consecutive gaps <= the scheduled max
        gap, reversed with ``reverse_prob``), ``clips`` (a reference then two
        clips of ``clip_length`` frames: the gap into a clip follows the
        schedule, gaps inside a clip <= ``intra_clip_gap``), ``pool`` (a
        reference and validation frames drawn from the whole video or a
        ``max_gap`` window, the reference any of them), ``window`` (sorted
        frames from a window of ``window`` consecutive frames) or ``static``
        (one annotated frame repeated, deformed by the pipeline).
      num_frames: frames per sample (``clips``: 1 + 2 * clip_length, derived).
      gap_schedule: the max-gap curriculum (``chain``, ``clips``).
      reverse_prob: probability of reversing the sampled order.
    """

    kind: str
    num_frames: int | None = None
    gap_schedule: Schedule | None = None
    reverse_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise VosjaxError(
                f"Sampler: kind={self.kind!r} is not a sampler kind; choose one of "
                f"{', '.join(SAMPLER_KINDS)}."
            )
        if self.kind in ("chain", "clips") and self.gap_schedule is None:
            raise VosjaxError(f"Sampler: kind={self.kind!r} needs a gap_schedule.")


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of vosjax.

    References are ``"package.module:attribute"`` strings, imported when first
    used (what the built-in methods use, so that reading the registry imports
    no network code); a method registered from a script may give the class or
    function itself instead.

    Attributes:
      name: the registry name (``config.model.name``, ``config.objective.name``,
        ``config.data.sampler``).
      model: the model class (a :class:`vosjax.models.base.VOSModel`, or for an
        add-on such as the box tracker any class with ``name``, ``config``,
        ``init``).
      default_config: a function returning the model's full-size config section.
      default_config_arg: the argument that function takes, if any (the STCN
        family shares one config function, keyed by method name).
      objective: the training objective ``(model, variables, batch, rng, step,
        *, options) -> (loss, metrics)``.
      options: the frozen dataclass of the objective's options.
      sampler: how a training sample's frames are drawn.
      memory_policy: the name of the memory policy the engine uses by default
        (:data:`vosjax.memory_policy.POLICIES`); None for add-ons that do not
        segment.
      bundle_key: where the trainer stores this method's variables in its
        bundle (None: at the top level, as a model bundle).
      paper_params: ``(count, source)`` the paper states, ``(None, why)`` if none.
    """

    name: str
    model: Any
    objective: Any
    options: Any
    sampler: Sampler
    memory_policy: str | None = "every_k"
    default_config: Any = None
    default_config_arg: str | None = None
    bundle_key: str | None = None
    paper_params: tuple[float | None, str] = (None, "not stated")

    @property
    def segments(self) -> bool:
        """True for methods the inference engine runs (everything but add-ons)."""
        return self.memory_policy is not None

    def model_class(self) -> type:
        return load(self.model)

    def make_default_config(self) -> Any:
        if self.default_config is None:
            raise VosjaxError(f"method {self.name!r} registers no default_config.")
        make = load(self.default_config)
        return make() if self.default_config_arg is None else make(self.default_config_arg)


_REGISTRY: dict[str, Method] = {}


def load(ref: Any) -> Any:
    """The attribute ``ref = "package.module:attribute"`` (imported now); a class or
    function given in place of a reference is returned as it is."""
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise VosjaxError(f"methods: reference {ref!r} must read 'package.module:attribute'.")
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError as e:
        raise VosjaxError(f"methods: module {module!r} has no attribute {attr!r}.") from e


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to overwrite an entry)."""
    if not isinstance(method, Method):
        raise VosjaxError(
            f"register: expected a vosjax.methods.Method, got {type(method).__name__}."
        )
    if method.name in _REGISTRY and not replace:
        raise VosjaxError(
            f"register: a method named {method.name!r} is already registered; pick another "
            "name or pass replace=True."
        )
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests that register a temporary one)."""
    _REGISTRY.pop(name, None)


def method_names(*, segments: bool | None = None) -> tuple[str, ...]:
    """Registered names in registration order (``segments=True``: only engine methods)."""
    return tuple(n for n, m in _REGISTRY.items() if segments is None or m.segments == segments)


def get_method(name: Any, what: str = "method") -> Method:
    """The record of ``name``; an unknown name raises naming the closest registered ones."""
    method = _REGISTRY.get(name) if isinstance(name, str) else None
    if method is None:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        did = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise VosjaxError(
            f"config: {what}={name!r} is not a vosjax method.{did} Choose one of: "
            f"{', '.join(_REGISTRY)}."
        )
    return method


# -- the built-in methods ---------------------------------------------------------------------
# Gap curricula (fraction of training at which each max gap ends).
# STCN train.py:123-155, 177-183: max skip 5 at the start, then 10 / 15 / 20 / 25 from
# 10 / 20 / 30 / 40 % of training, back to 5 from 90 %.
_STCN_GAPS: Schedule = ((0.1, 5), (0.2, 10), (0.3, 15), (0.4, 20), (0.9, 25), (1.0, 5))
_CYCLIC_GAPS: Schedule = tuple(((k + 1) / 12, 5 * (k + 1)) for k in range(12))
_PCVOS_GAPS: Schedule = ((0.1, 5), (0.25, 10), (0.6, 15), (0.8, 10), (1.0, 5))

_STCN_MODEL = "vosjax.models.stcn:STCN"
_STCN_CONFIG = "vosjax.models.stcn:default_config"
_MEMORY_OBJ = "vosjax.objectives.memory"

register(
    Method(
        name="stcn",
        model=_STCN_MODEL,
        default_config=_STCN_CONFIG,
        default_config_arg="stcn",
        objective=f"{_MEMORY_OBJ}:stcn_objective",
        options=f"{_MEMORY_OBJ}:STCNOptions",
        sampler=Sampler("chain", 3, _STCN_GAPS, 0.5),
        memory_policy="every_k",
        paper_params=(None, "not stated in the papers here"),
    )
)
register(
    Method(
        name="trickvos",
        model=_STCN_MODEL,
        default_config=_STCN_CONFIG,
        default_config_arg="trickvos",
        objective=f"{_MEMORY_OBJ}:trickvos_objective",
        options=f"{_MEMORY_OBJ}:TrickVOSOptions",
        sampler=Sampler("chain", 5, _STCN_GAPS, 0.5),
        memory_policy="first_last",
        paper_params=(1.9e6, "TrickVOS sec. 4.3: 'our 1.9M'"),
    )
)
register(
    Method(
        name="cyclic",
        model=_STCN_MODEL,
        default_config=_STCN_CONFIG,
        default_config_arg="cyclic",
        objective=f"{_MEMORY_OBJ}:cyclic_objective",
        options=f"{_MEMORY_OBJ}:CyclicOptions",
        sampler=Sampler("chain", 3, _CYCLIC_GAPS, 0.0),
        memory_policy="every_k",
    )
)
register(
    Method(
        name="pcvos",
        model="vosjax.models.pcvos:PCVOS",
        default_config="vosjax.models.pcvos:default_config",
        objective=f"{_MEMORY_OBJ}:pcvos_objective",
        options=f"{_MEMORY_OBJ}:PCVOSOptions",
        sampler=Sampler("clips", None, _PCVOS_GAPS, 0.0),
        memory_policy="every_k",
    )
)
register(
    Method(
        name="joint",
        model="vosjax.models.joint:JOINT",
        default_config="vosjax.models.joint:default_config",
        objective="vosjax.objectives.joint:joint_objective",
        options="vosjax.objectives.joint:JOINTOptions",
        sampler=Sampler("window", 4),
        memory_policy="joint",
    )
)
register(
    Method(
        name="frtm",
        model="vosjax.models.frtm:FRTM",
        default_config="vosjax.models.frtm:default_config",
        objective="vosjax.objectives.frtm:frtm_objective",
        options="vosjax.objectives.frtm:FRTMOptions",
        sampler=Sampler("pool", 3),
        memory_policy="frtm",
    )
)
register(
    Method(
        name="tracker",
        model="vosjax.objectives.tracker:TrackerModel",
        default_config="vosjax.models.tracker:default_config",
        objective="vosjax.objectives.tracker:tracker_objective",
        options="vosjax.objectives.tracker:TrackerOptions",
        sampler=Sampler("chain", 3, _STCN_GAPS, 0.5),
        memory_policy=None,
        bundle_key="tracker",
    )
)
