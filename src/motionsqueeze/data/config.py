"""``DataConfig``: everything the data pipeline needs, as one dataclass loadable from YAML."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields

from .errors import DataError
from .sampling import SAMPLINGS
from .transforms import DIRECTION_POLICIES, FLIP_MODES, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DataConfig", "FORMATS", "ON_ERROR"]

FORMATS = ("frames", "video")
ON_ERROR = ("raise", "skip")
CLIP_SPACINGS = ("even", "random")


@dataclass
class DataConfig:
    """Data settings of a run (the ``data:`` section of a recipe).

    Files (relative paths are relative to the current directory):
        root: dataset root; paths in the lists are relative to it. Default ``""`` (list
            paths as written).
        train_list, val_list: annotation lists (see :mod:`motionsqueeze.data.annotations`).
            Default ``None``.
        test_list: list of the ``"test"`` split; ``None`` (default) uses ``val_list``.
        class_names: class-names file, one name per line; used to check labels and to find
            direction-dependent classes. Default ``None``.
        allow_outside_root: accept list paths that leave ``root`` (absolute paths, or ``..``
            climbing out of it). Default ``False``: such a list is refused, naming the line, so
            that a list from elsewhere cannot make training read arbitrary files.
        num_classes: number of classes; ``None`` (default) takes the length of
            ``class_names``. Labels must lie in ``0..num_classes-1``.
    Decoding:
        format: ``"frames"`` (JPEG folders, list ``PATH NUM_FRAMES LABEL``) or ``"video"``
            (video files, list ``PATH LABEL``). Default ``"frames"``.
        template: frame file name from its number, default ``"{:05d}.jpg"``.
        start_index: number of the first frame file, default 1 (``00001.jpg``).
        decode_threads: FFmpeg threads per video, default 1 (one per DataLoader worker).
    Sampling (:mod:`motionsqueeze.data.sampling`):
        num_segments: T, frames per clip, default 8.
        sampling: ``"segment"`` (TSN, default) or ``"dense"``.
        dense_stride: frames between dense samples; ``None`` (default) is
            ``dense_window // num_segments``.
        dense_window: dense window in frames, default 64.
    Training augmentation (:mod:`motionsqueeze.data.transforms`):
        resize: ``[H, W]`` in pixels (default ``[240, 320]``), an int for the shorter side, or
            ``None`` for frames as decoded.
        crop_size: output height and width in pixels, default 224.
        scales: multi-scale crop scales, fractions of the shorter side, default
            ``[1, 0.875, 0.75, 0.66]``.
        max_distort: how many scale steps crop height and width may differ, default 1.
        flip: ``"none"``, ``"plain"`` (default) or ``"direction-aware"``.
        flip_direction: for ``"direction-aware"``: ``"skip"`` (default, the authors': do not
            flip direction-dependent classes) or ``"swap"`` (flip and swap left/right labels).
        direction_classes: direction-dependent class indices; ``None`` (default) finds them in
            ``class_names`` (names with the word "left" or "right"). The authors' list for
            Something-Something V1 is ``[86, 87, 93, 94, 166, 167]``.
    Evaluation:
        test_num_clips: clips per video for the ``"test"`` split, default 1 (``"val"``
            always uses one centre clip).
        test_clip_spacing: ``"even"`` (default) or ``"random"`` test clips (random clips are
            drawn from ``seed`` and the item index, so a run is repeatable).
        test_num_crops: 1 (centre, default) or 3 (along the longer side) for ``"test"``.
        test_crop_size: crop size of the ``"test"`` split in pixels; ``None`` (default) is
            ``crop_size`` (Kinetics testing uses 256 with ``resize: 256``).
        mean, std: normalisation per RGB channel in [0, 1] units (ImageNet's by default),
            applied by :func:`~motionsqueeze.data.transforms.normalize_clip` on the device.
    Bad items:
        on_error: ``"raise"`` (default): stop with the file and the problem; ``"skip"``:
            use another item instead and report it in the item's ``skipped`` list.
        max_retries: consecutive replacement items tried before giving up, default 10.
        seed: seed of random test clips, default 0.
    """

    root: str = ""
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    class_names: str | None = None
    allow_outside_root: bool = False
    num_classes: int | None = None
    format: str = "frames"
    template: str = "{:05d}.jpg"
    start_index: int = 1
    decode_threads: int = 1
    num_segments: int = 8
    sampling: str = "segment"
    dense_stride: int | None = None
    dense_window: int = 64
    resize: int | list[int] | None = field(default_factory=lambda: [240, 320])
    crop_size: int = 224
    scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    max_distort: int = 1
    flip: str = "plain"
    flip_direction: str = "skip"
    direction_classes: list[int] | None = None
    test_num_clips: int = 1
    test_clip_spacing: str = "even"
    test_num_crops: int = 1
    test_crop_size: int | None = None
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    on_error: str = "raise"
    max_retries: int = 10
    seed: int = 0

    def __post_init__(self):
        for name in ("root", "template", "format", "sampling", "flip", "flip_direction",
                     "test_clip_spacing", "on_error"):
            _expect(name, getattr(self, name), str)
        for name in ("train_list", "val_list", "test_list", "class_names"):
            _expect(name, getattr(self, name), (str, type(None)))
        if not isinstance(self.allow_outside_root, bool):
            raise DataError(f"data config: allow_outside_root must be true or false, got {self.allow_outside_root!r}")
        for name, lo in (("start_index", 0), ("decode_threads", 1), ("num_segments", 1),
                         ("dense_window", 1), ("crop_size", 1), ("max_distort", 0),
                         ("test_num_clips", 1), ("max_retries", 0), ("seed", None)):
            _expect_int(name, getattr(self, name), lo)
        for name in ("num_classes", "dense_stride", "test_crop_size"):
            if getattr(self, name) is not None:
                _expect_int(name, getattr(self, name), 1)
        for name, choices in (("format", FORMATS), ("sampling", SAMPLINGS), ("flip", FLIP_MODES),
                              ("flip_direction", DIRECTION_POLICIES), ("on_error", ON_ERROR),
                              ("test_clip_spacing", CLIP_SPACINGS)):
            if getattr(self, name) not in choices:
                raise DataError(f"data config: {name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.test_num_crops not in (1, 3):
            raise DataError(f"data config: test_num_crops must be 1 or 3, got {self.test_num_crops!r}")
        if isinstance(self.resize, (list, tuple)):
            if len(self.resize) != 2:
                raise DataError(f"data config: resize must be [H, W], a shorter-side int or null, got {self.resize!r}")
            for v in self.resize:
                _expect_int("resize", v, 1)
            self.resize = [int(v) for v in self.resize]
        elif self.resize is not None:
            _expect_int("resize", self.resize, 1)
        self.scales = _floats("scales", self.scales, None)
        if not self.scales or not all(0 < s <= 1 for s in self.scales):
            raise DataError(f"data config: scales must be fractions in (0, 1], got {self.scales}")
        self.mean, self.std = _floats("mean", self.mean, 3), _floats("std", self.std, 3)
        if not all(s > 0 for s in self.std):
            raise DataError(f"data config: std must be positive, got {self.std}")
        if self.direction_classes is not None:
            if not isinstance(self.direction_classes, (list, tuple)):
                raise DataError(f"data config: direction_classes must be a list of class indices, "
                                f"got {self.direction_classes!r}")
            for v in self.direction_classes:
                _expect_int("direction_classes", v, 0)
            self.direction_classes = [int(v) for v in self.direction_classes]
        if self.sampling == "dense" and (self.dense_stride or self.dense_window // self.num_segments) < 1:
            raise DataError(f"data config: dense_window {self.dense_window} is shorter than "
                            f"num_segments {self.num_segments}; set dense_stride")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        """Build from a mapping (a YAML section); an unknown key is an error naming it."""
        if not isinstance(d, dict):
            raise DataError(f"data config must be a mapping of settings, got {type(d).__name__}")
        names = cls.field_names()
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
                raise DataError(f"data config: unknown key {key!r}{hint}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "DataConfig":
        return self.from_dict({**self.to_dict(), **changes})


def _expect(name, value, types) -> None:
    if not isinstance(value, types) or isinstance(value, bool):
        kinds = types if isinstance(types, tuple) else (types,)
        wanted = " or ".join("null" if t is type(None) else t.__name__ for t in kinds)
        raise DataError(f"data config: {name} must be {wanted}, got {value!r}")


def _expect_int(name, value, lo) -> None:
    _expect(name, value, int)
    if lo is not None and value < lo:
        raise DataError(f"data config: {name} must be >= {lo}, got {value}")


def _floats(name, values, length) -> list[float]:
    ok = isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not ok or (length is not None and len(values) != length):
        size = f" of {length}" if length else " of"
        raise DataError(f"data config: {name} must be a list{size} numbers, got {values!r}")
    return [float(v) for v in values]
