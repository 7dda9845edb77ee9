"""Features of a trained model for many videos (``motionsqueeze extract-features``).

Two levels:

* ``clip``: the pre-logits vector ``(C,)`` (pooled last stage, what the classifier sees),
  averaged over the views (clips x crops, sampled as ``eval`` samples them);
* ``frame``: per frame and per stage, for one view (the centre clip, centre crop):
  ``res2..res5`` ``(T, C, h, w)`` (after MotionSqueeze where one follows the stage),
  ``motion_<stage>`` ``(T-1, 3, h, w)`` with MotionSqueeze's displacement ``u, v`` (units of
  the half-window ``(P-1)/2`` cells) and confidence, and ``pre_logits`` ``(T, C)``.

One file per input, named after the input (see :mod:`motionsqueeze.engine.inputs`), written
atomically; a file that exists is not computed again, so an interrupted run over a long list
continues where it stopped. ``settings.json`` in the output folder records what was
extracted, and a rerun with other settings into the same folder is refused. ``index.csv``
lists every input with its file and status (``done``, ``exists``, or the reason it could not
be read); unreadable inputs are reported and skipped.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.transforms import normalize_clip
from ..files import atomic_output, atomic_write
from ..models.card import card_of
from .predict import prepare_video

__all__ = ["LEVELS", "FORMATS", "feature_names", "video_features", "write_features", "extract_features",
           "ExtractionSummary"]

LEVELS = ("clip", "frame")
FORMATS = ("npz", "npy", "safetensors")


def feature_names(model: nn.Module, level: str) -> list[str]:
    """Arrays a file of this level holds for ``model``."""
    if level == "clip":
        return ["features"]
    stages = [name for name, _ in model.backbone.stages()]
    return [*stages, *(f"motion_{s}" for s in model.motion), "pre_logits"]


@torch.no_grad()
def video_features(model: nn.Module, views: torch.Tensor, level: str = "clip",
                   names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Features of one video from its uint8 views ``(V, T, 3, S, S)`` (module docstring)."""
    device = next(model.parameters()).device
    pre = card_of(model).preprocess
    x = normalize_clip(views.to(device), pre.mean, pre.std)
    if level == "clip":
        feats = model.forward_head(model.forward_features(x), pre_logits=True)  # (V, C)
        return {"features": feats.mean(dim=0).float().cpu().numpy()}
    if level != "frame":
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if len(views) != 1:
        raise ValueError(f"frame-level features are of one view, got {len(views)} views; use --clips 1 --crops 1")
    out = model.forward_stages(x)
    wanted = names or list(out)
    return {k: out[k][0].float().cpu().numpy() for k in wanted}


def write_features(path: str | Path, arrays: dict[str, np.ndarray], fmt: str) -> None:
    """One file: ``.npz`` (all arrays), ``.npy`` (exactly one array) or ``.safetensors``."""
    if fmt == "npz":
        atomic_write(path, lambda f: np.savez(f, **arrays))
    elif fmt == "npy":
        if len(arrays) != 1:
            raise ValueError(f".npy holds one array, these features are {len(arrays)} ({', '.join(arrays)}); "
                             f"use --format npz or safetensors, or --stages with one name")
        atomic_write(path, lambda f: np.save(f, next(iter(arrays.values()))))
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        with atomic_output(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


@dataclass
class ExtractionSummary:
    done: int = 0
    existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)


def _check_settings(out: Path, settings: dict) -> None:
    file = out / "settings.json"
    if file.is_file():
        try:
            before = json.loads(file.read_text())
        except (OSError, ValueError):
            before = None
        if before != settings:
            raise ValueError(f"{out} holds features extracted with other settings ({file}: {before}); "
                             f"use another --out, or the same options to continue that run")
    else:
        atomic_write(file, lambda f: f.write(json.dumps(settings, indent=2).encode()))


def extract_features(model: nn.Module, inputs: list[tuple[str, str]], out_dir: str | Path, *, level: str = "clip",
                     names: list[str] | None = None, fmt: str = "npz", clips: int = 1, crops: int = 1,
                     template: str = "{:05d}.jpg", start_index: int = 1, checkpoint: str = "",
                     progress: bool = False) -> ExtractionSummary:
    """Features of every ``(source, name)`` input into ``out_dir/<name>.<fmt>`` (module docstring)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    available = feature_names(model, level)
    unknown = sorted(set(names or []) - set(available))
    if unknown:
        raise ValueError(f"unknown feature name(s) {unknown}; this model at level {level!r} gives {available}")
    wanted = names or available
    if fmt == "npy" and len(wanted) != 1:
        raise ValueError(f".npy holds one array, level {level!r} gives {len(wanted)} ({', '.join(wanted)}); use "
                         f"--format npz or safetensors, or --stages with one name")
    if level == "frame" and clips * crops != 1:
        raise ValueError(f"frame-level features are of one view; got --clips {clips} --crops {crops}")
    out = Path(out_dir)
    _check_settings(out, {"checkpoint": Path(checkpoint).name, "level": level, "names": wanted, "format": fmt,
                          "clips": clips, "crops": crops, "num_segments": model.num_segments})
    model.eval()
    summary = ExtractionSummary()
    rows = []
    iterator = inputs
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        iterator = tqdm(inputs, desc="extracting", leave=False)
    for source, name in iterator:
        target = out / f"{name}.{fmt}"
        if target.is_file():
            summary.existing += 1
            rows.append((name, source, target.relative_to(out).as_posix(), "exists"))
            continue
        try:
            views = prepare_video(model, source, template=template, start_index=start_index, clips=clips, crops=crops)
        except (ValueError, OSError) as err:  # unreadable input: report, go on
            summary.failed.append((source, str(err)))
            rows.append((name, source, "", f"skipped: {err}"))
            continue
        write_features(target, video_features(model, views, level, wanted), fmt)
        summary.done += 1
        rows.append((name, source, target.relative_to(out).as_posix(), "done"))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["name", "source", "file", "status"])
    writer.writerows(rows)
    atomic_write(out / "index.csv", lambda f: f.write(text.getvalue().encode()))
    return summary
