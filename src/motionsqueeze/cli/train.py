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
    p.add_argument("--allow-change", dest="allow_changes", action="append", default=[], metavar="KEY[,KEY...]",
                   help="with --resume: recipe keys (or whole sections, e.g. optim) that may differ from the "
                   "checkpoint's recipe; the changes are logged in the run folder (repeatable)")
    p.epilog = ("exit codes: 0 done; 2 bad input or the run folder is in use; 3 training diverged (NaN/inf); "
                "75 stopped by a stop signal after saving a resumable checkpoint (requeue with --resume auto)")
    return p


def run(args) -> int:
    from ..engine import NonFiniteLossError, fit, load_config
    from ..engine.preemption import PREEMPTED_EXIT_CODE, Preempted
    from ..engine.run_lock import RunFolderBusyError

    cfg = load_config(args.config, args.overrides)
    allow = [k.strip() for item in args.allow_changes for k in item.split(",") if k.strip()]
    try:
        result = fit(cfg, run_dir=args.out, resume=args.resume, allow_changes=allow)
    except NonFiniteLossError as exc:
        print(f"motionsqueeze train: stopped: {exc}", file=sys.stderr)
        return 3
    except Preempted as exc:
        print(f"motionsqueeze train: {exc}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except RunFolderBusyError as exc:
        print(f"motionsqueeze train: error: {exc}", file=sys.stderr)
        return 2
    if result.is_main and result.best is not None:
        print(f"best {result.best['metric']} {result.best['value']:.2f} at epoch {result.best['epoch']}; "
              f"run folder {result.run_dir}")
    return 0
