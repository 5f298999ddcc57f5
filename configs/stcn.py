"""STCN-style space-time memory network (the common baseline of vosjax).

    python -m vosjax.train --config configs/stcn.py --workdir runs/stcn          # authors' code recipe
    python -m vosjax.train --config configs/stcn.py:trickvos_regime --workdir runs/stcn_tv
    python -m vosjax.train --config configs/stcn.py:tiny --workdir runs/tiny     # CPU

Recipe ``full`` (default) follows the authors' code (github hkchengrex/STCN,
the "s03" model: static images, then main training without BL30K):

- init: ImageNet ResNet-50 key encoder, ResNet-18 value encoder (model/modules.py:61,96,129,
  torchvision files of model/mod_resnet.py:36-39), from ``$VOSJAX_DATA/weights``
  (:mod:`vosjax.training.weights`; a missing folder stops the run with the commands that make
  it; ``--config.init.from_scratch=True`` trains from random encoders);
- static stage (util/hyper_para.py:53-59, stage 0): 300K iterations, lr 1e-5 x 0.1 at 150K,
  one object, batch 16 (8 per GPU on the 2 GPUs of README "Training commands": ``-b`` is the
  per-process DataLoader batch of train.py:84-88);
- main stage (util/hyper_para.py:74-80, stage 3): DAVIS 2017 train x 5 + YouTube-VOS train
  (train.py:90-103), 150K iterations, lr 1e-5 x 0.1 at 125K, batch 8 (4 per GPU x 2), two
  objects per sample (dataset/vos_dataset.py:177-181), 3 frames, max gap 5 -> 10 / 15 / 20 / 25
  at 10 / 20 / 30 / 40 % -> 5 at 90 % (train.py:123-155, vosjax.methods._STCN_GAPS);
  augmentation: per clip mirror + random resized crop 384 x 384 of 0.36-1 of the area, per
  frame a random affine of +-15 deg rotation and +-10 deg shear (dataset/vos_dataset.py:49-87);
- Adam, weight decay 1e-7 (model/model.py:42-44, MultiStepLR); bootstrapped CE over the hardest
  15 % of each sample's pixels per frame after warming up from 20K to 70K iterations
  (model/losses.py:26-71).

Inference: top-k 20, a memory frame every 5 frames.

Variant ``trickvos_regime``: STCN's regime as the TrickVOS paper states it (sec. 4, "Training
Details": batch 16, 300K iterations, lr 1e-5 without decay) -- what this config used before.
It differs from the code above (batch 8 and 150K with a decay in the main stage); the code wins.
Variant ``tiny``: ResNet-18 key encoder, narrow widths, synthetic 64 x 64 videos, no weights
(a few minutes on a CPU).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.stcn import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "trickvos_regime", "tiny"), __file__)
    tiny = variant == "tiny"
    c = P.base(seed=0)
    c.model = default_config("stcn", tiny=tiny)
    c.objective = ml_collections.ConfigDict(
        {"name": "stcn", "top_p": 0.15, "start_warm": 20_000, "end_warm": 70_000, "bootstrap": "sample"}
    )
    c.inference = ml_collections.ConfigDict({"top_k": 20, "memory_policy": "every_k", "mem_every": 5})
    if not tiny:
        c.init.backbones = P.imagenet(key_encoder=("resnet50", 3, "s16"), value_encoder=("resnet18", 5, "s16"))
        if variant == "trickvos_regime":
            opt = P.optim(name="adam", lr=1e-5, weight_decay=1e-7)
            static = dict(steps=300_000, optim=opt, batch_size=16, max_objects=3)
            video = dict(steps=300_000, optim=opt, batch_size=16, max_objects=3)
        else:
            static = dict(steps=300_000, batch_size=16, max_objects=1,
                          optim=P.optim(name="adam", lr=1e-5, weight_decay=1e-7, schedule="piecewise",
                                        decay_steps=(150_000,), decay_factor=0.1))
            video = dict(steps=150_000, batch_size=8, max_objects=2, augment=P.stcn_video_augment(),
                         optim=P.optim(name="adam", lr=1e-5, weight_decay=1e-7, schedule="piecewise",
                                       decay_steps=(125_000,), decay_factor=0.1))
        P.add_stage(c, "static", steps=static.pop("steps"), optim=static.pop("optim"),
                    data=P.data(P.static_source(), sampler="static", crop_size=(384, 384), num_workers=8,
                                **static))
        P.add_stage(c, "video", steps=video.pop("steps"), optim=video.pop("optim"),
                    data=P.data(P.davis_youtube_source(), sampler="stcn", crop_size=(384, 384),
                                num_workers=8, **video))
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
