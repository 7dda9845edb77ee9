"""``motionsqueeze convert official-ms|official-tsm IN OUT --arch NAME --num-segments T``."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "convert",
        help="import a checkpoint of the authors' MotionSqueeze code or of the official TSM code",
        description="Convert a checkpoint saved by the authors' MotionSqueeze code (official-ms) or "
        "by the official TSM code (official-tsm) into a motionsqueeze model file (.safetensors "
        "with its configuration, see docs/weights.md). The file is read with "
        "weights_only=True; nothing in it is executed.",
    )
    p.add_argument("source", choices=["official-ms", "official-tsm"], help="which code saved the checkpoint")
    p.add_argument("input", help="checkpoint file (.pth / .pth.tar / .safetensors)")
    p.add_argument("output", help="model file to write (.safetensors)")
    p.add_argument("--arch", required=True, help="registered architecture, e.g. msnet_r50, tsm_r50 or tsm_mbv2 (official TSM MobileNetV2)")
    p.add_argument("--num-segments", type=int, required=True,
                   help="frames per clip T the checkpoint was trained with (not stored in it)")
    p.add_argument("--class-names", metavar="FILE",
                   help="class names: one per line (e.g. something-something-v1-labels.csv) or a "
                   "JSON list / {name: index} object")
    p.add_argument("--input-size", type=int, default=224, help="network input side in pixels (default 224)")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    return p


def run(args) -> int:
    from ..data.annotations import load_class_names
    from ..models.convert import convert_checkpoint, describe_conversion

    class_names = load_class_names(args.class_names) if args.class_names else None
    model = convert_checkpoint(
        args.input, args.output, args.source, arch=args.arch, num_segments=args.num_segments,
        class_names=class_names, input_size=args.input_size, overwrite=args.force,
    )
    print(f"read     {args.input}: {describe_conversion(model.card.provenance.converted_from)}")
    print(f"built    {args.arch} ({args.num_segments} frames, {model.num_classes} classes), "
          f"loaded strictly")
    print(f"wrote    {args.output}")
    return 0
