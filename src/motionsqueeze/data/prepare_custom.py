"""``prepare folder`` and ``prepare csv``: lists for your own videos.

* :func:`prepare_folder`: a class-per-folder tree, ``ROOT/<class>/.../<clip>.mp4`` (or a
  frame folder per clip), optionally split into ``ROOT/train``, ``ROOT/val`` and
  ``ROOT/test`` sub-trees; without them a seeded split by fraction.
* :func:`prepare_csv`: a table with the columns ``path``, ``label`` and optionally ``split``.

Both return a :class:`CustomPrepared` that :func:`~motionsqueeze.data.prepare.write_prepared`
writes like a public dataset's lists (``classes.txt``, ``train.txt``, ``val.txt``,
``test.txt``, ``data.yaml``); :func:`write_custom_extras` adds ``rejected.txt`` (clips that
cannot be read, with the reason) and ``recipe.yaml``, a training recipe for the lists.

Rules (also in ``docs/datasets.md``):

* an item is a video file (any extension of ``VIDEO_EXTENSIONS``, containers may be mixed)
  or a folder that directly holds numbered images (``00001.jpg``, ``img_0001.png``, ...);
  other folders are searched below, so clips may be nested at any depth in their class
  folder; other files are ignored and counted. Videos and frame folders cannot be mixed
  (one list format per dataset): extract the videos' frames first, or keep one kind.
* classes are the class folders (or labels) that hold at least one readable item, sorted by
  name (all-integer labels numerically); an empty class folder is reported and left out.
* every item is opened and its first and last frames decoded (``check-data``'s check, in
  ``workers`` processes); one that cannot be read is left out and listed in ``rejected.txt``.
* a seeded split takes, in each class, ``round(fraction x groups)`` groups (at least one when
  the fraction is above 0 and the class has two groups or more, and never all of them) for
  val (and test). A group is the items whose paths give the same key under ``group``
  (a regular expression searched in the path relative to the root without its extension:
  the first capture group if it has one, else the whole match; a path it does not match
  is a group of its own), so that clips cut from one source video never straddle splits.
"""

from __future__ import annotations

import csv
import importlib.resources
import math
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..files import atomic_write_text
from .annotations import VIDEO_EXTENSIONS, VideoRecord
from .check import _Job, check_item, map_with_progress
from .errors import DataError
from .prepare import DOCS, Prepared, _check_root
from .readers import scan_frame_folder
from .transforms import direction_partners

__all__ = ["CustomPrepared", "prepare_folder", "prepare_csv", "write_custom_extras", "SPLITS"]

SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "test": "test", "testing": "test"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_NUMBERED = re.compile(r"(.*?)(\d+)(\.[A-Za-z]+)")
# Problems that make an item unusable; "truncated" and "too-short" clips still train.
_FATAL = ("missing", "unreadable", "malformed")
RECIPE_TEMPLATE = "custom_msnet_r50_8f"


@dataclass
class CustomPrepared(Prepared):
    """A :class:`Prepared` with what was left out and why.

    Attributes:
        rejected: item path (relative to ``media_root``) -> why it cannot be used.
        ignored: files that are neither videos nor frames, up to 5 examples.
        ignored_count: how many such files there were.
        empty_classes: class folders (or labels) without a usable item, left out.
        ungrouped: items the ``group`` pattern did not match (each its own group).
    """

    rejected: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    ignored_count: int = 0
    empty_classes: list[str] = field(default_factory=list)
    ungrouped: int = 0


@dataclass
class _Item:
    path: str                 # relative to the media root, "/"-separated
    label: str                # class name
    split: str | None = None  # None: decided by the seeded split
    kind: str = "video"       # "video" or "frames"


# --------------------------------------------------------------------------- finding items


def _is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def _images(names: list[str]) -> list[str]:
    return [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]


