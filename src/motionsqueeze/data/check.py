"""``check-data``: scan every entry of a list and report what would break training.

Problem kinds (:data:`~motionsqueeze.data.errors.KINDS`):

* ``malformed``: the line cannot be parsed;
* ``missing``: the folder or video does not exist, or frames are missing (a gap);
* ``unreadable``: a frame or video that cannot be opened or decoded;
* ``truncated``: fewer frames than the list (frame folders) or the container (videos) says;
* ``wrong-count``: a frame folder with more frames than the list says (a stale list);
* ``too-short``: fewer frames than ``min_frames``;
* ``mislabelled``: a label outside ``0..num_classes-1``, or a file inside a folder named
  after a different class than its label;
* ``outside-root``: an absolute path, or one climbing out of the root with ``..`` (training
  refuses it unless ``data.allow_outside_root`` is set).

By default a frame folder is listed and its first and last frames decoded, and a video is
opened, indexed and its first and last frames decoded; ``full=True`` decodes every frame.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from .annotations import VIDEO_EXTENSIONS, VideoRecord, leaves_root, load_class_names, scan_list
from .errors import DataError
from .readers import FrameFolderReader, VideoReader, _too_short, scan_frame_folder, start_index_hint
from .progress import progress as progress_bar

__all__ = ["Problem", "CheckReport", "check_list", "check_item", "Fingerprint", "fingerprint"]


@dataclass
class Problem:
    """One problem of one list line."""

    line: int
    path: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass
class CheckReport:
    """Outcome of :func:`check_list`: the list's ``format``, ``checked`` entries, their
    ``problems`` in line order and the ``good`` records (those without a problem)."""

    list_path: str
    format: str
    checked: int
    problems: list[Problem] = field(default_factory=list)
    good: list[VideoRecord] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def summary(self) -> str:
        bad = len({p.line for p in self.problems})
        if not bad:
            return f"{self.list_path}: {self.checked} entries checked, no problems"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.counts().items()))
        return f"{self.list_path}: {self.checked} entries checked, {bad} with problems ({kinds})"


@dataclass(frozen=True)
class _Job:
    path: str
    fmt: str
    num_frames: int | None
    template: str
    start_index: int
    min_frames: int
    full: bool


def check_item(job: _Job) -> list[tuple[str, str]]:
    """``[(kind, message), ...]`` for one entry (empty when it is fine)."""
    try:
        if job.fmt == "frames":
            return _check_folder(job)
        return _check_video(job)
    except DataError as exc:
        return [(exc.kind, str(exc))]


def _check_folder(job: _Job) -> list[tuple[str, str]]:
    if not os.path.isdir(job.path):
        kind = "missing" if not os.path.exists(job.path) else "unreadable"
        return [(kind, f"{job.path}: " + ("frame folder not found" if kind == "missing" else "not a folder"))]
    scan = scan_frame_folder(job.path, job.template, job.start_index)
    found, listed = scan.num_frames, job.num_frames
    if scan.missing:  # counts would only repeat the gap
        first = job.template.format(job.start_index + scan.missing[0])
        return [("missing", f"{job.path}: frame {first!r} is missing ({len(scan.missing)} gaps below "
                            "the last frame)")]
    out = []
    if found == 0:
        first = job.template.format(job.start_index)
        others = f"; it holds e.g. {scan.other_files}" if scan.other_files else ""
        return out + [("missing", f"{job.path}: no frame named {first!r}{others}")]
    if listed is not None and listed > found:
        hint = start_index_hint(job.path, job.template, job.start_index)
        out.append(("truncated", f"{job.path}: the list says {listed} frames but the folder has {found}{hint}"))
    elif listed is not None and listed < found:
        out.append(("wrong-count", f"{job.path}: the list says {listed} frames but the folder has {found}"))
    n = min(found, listed) if listed is not None else found
    if n < job.min_frames:
        out.append(("too-short", f"{job.path}: {n} frames, fewer than {job.min_frames}"))
    if n == 0:
        return out
    reader = FrameFolderReader(job.path, job.template, job.start_index, n)
    # Decoding every frame is --full's job, but an empty file costs one stat to find.
    empty = [f for f in (os.path.join(job.path, reader.frame_file(i)) for i in range(n)) if os.path.getsize(f) == 0]
    if empty:
        return out + [("unreadable", f"{job.path}: {len(empty)} empty frame file(s) (0 bytes), e.g. "
                                     f"{os.path.basename(empty[0])!r}; extract the frames again")]
    for chunk in _chunks(n, job.full):
        reader.read(chunk)
    return out


def _check_video(job: _Job) -> list[tuple[str, str]]:
    if os.path.isdir(job.path):
        return [("unreadable", f"{job.path}: is a folder, not a video file")]
    out = []
    with VideoReader(job.path) as reader:
        if reader.truncation:
            out.append(("truncated", f"{job.path}: {reader.truncation}"))
        if reader.num_frames < job.min_frames:
            out.append(("too-short", f"{job.path}: {reader.num_frames} frames, fewer than {job.min_frames}"))
        if job.full:
            count = sum(1 for _ in reader.iter_frames())
            if _too_short(count, reader.num_frames):
                out.append(("truncated", f"{job.path}: {reader.num_frames} frames indexed but only "
                                         f"{count} decode"))
        else:
            reader.read(sorted({0, reader.num_frames - 1}))
    return out


class _InProcess:
    """``ProcessPoolExecutor``'s ``map`` in this process (one worker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)


