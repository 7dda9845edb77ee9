"""Clip datasets over annotation lists, the bad-item policy, and batch collation.

An item is a dict::

    {"clip": uint8 Tensor, "label": int (-1 if unlabelled), "index": int, "skipped": list[str]}

* ``"train"``: ``clip`` is ``(T, 3, S, S)``: one random clip, multi-scale crop, flip.
* ``"val"``: ``(1, T, 3, S, S)``: the centre clip, centre crop.
* ``"test"``: ``(V, T, 3, S', S')`` with ``V = test_num_clips * test_num_crops``, ordered
  clip-major (clip 0 crop 0, clip 0 crop 1, ...).

``index`` is the dataset index of the video the clip comes from. With
``on_error="skip"`` a bad item (missing, unreadable, truncated...) is replaced by another
one (a random one for training, the next one for evaluation), ``index`` is then the
replacement's and ``skipped`` holds one message per replaced item naming the file, its list
line and the problem; after ``max_retries`` bad replacements in a row the item fails with a
:class:`DataError` (the data is mostly broken). With ``on_error="raise"`` the first bad item
stops the run with that message. Either way no error is swallowed silently and a worker
never waits on anything: every file is closed before ``__getitem__`` returns.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch.utils.data import Dataset

from .annotations import VideoRecord, leaves_root, load_class_names, read_list
from .config import DataConfig
from .errors import DataError
from .readers import ClipReader, FrameFolderReader, VideoReader
from .sampling import ClipSampler
from .transforms import EvalTransform, FlipPolicy, TrainTransform, direction_partners

__all__ = ["VideoClipDataset", "build_dataset", "eval_pipeline", "collate_clips", "summarize_skipped", "SPLITS"]

SPLITS = ("train", "val", "test")


class VideoClipDataset(Dataset):
    """Clips of the videos of an annotation list (see the module docstring).

    Args:
        records: the list's entries.
        root: folder the record paths are relative to.
        split: ``"train"``, ``"val"`` or ``"test"``.
        format: ``"frames"`` or ``"video"``.
        sampler: frame indices of each clip.
        train_transform: used for ``"train"``.
        eval_transform: used for ``"val"`` and ``"test"``.
        num_clips: clips per video (``"test"``; 1 otherwise).
        clip_spacing: ``"even"`` or ``"random"`` test clips.
        template, start_index: frame file names (frame folders).
        on_error, max_retries: the bad-item policy.
        seed: seed of random test clips (drawn per item from ``(seed, index)``).
        decode_threads: FFmpeg threads per video.
        source: name of the list file, for messages.
    """

    def __init__(self, records: Sequence[VideoRecord], *, root: str = "", split: str = "train",
                 format: str = "frames", sampler: ClipSampler | None = None,
                 train_transform: TrainTransform | None = None, eval_transform: EvalTransform | None = None,
                 num_clips: int = 1, clip_spacing: str = "even", template: str = "{:05d}.jpg",
                 start_index: int = 1, on_error: str = "raise", max_retries: int = 10, seed: int = 0,
                 decode_threads: int = 1, source: str = "<list>"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not records:
            raise DataError(f"{source}: the list has no entries")
        self.records = list(records)
        self.root = root
        self.split = split
        self.format = format
        self.sampler = sampler or ClipSampler()
        self.train_transform = train_transform or TrainTransform()
        self.eval_transform = eval_transform or EvalTransform()
        self.num_clips = num_clips if split == "test" else 1
        self.clip_spacing = clip_spacing
        self.template = template
        self.start_index = start_index
        self.on_error = on_error
        self.max_retries = max_retries
        self.seed = seed
        self.decode_threads = decode_threads
        self.source = source

    def __len__(self) -> int:
        return len(self.records)

    def open(self, index: int) -> ClipReader:
        """A reader for item ``index`` (frame counts of frame lists come from the list)."""
        r = self.records[index]
        path = os.path.join(self.root, r.path)
        if self.format == "frames":
            if r.num_frames is not None and r.num_frames < 1:
                raise DataError(f"{path}: the list gives {r.num_frames} frames; a clip needs at least one")
            return FrameFolderReader(path, self.template, self.start_index, r.num_frames)
        if os.path.isdir(path):
            raise DataError(f"{path}: is a folder but the data format is 'video'; set format: frames")
        return VideoReader(path, threads=self.decode_threads)

    def load(self, index: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """``(clip, label)`` of item ``index``; raises :class:`DataError` for a bad item."""
        label = self.records[index].label
        with self.open(index) as reader:
            n = reader.num_frames
            if self.split == "train":
                frames = reader.read(self.sampler.train(n, generator))
                return self.train_transform(frames, label, generator)
            if self.split == "test" and self.clip_spacing == "random":
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
                clips = self.sampler.random(n, self.num_clips, g)
            else:
                clips = self.sampler.even(n, self.num_clips)
            frames = reader.read([i for c in clips for i in c])
        t = self.sampler.num_segments
        views = [self.eval_transform(frames[k * t:(k + 1) * t]) for k in range(len(clips))]
        clip = torch.cat(views)  # (clips * crops, T, 3, S, S), clip-major
        return clip, label

    def __getitem__(self, index: int) -> dict:
        skipped: list[str] = []
        current = index
        for attempt in range(self.max_retries + 1):
            try:
                clip, label = self.load(current)
                return {"clip": clip, "label": label, "index": current, "skipped": skipped}
            except DataError as exc:
                if self.on_error == "raise":
                    raise DataError(f"{self._where(current)}: {exc}", exc.kind) from None
                skipped.append(f"{self._where(current)}: {exc}")
                current = self._replacement(index, attempt)
        raise DataError(
            f"{self.max_retries + 1} bad items in a row while loading item {index} of {self.source} "
            f"(on_error=skip, max_retries={self.max_retries}); the data looks broken, run "
            f"`motionsqueeze check-data`. Last problems: " + " | ".join(skipped[-3:])
        )

    def _where(self, index: int) -> str:
        line = self.records[index].line
        return f"{self.source}:{line}" if line else f"{self.source} item {index}"

    def _replacement(self, index: int, attempt: int) -> int:
        if self.split == "train":
            return int(torch.randint(len(self.records), (1,)))
        # Evaluation stays deterministic: the next items of the list.
        return (index + attempt + 1) % len(self.records)


def _class_names(cfg: DataConfig) -> list[str] | None:
    return load_class_names(cfg.class_names) if cfg.class_names else None


def eval_pipeline(cfg, crop_size: int, crops: int = 1) -> tuple[ClipSampler, EvalTransform]:
    """``(sampler, evaluation transform)`` of a data section (``num_segments``, ``sampling``,
    ``dense_stride``, ``dense_window``, ``resize``): how evaluation takes clips; ``predict``
    builds its clips here too, from the model card's settings."""
    sampler = ClipSampler(cfg.num_segments, cfg.sampling, cfg.dense_stride, cfg.dense_window)
    resize = tuple(cfg.resize) if isinstance(cfg.resize, list) else cfg.resize
    return sampler, EvalTransform(resize, crop_size, crops)