def _walk_class(root: str, rel: str, label: str, split: str | None, items: list, ignored: list) -> None:
    """Add the items below ``root/rel`` (a class folder) to ``items``."""
    for folder, dirs, files in os.walk(os.path.join(root, rel)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = os.path.relpath(folder, root).replace(os.sep, "/")
        if _images(files) and here != rel:
            items.append(_Item(here, label, split, "frames"))
            dirs[:] = []  # a frame folder is one clip; do not look inside it again
            continue
        for f in sorted(files):
            path = f"{here}/{f}"
            if _is_video(f):
                items.append(_Item(path, label, split, "video"))
            elif not f.startswith("."):
                ignored.append(path + (" (images directly in a class folder: put each clip's frames "
                                       "in a folder of its own)" if f in _images(files) else ""))


def _class_folders(root: str) -> list[str]:
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    for d in names:
        if d != d.strip():
            raise DataError(f"{os.path.join(root, d)!r}: a class folder name starts or ends with white space; "
                            "rename it (class names are written one per line)", "malformed")
    return names


def _split_trees(root: str) -> dict[str, str]:
    """``{split: sub-folder}`` when ``root`` holds ``train/`` and ``val/`` or ``test/``."""
    found = {}
    for d in sorted(os.listdir(root)):
        split = _SPLIT_NAMES.get(d.lower())
        if split and os.path.isdir(os.path.join(root, d)):
            if split in found:
                raise DataError(f"{root}: both {found[split]!r} and {d!r} look like the {split} split; keep one")
            found[split] = d
    return found if "train" in found and len(found) > 1 else {}


def prepare_folder(root: str, *, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0,
                   group: str | None = None, workers: int = 4, progress: bool = False) -> CustomPrepared:
    """Lists for a class-per-folder tree (see the module docstring for the rules).

    Args:
        root: ``ROOT/<class>/...`` or ``ROOT/{train,val,test}/<class>/...``.
        val_fraction, test_fraction: fractions of each class's groups for val and test when
            there are no split sub-trees.
        seed: seed of the split (the same seed and files give the same split).
        group: regular expression giving each item's group key (see the module docstring).
        workers: processes that open the items.
        progress: progress bar on stderr.
    """
    _check_root(root)
    trees = _split_trees(root)
    items, ignored, classes = [], [], set()
    for split, sub in (trees.items() if trees else [(None, "")]):
        base = os.path.join(root, sub) if sub else root
        for cls in _class_folders(base):
            if not sub and _SPLIT_NAMES.get(cls.lower()):
                raise DataError(f"{root}: has a {cls!r} folder but no train/ and val/ (or test/) pair; "
                                f"put every split's class folders under its own sub-folder, or rename {cls!r}")
            classes.add(cls)
            _walk_class(root, f"{sub}/{cls}" if sub else cls, cls, split, items, ignored)
    for f in sorted(os.listdir(root)):
        if os.path.isfile(os.path.join(root, f)) and not f.startswith("."):
            ignored.append(f + (" (a video outside any class folder)" if _is_video(f) else ""))
        elif trees and f not in trees.values() and not f.startswith("."):
            ignored.append(f + "/ (a folder beside the split folders " + ", ".join(trees.values()) + ")")
    if not items:
        raise DataError(f"{root}: no videos or frame folders found in class folders; expected "
                        f"ROOT/<class>/<clip>.mp4 or ROOT/<class>/<clip>/00001.jpg; {DOCS}", "missing")
    return _assemble(items, root, "folder", sorted(classes), val_fraction, test_fraction, seed, group,
                     workers, progress, ignored)


def prepare_csv(path: str, root: str | None = None, *, val_fraction: float = 0.2, test_fraction: float = 0.0,
                seed: int = 0, group: str | None = None, workers: int = 4, progress: bool = False
                ) -> CustomPrepared:
    """Lists from a table ``path,label[,split]`` (comma, semicolon or tab separated; a header
    row naming ``path`` and ``label`` may give the columns in any order). Paths are relative to
    ``root`` (default: the table's folder); ``label`` is a class name; ``split`` is
    ``train``, ``val`` or ``test`` on every row, or the column is absent and the split seeded.
    """
    root = root if root is not None else (os.path.dirname(os.path.abspath(path)))
    _check_root(root)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: table not found", "missing") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [(i, [c.strip() for c in r]) for i, r in enumerate(csv.reader(text.splitlines(), dialect), 1)
            if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise DataError(f"{path}: the table has no rows; expected 'path,label[,split]'", "malformed")
    header = [c.lower() for c in rows[0][1]]
    if "path" in header and "label" in header:
        cols = {name: header.index(name) for name in ("path", "label", "split") if name in header}
        rows = rows[1:]
    else:
        cols = {"path": 0, "label": 1, **({"split": 2} if len(rows[0][1]) > 2 else {})}
    items, missing, labels = [], [], set()
    for line, cells in rows:
        where = f"{path}:{line}"
        if len(cells) <= max(cols.values()):
            raise DataError(f"{where}: expected {len(cols)} columns ({', '.join(cols)}), got {cells!r}", "malformed")
        rel, label = cells[cols["path"]].replace("\\", "/"), cells[cols["label"]]
        if not rel or not label:
            raise DataError(f"{where}: empty path or label in {cells!r}", "malformed")
        labels.add(label)
        split = None
        if "split" in cols:
            split = _SPLIT_NAMES.get(cells[cols["split"]].lower())
            if split is None:
                raise DataError(f"{where}: split {cells[cols['split']]!r} is not train, val or test "
                                "(leave the column out for a seeded split)", "malformed")
        full = os.path.join(root, rel)
        if not os.path.exists(full):
            missing.append((split or "train", rel))
            continue
        items.append(_Item(rel, label, split, "frames" if os.path.isdir(full) else "video"))
    names = sorted(labels)
    if not items:
        raise DataError(f"{path}: none of its {len(rows)} paths exists below {root}; paths are relative to "
                        "--root (default: the table's folder)", "missing")
    if items[0].split is not None and not any(it.split == "train" for it in items):
        raise DataError(f"{path}: no row of the 'train' split has a file on disk", "missing")
    out = _assemble(items, root, "csv", names, val_fraction, test_fraction, seed, group, workers, progress, [])
    for split, rel in missing:
        out.missing.setdefault(split, []).append(rel)
    return out


# --------------------------------------------------------------------------- assembling


def _frame_template(folder: str) -> tuple[str, int]:
    """``(template, first number)`` of the numbered images of ``folder``."""
    numbered = [m for m in (_NUMBERED.fullmatch(n) for n in _images(os.listdir(folder))) if m]
    if not numbered:
        raise DataError(f"{folder}: no numbered image files (e.g. 00001.jpg)", "missing")
    (prefix, ext), _ = Counter((m.group(1), m.group(3)) for m in numbered).most_common(1)[0]
    digits = [m.group(2) for m in numbered if (m.group(1), m.group(3)) == (prefix, ext)]
    widths = {len(d) for d in digits}
    padded = len(widths) == 1 and any(d.startswith("0") for d in digits)
    field_ = "{:0%dd}" % widths.pop() if padded else "{:d}"
    template = prefix.replace("{", "{{").replace("}", "}}") + field_ + ext
    return template, min(int(d) for d in digits)


def _probe(root: str, items: list[_Item], template: str, start: int, workers: int, progress: bool):
    """``(frame counts, {path: reason})``: open every item as ``check-data`` does."""
    counts = {}
    jobs = []
    for it in items:
        full = os.path.join(root, it.path)
        n = None
        if it.kind == "frames":
            n = scan_frame_folder(full, template, start).num_frames
            counts[it.path] = n
        jobs.append(_Job(full, it.kind, n, template, start, 1, False))
    results = map_with_progress(check_item, jobs, workers, progress, "opening", "clip")
    rejected = {}
    for it, found in zip(items, results):
        fatal = [msg for kind, msg in found if kind in _FATAL]
        if fatal or counts.get(it.path) == 0:
            rejected[it.path] = "; ".join(fatal) or f"{it.path}: no frame named like {template.format(start)!r}"
    return counts, rejected


def _assemble(items: list[_Item], root: str, dataset: str, names: list[str], val_fraction: float,
              test_fraction: float, seed: int, group: str | None, workers: int, progress: bool,
              ignored: list[str]) -> CustomPrepared:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction}: each must be "
                        "in [0, 1) and their sum below 1")
    kinds = {it.kind for it in items}
    if len(kinds) > 1:
        video = next(it.path for it in items if it.kind == "video")
        frames = next(it.path for it in items if it.kind == "frames")
        raise DataError(f"{root}: mixes videos (e.g. {video!r}) and frame folders (e.g. {frames!r}); a dataset "
                        "is one or the other: extract the videos' frames into folders of the same numbering, "
                        "or keep only the videos", "malformed")
    fmt = kinds.pop()
    template, start = "{:05d}.jpg", 1
    unnumbered = {}
    if fmt == "frames":
        found = {}
        for it in items:
            try:
                found.setdefault(_frame_template(os.path.join(root, it.path)), it.path)
            except DataError as exc:
                unnumbered[it.path] = str(exc)
        items = [it for it in items if it.path not in unnumbered]
        if len(found) > 1:
            (a, pa), (b, pb) = list(found.items())[:2]
            raise DataError(f"{root}: frame folders are numbered differently ({pa!r}: {a[0]!r} from {a[1]}, "
                            f"{pb!r}: {b[0]!r} from {b[1]}); rename the frames so that all folders agree",
                            "malformed")
        if found:
            template, start = next(iter(found))
    counts, rejected = _probe(root, items, template, start, workers, progress)
    rejected.update(unnumbered)
    good = [it for it in items if it.path not in rejected]
    if not good:
        raise DataError(f"{root}: none of the {len(rejected)} clips can be read, e.g. "
                        f"{next(iter(rejected.values()))}", "unreadable")
    used = {it.label for it in good}
    classes = sorted((n for n in names if n in used), key=_class_sort_key(names))
    out = CustomPrepared(dataset, classes, {}, fmt, root, template=template, start_index=start,
                         config=_flip_config(classes), rejected=rejected, ignored=ignored[:5],
                         ignored_count=len(ignored), empty_classes=[n for n in names if n not in used])
    index = {n: i for i, n in enumerate(classes)}
    if good and good[0].split is None:
        assignment, out.ungrouped = _seeded_split(good, classes, val_fraction, test_fraction, seed, group)
    else:
        assignment = {it.path: it.split for it in good}
    for split in SPLITS:
        records = [VideoRecord(it.path, index[it.label], counts.get(it.path)) for it in good
                   if assignment[it.path] == split]
        if records or split == "train":
            out.splits[split] = records
    return out


