"""``DataConfig``: everything the data pipeline needs, as one dataclass loadable from YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from ..typed_config import ConfigError, Range, fail, from_mapping, setting, validate
from .errors import DataError
from .sampling import SAMPLINGS
from .transforms import DIRECTION_POLICIES, FLIP_MODES, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DataConfig", "DataConfigError", "FORMATS", "ON_ERROR"]

FORMATS = ("frames", "video")
ON_ERROR = ("raise", "skip")
CLIP_SPACINGS = ("even", "random")


class DataConfigError(DataError, ConfigError):
    """A bad data setting: a :class:`DataError` (the data pipeline's one error type) and a
    :class:`~motionsqueeze.typed_config.ConfigError` (``file:line: data.key: problem``)."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message, kind)


def _resize_problem(value) -> str | None:
    if isinstance(value, list) and len(value) != 2:
        return f"must be [H, W], a shorter-side int or null, got {value!r}"
    return None


def _length(n: int):
    def problem(value) -> str | None:
        return None if len(value) == n else f"must be a list of {n} numbers, got {value!r}"
    return problem


def _not_empty(value) -> str | None:
    return None if value else "must hold at least one scale, got []"


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
            ``class_names``. Labels must lie in ``0..num_classes-1``. Range [1, inf).
    Decoding:
        format: ``"frames"`` (JPEG folders, list ``PATH NUM_FRAMES LABEL``) or ``"video"``
            (video files, list ``PATH LABEL``). Default ``"frames"``.
        template: frame file name from its number, default ``"{:05d}.jpg"``.
        start_index: number of the first frame file, default 1 (``00001.jpg``); range [0, inf).
        decode_threads: FFmpeg threads per video, default 1 (one per DataLoader worker);
            range [1, inf).
    Sampling (:mod:`motionsqueeze.data.sampling`):
        num_segments: T, frames per clip, default 8; range [1, inf).
        sampling: ``"segment"`` (TSN, default) or ``"dense"``.
        dense_stride: frames between dense samples; ``None`` (default) is
            ``dense_window // num_segments``; range [1, inf).
        dense_window: dense window in frames, default 64; range [1, inf).
    Training augmentation (:mod:`motionsqueeze.data.transforms`):
        resize: ``[H, W]`` in pixels (default ``[240, 320]``), an int for the shorter side, or
            ``None`` for frames as decoded; each value in range [1, inf).
        crop_size: output height and width in pixels, default 224; range [1, inf).
        scales: multi-scale crop scales, fractions of the shorter side, default
            ``[1, 0.875, 0.75, 0.66]``; each in range (0, 1].
        max_distort: how many scale steps crop height and width may differ, default 1;
            range [0, inf).
        flip: ``"none"``, ``"plain"`` (default) or ``"direction-aware"``.
        flip_direction: for ``"direction-aware"``: ``"skip"`` (default, the authors': do not
            flip direction-dependent classes) or ``"swap"`` (flip and swap left/right labels).
        direction_classes: direction-dependent class indices; ``None`` (default) finds them in
            ``class_names`` (names with the word "left" or "right"). The authors' list for
            Something-Something V1 is ``[86, 87, 93, 94, 166, 167]``. Each in range [0, inf).
    Evaluation:
        test_num_clips: clips per video for the ``"test"`` split, default 1 (``"val"``
            always uses one centre clip); range [1, inf).
        test_clip_spacing: ``"even"`` (default) or ``"random"`` test clips (random clips are
            drawn from ``seed`` and the item index, so a run is repeatable).
        test_num_crops: 1 (centre, default) or 3 (along the longer side) for ``"test"``.
        test_crop_size: crop size of the ``"test"`` split in pixels; ``None`` (default) is
            ``crop_size`` (Kinetics testing uses 256 with ``resize: 256``); range [1, inf).
        mean: normalisation mean per RGB channel in [0, 1] units (ImageNet's by default),
            applied by :func:`~motionsqueeze.data.transforms.normalize_clip` on the device.
        std: normalisation standard deviation per RGB channel, as ``mean``; each in range
            (0, inf).
    Bad items:
        on_error: ``"raise"`` (default): stop with the file and the problem; ``"skip"``:
            use another item instead and report it in the item's ``skipped`` list.
        max_retries: consecutive replacement items tried before giving up, default 10;
            range [0, inf).
        seed: seed of random test clips, default 0.
    """

    config_key = "data"
    config_error = DataConfigError

    root: str = ""
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    class_names: str | None = None
    allow_outside_root: bool = False
    num_classes: int | None = setting(None, range=Range(1))
    format: str = setting("frames", choices=FORMATS)
    template: str = "{:05d}.jpg"
    start_index: int = setting(1, range=Range(0))
    decode_threads: int = setting(1, range=Range(1))
    num_segments: int = setting(8, range=Range(1))
    sampling: str = setting("segment", choices=SAMPLINGS)
    dense_stride: int | None = setting(None, range=Range(1))
    dense_window: int = setting(64, range=Range(1))
    resize: int | list[int] | None = setting(default_factory=lambda: [240, 320], range=Range(1),
                                             check=_resize_problem)
    crop_size: int = setting(224, range=Range(1))
    scales: list[float] = setting(default_factory=lambda: [1.0, 0.875, 0.75, 0.66],
                                  range=Range(0, 1, lo_open=True), check=_not_empty)
    max_distort: int = setting(1, range=Range(0))
    flip: str = setting("plain", choices=FLIP_MODES)
    flip_direction: str = setting("skip", choices=DIRECTION_POLICIES)
    direction_classes: list[int] | None = setting(None, range=Range(0))
    test_num_clips: int = setting(1, range=Range(1))
    test_clip_spacing: str = setting("even", choices=CLIP_SPACINGS)
    test_num_crops: int = setting(1, choices=(1, 3))
    test_crop_size: int | None = setting(None, range=Range(1))
    mean: list[float] = setting(default_factory=lambda: list(IMAGENET_MEAN), check=_length(3))
    std: list[float] = setting(default_factory=lambda: list(IMAGENET_STD), range=Range(0, lo_open=True),
                               check=_length(3))
    on_error: str = setting("raise", choices=ON_ERROR)
    max_retries: int = setting(10, range=Range(0))
    seed: int = 0

    def __post_init__(self):
        validate(self)
        if self.sampling == "dense" and (self.dense_stride or self.dense_window // self.num_segments) < 1:
            fail(self, "data.dense_window", f"{self.dense_window} is shorter than num_segments "
                 f"{self.num_segments}; set a longer window or data.dense_stride")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        """Build from a mapping (a YAML section); an unknown key is an error naming it."""
        return from_mapping(cls, d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "DataConfig":
        return self.from_dict({**self.to_dict(), **changes})