def _chunks(n: int, full: bool, size: int = 64):
    if not full:
        yield sorted({0, n - 1})
        return
    for a in range(0, n, size):
        yield list(range(a, min(n, a + size)))


def map_with_progress(fn, jobs: list, workers: int, progress: bool, desc: str, unit: str) -> list:
    """``[fn(job) for job in jobs]``, in ``workers`` processes when above 1, with progress output
    (a bar on a terminal, a plain line every 30 s in a batch job's log: :mod:`.progress`)."""

    bar = progress_bar(len(jobs), desc, unit, enabled=progress)
    results = []
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(jobs) > 1 else _InProcess() as pool:
        for found in pool.map(fn, jobs, chunksize=8):
            results.append(found)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return results


def _folder_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _label_problem(record: VideoRecord, names: list[str], path: str) -> tuple[str, str] | None:
    """A file in a folder named after another class than its label."""
    if record.label < 0:
        return None
    folder = _folder_key(os.path.basename(os.path.dirname(os.path.normpath(record.path))))
    by_key = {_folder_key(n): i for i, n in enumerate(names)}
    if folder and folder in by_key and by_key[folder] != record.label:
        k = by_key[folder]
        return ("mislabelled", f"{path}: label {record.label} ({names[record.label]!r}) but the file is "
                               f"in the folder of class {k} ({names[k]!r})")
    return None


def check_list(list_path: str, root: str = "", *, fmt: str | None = None, template: str = "{:05d}.jpg",
               start_index: int = 1, class_names: str | None = None, num_classes: int | None = None,
               min_frames: int = 1, full: bool = False, workers: int = 1, progress: bool = False,
               allow_outside_root: bool = False) -> CheckReport:
    """Check every entry of ``list_path`` (paths relative to ``root``).

    Args:
        fmt: ``"frames"``, ``"video"`` or ``None`` (guessed from the first line).
        template, start_index: frame file names (frame lists).
        class_names: class-names file (label range, class-folder check).
        num_classes: label range when there is no class-names file.
        min_frames: fewer frames is a ``too-short`` problem.
        full: decode every frame instead of the first and the last.
        workers: processes checking entries in parallel.
        progress: show a progress bar on stderr.
        allow_outside_root: do not report paths that leave ``root`` (``outside-root``).

    Raises:
        DataError: the list or class-names file itself cannot be read.
    """
    names = load_class_names(class_names) if class_names else None
    if names is not None:
        num_classes = len(names)
    fmt, records, bad_lines = scan_list(list_path, fmt, num_classes=num_classes)
    report = CheckReport(list_path=str(list_path), format=fmt, checked=len(records) + len(bad_lines))
    problems = [Problem(line, "", exc.kind, str(exc)) for line, exc in bad_lines]
    jobs = [_Job(os.path.join(root, r.path), fmt, r.num_frames, template, start_index, min_frames, full)
            for r in records]
    results = map_with_progress(check_item, jobs, workers, progress, "checking", "item")
    for record, job, found in zip(records, jobs, results):
        if names is not None:
            wrong = _label_problem(record, names, job.path)
            found = found + [wrong] if wrong else found
        if not allow_outside_root and leaves_root(record.path, root):
            found = found + [("outside-root", f"{record.path} leaves the root {root} (set "
                                              f"data.allow_outside_root: true if that is meant)")]
        problems.extend(Problem(record.line, record.path, kind, msg) for kind, msg in found)
        if not found:
            report.good.append(record)
    report.problems = sorted(problems, key=lambda p: p.line)
    return report


