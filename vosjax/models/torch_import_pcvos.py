"""Import the authors' released PCVOS checkpoint (``s03_pcvos_ytvos.pth``) as a vosjax bundle.

The authors' inference network (github pkyong95/PCVOS, ``model/eval_network.py``
run by ``eval_youtube.py`` with ``--refine_clip ICR --T_window 2 --S_window 7
--shared_proj --memory_read PMM``) is their STCN network (the same key / value
encoders, key projection, key compression and decoder; converted by
:mod:`vosjax.models.torch_import_stcn`'s mapping) plus

- ``input_proj``: a 3 x 3 convolution of the stride-16 features to 256
  channels, the local keys of the refinement (ours ``intra_key``);
- ``refine_transformer``: the intra-clip refinement, one stage of two Video
  Swin blocks, set by :func:`vosjax.models.pcvos.authors_icr` (values
  512 -> 512, MLP 2048, relative-position bias, Swin padding, final LayerNorm).

Key mapping of the refinement (ours ``params/...`` <- theirs; Linear weights
transposed, LayerNorm ``scale`` <- ``weight``; the bias table is used as it is):

=======================================  =================================================
ours                                     theirs
=======================================  =================================================
``intra_key``                            ``input_proj.key_proj``
``icr/layer{i}/phi_norm``                ``refine_transformer.layers.0.blocks.{i}.norm1``
``icr/layer{i}/psi_norm``                ``...blocks.{i}.norm1_v``
``icr/layer{i}/phi``                     ``...blocks.{i}.attn.qk`` (queries = keys)
``icr/layer{i}/psi``                     ``...blocks.{i}.attn.v``
``icr/layer{i}/out``                     ``...blocks.{i}.attn.proj``
``icr/layer{i}/rel_bias``                ``...blocks.{i}.attn.relative_position_bias_table``
``icr/layer{i}/ffn_in_norm``             ``...blocks.{i}.norm2``
``icr/layer{i}/ffn_in``, ``ffn_out``     ``...blocks.{i}.mlp.fc1``, ``mlp.fc2``
``icr/norm``                             ``refine_transformer.norm``
=======================================  =================================================

Their ``relative_position_index`` buffers are checked against
:func:`vosjax.ops.window_attention.relative_position_index` and then ignored.

Inference settings (:func:`authors_config`, from ``inference_pretrained_pcvos.sh``,
``eval_youtube.py`` and ``inference_core_yv.py``): clips of L = 5 frames (their
script also runs 10, 15 and 25; pass ``clip_length``), a memory frame at the end
of every clip (``mem_every = L``), top-k 20, progressive memory matching with
F = 5 (their memory bank adds the key and read-out of every 5th frame of a
clip; with L = 5 it changes nothing), frames resized to a shorter side of 480
and zero-padded to a multiple of 16 (half before, half after), every frame
predicted (``--predict_all``). Their resize is bicubic on the normalised frames
and vosjax's is its own (no effect on DAVIS 480p frames). Their memory grows
without bound; the bundle holds :data:`MEMORY_FRAMES` (the same outputs for
videos of up to ``1 + L * (MEMORY_FRAMES - 1)`` frames).

Known differences from their driver: (1) a clip cut short (the last clip of a
video, or one ended by a frame with new masks) runs in vosjax's engine as L
frames with padding frames after the valid ones, and the refinement's time
windows pair the last valid frame with a padding frame, where their driver runs
the shorter clip; the other frames are unaffected (on the seeded fixture, a
4-frame last clip of L = 6: that frame's probabilities differ by up to 3e-3, its
labels on 0.5 % of the pixels); (2) their YouTube-VOS driver keeps one memory
per object, each starting at the frame where its object is first given; the
engine gives each object the same memory within one shared bank
(:mod:`vosjax.memory_policy`), checked against STCN's YouTube-VOS driver
(``tests/models/test_stcn_yv_authors.py``), not against theirs; (3) resizing, above.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from vosjax.errors import VosjaxError
from vosjax.models import torch_import, torch_import_stcn
from vosjax.models.torch_import_stcn import STCNConversionReport

MEMORY_FRAMES = 40
CLIP_LENGTH = 5
SEGMENT_LEN = 5
WINDOW = (2, 7, 7)
_INDEX = "relative_position_index"
_BLOCKS = "refine_transformer.layers.0.blocks."
_ICR_RENAMES = {
    "phi_norm": "norm1",
    "psi_norm": "norm1_v",
    "phi": "attn.qk",
    "psi": "attn.v",
    "out": "attn.proj",
    "ffn_in_norm": "norm2",
    "ffn_in": "mlp.fc1",
    "ffn_out": "mlp.fc2",
}
#: Extra rules of :func:`seeded_state_dict` beyond :data:`torch_import_stcn.SEED_RULE`.
SEED_RULE = torch_import_stcn.SEED_RULE + (
    "; relative_position_bias_table: normal(0, 0.5); relative_position_index: Video Swin's "
    "index of the (2, 7, 7) window (vosjax.ops.window_attention.relative_position_index), int64; "
    "then tensors named in SEED_GAINS (STCN's and the refinement's) are multiplied by their gain"
)
#: :data:`torch_import_stcn.SEED_GAINS` plus the refinement's query / key maps, damped so
#: that a token does not attend to itself alone (queries = keys, so its own logit
#: |q|^2 / 16 would dwarf the others at full scale): attention then spreads over the
#: window, and the window partition, shift regions, padding and bias table all matter.
SEED_GAINS = {
    **torch_import_stcn.SEED_GAINS,
    "refine_transformer.layers.0.blocks.0.attn.qk.weight": 0.25,
    "refine_transformer.layers.0.blocks.1.attn.qk.weight": 0.25,
}


def authors_config(
    clip_length: int = CLIP_LENGTH, memory_frames: int = MEMORY_FRAMES
) -> ml_collections.ConfigDict:
    """The run config of a converted PCVOS bundle: ``model`` and ``inference`` sections."""
    from vosjax.models import pcvos

    if isinstance(clip_length, bool) or not isinstance(clip_length, int) or clip_length < 1:
        raise VosjaxError(f"authors_config: clip_length must be a positive int, got {clip_length!r}.")
    model = pcvos.authors_icr(pcvos.default_config())
    model.value_conv_bias = True
    model.memory_frames = int(memory_frames)
    c = ml_collections.ConfigDict()
    c.model = model
    c.inference = ml_collections.ConfigDict(
        {
            "top_k": 20,
            "clip_length": int(clip_length),
            "segment_len": SEGMENT_LEN,
            "memory_policy": "every_k",
            "mem_every": int(clip_length),
            "memory_frames": int(memory_frames),
            "resolution": 480,
            "pad_to": 16,
        }
    )
    c.source = ml_collections.ConfigDict(
        {"method": "PCVOS (Park et al., CVPR 2022)", "code": "github.com/pkyong95/PCVOS"}
    )
    return c


def seeded_state_dict(spec: Sequence[Sequence[Any]], seed: int) -> dict[str, np.ndarray]:
    """:func:`torch_import_stcn.seeded_state_dict` plus the refinement's bias tables, index and gains."""
    from vosjax.ops.window_attention import relative_position_index

    special = [s for s in spec if s[0].rsplit(".", 1)[-1] in (_INDEX, "relative_position_bias_table")]
    out = torch_import_stcn.seeded_state_dict([s for s in spec if s not in special], seed)
    for name, gain in SEED_GAINS.items():
        if name in out and name not in torch_import_stcn.SEED_GAINS:
            out[name] = (out[name] * gain).astype(np.float32)
    for name, shape, *_ in special:
        shape = tuple(int(x) for x in shape)
        if name.endswith(_INDEX):
            index = relative_position_index(WINDOW).astype(np.int64)
            if index.shape != shape:
                raise VosjaxError(f"seeded_state_dict: {name} has shape {shape}, not {index.shape}.")
            out[name] = index
        else:
            rng = np.random.default_rng([int(seed), torch_import_stcn.zlib.crc32(name.encode())])
            out[name] = rng.normal(0.0, 0.5, shape).astype(np.float32)
    return {name: out[name] for name, *_ in spec}


