"""``motionsqueeze predict CHECKPOINT VIDEO_OR_FRAME_DIR``: class names with probabilities."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser(
        "predict",
        help="classify videos or frame folders with a trained model",
        description="Classify one or more videos (mp4, webm, avi, ...) or JPEG frame folders with a model "
        "file (.safetensors) or a training checkpoint (.pt); prints the top classes with probabilities.",
    )
    p.add_argument("checkpoint", help="model file (.safetensors) or training checkpoint (.pt)")
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FRAME_DIR", help="video files or frame folders")
    p.add_argument("--topk", type=int, default=5, help="classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object per input")
    p.add_argument("--template", default=None,
                   help="frame file names of folders (default: the model's training data's, else {:05d}.jpg)")
    p.add_argument("--start-index", type=int, default=None,
                   help="number of the first frame file (default: the model's training data's, else 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    return p


def run(args) -> int:
    import sys

    from ..data.errors import DataError
    from ..engine.config import check_device
    from ..engine.evaluate import load_trained_model
    from ..engine.predict import predict_video

    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    check_device(args.device, "--device")
    model, _ = load_trained_model(args.checkpoint)
    extra = getattr(model, "extra", None) or {}
    template = args.template or extra.get("template") or "{:05d}.jpg"
    start_index = args.start_index if args.start_index is not None else extra.get("start_index") or 1
    failed = []
    for source in args.inputs:
        try:
            top = predict_video(model, source, topk=args.topk, template=template,
                                start_index=start_index, device=args.device)
        except (DataError, ValueError, FileNotFoundError) as exc:
            # One unreadable input does not stop the others.
            if len(args.inputs) == 1:
                raise
            failed.append(source)
            print(f"motionsqueeze predict: error: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"input": source, "predictions": top}))
            continue
        print(source)
        for row in top:
            print(f"  {row['rank']}. {row['class']:<50s} {row['probability'] * 100:6.2f}%")
    if failed:
        print(f"motionsqueeze predict: {len(failed)} of {len(args.inputs)} inputs could not be read: "
              + ", ".join(failed), file=sys.stderr)
        return 1
    return 0
