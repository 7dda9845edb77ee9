"""``motionsqueeze train CONFIG``: train a model from a YAML recipe."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train a model from a YAML recipe (single process or under torchrun)",
        description="Train a model from a YAML recipe (see configs/). Launch under torchrun for several "
        "GPUs or nodes; rank 0 writes the run folder.",
    )
    p.add_argument("config", help="YAML recipe, e.g. configs/sthv1_msnet_r50_8f.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=0.02 --set train.batch_size=16 (repeatable)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto' continues from the run folder's last checkpoint (if any); or a checkpoint path")
    p.add_argument("--out", default=None, help="run folder (default: the recipe's 'out', else runs/<recipe name>)")
    return p


def run(args) -> int:
    from ..engine import NonFiniteLossError, fit, load_config

    cfg = load_config(args.config, args.overrides)
    try:
        result = fit(cfg, run_dir=args.out, resume=args.resume)
    except NonFiniteLossError as exc:
        print(f"motionsqueeze train: stopped: {exc}", file=sys.stderr)
        return 3
    if result.is_main and result.best is not None:
        print(f"best {result.best['metric']} {result.best['value']:.2f} at epoch {result.best['epoch']}; "
              f"run folder {result.run_dir}")
    return 0