def build_dataset(cfg: DataConfig, split: str) -> VideoClipDataset:
    """The dataset of ``split`` (``"train"``, ``"val"`` or ``"test"``) described by ``cfg``.

    Raises:
        DataError: the split's list is not set or bad (named with its line), a training list
            without labels, or a direction-aware flip without a way to find the
            direction-dependent classes.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    key = {"train": "train_list", "val": "val_list", "test": "test_list"}[split]
    list_path = getattr(cfg, key) or (cfg.val_list if split == "test" else None)
    if not list_path:
        raise DataError(f"data config: {key} is not set; it is needed for the {split!r} split")
    names = _class_names(cfg)
    num_classes = cfg.num_classes or (len(names) if names else None)
    if names is not None and cfg.num_classes is not None and cfg.num_classes != len(names):
        raise DataError(f"data config: num_classes is {cfg.num_classes} but {cfg.class_names} "
                        f"names {len(names)} classes")
    records = read_list(list_path, cfg.format, num_classes=num_classes)
    outside = None if cfg.allow_outside_root else next((r for r in records if leaves_root(r.path, cfg.root)), None)
    if outside is not None:
        raise DataError(f"{list_path}:{outside.line}: the path {outside.path!r} leaves data.root ({cfg.root}); "
                        f"fix the list (motionsqueeze check-data reports every such line), or set "
                        f"data.allow_outside_root: true if the list is meant to point there", kind="outside-root")
    if split == "train":
        unlabelled = next((r for r in records if r.label < 0), None)
        if unlabelled is not None:
            raise DataError(f"{list_path}:{unlabelled.line}: a training list needs a label on every line")
    if split == "test":
        sampler, eval_tf = eval_pipeline(cfg, cfg.test_crop_size or cfg.crop_size, cfg.test_num_crops)
    else:
        sampler, eval_tf = eval_pipeline(cfg, cfg.crop_size, 1)
    train_tf = TrainTransform(eval_tf.resize, cfg.crop_size, tuple(cfg.scales), cfg.max_distort,
                              _flip_policy(cfg, names) if split == "train" else FlipPolicy("none"))
    return VideoClipDataset(
        records, root=cfg.root, split=split, format=cfg.format, sampler=sampler,
        train_transform=train_tf, eval_transform=eval_tf, num_clips=cfg.test_num_clips,
        clip_spacing=cfg.test_clip_spacing, template=cfg.template, start_index=cfg.start_index,
        on_error=cfg.on_error, max_retries=cfg.max_retries, seed=cfg.seed,
        decode_threads=cfg.decode_threads, source=str(list_path),
    )


def _flip_policy(cfg: DataConfig, names: list[str] | None) -> FlipPolicy:
    if cfg.flip != "direction-aware":
        return FlipPolicy(cfg.flip)
    found = direction_partners(names) if names else {}
    if cfg.direction_classes is not None:
        partners = {c: found.get(c) for c in cfg.direction_classes}
    elif names is not None:
        partners = found
    else:
        raise DataError("data config: flip 'direction-aware' needs class_names (to find classes "
                        "named with 'left'/'right') or direction_classes")
    if cfg.flip_direction == "swap" and names is None:
        raise DataError("data config: flip_direction 'swap' needs class_names to find the mirror classes")
    return FlipPolicy("direction-aware", cfg.flip_direction, partners)


def collate_clips(batch: Sequence[dict]) -> dict:
    """Stack items into a batch: ``clip`` ``(N, ...)`` uint8, ``label`` and ``index`` int64
    ``(N,)``, ``skipped`` the concatenated messages. Other keys become lists."""
    if not batch:
        raise ValueError("collate_clips got an empty batch")
    shapes = {tuple(b["clip"].shape) for b in batch}
    if len(shapes) > 1:
        raise DataError(f"clips of one batch differ in shape: {sorted(shapes)}; use the same "
                        "crop size and number of clips for every item")
    out = {
        "clip": torch.stack([b["clip"] for b in batch]),
        "label": torch.tensor([int(b["label"]) for b in batch], dtype=torch.long),
        "index": torch.tensor([int(b["index"]) for b in batch], dtype=torch.long),
        "skipped": [m for b in batch for m in b.get("skipped", ())],
    }
    for key in batch[0]:
        if key not in out:
            out[key] = [b[key] for b in batch]
    return out


def summarize_skipped(messages: Sequence[str], limit: int = 5) -> str:
    """A report of the ``skipped`` messages of an epoch: count, distinct items, the first few.

    Returns ``""`` when there are none, else e.g. ``"3 bad items skipped (2 distinct):\n  ..."``.
    """
    if not messages:
        return ""
    distinct = list(dict.fromkeys(messages))
    lines = [f"{len(messages)} bad item{'s' if len(messages) != 1 else ''} skipped "
             f"({len(distinct)} distinct; run `motionsqueeze check-data` on the list):"]
    lines += [f"  {m}" for m in distinct[:limit]]
    if len(distinct) > limit:
        lines.append(f"  ... and {len(distinct) - limit} more")
    return "\n".join(lines)
