"""The pieces of a step shared by training and evaluation.

Training (``trainer``) and evaluation (``evaluate``) both read batches through
:func:`build_loader`, move uint8 clips to the device and normalise them there
(:func:`prepare_clips`), and run the model under :func:`autocast_context`. Model files
record how clips were sampled and resized (:func:`inference_settings`) so that
``predict`` and ``visualize`` prepare a video as evaluation did.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils.data import DataLoader

from ..data import collate_clips
from ..data.transforms import normalize_clip
from .data_order import SeededDataset
from .preemption import ignore_stop_signals

__all__ = ["autocast_context", "prepare_clips", "build_loader"]


def autocast_context(amp: str, device: torch.device):
    """Mixed precision for ``train.amp`` (``none``, ``bf16`` or ``fp16``) on ``device``."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; use bf16 or none on the CPU")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def prepare_clips(clip: torch.Tensor, device: torch.device, mean, std, channels_last: bool = False) -> torch.Tensor:
    """uint8 clips (..., 3, H, W) -> normalised float on ``device`` (normalised after the copy,
    so the host sends a quarter of the bytes)."""
    x = normalize_clip(clip.to(device, non_blocking=True), mean, std)
    if channels_last and x.dim() == 5:
        # (N, T, 3, H, W): make each frame channels-last, which is what the 2D convs see.
        n, t = x.shape[:2]
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(n, t, *x.shape[2:])
    return x


def build_loader(dataset, sampler, batch_size: int, workers: int, device: torch.device, *, seed: int = 0,
                 generator_seed: int | None = None, persistent: bool = False, stop_signals=()) -> DataLoader:
    """Batches of ``dataset`` in the order of ``sampler`` (a ``ResumableSampler``), every item
    read under its ``(seed, epoch, index)`` seed (``SeededDataset``).

    Args:
        generator_seed: seed of the loader's own generator (worker seeds), so that starting
            an epoch does not draw from the global RNG (dropout); ``None`` draws from it.
        persistent: keep the ``workers`` processes across epochs (iterate the same loader
            again after ``sampler.set_epoch``) instead of starting them every epoch.
        stop_signals: signals the workers ignore: a scheduler signals the whole process
            group, and the workers must keep serving until the main process has saved.
    """
    return DataLoader(
        SeededDataset(dataset, seed),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=device.type == "cuda",
        drop_last=False,
        persistent_workers=persistent and workers > 0,
        generator=None if generator_seed is None else torch.Generator().manual_seed(generator_seed),
        worker_init_fn=functools.partial(ignore_stop_signals, tuple(stop_signals)) if workers and stop_signals else None,
    )
