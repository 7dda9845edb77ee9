"""``motionsqueeze fuse EVAL_DIR EVAL_DIR ...``: score fusion of several evaluations."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "fuse",
        help="fuse the scores of several eval outputs (ensembles) and report eval's metrics",
        description="Fuse the per-video scores of several `motionsqueeze eval` outputs of the same list "
        "(e.g. MSNet 8 + 16 frames, or two backbones) with a weight per model, and report top-1, top-5 and "
        "mean class accuracy as eval does. Writes metrics.json, per_class.csv, confusion.png and scores.npz.",
    )
    p.add_argument("inputs", nargs="+", metavar="EVAL_DIR", help="eval output folders (or their scores.npz)")
    p.add_argument("--weights", default=None,
                   help="comma-separated weight per input, e.g. 1,0.5 (default: equal weights)")
    p.add_argument("--fusion", choices=("softmax", "logits"), default="softmax",
                   help="weighted mean of probabilities (default) or of logits")
    p.add_argument("--out", default="fused", help="output folder (default ./fused)")
    return p


def run(args) -> int:
    from ..engine.ensemble import fuse_evaluations, load_eval_scores
    from ..engine.metrics import classification_report, write_report

    evals = [load_eval_scores(p) for p in args.inputs]
    weights = None
    if args.weights is not None:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise ValueError(f"--weights must be comma-separated numbers, got {args.weights!r}") from None
        if len(weights) != len(evals):
            raise ValueError(f"--weights gives {len(weights)} weights for {len(evals)} inputs")
    fused = fuse_evaluations(evals, weights, args.fusion)
    labels = evals[0].labels
    labelled = labels >= 0
    if not labelled.any():
        raise ValueError(f"{evals[0].path} has no labels; fuse needs labelled evaluations")
    k = fused.shape[1]
    names = evals[0].class_names or [f"class {i}" for i in range(k)]
    report = classification_report(fused[labelled], labels[labelled], k)
    rows = []
    for e, w in zip(evals, weights or [1.0] * len(evals)):
        single = classification_report(e.scores[labelled], labels[labelled], k)
        rows.append({"path": str(e.path), "weight": w, "top1": single.top1, "top5": single.top5,
                     "mean_class_acc": single.mean_class_acc})
    write_report(args.out, report, names, {"fusion": args.fusion, "inputs": rows}, fused.float().numpy(),
                 labels.numpy(), evals[0].indices.numpy(), title="fused scores")
    print(f"{'input':<50s} {'weight':>6s} {'top-1':>7s} {'top-5':>7s} {'mean cls':>8s}")
    for r in rows:
        print(f"{r['path'][-50:]:<50s} {r['weight']:6.2f} {r['top1']:7.2f} {r['top5']:7.2f} {r['mean_class_acc']:8.2f}")
    print(f"{'fused (' + args.fusion + ')':<50s} {'':>6s} {report.top1:7.2f} {report.top5:7.2f} {report.mean_class_acc:8.2f}")
    print(f"{report.count} videos; results in {args.out}")
    return 0