# --------------------------------------------------------------------------- fingerprint


@dataclass
class Fingerprint:
    """A short summary that two copies of a dataset share when they hold the same items.

    Attributes:
        source: the ``data.yaml`` (or recipe, or list) it was made from.
        format: ``"frames"`` or ``"video"``.
        class_names: names in index order (``None`` when unknown; labels are then indices).
        items: split -> number of items.
        per_class: split -> label -> number of items.
        frames: split -> frame count of each item (list counts for frame lists, the count
            found in the file for videos), in list order; a video that cannot be opened is
            left out and counted in ``unreadable``.
        unreadable: split -> videos that could not be opened to count their frames.
        item_hash: split (and ``"all"``) -> the first 16 hex digits of the SHA-256 of the
            sorted item ids, one per line; an item's id is the last component of its path
            without a video extension, so copies stored as videos or frame folders, flat or
            in class folders, hash alike. ``"all"`` hashes ``split/id`` lines.
        label_hash: the same over ``id<TAB>class name`` lines (class indices when there are
            no names), so that a different labelling or class order shows.
    """

    source: str
    format: str
    class_names: list[str] | None
    items: dict[str, int]
    per_class: dict[str, dict[int, int]]
    frames: dict[str, list[int]]
    unreadable: dict[str, int]
    item_hash: dict[str, str]
    label_hash: dict[str, str]

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)

    def format_text(self) -> str:
        """The table ``check-data --fingerprint`` prints."""
        import statistics

        splits = list(self.items)
        n_cls = len(self.class_names) if self.class_names else "?"
        lines = [f"fingerprint of {self.source} ({self.format}, {n_cls} classes)",
                 f"{'split':<8}{'items':>8}  {'frames min/median/max':<24}{'item hash':<18}label hash"]
        for s in splits + ["all"]:
            counts = [n for k in splits for n in self.frames[k]] if s == "all" else self.frames[s]
            items = sum(self.items.values()) if s == "all" else self.items[s]
            fr = f"{min(counts)}/{statistics.median(counts):g}/{max(counts)}" if counts else "-"
            bad = sum(self.unreadable.values()) if s == "all" else self.unreadable[s]
            fr += f" ({bad} unreadable)" if bad else ""
            lines.append(f"{s:<8}{items:>8}  {fr:<24}{self.item_hash[s]:<18}{self.label_hash[s]}")
        labels = sorted({lab for k in splits for lab in self.per_class[k]})
        width = max([len(self._name(lab)) for lab in labels] + [13])
        lines.append(f"{'items per class':<{width + 2}} " + " ".join(f"{s:>6}" for s in splits))
        for lab in labels:
            lines.append(f"  {self._name(lab):<{width}} " + " ".join(f"{self.per_class[s].get(lab, 0):>6}"
                                                                  for s in splits))
        every = [n for k in splits for n in self.frames[k]]
        if every:
            lines.append("frame counts (all splits):")
            bins = Counter(max(0, n).bit_length() for n in every)
            top = max(bins.values())
            for b in range(min(bins), max(bins) + 1):
                lo, hi = (0, 0) if b == 0 else (1 << (b - 1), (1 << b) - 1)
                bar = "#" * max(1 if bins[b] else 0, round(40 * bins[b] / top))
                lines.append(f"  {f'{lo}-{hi}':>11} {bar} {bins[b]}")
        return "\n".join(lines)

    def _name(self, label: int) -> str:
        if self.class_names and 0 <= label < len(self.class_names):
            return f"{label} {self.class_names[label]}"
        return str(label)


