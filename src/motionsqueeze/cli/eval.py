"""``motionsqueeze eval CONFIG --checkpoint PATH``: accuracy of a trained model on a split."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1/top-5, mean class accuracy, confusion matrix, scores",
        description="Evaluate a checkpoint on the recipe's validation (or test) list with several views per "
        "video. Writes metrics.json, per_class.csv, confusion.png and scores.npz.",
    )
    p.add_argument("config", help="the YAML recipe the model was trained with (data section is used)")
    p.add_argument("--checkpoint", required=True, help="model file (.safetensors) or training checkpoint (.pt)")
    p.add_argument("--clips", type=int, default=None, help="temporal clips per video (default: the recipe's data.test_num_clips)")
    p.add_argument("--crops", type=int, choices=(1, 3), default=None, help="spatial crops per clip (default: data.test_num_crops)")
    p.add_argument("--test-segments", type=int, default=None,
                   help="frames per clip to test at (TSM's test_segments; default: the trained count)")
    p.add_argument("--fusion", choices=("logits", "softmax"), default=None,
                   help="fuse views by the mean of logits or of softmax probabilities (default: eval.fusion)")
    p.add_argument("--split", choices=("val", "test"), default="val", help="which list to evaluate (default val)")
    p.add_argument("--batch-size", type=int, default=None, help="videos per batch (default: eval.batch_size)")
    p.add_argument("--workers", type=int, default=None, help="data loading workers (default: train.workers, at most the CPU cores available)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval-<split>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    return p


def run(args) -> int:
    from pathlib import Path

    from ..engine.config import load_config
    from ..engine.evaluate import evaluate_checkpoint

    cfg = load_config(args.config, args.overrides)
    if args.clips is not None and args.clips < 1:
        raise ValueError(f"--clips must be at least 1, got {args.clips}")
    if args.fusion is not None:
        cfg.eval.fusion = args.fusion
    if args.batch_size is not None:
        cfg.eval.batch_size = args.batch_size
    if args.workers is not None:
        cfg.train.workers = args.workers
    else:
        import os

        # The recipe's count is sized for a training node; never more workers than cores here.
        cfg.train.workers = min(cfg.train.workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                else os.cpu_count() or 1)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / f"eval-{args.split}"
    keep = {o.split("=", 1)[0].strip()[len("data."):] for o in args.overrides if o.strip().startswith("data.")}
    report = evaluate_checkpoint(cfg, args.checkpoint, split=args.split, out_dir=out, clips=args.clips, crops=args.crops,
                                 keep=keep, test_segments=args.test_segments)
    print(f"{args.split}: {report.coverage()}; fusion {cfg.eval.fusion}")
    for problem in report.skipped[:10]:
        print(f"  skipped {problem}")
    if len(report.skipped) > 10:
        print(f"  ... and {len(report.skipped) - 10} more, all in {out / 'metrics.json'}")
    print(f"top-1 {report.top1:.2f}   top-5 {report.top5:.2f}   mean class accuracy {report.mean_class_acc:.2f}")
    print(f"results in {out}")
    return 0
