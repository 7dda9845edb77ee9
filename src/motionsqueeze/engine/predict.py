"""Classify one video or frame folder with a trained model (``motionsqueeze predict``).

The clip is prepared as evaluation prepares it: T frames at the centres of T equal segments
(or the centre dense clip for dense-sampled models), resized as the model's recipe resized,
centre-cropped to the input size and normalised. All of it comes from the model card's
preprocessing, through :meth:`~motionsqueeze.models.card.Preprocess.data_settings`, the
translation ``eval`` applies to its data section too, and the sampler and transform are built
by :func:`~motionsqueeze.data.datasets.eval_pipeline`, as ``eval``'s dataset builds them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models.card import card_of

__all__ = ["model_sampler", "model_clip_indices", "eval_transform", "view_pipeline", "prepare_video", "top_classes",
           "view_logits", "predict_video"]


def model_sampler(model: nn.Module, count: int | None = None):
    """The :class:`ClipSampler` that samples clips as the model was (from the model file);
    ``count`` frames instead of the model's ``num_segments`` if given."""
    settings = card_of(model).preprocess.data_settings()
    if count:
        settings["num_segments"] = count
    return _pipeline(settings)[0]


def model_clip_indices(model: nn.Module, num_frames: int, count: int | None = None) -> list[int]:
    """Frame indices of the evaluation clip of a ``num_frames`` video, sampled as the model
    was (segment centres, or the centre dense clip at its stride; from the model file).
    ``count`` frames instead of the model's ``num_segments`` if given."""
    return model_sampler(model, count).even(num_frames, 1)[0]


def eval_transform(model: nn.Module, crops: int = 1):
    """The :class:`EvalTransform` (``crops``: 1 centre crop, or 3 along the longer side) that
    evaluation applies for ``model``."""
    return view_pipeline(model, crops)[1]


def _pipeline(settings: dict, crops: int = 1):
    from types import SimpleNamespace

    from ..data.datasets import eval_pipeline

    return eval_pipeline(SimpleNamespace(**settings), settings["crop_size"], crops)


def view_pipeline(model: nn.Module, crops: int = 1):
    """``(ClipSampler, EvalTransform)`` that take clips for ``model`` as its recipe did."""
    return _pipeline(card_of(model).preprocess.data_settings(), crops)


def prepare_video(model: nn.Module, source: str | Path, *, template: str = "{:05d}.jpg", start_index: int = 1,
                  clips: int = 1, crops: int = 1) -> torch.Tensor:
    """``(V, T, 3, S, S)`` uint8 views of ``source`` for ``model`` (see the module docstring):
    V = ``clips`` evenly spaced clips x ``crops`` (1: centre, 3: along the longer side), as
    ``eval`` takes them; one view by default."""
    from ..data import open_clip_source

    sampler, transform = view_pipeline(model, crops)
    with open_clip_source(source, template=template, start_index=start_index) as reader:
        if reader.num_frames < 1:
            raise ValueError(f"{source}: no frames could be read")
        frames = [reader.read(indices) for indices in sampler.even(reader.num_frames, clips)]
    return torch.cat([transform(f) for f in frames])  # (clips * crops, T, 3, S, S)


def top_classes(probs: torch.Tensor, names: list[str] | None, topk: int) -> list[dict]:
    """``[{"rank", "index", "class", "probability"}]`` of the ``topk`` largest of ``probs`` ``(K,)``."""
    names = names or [f"class {i}" for i in range(probs.numel())]
    values, indices = probs.topk(min(topk, probs.numel()))
    return [{"rank": r + 1, "index": int(i), "class": names[int(i)], "probability": float(v)}
            for r, (v, i) in enumerate(zip(values, indices))]


@torch.no_grad()
def view_logits(model, views: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits ``(V, K)`` of uint8 views ``(V, T, 3, S, S)``: normalised as the model's recipe
    did, or given as they are to a model that normalises them itself (an ONNX export with
    preprocessing, :class:`motionsqueeze.models.export.OnnxRecognizer`)."""
    from ..data.transforms import normalize_clip

    if hasattr(model, "logits_from_frames"):
        return model.logits_from_frames(views).float()
    pre = card_of(model).preprocess
    return model(normalize_clip(views.to(device), pre.mean, pre.std)).float()


@torch.no_grad()
def predict_video(model: nn.Module, source: str | Path, *, topk: int = 5, template: str = "{:05d}.jpg",
                  start_index: int = 1, device: str | torch.device = "cpu", clips: int = 1, crops: int = 1,
                  fusion: str = "logits") -> list[dict]:
    """Top-k classes of one video or frame folder: ``[{"rank", "index", "class", "probability"}]``.

    With ``clips`` x ``crops`` views the views are fused as ``eval`` fuses them (``fusion``:
    mean of logits, then softmax; or mean of probabilities)."""
    from .metrics import fuse_views

    views = prepare_video(model, source, template=template, start_index=start_index, clips=clips, crops=crops)
    if isinstance(model, nn.Module):
        model = model.to(device).eval()
    fused = fuse_views(view_logits(model, views, device)[None], fusion)[0].cpu()
    probs = fused.softmax(dim=0) if fusion == "logits" else fused
    return top_classes(probs, card_of(model).class_names, topk)
