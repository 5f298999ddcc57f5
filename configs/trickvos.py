"""TrickVOS: the lightweight memory network trained with the bag of tricks.

    python -m vosjax.train --config configs/trickvos.py --workdir runs/trickvos
    python -m vosjax.train --config configs/trickvos.py:decoder --workdir runs/trickvos_dec \
        --config.init.checkpoint=runs/trickvos        # Trick 2: decoder pretraining

Model (TrickVOS sec. 4.1): MobileNetV2 key and value encoders, key dim 32,
memory = first + last frame, mask-only value encoder, no ASPP.
Trick 1: hybrid loss CE + SSIM + IoU, all weights 1 (CE bootstrapped as in
STCN). Trick 2 (variant ``decoder``): a second run from scratch whose decoder
only is initialised from a finished run's bundle. Trick 3: box-filtered
predictions at inference (constant velocity here; ``box_filter = "pt"`` with
``inference.tracker`` pointing at a bundle of configs/tracker.py for PT).
Training (TrickVOS sec. 4, "Training Details"; TrickVOS has no public code):
"we follow the training regime of [2] (STCN)": static-image pretraining, then
DAVIS 2017 + YouTube-VOS for 300K iterations, batch 16, sequence length 5,
Adam lr 1e-5, weight decay 1e-7. What the paper leaves to STCN is taken from
STCN's code (github hkchengrex/STCN): the static stage of util/hyper_para.py:53-59
(300K iterations, batch 16 = 8 per GPU x 2, lr x 0.1 at 150K); the main stage's
lr x 0.1 at 250K is STCN's 300K main-training schedule (util/hyper_para.py:67-73,
stage 2) -- an inference, the paper names no decay; two objects per sample,
STCN's max-gap curriculum, per-frame affine augmentation and per-sample
bootstrapped CE (see configs/stcn.py). Init: ImageNet MobileNetV2 for both
encoders (STCN starts from ImageNet encoders; the paper's Trick 2 text says
"random initialization" of everything but the decoder, read here as "not from a
VOS run"); the mask-only value encoder's first conv has 2 input planes, so
its stem starts random (converted with ``--in-channels 2 --allow-missing``).
``--config.init.from_scratch=True`` trains from random encoders.

Variants: ``full`` (default), ``tiny`` (synthetic 64 x 64 videos, CPU),
``decoder`` / ``tiny_decoder`` (Trick 2 on top of those).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.stcn import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "tiny", "decoder", "tiny_decoder"), __file__)
    tiny = variant.startswith("tiny")
    c = P.base(seed=0)
    c.model = default_config("trickvos", tiny=tiny)
    c.objective = ml_collections.ConfigDict(
        {"name": "trickvos", "weights": (1.0, 1.0, 1.0), "top_p": 0.15, "start_warm": 20_000,
         "end_warm": 70_000, "bootstrap": "sample"}
    )
    c.inference = ml_collections.ConfigDict(
        {"top_k": 20, "memory_policy": "first_last", "box_filter": "cv"}
    )
    if variant.endswith("decoder"):
        c.init.checkpoint = "runs/trickvos_tiny" if tiny else "runs/trickvos"
        c.init.include = ("@decoder",)
    if not tiny:
        c.init.backbones = P.imagenet(key_encoder=("mobilenet_v2", 3, "s16"),
                                      value_encoder=("mobilenet_v2", 2, "s16"))

        def opt(decay_at):
            return P.optim(name="adam", lr=1e-5, weight_decay=1e-7, schedule="piecewise",
                           decay_steps=(decay_at,), decay_factor=0.1)

        P.add_stage(c, "static", steps=300_000, optim=opt(150_000),
                    data=P.data(P.static_source(), sampler="static", num_frames=5, batch_size=16,
                                crop_size=(384, 384), max_objects=1, num_workers=8))
        P.add_stage(c, "video", steps=300_000, optim=opt(250_000),
                    data=P.data(P.davis_youtube_source(), sampler="trickvos", batch_size=16,
                                crop_size=(384, 384), max_objects=2, num_workers=8,
                                augment=P.stcn_video_augment()))
        c.eval.source = P.davis_source("val")
        c.eval.every_steps = 25_000
        c.checkpoint.every_steps = 5_000
        return c
    c.objective.start_warm, c.objective.end_warm = 10, 30
    opt = P.optim(name="adam", lr=1e-3, weight_decay=1e-7, clip_norm=1.0)
    P.add_stage(c, "static", steps=10, optim=opt,
                data=P.data(P.synthetic_source("demo"), sampler="static", num_frames=5, batch_size=8,
                            crop_size=(64, 64), max_objects=2))
    P.add_stage(c, "video", steps=20, optim=opt,
                data=P.data(P.synthetic_source("demo"), sampler="trickvos", batch_size=8,
                            crop_size=(64, 64), max_objects=2, gap_schedule=((1.0, 2),)))
    P.tiny_trainer(c)
    return c
