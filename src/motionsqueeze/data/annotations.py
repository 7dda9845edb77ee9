"""Annotation lists and class-name files.

Two list formats, one item per line, paths relative to a dataset root:

* frame folders (``"frames"``): ``PATH NUM_FRAMES LABEL``, e.g. ``100218 47 86`` (the
  TSN/TSM convention; ``NUM_FRAMES`` counts the JPEG files of the folder);
* videos (``"video"``): ``PATH LABEL``, e.g. ``abseiling/0347ZoDXyP0_000095_000105.mp4 0``.

``LABEL`` is a 0-based class index. It may be left out in a list for unlabelled inference
(every line of the file then leaves it out; the record gets ``label = -1``).

Paths may contain spaces: fields are taken from the right, so ``my clip 12 3`` is the folder
``my clip`` with 12 frames and label 3. A path whose last word is a number would be
ambiguous; write such lists with tabs between the fields (``write_list`` does so whenever a
path contains white space), a tab-separated line is split on tabs only. Blank lines and lines
starting with ``#`` are ignored. Line numbers in messages are 1-based.

Class-name files hold one class name per line, line ``k`` (from 0) naming class ``k``; a
``.json`` file may hold a list of names or an object ``{name: index}`` (the
Something-Something V2 label file).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Iterable

from ..files import atomic_write_text
from .errors import DataError

__all__ = [
    "LIST_FORMATS",
    "VIDEO_EXTENSIONS",
    "VideoRecord",
    "parse_list_line",
    "leaves_root",
    "read_list",
    "scan_list",
    "write_list",
    "guess_list_format",
    "load_class_names",
    "write_class_names",
]

LIST_FORMATS = ("frames", "video")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ogv")
_INT = re.compile(r"-?\d+")
# A video file name followed by more numbers: "a.mp4 1 2" is a malformed line, not a path.
_TRAILING_NUMBER = re.compile(r"\s-?\d+$")
_EXTRA_NUMBERS = re.compile(r".*(" + "|".join(re.escape(e) for e in VIDEO_EXTENSIONS) + r")(\s+-?\d+)+",
                            re.IGNORECASE)


@dataclass(frozen=True)
class VideoRecord:
    """One line of an annotation list.

    Attributes:
        path: folder or video file, relative to the dataset root (absolute paths are kept).
        label: 0-based class index; -1 when the list has no labels.
        num_frames: frames in the folder (frame lists); ``None`` for video lists.
        line: 1-based line number in the list file (0 for records built in code).
    """

    path: str
    label: int = -1
    num_frames: int | None = None
    line: int = 0


def leaves_root(path: str, root: str) -> bool:
    """Whether a list path points outside ``root``: absolute, or climbing out with ``..``.
    Without a root (``""``) paths are taken as written and nothing is outside."""
    if not root:
        return False
    if os.path.isabs(path):
        return True
    parts = os.path.normpath(path).split(os.sep)
    return parts[0] == os.pardir


def _where(source: str, line: int) -> str:
    return f"{source}:{line}" if line else source


def _split(text: str, fmt: str) -> tuple[str, list[str]]:
    """``(path, trailing integer fields)`` of one line; see the module docstring."""
    if "\t" in text:
        fields = text.split("\t")
        return fields[0], [f.strip() for f in fields[1:]]
    wanted = 2 if fmt == "frames" else 1
    for k in range(wanted, 0, -1):
        parts = text.rsplit(None, k)
        if len(parts) == k + 1 and all(_INT.fullmatch(p) for p in parts[1:]):
            return parts[0], parts[1:]
    return text, []


def parse_list_line(text: str, fmt: str, *, source: str = "<list>", line: int = 0) -> VideoRecord:
    """Parse one non-blank line of a ``fmt`` list (``"frames"`` or ``"video"``).

    Raises:
        DataError: naming ``source:line``, the expected layout and the offending text.
    """
    return _parse(text, fmt, source, line)[0]


def _parse(text: str, fmt: str, source: str, line: int) -> tuple[VideoRecord, bool]:
    """``(record, whether the line has a label field)``."""
    if fmt not in LIST_FORMATS:
        raise DataError(f"unknown list format {fmt!r}; use one of {LIST_FORMATS}")
    text = text.rstrip("\r\n")
    path, fields = _split(text, fmt)
    layout = "PATH NUM_FRAMES [LABEL]" if fmt == "frames" else "PATH [LABEL]"
    n_min, n_max = (1, 2) if fmt == "frames" else (0, 1)
    if not (path.strip() and n_min <= len(fields) <= n_max and all(_INT.fullmatch(f) for f in fields)):
        raise DataError(
            f"{_where(source, line)}: malformed line {text!r}: a {fmt} list line is '{layout}' "
            f"(integers separated by spaces or tabs)", "malformed"
        )
    if fmt == "video" and _EXTRA_NUMBERS.fullmatch(path.strip()):
        raise DataError(f"{_where(source, line)}: malformed line {text!r}: too many fields after the "
                        "video file name; a video list line is 'PATH [LABEL]'", "malformed")
    if fmt == "video" and "\t" not in text and _TRAILING_NUMBER.search(path.strip()):
        # "path 110 0" in a video list is a frame-list line, not the path "path 110".
        raise DataError(
            f"{_where(source, line)}: malformed line {text!r}: more number fields than a video list "
            f"line has ('{layout}'); is this a frame list (PATH NUM_FRAMES LABEL)? If the path itself "
            "ends in a number, separate the fields with tabs", "malformed")
    if fmt == "frames" and path.strip().lower().endswith(VIDEO_EXTENSIONS):
        raise DataError(f"{_where(source, line)}: {path!r} is a video file but this is read as a frame "
                        "list (PATH NUM_FRAMES LABEL); use format 'video'", "malformed")
    values = [int(f) for f in fields]
    num_frames = values.pop(0) if fmt == "frames" else None
    label = values[0] if values else -1
    if num_frames is not None and num_frames < 0:
        raise DataError(f"{_where(source, line)}: NUM_FRAMES must be >= 0, got {num_frames} in {text!r}",
                        "malformed")
    if label < -1:
        raise DataError(
            f"{_where(source, line)}: label must be a class index >= 0 (or -1 for unlabelled), "
            f"got {label} in {text!r}", "malformed"
        )
    return VideoRecord(path=path, label=label, num_frames=num_frames, line=line), bool(values)


def read_list(
    path: str | os.PathLike, fmt: str | None = None, *, num_classes: int | None = None
) -> list[VideoRecord]:
    """Read an annotation list.

    Args:
        path: the list file.
        fmt: ``"frames"``, ``"video"`` or ``None`` to guess from the first line
            (:func:`guess_list_format`).
        num_classes: when given, every label must be below it.

    Returns:
        The records in file order (``line`` set).

    Raises:
        DataError: missing, unreadable or empty file, malformed line, label out of range, or
            a file that mixes labelled and unlabelled lines; the message names ``file:line``.
    """
    _, records, problems = scan_list(path, fmt, num_classes=num_classes)
    if problems:
        raise problems[0][1]
    return records


def scan_list(
    path: str | os.PathLike, fmt: str | None = None, *, num_classes: int | None = None
) -> tuple[str, list[VideoRecord], list[tuple[int, DataError]]]:
    """Read a list, collecting bad lines instead of stopping at the first.

    Returns:
        ``(format, good records, [(line, DataError), ...])``.

    Raises:
        DataError: only for a missing, unreadable or empty file.
    """
    source = os.fspath(path)
    lines = _read_lines(source)
    if not lines:
        raise DataError(f"{source}: the list has no entries")
    if fmt is None:
        fmt = guess_list_format(lines[0][1])
    records, problems = [], []
    labelled = None  # whether the first good line has a label
    for i, text in lines:
        try:
            r, has_label = _parse(text, fmt, source, i)
        except DataError as exc:
            problems.append((i, exc))
            continue
        if labelled is None:
            labelled, first = has_label, i
        if has_label != labelled:
            what, this = ("has a label", "does not") if labelled else ("has no label", "does")
            problems.append((i, DataError(
                f"{source}:{i}: line {first} {what} but this line {this}: a list is labelled "
                f"throughout or not at all (write -1 for an unknown label; if a path ends in a "
                f"number, separate the fields with tabs)", "malformed")))
        elif num_classes is not None and r.label >= num_classes:
            problems.append((i, DataError(
                f"{source}:{i}: label {r.label} is out of range for {num_classes} classes "
                f"(labels are 0-based); check the class-names file or the list", "mislabelled")))
        else:
            records.append(r)
    return fmt, records, problems


def _read_lines(source: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of the non-blank, non-comment lines of a UTF-8 file."""
    try:
        with open(source, encoding="utf-8-sig") as f:
            raw = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"{source}: list file not found") from None
    except IsADirectoryError:
        raise DataError(f"{source}: is a directory, expected a list file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    return [(i, t) for i, t in enumerate(raw, 1) if t.strip() and not t.lstrip().startswith("#")]


def guess_list_format(line: str) -> str:
    """``"video"`` if the path of ``line`` has a video file extension, else ``"frames"``."""
    path, _ = _split(line.rstrip("\r\n"), "video")
    return "video" if path.strip().lower().endswith(VIDEO_EXTENSIONS) else "frames"


def write_list(path: str | os.PathLike, records: Iterable[VideoRecord], fmt: str) -> int:
    """Write records as a ``fmt`` list (atomically: a temporary file, then a rename).

    Fields are separated by a space, or by tabs on lines whose path contains white space.
    Labels of -1 are left out only if every record is unlabelled. Returns the number of lines.
    """
    if fmt not in LIST_FORMATS:
        raise DataError(f"unknown list format {fmt!r}; use one of {LIST_FORMATS}")
    records = list(records)
    labelled = any(r.label >= 0 for r in records)
    out = []
    for r in records:
        if not r.path or any(c in r.path for c in "\t\r\n") or r.path != r.path.strip():
            raise DataError(f"cannot write path {r.path!r} to a list: it is empty, has a tab or a "
                            "line break, or starts or ends with white space")
        fields = [r.path]
        if fmt == "frames":
            if r.num_frames is None:
                raise DataError(f"cannot write {r.path!r} to a frame list: num_frames is unknown")
            fields.append(str(r.num_frames))
        if labelled:
            fields.append(str(r.label))
        sep = "\t" if any(c.isspace() for c in r.path) else " "
        out.append(sep.join(fields) + "\n")
    atomic_write_text(path, "".join(out))
    return len(out)


def load_class_names(path: str | os.PathLike) -> list[str]:
    """Class names in index order from a text file (one per line) or a ``.json`` file.

    Raises:
        DataError: missing file, an empty line between names, a duplicate name, or a JSON
            object whose indices are not exactly ``0..K-1``.
    """
    source = os.fspath(path)
    if source.lower().endswith(".json"):
        data = read_json(source)
        if isinstance(data, dict):
            try:
                by_index = {int(v): str(k) for k, v in data.items()}
            except (TypeError, ValueError):
                raise DataError(f"{source}: expected an object {{class name: index}}") from None
            if sorted(by_index) != list(range(len(data))):
                raise DataError(f"{source}: class indices must be exactly 0..{len(data) - 1}")
            names = [by_index[i] for i in range(len(data))]
        elif isinstance(data, list) and all(isinstance(x, str) for x in data):
            names = [x.strip() for x in data]
        else:
            raise DataError(f"{source}: expected a list of class names or an object {{name: index}}")
    else:
        try:
            with open(source, encoding="utf-8-sig") as f:
                raw = [t.strip() for t in f.read().splitlines()]
        except FileNotFoundError:
            raise DataError(f"{source}: class-names file not found") from None
        while raw and not raw[-1]:
            raw.pop()
        for i, t in enumerate(raw, 1):
            if not t:
                raise DataError(f"{source}:{i}: empty line; the file must hold one class name per "
                                "line, line k+1 naming class k")
        names = raw
    if not names:
        raise DataError(f"{source}: no class names")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"{source}: class name {name!r} appears twice (classes {seen[name]} and {i})")
        seen[name] = i
    return names


def read_json(path: str | os.PathLike):
    """Parse a JSON file; errors name the file (and line) as DataError."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{source}: file not found", "missing") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})", "malformed") from None


def write_class_names(path: str | os.PathLike, names: Iterable[str]) -> None:
    """Write one class name per line (the format :func:`load_class_names` reads)."""
    names = list(names)
    bad = [n for n in names if not n.strip() or "\n" in n]
    if bad:
        raise DataError(f"cannot write class names {bad[:3]!r}: empty or multi-line")
    atomic_write_text(path, "".join(n.strip() + "\n" for n in names))
