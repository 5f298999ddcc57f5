"""Convert a PyTorch checkpoint into vosjax: a torchvision-layout backbone, or a whole network.

    python tools/convert_torch_weights.py --arch resnet50 --input resnet50.pth --output DIR \
        [--in-channels N] [--stop-at s16] [--strip-prefix P|auto] [--allow-missing] [--overwrite]
    python tools/convert_torch_weights.py --arch stcn --input stcn.pth --output DIR \
        [--memory-frames 40] [--allow-missing] [--overwrite]
    python tools/convert_torch_weights.py --arch pcvos --input s03_pcvos_ytvos.pth --output DIR \
        [--clip-length 5] [--memory-frames 40] [--allow-missing] [--overwrite]
    python tools/convert_torch_weights.py --arch joint --input joint_davis.pth.tar --output DIR \
        [--dataset davis|ytvos] [--allow-missing] [--overwrite]
    python tools/convert_torch_weights.py --arch frtm --input rn101_ytvos.pth \
        --backbone-weights resnet101-5d3b4d8f.pth --output DIR [--fast] [--allow-missing] [--overwrite]

``--arch stcn`` converts the authors' released STCN checkpoint (``stcn.pth`` or
``stcn_s0.pth``) into a vosjax bundle that ``python -m vosjax.segment --checkpoint DIR``
and ``VideoSegmenter(DIR)`` run with the authors' inference settings, and writes
``DIR/conversion.json`` naming every source tensor and where it went; a tensor it
cannot place, or (without ``--allow-missing``) a missing one, is an error. See
``vosjax/models/torch_import_stcn.py`` for the mapping and the settings. ``--arch pcvos``
does the same for the authors' released PCVOS checkpoint (``s03_pcvos_ytvos.pth``; STCN's
mapping plus the local-key head and the intra-clip refinement; clips of ``--clip-length``
frames, 5 by default as their script; see ``vosjax/models/torch_import_pcvos.py``).
``--arch joint`` converts the authors' released JOINT network (``joint_davis.pth.tar`` /
``joint_ytvos.pth.tar``, an ltr checkpoint: only the tensors under ``"net"`` are read, see
``vosjax/models/torch_import_joint.py`` for how its pickled constructor object is skipped
without running it); ``--dataset`` picks their DAVIS (template every 3 frames) or
YouTube-VOS (every 5) settings.
``--arch frtm`` converts the authors' released FRTM networks (``rn101_*.pth``,
``rn18_*.pth``): those files hold the segmentation network only, so the backbone
comes from torchvision's ImageNet ResNet of the same depth (``--backbone-weights``;
ResNet-101 or -18, chosen from the checkpoint); ``--fast`` takes their ``--fast``
iteration counts. See ``vosjax/models/torch_import_frtm.py``.

Reads ``.pth`` / ``.pt`` with ``torch.load(weights_only=True)`` (needs the torch extra)
or ``.safetensors`` with NumPy (no torch), maps the keys onto
``vosjax.models.backbones.make_backbone(arch, in_channels=N, stop_at=...)`` and writes

- ``DIR/variables``: an Orbax checkpoint of ``{"params", "batch_stats"}``;
- ``DIR/vosjax_backbone.json``: arch, in_channels, stop_at, source file and its
  sha256, and the converted / unmatched / unused / ignored key lists.

Load it with ``vosjax.models.torch_import.load_backbone_checkpoint(DIR)``. Exits 1
with a message on bad input (unknown extension, pickled objects, missing keys).
See ``vosjax/models/torch_import.py`` for the key and layout mapping.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

_SHOW = 10  # names listed per category on screen; the JSON has all of them
NETWORKS = ("stcn", "pcvos", "joint", "frtm")  # whole networks released by their authors (a vosjax bundle each)


def _parser() -> argparse.ArgumentParser:
    from vosjax.models import backbones

    p = argparse.ArgumentParser(
        prog="convert_torch_weights.py",
        description="Convert a torchvision-layout PyTorch backbone into a vosjax checkpoint.",
    )
    p.add_argument("--arch", required=True, choices=backbones.BACKBONES + NETWORKS)
    p.add_argument(
        "--input", required=True, type=pathlib.Path, help=".pth / .pt / .safetensors file"
    )
    p.add_argument("--output", required=True, type=pathlib.Path, help="output directory")
    p.add_argument(
        "--in-channels",
        type=int,
        default=3,
        help="input channels of the first conv; channels beyond the source's are zero-initialised",
    )
    p.add_argument(
        "--stop-at", default="s32", choices=backbones.STRIDES, help="last stage of the backbone"
    )
    p.add_argument(
        "--strip-prefix",
        default=None,
        help="key prefix to strip, e.g. 'module.' or 'module.backbone.'; 'auto' picks the prefix "
        "under which most backbone keys are found",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="keep backbone variables that have no source tensor at random initialisation",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="PRNG seed for variables left at initialisation"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing conversion in --output"
    )
    p.add_argument(
        "--memory-frames",
        type=int,
        default=None,
        help="--arch stcn / pcvos: memory capacity of the bundle in frames (default "
        "MEMORY_FRAMES of torch_import_stcn / torch_import_pcvos, enough for DAVIS / "
        "YouTube-VOS videos)",
    )
    p.add_argument(
        "--clip-length",
        type=int,
        default=None,
        help="--arch pcvos: frames per clip L (default 5; the authors' script also runs "
        "10, 15, 25); a memory frame ends every clip, PMM every 5 frames",
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=("davis", "ytvos"),
        help="--arch joint: the authors' inference settings to record (default davis)",
    )
    p.add_argument(
        "--backbone-weights",
        type=pathlib.Path,
        default=None,
        help="--arch frtm: torchvision's ImageNet ResNet-101 / -18 state_dict (their .pth files "
        "lack the backbone; without it the backbone is missing)",
    )
    p.add_argument("--fast", action="store_true", help="--arch frtm: their --fast GN / CG counts")
    return p


def _convert_network(args) -> int:
    from vosjax.errors import VosjaxError
    from vosjax.models import (
        torch_import_frtm,
        torch_import_joint,
        torch_import_pcvos,
        torch_import_stcn,
    )

    kwargs = {} if args.memory_frames is None else {"memory_frames": args.memory_frames}
    convert = torch_import_stcn.convert_stcn
    if args.dataset is not None and args.arch != "joint":
        print("convert_torch_weights: error: --dataset applies to --arch joint only", file=sys.stderr)
        return 1
    if (args.backbone_weights is not None or args.fast) and args.arch != "frtm":
        print("convert_torch_weights: error: --backbone-weights / --fast apply to --arch frtm only",
              file=sys.stderr)
        return 1
    if args.arch == "joint":
        if args.memory_frames is not None or args.clip_length is not None:
            print("convert_torch_weights: error: --arch joint takes --dataset, not "
                  "--memory-frames / --clip-length", file=sys.stderr)
            return 1
        convert = torch_import_joint.convert_joint
        kwargs = {"dataset": args.dataset or "davis"}
    elif args.arch == "frtm":
        if args.memory_frames is not None or args.clip_length is not None:
            print("convert_torch_weights: error: --memory-frames / --clip-length do not apply to "
                  "--arch frtm", file=sys.stderr)
            return 1
        convert = torch_import_frtm.convert_frtm
        kwargs = {"backbone": args.backbone_weights, "fast": args.fast}
    elif args.arch == "pcvos":
        convert = torch_import_pcvos.convert_pcvos
        if args.clip_length is not None:
            kwargs["clip_length"] = args.clip_length
    elif args.clip_length is not None:
        print("convert_torch_weights: error: --clip-length applies to --arch pcvos only", file=sys.stderr)
        return 1
    try:
        out, report = convert(
            args.input,
            args.output,
            allow_missing=args.allow_missing,
            seed=args.seed,
            overwrite=args.overwrite,
            **kwargs,
        )
    except VosjaxError as e:
        print(f"convert_torch_weights: error: {e}", file=sys.stderr)
        return 1
    print(f"converted {args.input} -> bundle {out}")
    print(f"  {len(report.converted)} source tensors used (source -> vosjax variable):")
    for src, ours in report.converted.items():
        print(f"    {src} -> {ours}")
    print(_listing("missing (left at initialisation)", report.unmatched))
    print(_listing("ignored", report.ignored))
    for note in report.notes:
        print(f"  note: {note}")
    print(f"  report: {out / torch_import_stcn.REPORT_FILE}")
    print(f"  run it: python -m vosjax.segment --checkpoint {out} --frames DAVIS_ROOT --masks DAVIS_ROOT/Annotations --out OUT")
    return 0


def _listing(title: str, names: list[str]) -> str:
    if not names:
        return f"  {title}: none"
    more = f" ... (+{len(names) - _SHOW}, see the JSON)" if len(names) > _SHOW else ""
    return f"  {title} ({len(names)}): {', '.join(names[:_SHOW])}{more}"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from vosjax.errors import VosjaxError
    from vosjax.models import torch_import

    args = _parser().parse_args(argv)
    if args.arch in NETWORKS:
        return _convert_network(args)
    try:
        state_dict = torch_import.read_state_dict(args.input)
        variables, report = torch_import.convert_state_dict(
            args.arch,
            state_dict,
            in_channels=args.in_channels,
            stop_at=args.stop_at,
            strip_prefix=args.strip_prefix,
            allow_missing=args.allow_missing,
            seed=args.seed,
        )
        out = torch_import.save_backbone_checkpoint(
            args.output, variables, report, source=args.input, overwrite=args.overwrite
        )
    except VosjaxError as e:
        print(f"convert_torch_weights: error: {e}", file=sys.stderr)
        return 1
    print(f"converted {args.input} -> {out}")
    print(
        f"  arch {report.arch}, in_channels {report.in_channels}, stop_at {report.stop_at}, "
        f"prefix {report.prefix!r}, {len(state_dict)} source tensors"
    )
    print(f"  converted: {len(report.converted)} tensors")
    print(_listing("unmatched (left at initialisation)", report.unmatched))
    print(_listing("unused source keys", report.unused))
    print(_listing("ignored", report.ignored))
    for note in report.zero_initialised + report.problems:
        print(f"  note: {note}")
    print(f"  description: {out / torch_import.METADATA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
