"""Training objectives: one pure function per method, ``(model, variables, batch, rng, step) -> (loss, metrics)``.

Why a module of its own: the trainer (``vosjax/train.py``) runs any method the
same way (data -> sharded jitted step -> optax -> checkpoints); what differs
between the six methods and the box tracker is how a training sample is
propagated through the model and scored. Keeping those recipes here leaves ``train.py`` one
reason to change (the loop), and each recipe is a pure function built only on
the model interface (:mod:`vosjax.models.base`) and :mod:`vosjax.losses`, so
it can be tested and jitted on its own.

``make_objective(config.objective)`` returns an :class:`Objective`: its
``name`` picks the method whose recipe it is (the record in
:mod:`vosjax.methods` names the function and its options class), the other
fields are that recipe's options (a frozen dataclass, so typos fail early
with the closest valid names). The built-in recipes:

==========  ======================================  ==================================
name        module                                  what is optimised
==========  ======================================  ==================================
stcn        :mod:`~vosjax.objectives.memory`        bootstrapped CE, per-frame rollout
trickvos    :mod:`~vosjax.objectives.memory`        hybrid CE + SSIM + IoU
cyclic      :mod:`~vosjax.objectives.memory`        forward + backward-to-frame-1 loss
pcvos       :mod:`~vosjax.objectives.memory`        clip-by-clip, Dice + bootstrapped CE
joint       :mod:`~vosjax.objectives.joint`         Lovasz + 0.01 cosine decoupling
frtm        :mod:`~vosjax.objectives.frtm`          BCE on validation frames, target
                                                    model fitted on the reference
tracker     :mod:`~vosjax.objectives.tracker`       box regression on GT boxes, extra
                                                    weight where the box is too small
==========  ======================================  ==================================

``step`` is the step within the current training stage (schedules such as
the bootstrapping warm-up restart with each stage); ``rng`` is a PRNG key
for stochastic recipes. ``metrics`` is a dict of scalars for logging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from vosjax import methods
from vosjax.objectives.common import parse_options

__all__ = ["Objective", "make_objective", "objective_options_class"]


@dataclasses.dataclass(frozen=True)
class Objective:
    """A method's training objective with its options bound (hashable: static under jit)."""

    name: str
    options: Any
    fn: Callable[..., Any] = dataclasses.field(compare=False, repr=False)

    def __call__(self, model: Any, variables: Any, batch: Any, rng: Any, step: Any):
        """``(loss, metrics)`` of one batch; pure and jit-able."""
        return self.fn(model, variables, batch, rng, step, options=self.options)


def objective_options_class(name: str) -> type:
    """The options dataclass of method ``name``'s objective."""
    return methods.load(methods.get_method(name, "objective.name").options)


def make_objective(config: Any) -> Objective:
    """The :class:`Objective` named by ``config.name`` with the other fields as its options."""
    name = config.get("name") if hasattr(config, "get") else getattr(config, "name", None)
    method = methods.get_method(name, "objective.name")
    options = parse_options(methods.load(method.options), config, "objective")
    return Objective(method.name, options, methods.load(method.objective))
