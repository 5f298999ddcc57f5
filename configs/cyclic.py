"""Cyclic VOS: the memory network trained with the cycle-consistency loss.

    python -m vosjax.train --config configs/cyclic.py --workdir runs/cyclic

Training (cyclic VOS sec. 3.2, 4.1): 3 frames per sample, the earliest one is
the reference; the maximum sampling interval grows by 5 every 20 of 240
epochs; loss = L(Y_t^, Y_t) + L(Y_1^, Y_1) with Y_1^ predicted back from the
last frame and its prediction, L = IoU loss + gamma CE (gamma = 1), CE
bootstrapped on the hardest 40 % of the pixels; Adam lr 1e-5 (betas 0.9,
0.999), batch 4, input 240 x 427, no static-image pretraining. 240 epochs
of DAVIS 2017 + YouTube-VOS train (~3.5K videos) at batch 4 are ~210K steps.
Inference: gradient correction every K = 5 frames, N = 10 steps, Sobel
smoothness lambda = 0.75, frames at 240 pixels (shorter side).

Variants: ``full`` (default), ``tiny`` (CPU).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.stcn import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "tiny"), __file__)
    tiny = variant == "tiny"
    c = P.base(seed=0)
    c.model = default_config("cyclic", tiny=tiny)
    c.objective = ml_collections.ConfigDict(
        {"name": "cyclic", "gamma": 1.0, "top_p": 0.4, "start_warm": 0, "end_warm": 0}
    )
    c.inference = ml_collections.ConfigDict(
        {"top_k": 20, "memory_policy": "every_k", "mem_every": 5, "correction_every": 5,
         "correction_iters": 10, "correction_smooth": 0.75, "correction_gamma": 1.0,
         "resolution": 240}
    )
    if not tiny:
        c.init.backbones = P.imagenet(key_encoder=("resnet50", 3, "s16"), value_encoder=("resnet18", 5, "s16"))
        P.add_stage(c, "video", steps=210_000, optim=P.optim(name="adam", lr=1e-5),
                    data=P.data(P.davis_youtube_source(davis_repeats=1), sampler="cyclic",
                                batch_size=4, crop_size=(240, 427), max_objects=3, num_workers=4))
        c.eval.source = P.davis_source("val")
        c.eval.every_steps = 20_000
        c.checkpoint.every_steps = 5_000
        return c
    c.inference.resolution = None
    c.inference.correction_every = 3
    c.inference.correction_iters = 2
    P.add_stage(c, "video", steps=30, optim=P.optim(name="adam", lr=5e-4, clip_norm=1.0),
                data=P.data(P.synthetic_source("demo"), sampler="cyclic", batch_size=8,
                            crop_size=(64, 64), max_objects=2, gap_schedule=((1.0, 3),)))
    P.tiny_trainer(c)
    return c