def _item_id(path: str) -> str:
    # NFC: a name copied through macOS (decomposed accents) must hash like the original.
    name = unicodedata.normalize("NFC", os.path.basename(os.path.normpath(path.replace("\\", "/"))))
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in VIDEO_EXTENSIONS else name


def _label_name(names: list[str] | None, label: int) -> str:
    return unicodedata.normalize("NFC", names[label]) if names and 0 <= label < len(names) else str(label)


def _digest(lines: list[str]) -> str:
    import hashlib
    return hashlib.sha256("".join(line + "\n" for line in sorted(lines)).encode("utf-8")).hexdigest()[:16]


def _video_frames(path: str) -> int | None:
    try:
        with VideoReader(path) as reader:
            return reader.num_frames
    except DataError:
        return None


def _fingerprint_sources(source: str, root: str | None, fmt: str | None, class_names: str | None):
    """``(root, format, class-names file, {split: list file})`` of a data.yaml, recipe or list."""
    if not source.lower().endswith((".yaml", ".yml")):
        return root or "", fmt, class_names, {os.path.splitext(os.path.basename(source))[0]: source}
    import yaml

    try:
        with open(source, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise DataError(f"{source}: file not found", "missing") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{source}: not valid YAML ({exc})", "malformed") from None
    data = raw.get("data", raw) if isinstance(raw, dict) else None
    lists = {s: data.get(f"{s}_list") for s in ("train", "val", "test")} if isinstance(data, dict) else {}
    lists = {s: p for s, p in lists.items() if p}
    if not lists:
        raise DataError(f"{source}: no train_list, val_list or test_list; give a data.yaml written by "
                        "`prepare`, a recipe, or a list file", "malformed")
    return (root if root is not None else data.get("root", ""), fmt or data.get("format"),
            class_names or data.get("class_names"), lists)


def fingerprint(source: str, root: str | None = None, *, fmt: str | None = None,
                class_names: str | None = None, workers: int = 1, progress: bool = False) -> Fingerprint:
    """Summarise a dataset: items per split and class, frame counts, hashes of the item ids.

    Args:
        source: a ``data.yaml`` written by ``prepare``, a recipe (its ``data`` section), or
            one list file (then a single split named after the file).
        root: folder the paths are relative to (default: the YAML's ``root``); only video
            lists are opened (to count frames), frame lists are not read from disk.
        fmt, class_names: override the YAML's (or give them for a list).
        workers: processes that open videos.
    """
    root, fmt, names_file, lists = _fingerprint_sources(source, root, fmt, class_names)
    names = load_class_names(names_file) if names_file else None
    fp = Fingerprint(source, fmt or "", names, {}, {}, {}, {}, {}, {})
    every = []
    for split, path in lists.items():
        split_fmt, records, bad = scan_list(path, fmt, num_classes=len(names) if names else None)
        if bad:
            raise bad[0][1]
        fp.format = split_fmt
        fp.items[split] = len(records)
        fp.per_class[split] = dict(sorted(Counter(r.label for r in records).items()))
        ids = [_item_id(r.path) for r in records]
        fp.item_hash[split] = _digest(ids)
        fp.label_hash[split] = _digest([f"{i}\t{_label_name(names, r.label)}" for i, r in zip(ids, records)])
        every += [(split, i, r) for i, r in zip(ids, records)]
    videos = [os.path.join(root, r.path) for _, _, r in every if r.num_frames is None]
    found_iter = iter(map_with_progress(_video_frames, videos, workers, progress, "counting frames", "video"))
    for split in lists:
        fp.frames[split], fp.unreadable[split] = [], 0
    for split, _, r in every:
        n = r.num_frames if r.num_frames is not None else next(found_iter)
        if n is None:
            fp.unreadable[split] += 1
        else:
            fp.frames[split].append(n)
    fp.item_hash["all"] = _digest([f"{s}/{i}" for s, i, _ in every])
    fp.label_hash["all"] = _digest([f"{s}/{i}\t{_label_name(names, r.label)}" for s, i, r in every])
    return fp
