"""The video data pipeline: lists -> sampler -> reader -> clip transform -> batch.

* :mod:`.annotations`: list files (``PATH NUM_FRAMES LABEL`` / ``PATH LABEL``), class names;
* :mod:`.readers`: JPEG frame folders and videos (PyAV), decoding only the needed frames;
* :mod:`.sampling`: TSN segment and dense sampling, multi-clip testing;
* :mod:`.transforms`: resize, multi-scale / centre / three crops, direction-aware flip,
  normalisation, on uint8 clips;
* :mod:`.datasets`: :func:`build_dataset` and :func:`collate_clips`;
* :mod:`.config`: :class:`DataConfig`;
* :mod:`.prepare` and :mod:`.check`: the ``prepare`` and ``check-data`` commands;
  :mod:`.prepare_custom`: ``prepare folder`` and ``prepare csv`` (your own videos).

See ``docs/datasets.md`` for the datasets' layouts and the exact rules.
"""

from .annotations import VideoRecord, load_class_names, read_list, write_class_names, write_list
from .config import DataConfig
from .datasets import VideoClipDataset, build_dataset, collate_clips, summarize_skipped
from .errors import DataError
from .readers import ClipReader, open_clip_source
from .sampling import ClipSampler
from .transforms import normalize_clip

__all__ = [
    "DataConfig",
    "DataError",
    "VideoRecord",
    "read_list",
    "write_list",
    "load_class_names",
    "write_class_names",
    "ClipReader",
    "open_clip_source",
    "ClipSampler",
    "normalize_clip",
    "VideoClipDataset",
    "build_dataset",
    "collate_clips",
    "summarize_skipped",
]
