"""The parametric box tracker of TrickVOS (Trick 3, PT), trained on ground-truth boxes.

    python -m vosjax.train --config configs/tracker.py --workdir runs/tracker
    # then: --config.inference.box_filter=pt --config.inference.tracker=runs/tracker/bundle

TrickVOS sec. 4.1: the PT variant is trained separately, on bounding boxes
extracted from ground-truth masks, with an extra loss weight on predicted
boxes smaller than the ground truth. Samples are tracks of 8 consecutive
annotated frames (gap 1, forward in time); the model is a 5-layer GELU MLP
(vosjax.models.tracker). The paper gives no optimizer settings: Adam lr 1e-3
with a cosine decay over 50K steps, batch 64, under-size weight 2 are used.
Frames are 480 x 854 crops, the resolution the filter sees at inference.

Variants: ``full`` (default), ``tiny`` (CPU).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.tracker import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "tiny"), __file__)
    tiny = variant == "tiny"
    c = P.base(seed=0)
    c.model = default_config()
    c.model.name = "tracker"
    c.objective = ml_collections.ConfigDict({"name": "tracker", "under_weight": 2.0})
    c.eval.at_end = False
    track = {"sampler": "stcn", "num_frames": 8, "gap_schedule": ((1.0, 1),), "reverse_prob": 0.0}
    if not tiny:
        P.add_stage(c, "video", steps=50_000,
                    optim=P.optim(name="adam", lr=1e-3, schedule="cosine", warmup_steps=1_000),
                    data=P.data(P.davis_youtube_source(davis_repeats=1), batch_size=64,
                                crop_size=(480, 854), max_objects=3, num_workers=8, **track))
        c.checkpoint.every_steps = 5_000
        return c
    P.add_stage(c, "video", steps=40, optim=P.optim(name="adam", lr=3e-3),
                data=P.data(P.synthetic_source("demo"), batch_size=8, crop_size=(64, 64),
                            max_objects=2, **{**track, "num_frames": 6}))
    P.tiny_trainer(c)
    c.eval.source = {}
    return c
