"""JOINT: joint inductive and transductive learning, trained end to end.

    python -m vosjax.train --config configs/joint.py --workdir runs/joint

Training (JOINT sec. 3.6, 4.1): mini-sequences of N = 4 frames from 100-frame
segments of YouTube-VOS + DAVIS train, the memory updated every frame and the
induction learner fitted inside the step; loss = Lovasz + 0.01 cosine
decoupling (eq. 10); 180K iterations, batch 20, Adam with initial lr 0.01
divided by 5 after 40K, 80K, 115K and 165K iterations; the backbone is fixed
for the first 90K iterations and trained afterwards. Inference: a template
every 5 frames, at most 20, the first always kept.
Init: ImageNet ResNet-50 (``init.backbones``; JOINT, built on LWL, may also
start from LWL's Mask-RCNN ResNet-50: convert that file into the same folder).

Variants: ``full`` (default), ``tiny`` (CPU).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.joint import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "tiny"), __file__)
    tiny = variant == "tiny"
    c = P.base(seed=0)
    c.model = default_config("full", tiny=tiny)
    c.objective = ml_collections.ConfigDict({"name": "joint", "cosine_weight": 0.01})
    c.inference = ml_collections.ConfigDict(
        {"memory_policy": "joint", "mem_every": 5, "memory_frames": 20, "top_k": None}
    )
    if not tiny:
        c.init.backbones = P.imagenet(backbone=(c.model.backbone, 3, "s32"))
        P.add_stage(c, "video", steps=180_000,
                    optim=P.optim(name="adam", lr=1e-2, schedule="piecewise",
                                  decay_steps=(40_000, 80_000, 115_000, 165_000), decay_factor=0.2,
                                  freeze=("^backbone/",), freeze_until=90_000),
                    data=P.data(P.davis_youtube_source(davis_repeats=1), sampler="joint", window=100,
                                batch_size=20, crop_size=(480, 832), max_objects=1, num_workers=8))
        c.eval.source = P.davis_source("val")
        c.eval.every_steps = 20_000
        c.checkpoint.every_steps = 5_000
        return c
    c.inference.memory_frames = 3
    P.add_stage(c, "video", steps=30,
                optim=P.optim(name="adam", lr=1e-2, clip_norm=1.0, freeze=("^backbone/",),
                              freeze_until=10),  # the paper's initial lr: Lovasz moves slowly at 1e-3
                data=P.data(P.synthetic_source("demo"), sampler="joint", window=8, batch_size=8,
                            crop_size=(64, 64), max_objects=2))
    P.tiny_trainer(c)
    return c