def torch_key(path: Sequence[str]) -> str:
    """The authors' state-dict key of our variable ``(collection, module..., leaf)``."""
    leaf = path[-1]
    if path[1] == "intra_key":
        return "input_proj.key_proj." + torch_import._LEAF_TO_TORCH[leaf]
    if path[1] != "icr":
        return torch_import_stcn.torch_key(path)
    if path[2] == "norm":
        return "refine_transformer.norm." + torch_import._LEAF_TO_TORCH[leaf]
    block = _BLOCKS + path[2].removeprefix("layer") + "."
    if leaf == "rel_bias":
        return block + "attn.relative_position_bias_table"
    return block + _ICR_RENAMES[path[3]] + "." + torch_import._LEAF_TO_TORCH[leaf]


def expected_variables(config: Any | None = None) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """``{their key: (our path, our shape)}`` for every variable of the converted model."""
    from vosjax.models import pcvos

    return torch_import_stcn.variables_by_torch_key(
        pcvos.PCVOS, (config or authors_config()).model, torch_key, size=32
    )


def convert_pcvos_state_dict(
    state_dict: Mapping[str, Any],
    *,
    config: Any | None = None,
    allow_missing: bool = False,
    seed: int = 0,
) -> tuple[dict[str, Any], STCNConversionReport]:
    """The authors' PCVOS state_dict (name -> array) as vosjax ``{"params", "batch_stats"}``.

    Raises :class:`VosjaxError` when a source tensor cannot be placed (an
    unknown name, a shape that does not fit, a relative-position index that is
    not the (2, 7, 7) window's) or, unless ``allow_missing`` (then initial
    values, PRNG ``seed``; a zero bias table), when a variable has no source.
    """
    from vosjax.ops.window_attention import relative_position_index

    fn = "convert_pcvos_state_dict"
    if isinstance(state_dict, Mapping):
        want = relative_position_index(WINDOW)
        for key in state_dict:
            if key.endswith(_INDEX) and not np.array_equal(np.asarray(state_dict[key]), want):
                raise VosjaxError(
                    f"{fn}: {key} is not Video Swin's relative-position index of a {WINDOW} "
                    "window; this checkpoint was trained with another window, which vosjax's "
                    "authors' form does not cover."
                )
    return torch_import_stcn.place_state_dict(
        state_dict,
        expected_variables(config),
        fn=fn,
        network="PCVOS",
        hint="Is this the authors' PCVOS checkpoint (s03_pcvos_ytvos.pth)?",
        allow_missing=allow_missing,
        seed=seed,
        ignore=("num_batches_tracked", _INDEX),
    )


def convert_pcvos(
    source: str | pathlib.Path,
    output: str | pathlib.Path,
    *,
    allow_missing: bool = False,
    clip_length: int = CLIP_LENGTH,
    memory_frames: int = MEMORY_FRAMES,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[pathlib.Path, STCNConversionReport]:
    """Convert the authors' PCVOS checkpoint ``source`` into a bundle at ``output`` with
    :func:`authors_config` (:func:`vosjax.models.torch_import_stcn.export_network`)."""
    config = authors_config(clip_length, memory_frames)
    return torch_import_stcn.export_network(
        "pcvos", source, output, config,
        lambda sd: convert_pcvos_state_dict(sd, config=config, allow_missing=allow_missing, seed=seed),
        overwrite=overwrite,
    )