def _flip_config(classes: list[str]) -> dict:
    """Plain flip, unless some classes are mirror images of each other by name ("Swipe left" /
    "Swipe right"): then never flip those (the cautious choice; ``flip_direction: swap``
    flips them and swaps their labels)."""
    if direction_partners(classes):
        return {"flip": "direction-aware", "flip_direction": "skip"}
    return {"flip": "plain"}


def _class_sort_key(names: list[str]):
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return int
    return None


def _group_key(path: str, pattern: re.Pattern | None) -> tuple[str, bool]:
    stem = os.path.splitext(path)[0] if _is_video(path) else path
    m = pattern.search(stem) if pattern else None
    if m is None:
        return stem, False
    return (m.group(1) if pattern.groups else m.group(0)), True


def _seeded_split(items: list[_Item], classes: list[str], val_fraction: float, test_fraction: float,
                  seed: int, group: str | None) -> tuple[dict[str, str], int]:
    """``({path: split}, items the pattern did not match)``; see the module docstring."""
    try:
        pattern = re.compile(group) if group else None
    except re.error as exc:
        raise DataError(f"--group {group!r} is not a regular expression ({exc})") from None
    groups: dict[str, list[_Item]] = defaultdict(list)
    unmatched = 0
    for it in items:
        key, matched = _group_key(it.path, pattern)
        unmatched += pattern is not None and not matched
        groups[key].append(it)
    by_class: dict[str, list[str]] = defaultdict(list)
    for key in sorted(groups):
        # A group whose clips have several classes goes with its most common one.
        label = Counter(it.label for it in groups[key]).most_common(1)[0][0]
        by_class[label].append(key)
    assignment = {}
    for cls in classes:
        keys = by_class.get(cls, [])
        # One generator per class, so adding a class does not reshuffle the others.
        random.Random(f"{seed}:{cls}").shuffle(keys)
        n_val, n_test = (_take(f, len(keys)) for f in (val_fraction, test_fraction))
        while n_val + n_test >= len(keys) and n_val + n_test > 0:  # keep one group for training
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        for k, key in enumerate(keys):
            split = "val" if k < n_val else "test" if k < n_val + n_test else "train"
            for it in groups[key]:
                assignment[it.path] = split
    return assignment, unmatched


