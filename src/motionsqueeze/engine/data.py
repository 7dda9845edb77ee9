"""The engine's view of a data section: datasets per split, class names, normalisation.

Both kinds of data section (list files, :class:`~motionsqueeze.data.config.DataConfig`;
the synthetic set, :class:`~motionsqueeze.data.synthetic.SyntheticDataConfig`) are handled
here so that the loops below never look inside either.
"""

from __future__ import annotations

import dataclasses

from torch.utils.data import Dataset

__all__ = ["build_split", "class_names_of", "input_size_of", "with_views", "is_synthetic"]


def is_synthetic(data_cfg) -> bool:
    return getattr(data_cfg, "dataset", None) == "synthetic"


def class_names_of(data_cfg) -> list[str]:
    if is_synthetic(data_cfg):
        return data_cfg.class_names
    from ..data import load_class_names

    if not data_cfg.class_names:
        raise ValueError("data.class_names is not set: give the class-name file written by `motionsqueeze prepare`")
    return load_class_names(data_cfg.resolve(data_cfg.class_names))


def input_size_of(data_cfg) -> int:
    return data_cfg.crop_size


def with_views(data_cfg, clips: int | None, crops: int | None):
    """A copy of the data section with the test-time views replaced (None keeps them)."""
    if is_synthetic(data_cfg):
        return data_cfg
    changes = {}
    if clips is not None:
        changes["num_clips"] = clips
    if crops is not None:
        changes["num_crops"] = crops
    return dataclasses.replace(data_cfg, **changes)


def build_split(data_cfg, split: str) -> Dataset:
    """Dataset of a split ("train", "val" or "test"); see the data-pipeline item protocol."""
    if is_synthetic(data_cfg):
        from ..data.synthetic import build_synthetic_dataset

        return build_synthetic_dataset(data_cfg, split)
    from ..data import build_dataset

    return build_dataset(data_cfg, split)
