"""Classify one video or frame folder with a trained model (``motionsqueeze predict``).

The clip is prepared as evaluation prepares it: T frames at the centres of T equal segments
(or the centre dense clip for dense-sampled models), resized as the model's recipe resized
(stored in the model file), centre-cropped to the input size and normalised.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["model_clip_indices", "prepare_video", "predict_video", "eval_transform"]


def model_clip_indices(model: nn.Module, num_frames: int, count: int | None = None) -> list[int]:
    """Frame indices of the evaluation clip of a ``num_frames`` video, sampled as the model
    was (segment centres, or the centre dense clip at its stride; from the model file).
    ``count`` frames instead of the model's ``num_segments`` if given."""
    from ..data.sampling import ClipSampler

    pre = getattr(model, "preprocess", None) or {}
    extra = getattr(model, "extra", None) or {}
    sampler = ClipSampler(count or pre.get("num_segments") or model.num_segments, extra.get("sampling", "segment"),
                          extra.get("dense_stride"), extra.get("dense_window", 64))
    return sampler.even(num_frames, 1)[0]


def eval_transform(model: nn.Module):
    """The :class:`EvalTransform` (one centre crop) that evaluation applies for ``model``."""
    from ..data.transforms import EvalTransform

    pre = model.preprocess
    extra = getattr(model, "extra", {}) or {}
    size = pre["input_size"] if isinstance(pre["input_size"], int) else pre["input_size"][0]
    # The recipe's resize (None: frames as decoded); files without it: shorter side 256/224 x input.
    resize = extra["resize"] if "resize" in extra else round(size * 256 / 224)
    resize = tuple(resize) if isinstance(resize, list) else resize
    return EvalTransform(resize, size, 1)


def prepare_video(model: nn.Module, source: str | Path, *, template: str = "{:05d}.jpg", start_index: int = 1) -> torch.Tensor:
    """``(1, T, 3, S, S)`` uint8 clip of ``source`` for ``model`` (see the module docstring)."""
    from ..data import open_clip_source

    with open_clip_source(source, template=template, start_index=start_index) as reader:
        if reader.num_frames < 1:
            raise ValueError(f"{source}: no frames could be read")
        frames = reader.read(model_clip_indices(model, reader.num_frames))
    return eval_transform(model)(frames)  # (1, T, 3, S, S)


@torch.no_grad()
def predict_video(model: nn.Module, source: str | Path, *, topk: int = 5, template: str = "{:05d}.jpg",
                  start_index: int = 1, device: str | torch.device = "cpu") -> list[dict]:
    """Top-k classes of one video or frame folder: ``[{"rank", "index", "class", "probability"}]``."""
    from ..data.transforms import normalize_clip

    clip = prepare_video(model, source, template=template, start_index=start_index)
    pre = model.preprocess
    model = model.to(device).eval()
    x = normalize_clip(clip.to(device), pre["mean"], pre["std"])
    probs = model(x).float().softmax(dim=1)[0].cpu()
    k = min(topk, probs.numel())
    values, indices = probs.topk(k)
    names = getattr(model, "class_names", None) or [f"class {i}" for i in range(probs.numel())]
    return [{"rank": r + 1, "index": int(i), "class": names[int(i)], "probability": float(v)}
            for r, (v, i) in enumerate(zip(values, indices))]
