"""Cyclic VOS: the memory network trained with the cycle-consistency loss.

    python -m vosjax.train --config configs/cyclic.py --workdir runs/cyclic

Training (cyclic VOS sec. 3.2, 4.1): 3 frames per sample, the earliest one is
the reference; loss = forward L(Y_t^, Y_t) + cycle L(Y_1^, Y_1) with Y_1^
predicted back from EVERY query frame and its prediction, L = IoU loss +
gamma CE (gamma = 1), CE bootstrapped on the hardest 40 % of the pixels; Adam
lr 1e-5 (betas 0.9, 0.999), batch 4, input 240 x 427, ImageNet backbones.
Inference: gradient correction every K = 5 frames, N = 10 unclipped steps of
alpha = 150 on the mean loss, frames at 240 pixels (shorter side).

Where the authors' code (lyxok1/STM-Training, branch cycle) and the paper differ
(this recipe follows the code where it says so):

- loss normalisation: train.py:318-341 sums the forward terms and the cycle
  terms over t and divides both by T - 1 (the objective does the same);
- batch: train_batch 1 x iter_size 4 gradient accumulation (libs/config/default.py:25,31)
  = batch 4 here; Adam weight_decay 5e-4 (default.py:30, torch Adam, coupled);
  no lr decay (milestone = [], default.py:32);
- data: DAVIS 2017 train x 5 + YouTube-VOS train (config.yaml datafreq [5, 1]),
  one sample per video per epoch, 240 epochs: (60 x 5 + 3471) / 4 x 240 ~ 226K steps;
  up to 5 objects per sample (libs/dataset/data.py:20 MAX_TRAINING_OBJ);
- max frame gap: the paper says +5 every 20 epochs; the code adds 5 (DAVIS) /
  1 (YouTube) every 5 epochs (train.py:244, epochs_per_increment = 5;
  davis.py:48, youtube.py:49), from 5 / 3 (default.py:11) or 50 / 10
  (config.yaml), capped at 100 (data.py:21); one schedule serves the mixed
  source here, so the sampler keeps the paper's (vosjax/methods.py _CYCLIC_GAPS);
- frames are letterboxed to 240 x 427 (transform.py Rescale) after a random
  affine (crop 0-10 %, scale 0.95-1.05, shear +-10, rotate +-15), not cropped;
- correction: alpha = 150 (default.py:41; config.yaml:28 and demo.yaml:7 say
  180), no Sobel smooth term in test.py:184 (the paper: lambda = 0.75), the
  frame's output is the uncorrected mask (test.py:172), the memory gets the
  corrected one.

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
         "correction_iters": 10, "correction_rate": 150.0, "correction_smooth": 0.0,
         "correction_gamma": 1.0, "correction_top_p": 0.4, "resolution": 240}
    )
    if not tiny:
        c.init.backbones = P.imagenet(key_encoder=("resnet50", 3, "s16"), value_encoder=("resnet18", 5, "s16"))
        P.add_stage(c, "video", steps=226_000,
                    optim=P.optim(name="adam", lr=1e-5, weight_decay=5e-4),
                    data=P.data(P.davis_youtube_source(davis_repeats=5), sampler="cyclic",
                                batch_size=4, crop_size=(240, 427), max_objects=5, num_workers=4))
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
