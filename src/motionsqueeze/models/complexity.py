"""FLOPs and parameters, counted the way the TSM and MotionSqueeze papers count them.

One multiply-add is one FLOP. Counted: convolutions, linear layers and the local
correlation (``pairs * P^2 * C' * H * W`` multiply-adds, which generic counters miss because
it is not a layer). Not counted: BatchNorm, activations, pooling, the soft-argmax and other
element-wise work, as in the papers' tables.

The model runs once on the ``meta`` device when it can, so counting ResNet-101 at 16 frames
costs no arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import MotionSqueeze

__all__ = ["Complexity", "measure_complexity", "count_parameters"]


@dataclass
class Complexity:
    """Cost of one clip.

    Attributes:
        gflops: multiply-adds of one forward pass, in 1e9.
        params: trainable and non-trainable parameters (buffers excluded).
        ms_gflops: the part of ``gflops`` spent inside MotionSqueeze modules.
        ms_params: the part of ``params`` inside MotionSqueeze modules.
    """

    gflops: float
    params: int
    ms_gflops: float
    ms_params: int


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def measure_complexity(model: nn.Module, frames: int, size: int | tuple[int, int] = 224) -> Complexity:
    """Count FLOPs of one ``(1, frames, 3, H, W)`` clip and the parameters of ``model``."""
    h, w = (size, size) if isinstance(size, int) else size
    ms_modules = [m for m in model.modules() if isinstance(m, MotionSqueeze)]
    inside_ms = {id(sub) for m in ms_modules for sub in m.modules()}
    totals = {"all": 0, "ms": 0}

    def add(module: nn.Module, macs: int) -> None:
        totals["all"] += macs
        if id(module) in inside_ms:
            totals["ms"] += macs

    def conv_hook(m, inputs, out):
        add(m, _conv_macs(m, out))

    def linear_hook(m, inputs, out):
        add(m, out.numel() * m.in_features)

    def correlation_hook(m: MotionSqueeze, inputs, out):
        nt, _, fh, fw = inputs[0].shape
        pairs = nt // m.num_segments * (m.num_segments - 1)
        add(m, pairs * m.patch_size**2 * m.reduced_channels * fh * fw)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, MotionSqueeze):
            handles.append(m.register_forward_hook(correlation_hook))
    try:
        param = next(model.parameters())
        clip = torch.zeros(1, frames, 3, h, w, device=param.device, dtype=param.dtype)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(clip)
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return Complexity(
        gflops=totals["all"] / 1e9,
        params=count_parameters(model),
        ms_gflops=totals["ms"] / 1e9,
        ms_params=sum(count_parameters(m) for m in ms_modules),
    )
