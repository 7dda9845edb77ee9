"""Temporal shift (TSM, Lin et al., ICCV 2019), the "residual shift" variant.

On a block input viewed as ``(N, T, C, H, W)``: channels ``[0, C/d)`` of frame t take the
values of frame t+1, channels ``[C/d, 2C/d)`` take those of frame t-1, the rest stay; zero
where t+1 or t-1 is outside the clip (d = ``fold_div``, 8 by default).

Written with slices, a zero pad and a concatenation, never an in-place slice assignment into
a zeros tensor: the official TSM code does the latter, and tracing-based exporters (ONNX)
freeze such assignments into constants, giving wrong outputs after export. In eager
training the shift is one autograd node whose backward is the opposite shift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.tracing import recording

__all__ = ["temporal_shift", "TemporalShift", "check_segments", "is_channels_last"]


def check_segments(x: Tensor, num_segments: int, min_segments: int = 1) -> int:
    """Validate a frame batch ``(N*T, C, H, W)`` and return N (clips)."""
    if x.dim() != 4:
        raise ValueError(
            f"expected frames of shape (N*T, C, H, W), got a tensor of shape {tuple(x.shape)}"
        )
    if num_segments < min_segments:
        raise ValueError(
            f"num_segments must be at least {min_segments}, got {num_segments}"
        )
    if x.shape[0] % num_segments != 0:
        raise ValueError(
            f"the batch holds {x.shape[0]} frames, which is not a multiple of "
            f"num_segments={num_segments}; frames of one clip must be contiguous (N*T, C, H, W)"
        )
    return x.shape[0] // num_segments


def is_channels_last(x: Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last (and not also plain contiguous, as when
    C or H*W is 1): the layout a channels-last model's layers keep."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _shift(x: Tensor, num_segments: int, fold: int, backward: bool = False) -> Tensor:
    """The shift on validated input; ``backward`` moves each fold the other way (the
    transpose of the shift, i.e. its gradient).

    A channels-last input gives a channels-last output: the shift then runs on the
    ``(N, T, H, W, C)`` view of it, so that a channels-last model (``train.channels_last``,
    ~20% faster training of the tiny models on a CPU) converts no layout at every block.
    """
    nt, c, h, w = x.shape
    if is_channels_last(x):
        v = x.permute(0, 2, 3, 1).view(nt // num_segments, num_segments, h, w, c)
        ch = 4
    else:
        v = x.reshape(nt // num_segments, num_segments, c, h, w)  # the gradient may be strided
        ch = 2
    # F.pad's pairs run from the last dim backwards; T is dim 1 in both layouts.
    later, earlier = (0, 0, 0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0, 1, 0)
    lo, hi = v.narrow(ch, 0, fold), v.narrow(ch, fold, fold)
    if backward:
        first, second = F.pad(lo[:, :-1], earlier), F.pad(hi[:, 1:], later)
    else:
        first, second = F.pad(lo[:, 1:], later), F.pad(hi[:, :-1], earlier)
    out = torch.cat((first, second, v.narrow(ch, 2 * fold, c - 2 * fold)), dim=ch)
    if ch == 4:
        return out.view(nt, h, w, c).permute(0, 3, 1, 2)
    return out.reshape(nt, c, h, w)


class _ShiftFunction(torch.autograd.Function):
    """One autograd node whose backward is the opposite shift: autograd's own backward of
    the slices, pads and concatenation zero-fills and adds three full-size tensors."""

    @staticmethod
    def forward(ctx, x: Tensor, num_segments: int, fold: int) -> Tensor:
        ctx.params = (num_segments, fold)
        return _shift(x, num_segments, fold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _shift(grad, *ctx.params, backward=True), None, None


def temporal_shift(x: Tensor, num_segments: int, fold_div: int = 8) -> Tensor:
    """Shift a fraction of channels one frame forward and one backward in time.

    Args:
        x: ``(N*T, C, H, W)``, frames of one clip contiguous.
        num_segments: T.
        fold_div: ``C // fold_div`` channels move each way.

    Returns:
        A new tensor of the same shape.
    """
    check_segments(x, num_segments)
    fold = x.shape[1] // fold_div
    # Compilers and exporters record the plain slices, pads and concatenation.
    if torch.is_grad_enabled() and x.requires_grad and not recording():
        return _ShiftFunction.apply(x, num_segments, fold)
    return _shift(x, num_segments, fold)


class TemporalShift(nn.Module):
    """Module form of :func:`temporal_shift` (no parameters)."""

    def __init__(self, num_segments: int, fold_div: int = 8):
        super().__init__()
        if num_segments < 1:
            raise ValueError(f"num_segments must be positive, got {num_segments}")
        if fold_div < 2:
            raise ValueError(f"fold_div must be at least 2 (two folds move), got {fold_div}")
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: Tensor) -> Tensor:
        return temporal_shift(x, self.num_segments, self.fold_div)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"
