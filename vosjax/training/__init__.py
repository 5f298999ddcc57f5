"""The pieces of ``python -m vosjax.train`` that are not the loop itself.

- :mod:`~vosjax.training.metric_writer`: JSONL + TensorBoard event files;
- :mod:`~vosjax.training.optim`: optax optimizers, schedules, frozen groups;
- :mod:`~vosjax.training.schema`: the trainer's config sections and their checks;
- :mod:`~vosjax.training.state`: the train state, its initialisation (ImageNet
  backbones, partial init from another run) and the jitted train step;
- :mod:`~vosjax.training.evaluation`: periodic evaluation on a validation split.
"""
