"""``prepare``: turn each public dataset's own annotation files into our lists.

Every ``prepare_<dataset>(root, annotations=None)`` reads the files as distributed (layouts
in ``docs/datasets.md``) and returns a :class:`Prepared`: class names, the records of each
split, and the annotated items whose media is not on disk (Kinetics always has some).
:func:`extract_frames` optionally turns the videos into JPEG frame folders, in parallel and
resumably; :func:`write_prepared` writes ``classes.txt``, one list per split, a
``missing_<split>.txt`` where media is missing, and ``data.yaml`` (a ``DataConfig``).

Class orders follow common practice so that published indices match: Something-Something
V1 sorted by name (TSM's order; the authors' direction-dependent classes 86, 87, 93, 94,
166, 167 are indices in it), V2 in the order of its label file, Kinetics-400 and HMDB-51
sorted by name, UCF-101 in the order of ``classInd.txt``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from .annotations import VIDEO_EXTENSIONS, VideoRecord, load_class_names, read_json, write_class_names, write_list
from ..files import atomic_write_text
from .errors import DataError
from .readers import VideoReader, scan_frame_folder
from .progress import progress as progress_bar
from .readers import check_template

__all__ = ["Prepared", "DATASETS", "prepare", "extract_frames", "write_prepared"]

DOCS = "see docs/datasets.md for the expected layout"
# Written into a folder of extracted frames (the settings used); prepare never indexes it.
EXTRACTION_SETTINGS = ".extraction.json"


@dataclass
class Prepared:
    """Lists of one dataset, ready to write.

    Attributes:
        dataset: name (``"sthv1"``, ...).
        class_names: names in index order.
        splits: list name (``"train"``, ``"val"``, ``"train_split1"``, ...) -> records.
        format: ``"frames"`` or ``"video"``.
        media_root: folder the record paths are relative to.
        template, start_index: frame file names (frame lists).
        missing: list name -> annotated items whose media was not found.
        config: extra ``DataConfig`` settings for ``data.yaml`` (list names of the default
            train/val/test splits, flip policy).
        warnings: one line per item that is listed differently from its media (e.g. a frame
            folder cut at a gap in its numbering).
    """

    dataset: str
    class_names: list[str]
    splits: dict[str, list[VideoRecord]]
    format: str
    media_root: str
    template: str = "{:05d}.jpg"
    start_index: int = 1
    missing: dict[str, list[str]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _find(annotations: str, name: str, *, required: bool = True) -> str | None:
    """``annotations/name`` or ``annotations/*/name``."""
    candidates = [os.path.join(annotations, name)]
    if os.path.isdir(annotations):
        candidates += [os.path.join(annotations, d, name) for d in sorted(os.listdir(annotations))
                       if os.path.isdir(os.path.join(annotations, d))]
    for c in candidates:
        if os.path.exists(c):
            return c
    if required:
        raise DataError(f"{name} not found in {annotations} or its sub-folders; {DOCS}", "missing")
    return None


def _subdir(root: str, name: str) -> str:
    """``root/name`` when the download's top folder is there, else ``root``."""
    inner = os.path.join(root, name)
    return inner if os.path.isdir(inner) else root


def _check_root(root: str) -> None:
    if not os.path.isdir(root):
        raise DataError(f"{root}: dataset root not found or not a folder; {DOCS}", "missing")


def _lines(path: str) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8-sig") as f:
        return [(i, t.strip()) for i, t in enumerate(f, 1) if t.strip()]


def _class_index(names: list[str], name: str, where: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise DataError(f"{where}: class {name!r} is not in the class list", "mislabelled") from None


# --------------------------------------------------------------------------- datasets

# Something-Something: direction-dependent classes are not flipped (the authors' choice).
_SS_FLIP = {"flip": "direction-aware", "flip_direction": "skip"}


# Something-Something V2 label files: the 20BN release, then the current download, which ships
# ``labels/labels.json``, ``labels/train.json``, ... and ``test-answers.csv``.
_SS_V2_LABELS = ["something-something-v2-labels.json", "labels.json"]


def _find_any(annotations: str, names: list[str], *, required: bool = True) -> str | None:
    """The first of ``names`` that :func:`_find` finds."""
    for name in names:
        path = _find(annotations, name, required=False)
        if path is not None:
            return path
    if required:
        raise DataError(f"{' or '.join(names)} not found in {annotations} or its sub-folders; {DOCS}", "missing")
    return None


def _ss_splits(annotations: str, version: str, ext: str, prefix: str = "something-something"):
    """``(split, file)`` of the Something-Something (or Jester) split files; the test file is optional."""
    for split, suffix in (("train", "train"), ("val", "validation"), ("test", "test")):
        names = [f"{prefix}-{version}-{suffix}.{ext}"]
        if version == "v2":
            names.append(f"{suffix}.{ext}")
        path = _find_any(annotations, names, required=split != "test")
        if path is not None:
            yield split, path


def prepare_sthv1(root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """Something-Something V1: JPEG folders ``<id>/00001.jpg`` and ``id;class`` CSV files."""
    return _prepare_20bn_frames("sthv1", "something-something", root, annotations, workers, dict(_SS_FLIP))


def _prepare_20bn_frames(dataset: str, prefix: str, root: str, annotations: str | None, workers: int,
                         config: dict) -> Prepared:
    """The V1 layout of Something-Something and Jester: ``20bn-<prefix>-v1/<id>/00001.jpg``,
    ``<prefix>-v1-labels.csv`` and ``id;class`` split files; classes sorted by name."""
    _check_root(root)
    ann = annotations or root
    names = sorted(t for _, t in _lines(_find(ann, f"{prefix}-v1-labels.csv")))
    frames_root = _subdir(root, f"20bn-{prefix}-v1")
    out = Prepared(dataset, names, {}, "frames", frames_root, config=config)
    for split, path in _ss_splits(ann, "v1", "csv", prefix):
        rows = []
        for i, text in _lines(path):
            vid, _, cls = text.partition(";")
            if not vid or (split != "test" and not cls):
                raise DataError(f"{path}:{i}: expected 'ID;CLASS NAME', got {text!r}", "malformed")
            rows.append((vid, _class_index(names, cls, f"{path}:{i}") if cls else -1))
        scans = _count_frames(frames_root, [v for v, _ in rows], "{:05d}.jpg", 1, workers)
        counts = [s.num_frames if s else 0 for s in scans]
        out.warnings += [f"{split}: {v}: {_gap_note(s)}" for (v, _), s in zip(rows, scans) if s and s.missing]
        out.splits[split] = [VideoRecord(v, label, n) for (v, label), n in zip(rows, counts) if n]
        out.missing[split] = [v for (v, _), n in zip(rows, counts) if not n]
    return out


def _count_frames(root: str, folders: list[str], template: str, start: int, workers: int) -> list:
    """:class:`FolderScan` of each folder (``None`` when missing); listing folders is
    I/O-bound, so threads."""
    def count(folder: str):
        try:
            return scan_frame_folder(os.path.join(root, folder), template, start)
        except DataError:
            return None
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(count, folders))


def _gap_note(scan) -> str:
    first = scan.missing[0] + 1  # frame files are numbered from 1
    return (f"frame {first:05d}.jpg is missing: listed with the {scan.num_frames} frames before the gap, "
            f"{scan.last + 1 - scan.num_frames - len(scan.missing)} frames after it are left out")


def prepare_sthv2(root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """Something-Something V2: ``<id>.webm`` and the JSON label and split files."""
    _check_root(root)
    ann = annotations or root
    names = load_class_names(_find_any(ann, _SS_V2_LABELS))
    answers = _ss_test_answers(ann, names)
    videos = _subdir(root, "20bn-something-something-v2")
    present = set(os.listdir(videos))
    out = Prepared("sthv2", names, {}, "video", videos, config=dict(_SS_FLIP))
    for split, path in _ss_splits(ann, "v2", "json"):
        records, missing = [], []
        for k, item in enumerate(read_json(path)):
            try:
                vid = str(item["id"])
                label = answers.get(vid, -1) if split == "test" else -1
                if split != "test":
                    label = _class_index(names, item["template"].replace("[", "").replace("]", ""),
                                         f"{path} item {k}")
            except (KeyError, TypeError, AttributeError):
                raise DataError(f"{path} item {k}: expected an object with 'id' and 'template', "
                                f"got {item!r:.80}", "malformed") from None
            file = f"{vid}.webm"
            if file in present:
                records.append(VideoRecord(file, label))
            else:
                missing.append(file)
        out.splits[split], out.missing[split] = records, missing
    return out


def _ss_test_answers(annotations: str, names: list[str]) -> dict[str, int]:
    """Labels of the V2 test set from ``test-answers.csv`` (``id;class name``), if present."""
    path = _find(annotations, "test-answers.csv", required=False)
    if path is None:
        return {}
    answers = {}
    for i, text in _lines(path):
        vid, _, cls = text.partition(";")
        if not vid or not cls:
            raise DataError(f"{path}:{i}: expected 'ID;CLASS NAME', got {text!r}", "malformed")
        answers[vid.strip()] = _class_index(names, cls.strip(), f"{path}:{i}")
    return answers


def _index_videos(root: str) -> dict[str, list[str]]:
    """File stem -> sorted paths relative to ``root`` of the videos below it, skipping
    folders of extracted frames (marked by :data:`EXTRACTION_SETTINGS`)."""
    found: dict[str, list[str]] = {}
    for folder, dirs, files in os.walk(root):
        if EXTRACTION_SETTINGS in files:
            dirs[:] = []
            continue
        dirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, []).append(os.path.relpath(os.path.join(folder, f), root))
    return found


def _pick_clip(paths: list[str], split: str, label: str | None) -> str:
    """One of several clips with the same name: the one in this split's folder, then in the
    label's class folder, then the first in sorted order."""
    split_dirs = {"train": ("train",), "val": ("val", "validate", "validation"), "test": ("test",)}[split]
    def key(name: str) -> str:
        return re.sub(r"[^0-9a-z]", "", name.lower())

    def score(path: str) -> tuple:
        parts = [key(p) for p in path.replace(os.sep, "/").split("/")[:-1]]
        return (not any(p in split_dirs for p in parts), not (label and key(label) in parts), path)
    return min(paths, key=score)


# CSV names: DeepMind's archive and the CVDF mirror, the ActivityNet crawler, mmaction's script.
_KINETICS_CSV = {
    split: [f"{split_name}.csv" for split_name in names]
    + [f"kinetics-400_{n}.csv" for n in names] + [f"kinetics_{n}.csv" for n in names]
    for split, names in (("train", ["train"]), ("val", ["validate", "val"]), ("test", ["test"]))
}


def prepare_kinetics400(root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """Kinetics-400: ``<youtube_id>_<start:06d>_<end:06d>.mp4`` (in class folders or flat) and
    the CSV files ``label,youtube_id,time_start,time_end,split``."""
    _check_root(root)
    ann = annotations or root
    videos = _index_videos(root)
    tables = {}
    for split, files in _KINETICS_CSV.items():
        path = _find_any(ann, files, required=split != "test")
        if path is not None:
            tables[split] = (path, _read_csv(path, ["youtube_id", "time_start", "time_end"]))
    names = sorted({row["label"] for _, row in tables["train"][1]})
    out = Prepared("kinetics400", names, {}, "video", root)
    for split, (path, rows) in tables.items():
        records, missing = [], []
        for line, row in rows:
            try:
                stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            except ValueError:
                raise DataError(f"{path}:{line}: time_start and time_end must be numbers", "malformed") from None
            label = _class_index(names, row["label"], f"{path}:{line}") if row.get("label") else -1
            # Some copies name clips by the YouTube id alone.
            paths = videos.get(stem) or videos.get(row["youtube_id"])
            if paths:
                rel = _pick_clip(paths, split, row.get("label"))
                if len(paths) > 1:
                    out.warnings.append(f"{split}: {stem}: {len(paths)} files have this name ({', '.join(paths)}); "
                                        f"listed {rel}")
                records.append(VideoRecord(rel, label))
            else:
                missing.append(stem)
        out.splits[split], out.missing[split] = records, missing
    return out


def _read_csv(path: str, columns: list[str]) -> list[tuple[int, dict]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in columns if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(f"{path}:1: header lacks {absent}; expected "
                            "'label,youtube_id,time_start,time_end,split'", "malformed")
        return [(reader.line_num, row) for row in reader]


def prepare_hmdb51(root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """HMDB-51: ``<class>/<video>.avi`` and ``testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt``."""
    _check_root(root)
    ann = annotations or root
    splits_dir = _find(ann, "testTrainMulti_7030_splits", required=False) or ann
    suffix = "_test_split{}.txt"
    files = sorted(f for f in os.listdir(splits_dir) if f.endswith(suffix.format(1)))
    if not files:
        raise DataError(f"no '<class>_test_split1.txt' files in {splits_dir}; {DOCS}", "missing")
    names = sorted(f[: -len(suffix.format(1))] for f in files)
    out = Prepared("hmdb51", names, {}, "video", root,
                   config={"train_list": "train_split1", "val_list": "val_split1"})
    for k in (1, 2, 3):
        lists = {f"train_split{k}": [], f"val_split{k}": []}
        missing = {name: [] for name in lists}
        for label, cls in enumerate(names):
            path = os.path.join(splits_dir, cls + suffix.format(k))
            if not os.path.exists(path):
                raise DataError(f"{path}: split file not found; {DOCS}", "missing")
            for i, text in _lines(path):
                parts = text.split()
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    raise DataError(f"{path}:{i}: expected '<video>.avi <0|1|2>', got {text!r}", "malformed")
                if parts[1] == "0":
                    continue
                name = f"{'train' if parts[1] == '1' else 'val'}_split{k}"
                rel = f"{cls}/{parts[0]}"
                if os.path.exists(os.path.join(root, rel)):
                    lists[name].append(VideoRecord(rel, label))
                else:
                    missing[name].append(rel)
        out.splits.update(lists)
        out.missing.update(missing)
    return out


def prepare_ucf101(root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """UCF-101: ``<Class>/v_<Class>_gXX_cYY.avi`` and ``ucfTrainTestlist/`` (``classInd.txt``,
    ``trainlist0{1,2,3}.txt`` with 1-based labels, ``testlist0{1,2,3}.txt``)."""
    _check_root(root)
    ann = annotations or root
    class_file = _find(ann, "classInd.txt")
    names = []
    for i, text in _lines(class_file):
        parts = text.split()
        if len(parts) != 2 or parts[0] != str(len(names) + 1):
            raise DataError(f"{class_file}:{i}: expected '{len(names) + 1} ClassName', got {text!r}", "malformed")
        names.append(parts[1])
    lookup = {n.lower(): i for i, n in enumerate(names)}
    videos = _subdir(root, "UCF-101")
    out = Prepared("ucf101", names, {}, "video", videos,
                   config={"train_list": "train_split1", "val_list": "val_split1"})
    for k in (1, 2, 3):
        for kind, name in (("train", f"train_split{k}"), ("test", f"val_split{k}")):
            path = os.path.join(os.path.dirname(class_file), f"{kind}list0{k}.txt")
            if not os.path.exists(path):
                raise DataError(f"{path}: split file not found; {DOCS}", "missing")
            records, missing = [], []
            for i, text in _lines(path):
                parts = text.split()
                rel = parts[0] if parts else ""
                folder = rel.split("/")[0].lower()
                if kind == "train" and len(parts) == 2 and parts[1].isdigit() and 1 <= int(parts[1]) <= len(names):
                    label = int(parts[1]) - 1
                elif kind == "test" and len(parts) == 1 and folder in lookup:
                    label = lookup[folder]
                else:
                    raise DataError(f"{path}:{i}: expected 'Class/video.avi" + (" INDEX'" if kind == "train"
                                    else "' with a class of classInd.txt") + f", got {text!r}", "malformed")
                if os.path.exists(os.path.join(videos, rel)):
                    records.append(VideoRecord(rel, label))
                else:
                    missing.append(rel)
            out.splits[name], out.missing[name] = records, missing
    return out


DATASETS = {
    "sthv1": prepare_sthv1,
    "sthv2": prepare_sthv2,
    "kinetics400": prepare_kinetics400,
    "hmdb51": prepare_hmdb51,
    "ucf101": prepare_ucf101,
}


def prepare(dataset: str, root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """Read the annotation files of ``dataset`` (one of :data:`DATASETS`)."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[dataset](root, annotations, workers)


# --------------------------------------------------------------------------- frame extraction


@dataclass(frozen=True)
class _Extraction:
    source: str
    target: str
    template: str
    short_side: int | None
    quality: int


def _extract_one(job: _Extraction) -> tuple[int, str | None, bool]:
    """``(frames, error, done before)``: decode every frame of one video into ``target``.

    Frames go to ``target + ".part"`` first, renamed to ``target`` when complete, so a
    ``target`` folder is always finished and an interrupted run leaves only a ``.part``
    folder, which the next run replaces.
    """
    from PIL import Image

    if os.path.isdir(job.target):
        scan = scan_frame_folder(job.target, job.template, 1)
        if scan.num_frames and not scan.missing:
            return scan.num_frames, None, True
        # We only ever rename complete folders into place, so this one is someone else's.
        return 0, (f"{job.target}: exists but holds no complete frame sequence named like "
                   f"{job.template.format(1)!r}; delete it to extract again"), False
    part = job.target + ".part"
    shutil.rmtree(part, ignore_errors=True)
    os.makedirs(part)
    n = 0
    try:
        with VideoReader(job.source) as reader:
            for n, rgb in enumerate(reader.iter_frames(), 1):
                img = Image.fromarray(rgb)
                if job.short_side:
                    w, h = img.size
                    s = job.short_side / min(w, h)
                    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
                img.save(os.path.join(part, job.template.format(n)), quality=job.quality)
        if n == 0:
            raise DataError(f"{job.source}: no frame could be decoded")
        os.replace(part, job.target)
        return n, None, False
    except (DataError, OSError) as exc:
        shutil.rmtree(part, ignore_errors=True)
        return 0, str(exc), False


def _claim_frames_root(frames_root: str, settings: dict) -> None:
    """Record the extraction settings in ``frames_root``; refuse a rerun with other settings,
    whose frames would silently differ from the finished folders that it skips."""
    import json

    os.makedirs(frames_root, exist_ok=True)
    path = os.path.join(frames_root, EXTRACTION_SETTINGS)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
        if before != settings:
            changed = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v)
            raise DataError(f"{frames_root}: its frames were extracted with other settings ({changed}); a rerun "
                            "skips finished videos, so extract into another folder or delete this one")
        return
    atomic_write_text(path, json.dumps(settings))


def extract_frames(prepared: Prepared, frames_root: str, *, workers: int = 1, template: str = "{:06d}.jpg",
                   short_side: int | None = None, quality: int = 90, progress: bool = False
                   ) -> tuple[Prepared, dict[str, str], int]:
    """Decode every video of ``prepared`` into JPEG folders under ``frames_root``.

    The folder of ``<dir>/<name>.<ext>`` is ``frames_root/<dir>/<name>``, frames numbered
    from 1 with ``template``. Videos whose folder exists are skipped (a rerun resumes);
    failures do not stop the others.

    Returns:
        ``(frame-list version of prepared, {video: error} of failures, videos done before)``;
        failed videos are left out of the lists.
    """

    check_template(template)
    if prepared.format != "video":
        raise DataError(f"{prepared.dataset} is already a frame dataset; nothing to extract")
    _claim_frames_root(frames_root, {"template": template, "short_side": short_side, "quality": quality})
    videos = sorted({r.path for records in prepared.splits.values() for r in records})
    jobs = []
    for rel in videos:
        target = os.path.join(frames_root, os.path.splitext(rel)[0])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        jobs.append(_Extraction(os.path.join(prepared.media_root, rel), target, template, short_side, quality))
    counts, failures, before = {}, {}, 0
    bar = progress_bar(len(jobs), "extracting", "video", enabled=progress)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for rel, (n, error, done) in zip(videos, pool.map(_extract_one, jobs)):
            if bar is not None:
                bar.update()
            if error:
                failures[rel] = error
            else:
                counts[rel], before = n, before + done
    if bar is not None:
        bar.close()
    splits = {name: [VideoRecord(os.path.splitext(r.path)[0], r.label, counts[r.path])
                     for r in records if r.path in counts]
              for name, records in prepared.splits.items()}
    result = replace(prepared, splits=splits, format="frames", media_root=frames_root,
                     template=template, start_index=1)
    return result, failures, before


# --------------------------------------------------------------------------- writing


def write_prepared(prepared: Prepared, out: str) -> list[str]:
    """Write class names, lists, missing-media reports and ``data.yaml`` into ``out``.

    Returns the paths written.
    """
    import yaml

    os.makedirs(out, exist_ok=True)
    written = [os.path.join(out, "classes.txt")]
    write_class_names(written[0], prepared.class_names)
    for name, records in prepared.splits.items():
        path = os.path.join(out, f"{name}.txt")
        write_list(path, records, prepared.format)
        written.append(path)
        if prepared.missing.get(name):
            path = os.path.join(out, f"missing_{name}.txt")
            atomic_write_text(path, "".join(m + "\n" for m in prepared.missing[name]))
            written.append(path)
    extra = dict(prepared.config)
    lists = {key: extra.pop(key, default) for key, default in
             (("train_list", "train"), ("val_list", "val"), ("test_list", "test"))}
    config = {"root": os.path.abspath(prepared.media_root)}
    for key, name in lists.items():
        if name in prepared.splits:
            config[key] = os.path.abspath(os.path.join(out, f"{name}.txt"))
    config.update(class_names=os.path.abspath(written[0]), format=prepared.format)
    if prepared.format == "frames":
        config.update(template=prepared.template, start_index=prepared.start_index)
    config.update(extra)
    path = os.path.join(out, "data.yaml")
    atomic_write_text(path, f"# DataConfig written by `motionsqueeze prepare {prepared.dataset}`\n"
                      + yaml.safe_dump(config, sort_keys=False))
    written.append(path)
    return written


# --------------------------------------------------------------------------- Jester, Diving48
# Added after the paper's five datasets; registered in DATASETS below.

# Jester's mirror classes ("Swiping Left" <-> "Swiping Right", "Sliding Two Fingers Left" <->
# "... Right", "Turning Hand Clockwise" <-> "... Counterclockwise") are found from the names
# (``transforms.direction_partners``); a mirrored clip of one is a true clip of the other, so
# they are flipped and relabelled. Every other gesture looks the same mirrored.
_JESTER_FLIP = {"flip": "direction-aware", "flip_direction": "swap"}


def prepare_jester(root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """Jester V1: JPEG folders ``20bn-jester-v1/<id>/00001.jpg`` and ``id;class`` CSV files
    (``jester-v1-labels.csv``, ``-train.csv``, ``-validation.csv``, ``-test.csv``), the
    layout of Something-Something V1; classes sorted by name (TSM's order)."""
    return _prepare_20bn_frames("jester", "jester", root, annotations, workers, dict(_JESTER_FLIP))


def prepare_diving48(root: str, annotations: str | None = None, workers: int = 8) -> Prepared:
    """Diving48 (V2 labels): ``rgb/<vid_name>.mp4``, ``Diving48_vocab.json`` (48 lists of four
    words: take-off, somersaults, twists, flight position) and ``Diving48_V2_train.json`` /
    ``Diving48_V2_test.json`` (objects with ``vid_name``, ``label``, ``start_frame``,
    ``end_frame``). A class is named by its four words joined with spaces, in vocabulary
    order; the official test split is written as ``val`` (papers report on it)."""
    _check_root(root)
    ann = annotations or root
    vocab_file = _find(ann, "Diving48_vocab.json")
    vocab = read_json(vocab_file)
    if not isinstance(vocab, list) or not all(isinstance(v, list) and v and all(isinstance(w, str) for w in v)
                                              for v in vocab):
        raise DataError(f"{vocab_file}: expected a list of word lists such as [\"Back\", \"15som\", "
                        f"\"05Twis\", \"FREE\"]", "malformed")
    names = [" ".join(v) for v in vocab]
    videos = _subdir(root, "rgb")
    present = set(os.listdir(videos))
    out = Prepared("diving48", names, {}, "video", videos)
    for split, file in (("train", "Diving48_V2_train.json"), ("val", "Diving48_V2_test.json")):
        path = _find(ann, file)
        rows = []
        for k, item in enumerate(read_json(path)):
            try:
                vid, label = str(item["vid_name"]), item["label"]
            except (KeyError, TypeError):
                raise DataError(f"{path} item {k}: expected an object with 'vid_name' and 'label', "
                                f"got {item!r:.80}", "malformed") from None
            if not isinstance(label, int) or not 0 <= label < len(names):
                raise DataError(f"{path} item {k}: label {label!r} is not a class index of {vocab_file} "
                                f"(0..{len(names) - 1})", "mislabelled")
            rows.append((f"{vid}.mp4", label))
        out.splits[split] = [VideoRecord(name, label) for name, label in rows if name in present]
        out.missing[split] = [name for name, _ in rows if name not in present]
    return out


DATASETS.update(jester=prepare_jester, diving48=prepare_diving48)
