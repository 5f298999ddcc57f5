"""Per-Clip VOS (PCVOS): intra-clip refinement trained clip by clip.

    python -m vosjax.train --config configs/pcvos.py --workdir runs/pcvos

Training (PCVOS sec. 3.6, 4.1): static-image pretraining on 3-frame
pseudo-videos, then per-clip training on DAVIS 2017 + YouTube-VOS: one
labelled frame + 2 clips of N = 3 frames (7 frames), inter-clip gap 5 -> 15
-> 5 over training, intra-clip gap <= 5; each clip is segmented at once with
its own predictions as memory; loss = clip-level Dice + bootstrapped CE.
PCVOS sec. 4.1: "For a fair comparison, we mainly follow the original details
of STCN"; it prints no optimizer settings and its code (github pkyong95/PCVOS)
is inference only (no train.py / hyper_para.py), so STCN's code recipe is used
(configs/stcn.py, github hkchengrex/STCN util/hyper_para.py:53-59, 74-80):
static stage 300K iterations, batch 16 (8 per GPU x 2), lr 1e-5 x 0.1 at 150K;
main stage 150K iterations, batch 8 (4 per GPU x 2), lr 1e-5 x 0.1 at 125K;
Adam, weight decay 1e-7; two objects per sample; STCN's per-frame affine
augmentation; bootstrapped CE per sample and frame. Init: ImageNet ResNet-50
key and ResNet-18 value encoders (PCVOS model/modules.py:113,146, as STCN);
``--config.init.from_scratch=True`` trains from random encoders.
Inference: clips of L = 5 frames read the memory together (memory written at
clip ends), top-k 20; progressive memory matching only for longer clips
(``--config.inference.clip_length=15 --config.inference.segment_len=5``).

Variants: ``full`` (default), ``tiny`` (CPU).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.pcvos import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "tiny"), __file__)
    tiny = variant == "tiny"
    c = P.base(seed=0)
    c.model = default_config(tiny=tiny)
    c.objective = ml_collections.ConfigDict(
        {"name": "pcvos", "num_clips": 2, "dice_weight": 1.0, "top_p": 0.15, "start_warm": 20_000,
         "end_warm": 70_000, "bootstrap": "sample"}
    )
    c.inference = ml_collections.ConfigDict({"top_k": 20, "clip_length": 5, "memory_policy": "every_k"})
    if not tiny:
        c.init.backbones = P.imagenet(key_encoder=("resnet50", 3, "s16"), value_encoder=("resnet18", 5, "s16"))

        def opt(decay_at):
            return P.optim(name="adam", lr=1e-5, weight_decay=1e-7, schedule="piecewise",
                           decay_steps=(decay_at,), decay_factor=0.1)

        P.add_stage(c, "static", steps=300_000, optim=opt(150_000),
                    data=P.data(P.static_source(), sampler="static", num_frames=3, batch_size=16,
                                crop_size=(384, 384), max_objects=1, num_workers=8))
        P.add_stage(c, "video", steps=150_000, optim=opt(125_000),
                    data=P.data(P.davis_youtube_source(), sampler="pcvos", clip_length=3,
                                intra_clip_gap=5, batch_size=8, crop_size=(384, 384), max_objects=2,
                                num_workers=8, augment=P.stcn_video_augment()))
        c.eval.source = P.davis_source("val")
        c.eval.every_steps = 25_000
        c.checkpoint.every_steps = 5_000
        return c
    c.objective.start_warm, c.objective.end_warm = 10, 30
    c.inference.clip_length = 3
    opt = P.optim(name="adam", lr=5e-4, weight_decay=1e-7, clip_norm=1.0)
    P.add_stage(c, "static", steps=10, optim=opt,
                data=P.data(P.synthetic_source("demo"), sampler="static", num_frames=3, batch_size=8,
                            crop_size=(64, 64), max_objects=2))
    P.add_stage(c, "video", steps=20, optim=opt,
                data=P.data(P.synthetic_source("demo"), sampler="pcvos", clip_length=3,
                            intra_clip_gap=2, gap_schedule=((1.0, 3),), batch_size=8,
                            crop_size=(64, 64), max_objects=2))
    P.tiny_trainer(c)
    return c
