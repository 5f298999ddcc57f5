"""Data sources (synthetic, DAVIS / YouTube-VOS folders, static images, TFDS) and grain pipelines.

Every source is a random-access sequence of :class:`Video` records
(``len(src)``, ``src[i]``), so grain, the training pipelines and the
evaluation readers treat them alike:

- :class:`SyntheticSource` (``data_specs/synthetic_<preset>.json``),
  :class:`DavisSource`, :class:`YouTubeVOSSource`, :class:`StaticImageSource`,
  ``TfdsSource`` (``vosjax.data.tfds_builder``, needs the ``tfds`` extra),
  :class:`ConcatSource`, and :func:`make_source` to build any from a config;
- :func:`make_train_pipeline` -> resumable iterator of training batches;
- :func:`iter_eval_videos` -> whole videos streamed frame by frame;
- :func:`normalize_frames` (on device), :func:`remap_to_slots`,
  :func:`write_davis_layout`, :func:`copy_first_mask_baseline`;
- palette PNG I/O in :mod:`vosjax.data.io`.
"""

from vosjax.data.augment import AugmentConfig
from vosjax.data.baseline import copy_first_mask_baseline, copy_first_mask_prediction
from vosjax.data.davis import DavisSource, read_sequence_list, write_davis_layout
from vosjax.data.evaluation import EvalFrame, EvalVideo, iter_eval_videos
from vosjax.data.io import (
    DataWarning,
    davis_palette,
    read_image,
    read_label_png,
    write_image,
    write_label_png,
)
from vosjax.data.normalize import IMAGENET_MEAN, IMAGENET_STD, denormalize_frames, normalize_frames
from vosjax.data.pipeline import TrainDataConfig, TrainIterator, make_train_pipeline
from vosjax.data.samplers import sampler_names
from vosjax.data.sources import ConcatSource, make_source
from vosjax.data.static import DeformConfig, StaticImageSource, make_pseudo_video
from vosjax.data.synthetic import SyntheticSource, build_scene, generate_video
from vosjax.data.synthetic_spec import SyntheticSpec, available_presets, load_spec
from vosjax.data.video import LazyFrames, Video, remap_to_slots, slots_to_labels
from vosjax.data.youtube import YouTubeVOSSource, write_youtube_layout

__all__ = [
    "sampler_names",
    "AugmentConfig",
    "ConcatSource",
    "DataWarning",
    "DavisSource",
    "DeformConfig",
    "EvalFrame",
    "EvalVideo",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LazyFrames",
    "StaticImageSource",
    "SyntheticSource",
    "SyntheticSpec",
    "TrainDataConfig",
    "TrainIterator",
    "Video",
    "YouTubeVOSSource",
    "available_presets",
    "build_scene",
    "copy_first_mask_baseline",
    "copy_first_mask_prediction",
    "davis_palette",
    "denormalize_frames",
    "generate_video",
    "iter_eval_videos",
    "load_spec",
    "make_pseudo_video",
    "make_source",
    "make_train_pipeline",
    "normalize_frames",
    "read_image",
    "read_label_png",
    "read_sequence_list",
    "remap_to_slots",
    "slots_to_labels",
    "write_davis_layout",
    "write_image",
    "write_label_png",
    "write_youtube_layout",
]
