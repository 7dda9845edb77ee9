"""``motionsqueeze extract-features CHECKPOINT INPUTS... --out DIR``: features for many videos."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser(
        "extract-features",
        help="write per-clip or per-frame/per-stage features of videos (resumable)",
        description="Write features of a trained model for videos, frame folders, folders of them or a list: "
        "per clip (pre-logits averaged over views) or per frame and stage (including MotionSqueeze's "
        "displacement and confidence), one .npz / .npy / .safetensors file per input. Files already written "
        "are kept, so a rerun continues an interrupted run; unreadable inputs are reported and skipped.",
    )
    p.add_argument("checkpoint", help="model file (.safetensors) or training checkpoint (.pt)")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="videos, frame folders, or folders holding them")
    p.add_argument("--list", dest="list_file", default=None, help="text file with one input path per line")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--level", choices=("clip", "frame"), default="clip",
                   help="clip: pre-logits averaged over views (default); frame: per frame and stage")
    p.add_argument("--stages", default=None,
                   help="frame level: comma-separated arrays to keep, e.g. res3,motion_res3 (default: all)")
    p.add_argument("--format", choices=("npz", "npy", "safetensors"), default="npz", help="file format (default npz)")
    p.add_argument("--clips", type=int, default=1, help="temporal clips per video at clip level (default 1)")
    p.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per clip (default 1)")
    p.add_argument("--test-segments", type=int, default=None,
                   help="frames per clip (default: the trained count)")
    p.add_argument("--template", default="{:05d}.jpg", help="frame file names of folders (default {:05d}.jpg)")
    p.add_argument("--start-index", type=int, default=1, help="number of the first frame file (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    return p


def run(args) -> int:
    from ..engine.config import check_device
    from ..models.weights.model_file import load_trained_model
    from ..engine.features import extract_features
    from ..engine.inputs import gather_inputs

    check_device(args.device, "--device")
    if args.clips < 1:
        raise ValueError(f"--clips must be at least 1, got {args.clips}")
    inputs = gather_inputs(args.inputs, args.list_file, template=args.template, start_index=args.start_index)
    model = load_trained_model(args.checkpoint, test_segments=args.test_segments)
    model.to(args.device)
    names = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    s = extract_features(model, inputs, args.out, level=args.level, names=names, fmt=args.format, clips=args.clips,
                         crops=args.crops, template=args.template, start_index=args.start_index,
                         checkpoint=args.checkpoint, progress=True)
    for source, reason in s.failed:
        print(f"skipped: {reason}" if source in reason else f"skipped {source}: {reason}", file=sys.stderr)
    print(f"{s.done} written, {s.existing} already there, {len(s.failed)} skipped; index in {args.out}/index.csv")
    return 1 if s.failed else 0
