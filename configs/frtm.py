"""FRTM: a target model learned inside the step + a segmentation network trained offline.

    python -m vosjax.train --config configs/frtm.py --workdir runs/frtm
    python -m vosjax.train --config configs/frtm.py:fast --workdir runs/frtm_fast

Training (FRTM sec. 3.3, 4): one reference and two validation frames per
sample from the same video; the target model is optimised on the reference
inside the step (Gauss-Newton / CG), the network segments the validation
frames and BCE is back-propagated; only the segmentation network learns (the
backbone is frozen); Adam with lr 1e-3, betas (0.9, 0.999), weight decay
1e-5 for ~10^6 iterations (120 epochs), then lr 1e-4 for 60 more epochs
(~0.5 * 10^6 iterations). FRTM does not state the batch size; 16 is used.
Inference: a sample per frame (memory of 80), w2 refitted every t_s = 8 frames.
Init: ImageNet ResNet-50 / -18 (``init.backbones``; the frozen backbone may
instead be LWL's Mask-RCNN ResNet-50: convert that file into the same folder).

Variants: ``full`` (ResNet-50, default), ``fast`` (ResNet-18, fewer GN / CG
iterations), ``tiny`` (CPU).
"""

import ml_collections

from vosjax.config_utils import pick_variant
from vosjax.models.frtm import default_config
from vosjax.training import presets as P


def get_config(arg=None):
    variant = pick_variant(arg, ("full", "fast", "tiny"), __file__)
    tiny = variant == "tiny"
    c = P.base(seed=0)
    c.model = default_config("fast" if variant == "fast" else "full", tiny=tiny)
    c.objective = ml_collections.ConfigDict({"name": "frtm"})
    c.inference = ml_collections.ConfigDict({"memory_policy": "frtm", "top_k": None})
    if not tiny:
        c.init.backbones = P.imagenet(backbone=(c.model.backbone, 3, "s32"))
        P.add_stage(c, "video", steps=1_500_000,
                    optim=P.optim(name="adam", lr=1e-3, weight_decay=1e-5, schedule="piecewise",
                                  decay_steps=(1_000_000,), decay_factor=0.1, freeze=("^backbone/",)),
                    data=P.data(P.davis_youtube_source(davis_repeats=1), sampler="frtm",
                                batch_size=16, crop_size=(480, 864), max_objects=1, num_workers=8))
        c.eval.source = P.davis_source("val")
        c.eval.every_steps = 50_000
        c.checkpoint.every_steps = 10_000
        return c
    c.inference.memory_frames = 8
    P.add_stage(c, "video", steps=30,
                optim=P.optim(name="adam", lr=1e-3, weight_decay=1e-5, clip_norm=1.0,
                              freeze=("^backbone/",)),
                data=P.data(P.synthetic_source("demo"), sampler="frtm", batch_size=8,
                            crop_size=(64, 64), max_objects=2))
    P.tiny_trainer(c)
    return c
