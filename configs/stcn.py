"""STCN-style space-time memory network (the common baseline of vosjax).

    python -m vosjax.train --config configs/stcn.py --workdir runs/stcn          # paper sizes
    python -m vosjax.train --config configs/stcn.py:tiny --workdir runs/tiny     # CPU

Recipe (TrickVOS sec. 4, which follows STCN's training regime): static-image
pretraining on deformed image/mask pairs, then main training on DAVIS 2017
train (x5) + YouTube-VOS train; 3 frames per sample with the STCN gap
curriculum; Adam, lr 1e-5, weight decay 1e-7 (PyTorch-style), batch 16;
300K iterations per stage; bootstrapped CE keeping the hardest 15 % of the
pixels after warming up from 20K to 70K iterations; 384 x 384 crops.
Inference: top-k 20, a memory frame every 5 frames.

Variants: ``full`` (default) and ``tiny`` (ResNet-18 key encoder, narrow
widths, synthetic 64 x 64 videos; a few minutes on a CPU).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.stcn import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "tiny"), __file__)
    tiny = variant == "tiny"
    c = P.base(seed=0)
    c.model = default_config("stcn", tiny=tiny)
    c.objective = ml_collections.ConfigDict(
        {"name": "stcn", "top_p": 0.15, "start_warm": 20_000, "end_warm": 70_000}
    )
    opt = P.optim(name="adam", lr=1e-5, weight_decay=1e-7)
    c.inference = ml_collections.ConfigDict({"top_k": 20, "memory_policy": "every_k", "mem_every": 5})
    if not tiny:
        P.add_stage(c, "static", steps=300_000, optim=opt,
                    data=P.data(P.static_source(), sampler="static", batch_size=16, crop_size=(384, 384),
                                max_objects=3, num_workers=8))
        P.add_stage(c, "video", steps=300_000, optim=opt,
                    data=P.data(P.davis_youtube_source(), sampler="stcn", batch_size=16,
                                crop_size=(384, 384), max_objects=3, num_workers=8))
        c.eval.source = P.davis_source("val")
        c.eval.every_steps = 25_000
        c.checkpoint.every_steps = 5_000
        return c
    c.objective.start_warm, c.objective.end_warm = 10, 30
    tiny_opt = P.optim(name="adam", lr=2e-4, weight_decay=1e-7, clip_norm=1.0)
    P.add_stage(c, "static", steps=20, optim=tiny_opt,
                data=P.data(P.synthetic_source("demo"), sampler="static", batch_size=8, crop_size=(64, 64),
                            max_objects=2))
    P.add_stage(c, "video", steps=40, optim=tiny_opt,
                data=P.data(P.synthetic_source("demo"), sampler="stcn", batch_size=8, crop_size=(64, 64),
                            max_objects=2, gap_schedule=((1.0, 3),)))
    P.tiny_trainer(c)
    return c
