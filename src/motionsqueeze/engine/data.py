"""The engine's view of a data section: datasets per split, class names, normalisation.

Both kinds of data section (list files, :class:`~motionsqueeze.data.config.DataConfig`;
the synthetic set, :class:`~motionsqueeze.data.synthetic.SyntheticDataConfig`) are handled
here so that the loops below never look inside either.
"""

from __future__ import annotations


from torch.utils.data import Dataset

from ..data import build_dataset, load_class_names
from ..data.synthetic import build_synthetic_dataset

__all__ = ["build_split", "class_names_of", "input_size_of", "with_views", "is_synthetic", "labels_of"]


def is_synthetic(data_cfg) -> bool:
    return getattr(data_cfg, "dataset", None) == "synthetic"


def class_names_of(data_cfg) -> list[str]:
    """Class names of a data section: the class file, or ``class <i>`` when only
    ``num_classes`` is given."""
    if is_synthetic(data_cfg):
        return data_cfg.class_names
    if data_cfg.class_names:
        names = load_class_names(data_cfg.class_names)
        if data_cfg.num_classes is not None and data_cfg.num_classes != len(names):
            raise ValueError(f"data.num_classes is {data_cfg.num_classes} but {data_cfg.class_names} names {len(names)} classes")
        return names
    if data_cfg.num_classes:
        return [f"class {i}" for i in range(data_cfg.num_classes)]
    raise ValueError(
        "data.class_names is not set: give the class-name file (classes.txt written by "
        "`motionsqueeze prepare`) or data.num_classes"
    )


def input_size_of(data_cfg) -> int:
    return data_cfg.crop_size


def with_views(data_cfg, clips: int | None = None, crops: int | None = None, test_list: str | None = None):
    """A copy of the data section whose ``"test"`` split uses these views (None keeps the
    recipe's ``test_num_clips`` / ``test_num_crops``) and, if given, this list."""
    if is_synthetic(data_cfg):
        return data_cfg
    changes = {}
    if clips is not None:
        changes["test_num_clips"] = clips
    if crops is not None:
        changes["test_num_crops"] = crops
    if test_list is not None:
        changes["test_list"] = test_list
    return data_cfg.replace(**changes)


def build_split(data_cfg, split: str) -> Dataset:
    """Dataset of a split ("train", "val" or "test"); see the data-pipeline item protocol."""
    if is_synthetic(data_cfg):
        return build_synthetic_dataset(data_cfg, split)
    return build_dataset(data_cfg, split)


def labels_of(dataset: Dataset) -> list[int]:
    """The label of every item of a dataset built by :func:`build_split`, read from its list
    (no clip is decoded); -1 for unlabelled items."""
    if hasattr(dataset, "records"):
        return [r.label for r in dataset.records]
    if hasattr(dataset, "label_of"):
        return [dataset.label_of(i) for i in range(len(dataset))]
    raise TypeError(f"cannot read the labels of a {type(dataset).__name__} without loading its items")
