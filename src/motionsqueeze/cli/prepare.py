"""``motionsqueeze prepare DATASET --root DIR --out DIR``: lists from the official annotations."""

from __future__ import annotations

DATASET_NAMES = ["sthv1", "sthv2", "kinetics400", "hmdb51", "ucf101"]


def add_parser(sub):
    p = sub.add_parser(
        "prepare",
        help="turn a dataset's official annotation files into lists, class names and data.yaml",
        description="Read a public dataset's annotation files as distributed (layouts in "
        "docs/datasets.md) and write classes.txt, one list per split, missing_<split>.txt for "
        "annotated items not on disk, and data.yaml (the data section of a recipe). With "
        "--extract-frames, also decode every video into JPEG folders, in parallel and "
        "resumably: finished videos are skipped on a rerun.",
    )
    p.add_argument("dataset", choices=DATASET_NAMES)
    p.add_argument("--root", required=True, help="the dataset's media folder (videos or frame folders)")
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
    return p


def run(args) -> int:
    import sys

    from ..data.prepare import extract_frames, prepare, write_prepared

    if args.workers < 1 or not 1 <= args.quality <= 100:
        raise ValueError("--workers must be >= 1 and --quality in 1..100")
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
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(f"{video}\t{error}\n" for video, error in sorted(failures.items())))
        print(f"{len(failures)} videos could not be extracted and are left out of the lists; "
              f"see {path} (a rerun retries them)")
    if prepared.warnings:
        path = f"{args.out}/prepare_warnings.txt"
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in prepared.warnings))
        written.append(path)
    print("wrote " + ", ".join(written))
    if failures and not any(prepared.splits.values()):
        print(f"error: every video failed to extract ({len(failures)}); the lists are empty. The first "
              f"failure: {next(iter(sorted(failures.items())))[1]}", file=sys.stderr)
        return 1
    return 0
