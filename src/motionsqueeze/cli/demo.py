"""``motionsqueeze demo``: TSN vs TSM vs MSNet on the built-in synthetic motion set (CPU)."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "demo",
        help="train TSN, TSM and MSNet on built-in synthetic motion clips (CPU, a few minutes) and report",
        description="Generate the synthetic motion set (the class is carried by motion only), train TSN, TSM "
        "and MSNet of the same small backbone on the CPU, evaluate them, print a table and write a report "
        "folder. Re-running on the same folder reuses finished runs.",
    )
    p.add_argument("--out", default="motionsqueeze-demo", help="report folder (default ./motionsqueeze-demo)")
    p.add_argument("--models", default=None, help="comma-separated model names (default tsn_tiny,tsm_tiny,msnet_tiny,msnet_tiny_causal)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the bundled 'synthetic' recipe, e.g. --set schedule.epochs=2")
    return p


def run(args) -> int:
    from ..demo import DEMO_MODELS, run_demo

    models = tuple(m.strip() for m in args.models.split(",")) if args.models else DEMO_MODELS
    run_demo(args.out, models, args.overrides)
    return 0
