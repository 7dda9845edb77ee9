"""Classify one video or frame folder with a trained model (``motionsqueeze predict``).

The clip is prepared as evaluation prepares it: T frames at the centres of T equal segments
(or the centre dense clip for dense-sampled models), resized as the model's recipe resized
(stored in the model file), centre-cropped to the input size and normalised.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import open_clip_source
from ..data.sampling import model_clip_indices, model_sampler
from ..data.transforms import EvalTransform, normalize_clip
from .metrics import fuse_views

__all__ = ["model_sampler", "model_clip_indices", "eval_transform", "view_pipeline", "prepare_video", "top_classes",
           "view_logits", "predict_video"]


def eval_transform(model: nn.Module, crops: int = 1):
    """The :class:`EvalTransform` (``crops``: 1 centre crop, or 3 along the longer side) that
    evaluation applies for ``model``."""
    pre = model.preprocess
    extra = getattr(model, "extra", {}) or {}
    size = pre["input_size"] if isinstance(pre["input_size"], int) else pre["input_size"][0]
    # The recipe's resize (None: frames as decoded); files without it: shorter side 256/224 x input.
    resize = extra["resize"] if "resize" in extra else round(size * 256 / 224)
    resize = tuple(resize) if isinstance(resize, list) else resize
    return EvalTransform(resize, size, crops)


def view_pipeline(model: nn.Module, crops: int = 1):
    """``(ClipSampler, EvalTransform)`` that take clips for ``model`` as its recipe did."""
    return model_sampler(model), eval_transform(model, crops)


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
    pre = model.preprocess
    return model(normalize_clip(views.to(device), pre["mean"], pre["std"])).float()


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
    return top_classes(probs, getattr(model, "class_names", None), topk)
