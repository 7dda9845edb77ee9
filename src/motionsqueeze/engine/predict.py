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

from ..data import open_clip_source
from ..data.transforms import normalize_clip
from ..models.card import card_of, eval_transform, model_clip_indices, model_sampler, view_pipeline
from .metrics import fuse_views

__all__ = ["model_sampler", "model_clip_indices", "eval_transform", "view_pipeline", "prepare_video", "top_classes",
           "view_logits", "predict_video"]


def prepare_video(model: nn.Module, source: str | Path, *, template: str = "{:05d}.jpg", start_index: int = 1,
                  clips: int = 1, crops: int = 1) -> torch.Tensor:
    """``(V, T, 3, S, S)`` uint8 views of ``source`` for ``model`` (see the module docstring):
    V = ``clips`` evenly spaced clips x ``crops`` (1: centre, 3: along the longer side), as
    ``eval`` takes them; one view by default."""
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
    views = prepare_video(model, source, template=template, start_index=start_index, clips=clips, crops=crops)
    if isinstance(model, nn.Module):
        model = model.to(device).eval()
    fused = fuse_views(view_logits(model, views, device)[None], fusion)[0].cpu()
    probs = fused.softmax(dim=0) if fusion == "logits" else fused
    return top_classes(probs, card_of(model).class_names, topk)
