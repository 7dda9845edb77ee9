"""``motionsqueeze flops MODEL``: GFLOPs and parameters, total and for MotionSqueeze."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser(
        "flops",
        help="count GFLOPs (1 multiply-add = 1 FLOP) and parameters of a model",
        description="Count the cost of one clip: GFLOPs (one multiply-add = one FLOP, the "
        "convention of the TSM and MotionSqueeze papers, correlation included) and parameters, "
        "total and for the MotionSqueeze part.",
    )
    p.add_argument("model", help="registered model name (see `motionsqueeze flops --list`)", nargs="?")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--classes", type=int, default=174, help="classifier outputs (default 174)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    return p


def run(args) -> int:
    import torch

    from ..models import create_model, list_models, measure_complexity

    if args.list or args.model is None:
        print("\n".join(list_models()))
        return 0 if args.list else 2
    if args.frames < 1 or args.size < 32:
        raise ValueError(f"--frames must be >= 1 and --size >= 32, got {args.frames} and {args.size}")
    with torch.device("meta"):
        model = create_model(args.model, num_classes=args.classes, num_segments=args.frames)
    c = measure_complexity(model, frames=args.frames, size=args.size)
    if args.json:
        print(json.dumps({"model": args.model, "gflops": round(c.gflops, 4), "params": c.params,
                          "ms_gflops": round(c.ms_gflops, 4), "ms_params": c.ms_params}))
        return 0
    print(f"model       {args.model}  ({args.frames} frames x {args.size}x{args.size}, "
          f"{args.classes} classes)")
    print(f"GFLOPs      {c.gflops:.3f}  (MotionSqueeze {c.ms_gflops:.3f})")
    print(f"params      {c.params:,}  (MotionSqueeze {c.ms_params:,})")
    return 0
