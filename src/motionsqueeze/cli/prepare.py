"""``motionsqueeze prepare DATASET --root DIR --out DIR``: lists from the official annotations."""

from __future__ import annotations

DATASET_NAMES = ["sthv1", "sthv2", "kinetics400", "hmdb51", "ucf101", "jester", "diving48"]
# Your own videos: a class-per-folder tree, or a table of path,label[,split] (data/prepare_custom.py).
CUSTOM = ["folder", "csv"]


def add_parser(sub):
    p = sub.add_parser(
        "prepare",
        help="turn a dataset's official annotation files into lists, class names and data.yaml",
        description="Read a public dataset's annotation files as distributed (layouts in "
        "docs/datasets.md) and write classes.txt, one list per split, missing_<split>.txt for "
        "annotated items not on disk, and data.yaml (the data section of a recipe). With "
        "--extract-frames, also decode every video into JPEG folders, in parallel and "
        "resumably: finished videos are skipped on a rerun. 'folder' (one folder per class below --root) and "
        "'csv FILE' (path,label[,split]) prepare your own videos and also write recipe.yaml.",
    )
    p.add_argument("dataset", choices=DATASET_NAMES + CUSTOM)
    p.add_argument("table", nargs="?", default=None, metavar="FILE",
                   help="for 'csv': the table with the columns path,label[,split]")
    p.add_argument("--root", default=None, help="the dataset's media folder (videos or frame folders); "
                   "for 'csv' the folder its paths are relative to (default: the table's folder)")
    p.add_argument("--annotations", default=None,
                   help="folder of the annotation files (default: --root); files are looked "
                   "for in it and in its direct sub-folders")
    p.add_argument("--out", required=True, help="folder for the lists, classes.txt and data.yaml")
    p.add_argument("--extract-frames", metavar="DIR", default=None,
                   help="decode the videos into JPEG folders under DIR and write frame lists")
    p.add_argument("--workers", type=int, default=4, help="parallel processes (default 4)")
    p.add_argument("--template", default="{:06d}.jpg",
                   help="frame file names for --extract-frames (default {:06d}.jpg, numbered from 1)")
    p.add_argument("--short-side", type=int, default=None,
                   help="resize extracted frames so that the shorter side has this many pixels")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of extracted frames (default 90)")
    g = p.add_argument_group("folder and csv (your own videos)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of each class's clips for val when there is no split (default 0.2)")
    g.add_argument("--test-fraction", type=float, default=0.0,
                   help="fraction of each class's clips for test when there is no split (default 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    g.add_argument("--group", default=None, metavar="REGEX",
                   help="clips whose paths give the same match (first capture group, else the whole "
                   "match) stay in one split, e.g. '^(.*)_c\\d+$' for UCF-style names")
    return p


def run(args) -> int:
    import sys

    from ..data.prepare import extract_frames, prepare, write_prepared
    from ..files import atomic_write_text

    if args.workers < 1 or not 1 <= args.quality <= 100:
        raise ValueError("--workers must be >= 1 and --quality in 1..100")
    if args.dataset in CUSTOM:
        prepared = _prepare_custom(args)
    else:
        if args.root is None or args.table is not None:
            raise ValueError(f"prepare {args.dataset} takes --root DIR and no FILE argument")
        prepared = prepare(args.dataset, args.root, args.annotations, workers=args.workers)
    for name, records in prepared.splits.items():
        missing = len(prepared.missing.get(name, ()))
        print(f"{name}: {len(records)} items" + (f", {missing} annotated but not found" if missing else ""))
    for line in prepared.warnings[:20]:
        print(f"warning: {line}")
    if len(prepared.warnings) > 20:
        print(f"warning: ... and {len(prepared.warnings) - 20} more, all in {args.out}/prepare_warnings.txt")
    failures = {}
    if args.extract_frames:
        prepared, failures, before = extract_frames(
            prepared, args.extract_frames, workers=args.workers, template=args.template,
            short_side=args.short_side, quality=args.quality, progress=True)
        total = len({r.path for rs in prepared.splits.values() for r in rs})
        print(f"frames: {total - before} videos extracted, {before} already done, {len(failures)} failed")
    written = write_prepared(prepared, args.out)
    if failures:
        path = f"{args.out}/extract_failures.txt"
        atomic_write_text(path, "".join(f"{video}\t{error}\n" for video, error in sorted(failures.items())))
        print(f"{len(failures)} videos could not be extracted and are left out of the lists; "
              f"see {path} (a rerun retries them)")
    if args.dataset in CUSTOM:
        written += _custom_extras(prepared, args)
    if prepared.warnings:
        path = f"{args.out}/prepare_warnings.txt"
        atomic_write_text(path, "".join(line + "\n" for line in prepared.warnings))
        written.append(path)
    print("wrote " + ", ".join(written))
    if failures and not any(prepared.splits.values()):
        print(f"error: every video failed to extract ({len(failures)}); the lists are empty. The first "
              f"failure: {next(iter(sorted(failures.items())))[1]}", file=sys.stderr)
        return 1
    return 0


def _prepare_custom(args):
    import os
    import sys

    from ..data.prepare_custom import prepare_csv, prepare_folder

    options = dict(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                   group=args.group, workers=args.workers, progress=sys.stderr.isatty())
    if args.dataset == "folder":
        if args.root is None or args.table is not None:
            raise ValueError("prepare folder takes --root DIR (a folder per class) and no FILE argument")
        prepared = prepare_folder(args.root, **options)
    else:
        if args.table is None:
            raise ValueError("prepare csv needs the table: motionsqueeze prepare csv FILE --out DIR [--root DIR]")
        prepared = prepare_csv(args.table, args.root, **options)
    print(f"{len(prepared.class_names)} classes, {prepared.format} items"
          + (f" (frames named like {prepared.template.format(prepared.start_index)!r})"
             if prepared.format == "frames" else ""))
    for name in prepared.empty_classes:
        print(f"class {name!r} has no readable clip: left out")
    if prepared.rejected:
        print(f"{len(prepared.rejected)} clips cannot be read and are left out (see rejected.txt), e.g. "
              f"{next(iter(sorted(prepared.rejected.values())))}")
    if prepared.ignored_count:
        print(f"{prepared.ignored_count} files are neither videos nor frame folders and were ignored, e.g. "
              + ", ".join(prepared.ignored[:3]))
    if prepared.ungrouped:
        print(f"--group matched no part of {prepared.ungrouped} paths: each of those is a group of its own")
    if prepared.config.get("flip") == "direction-aware":
        print("classes named as mirror images (left/right): clips of those are not flipped in training")
    args.recipe_name = os.path.basename(os.path.normpath(args.root if args.dataset == "folder"
                                                         else os.path.splitext(args.table)[0]))
    return prepared


def _custom_extras(prepared, args) -> list[str]:
    from ..data.prepare_custom import write_custom_extras

    written = write_custom_extras(prepared, args.out, args.recipe_name)
    print(f"train with: motionsqueeze train {written[-1]}")
    return written
