"""``motionsqueeze check-data LIST --root DIR``: find unusable entries before training."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "check-data",
        help="scan an annotation list and report missing, unreadable, truncated, too-short or "
        "mislabelled entries",
        description="Open every entry of an annotation list and report, with its line number, "
        "each one that is malformed, missing, unreadable, truncated, too short or mislabelled. "
        "Exits with status 1 when any problem is found (0 otherwise).",
    )
    p.add_argument("list", help="annotation list (PATH NUM_FRAMES LABEL or PATH LABEL per line)")
    p.add_argument("--root", default=None, help="folder the list's paths are relative to (default: from the data.yaml that prepare wrote "
                   "next to the list, else the current folder); --format, --template, --start-index and "
                   "--classes default to that file's values too")
    p.add_argument("--format", choices=["frames", "video"], default=None,
                   help="list format (default: guessed from the first line)")
    p.add_argument("--template", default=None,
                   help="frame file names of frame folders (default {:05d}.jpg)")
    p.add_argument("--start-index", type=int, default=None,
                   help="number of the first frame file (default 1)")
    p.add_argument("--classes", default=None,
                   help="class-names file: labels must be in range and match class folders")
    p.add_argument("--num-classes", type=int, default=None,
                   help="label range when there is no class-names file")
    p.add_argument("--min-frames", type=int, default=1,
                   help="report entries with fewer frames (default 1; use the clip length "
                   "to find videos that will repeat frames)")
    p.add_argument("--full", action="store_true",
                   help="decode every frame (slow) instead of the first and last")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--write-good", metavar="FILE", default=None,
                   help="also write the entries without problems to FILE, a list of the same format")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept absolute paths and paths that climb out of --root with '..' (as "
                   "data.allow_outside_root does); reported as outside-root otherwise")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--fingerprint", action="store_true",
                   help="instead of checking, print a short summary to compare two copies of a dataset: "
                   "items per split and class, frame-count histogram, hashes of the sorted item ids. "
                   "LIST may then be a data.yaml written by prepare (all its splits) or a recipe")
    p.add_argument("--json", action="store_true", help="with --fingerprint: print it as JSON")
    return p


def run(args) -> int:
    from ..data.annotations import write_list
    from ..data.check import check_list

    if args.workers < 1 or args.min_frames < 0:
        raise ValueError("--workers must be >= 1 and --min-frames >= 0")
    if args.fingerprint:
        return _fingerprint(args)
    _defaults_from_data_yaml(args)
    report = check_list(
        args.list, args.root, fmt=args.format, template=args.template, start_index=args.start_index,
        class_names=args.classes, num_classes=args.num_classes, min_frames=args.min_frames,
        full=args.full, workers=args.workers, progress=not args.quiet,
        allow_outside_root=args.allow_outside_root,
    )
    if not args.quiet:
        for p in report.problems:
            print(f"{args.list}:{p.line}: {p.kind}: {p.message}")
    if args.write_good:
        n = write_list(args.write_good, report.good, report.format)
        print(f"wrote {n} good entries to {args.write_good}")
    print(report.summary())
    return 1 if report.problems else 0


def _fingerprint(args) -> int:
    import json
    import sys

    from ..data.check import fingerprint

    fp = fingerprint(args.list, args.root or None, fmt=args.format, class_names=args.classes,
                     workers=args.workers, progress=sys.stderr.isatty() and not args.quiet)
    print(json.dumps(fp.to_dict(), ensure_ascii=False) if args.json else fp.format_text())
    return 0
def _defaults_from_data_yaml(args) -> None:
    """Options not given are taken from the ``data.yaml`` that ``prepare`` wrote next to the
    list (root, format, frame names, class names), then from the built-in defaults."""
    import os

    import yaml

    path = os.path.join(os.path.dirname(os.path.abspath(args.list)), "data.yaml")
    found = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            found = yaml.safe_load(f) or {}
        used = []
        for option, key in (("root", "root"), ("format", "format"), ("template", "template"),
                            ("start_index", "start_index"), ("classes", "class_names")):
            if getattr(args, option) is None and found.get(key) is not None:
                setattr(args, option, found[key])
                used.append(key)
        if used and not args.quiet:
            print(f"using {', '.join(used)} from {path}")
    for option, default in (("root", ""), ("template", "{:05d}.jpg"), ("start_index", 1)):
        if getattr(args, option) is None:
            setattr(args, option, default)
