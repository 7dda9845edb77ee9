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
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from .annotations import VideoRecord, leaves_root, load_class_names, scan_list
from .errors import DataError
from .readers import FrameFolderReader, VideoReader, _too_short, scan_frame_folder, start_index_hint

__all__ = ["Problem", "CheckReport", "check_list", "check_item"]


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


def _chunks(n: int, full: bool, size: int = 64):
    if not full:
        yield sorted({0, n - 1})
        return
    for a in range(0, n, size):
        yield list(range(a, min(n, a + size)))


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
    from tqdm import tqdm

    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(tqdm(pool.map(check_item, jobs, chunksize=8), total=len(jobs),
                                disable=not progress, desc="checking", unit="item"))
    else:
        results = [check_item(j) for j in tqdm(jobs, disable=not progress, desc="checking", unit="item")]
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
