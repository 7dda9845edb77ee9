"""``motionsqueeze demo``: TSN vs TSM vs MSNet on the built-in synthetic motion set (CPU)."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser(
        "demo",
        help="train TSN, TSM and MSNet on built-in synthetic motion clips (CPU, a few minutes) and report",
        description="Generate the synthetic motion set (the class is carried by motion only), train TSN, TSM "
        "and MSNet of the same small backbone on the CPU, evaluate them, print a table and write a report "
        "folder. Re-running on the same folder reuses finished runs.",
    )
    p.add_argument("--out", default="motionsqueeze-demo", help="report folder (default ./motionsqueeze-demo)")
    p.add_argument("--models", default=None, help="comma-separated registered model names, any backbone (default tsn_tiny,tsm_tiny,msnet_tiny; "
                   "e.g. tsn_mbv2_050,msnet_mbv2_050)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the bundled 'synthetic' recipe, e.g. --set schedule.epochs=2")
    return p


def run(args) -> int:
    from ..demo import DEMO_MODELS, run_demo
    from ..engine.preemption import PREEMPTED_EXIT_CODE, Preempted
    from ..engine.run_lock import RunFolderBusyError

    models = tuple(m.strip() for m in args.models.split(",")) if args.models else DEMO_MODELS
    try:
        run_demo(args.out, models, args.overrides)
    except Preempted as exc:
        print(f"motionsqueeze demo: {exc}\n(the demo resumes by itself: run the same demo command again, "
              f"finished runs in {args.out} are reused)", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except RunFolderBusyError as exc:
        print(f"motionsqueeze demo: error: {exc}", file=sys.stderr)
        return 2
    return 0