def _take(fraction: float, n: int) -> int:
    if fraction <= 0:
        return 0
    return max(1 if n >= 2 else 0, math.floor(fraction * n + 0.5))


# --------------------------------------------------------------------------- writing


def write_custom_extras(prepared: CustomPrepared, out: str, name: str) -> list[str]:
    """Write ``rejected.txt`` (when something was left out) and ``recipe.yaml``, the bundled
    ``custom_msnet_r50_8f`` recipe with the ``data`` section of ``out/data.yaml`` and the run
    folder ``runs/<name>``. Call after :func:`~motionsqueeze.data.prepare.write_prepared`."""
    import yaml

    written = []
    if prepared.rejected:
        path = os.path.join(out, "rejected.txt")
        atomic_write_text(path, "".join(f"{p}\t{why}\n" for p, why in sorted(prepared.rejected.items())))
        written.append(path)
    with open(os.path.join(out, "data.yaml"), encoding="utf-8") as f:
        data = yaml.safe_load(f)
    # The bundled recipes are package data; read the template without importing the engine.
    template = importlib.resources.files("motionsqueeze") / "configs" / f"{RECIPE_TEMPLATE}.yaml"
    recipe = yaml.safe_load(template.read_text(encoding="utf-8"))
    recipe["data"] = {**recipe["data"], **data}
    recipe["out"] = f"runs/{name}"
    path = os.path.join(out, "recipe.yaml")
    atomic_write_text(path, f"# Training recipe for the lists in this folder, written by `motionsqueeze prepare "
                      f"{prepared.dataset}`\n# from the bundled recipe {RECIPE_TEMPLATE} (its comments say "
                      "what to change). Train: motionsqueeze train " + path + "\n"
                      + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    written.append(path)
    return written
