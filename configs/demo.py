"""The README's main job: train a small memory network on synthetic videos on a CPU.

    python -m vosjax.train --config configs/demo.py --workdir runs/demo

Trains the tiny STCN-style memory network on the synthetic ``demo`` preset
(64 x 64 videos of 16 frames, 1-2 textured objects moving several radii),
then scores it on the 30 videos of the synthetic ``val`` split with the
DAVIS protocol next to the "copy the first mask" baseline.
"""

import ml_collections

from vosjax.models.stcn import default_config
from vosjax.training import presets as P


def get_config():
    c = P.base(seed=0)
    c.model = default_config("stcn", tiny=True)
    c.objective = ml_collections.ConfigDict(
        {"name": "stcn", "top_p": 0.5, "start_warm": 200, "end_warm": 600}
    )
    source = P.synthetic_source("demo", "train")
    P.add_stage(
        c, "video", steps=800,
        data=P.data(source, sampler="stcn", batch_size=4, crop_size=(64, 64), max_objects=2,
                    gap_schedule=((0.3, 2), (0.6, 4), (1.0, 6)), num_threads=2, prefetch=4),
        optim=P.optim(name="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine", warmup_steps=50,
                      final_lr_fraction=0.05, clip_norm=1.0),
    )
    c.inference = ml_collections.ConfigDict(
        {"top_k": 20, "memory_policy": "every_k", "mem_every": 3, "max_objects": 2}
    )
    c.eval.source = P.synthetic_source("demo", "val")
    c.eval.every_steps = 0  # once, at the end
    c.eval.max_videos = 0
    c.checkpoint.every_steps = 200
    c.log.every_steps = 50
    return c
