"""Causal temporal shift: channels come from the previous frame only (online TSM).

The bidirectional shift of :mod:`motionsqueeze.layers.temporal_shift` needs frame t+1 to
compute frame t, so a live stream would have to wait for the future. The online variant of
TSM (Lin et al., ICCV 2019, section "online video recognition") moves channels from the past
only. Here, on a block input viewed as ``(N, T, C, H, W)``, channels ``[0, C/d)`` of frame t
take the values of frame t-1 (zero at t = 0), the other ``C - C/d`` stay (d = ``fold_div``,
8 by default: one eighth of the channels, as in online TSM; the bidirectional shift moves
two eighths, one each way).

Frame by frame (:meth:`CausalTemporalShift.step`) the same map needs only a buffer holding
channels ``[0, C/d)`` of the previous frame's block input, which is what
:mod:`motionsqueeze.models.streaming` keeps per block. Like the bidirectional shift, this is
written with pads and concatenations, never slice assignment, so exported graphs stay right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .temporal_shift import TemporalShift, check_segments

__all__ = ["causal_temporal_shift", "CausalTemporalShift"]


def causal_temporal_shift(x: Tensor, num_segments: int, fold_div: int = 8) -> Tensor:
    """Channels ``[0, C // fold_div)`` of frame t from frame t-1 (zeros at t = 0).

    Args:
        x: ``(N*T, C, H, W)``, frames of one clip contiguous.
        num_segments: T.
        fold_div: ``C // fold_div`` channels come from the previous frame.

    Returns:
        A new tensor of the same shape.
    """
    n = check_segments(x, num_segments)
    nt, c, h, w = x.shape
    v = x.view(n, num_segments, c, h, w)
    fold = c // fold_div
    # F.pad's pairs run from the last dim backwards: (W, H, C, T); one zero frame in front.
    from_prev = F.pad(v[:, :-1, :fold], (0, 0, 0, 0, 0, 0, 1, 0))
    return torch.cat((from_prev, v[:, :, fold:]), dim=2).reshape(nt, c, h, w)


class _StepIO:
    """Previous-frame buffer handed to a shift module for one streaming step (plain object,
    not a module or buffer, so it never reaches the state dict)."""

    __slots__ = ("prev", "next")

    def __init__(self, prev: Tensor | None):
        self.prev = prev
        self.next: Tensor | None = None


class CausalTemporalShift(TemporalShift):
    """Module form of :func:`causal_temporal_shift` with a one-frame step (a
    :class:`TemporalShift` with the same arguments, past-only).

    Normally it maps whole clips. While a streaming step runs, ``step_io`` holds the previous
    frame's buffer: the module then maps one frame per clip ``(N, C, H, W)`` with
    :meth:`step` and leaves the buffer for the next frame in ``step_io.next``. This is how a
    shift slot deep inside any backbone block gets its state without the block knowing.
    """

    def __init__(self, num_segments: int, fold_div: int = 8):
        super().__init__(num_segments, fold_div)
        self.step_io: _StepIO | None = None

    def step(self, x: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """One frame per clip: ``x`` ``(N, C, H, W)``, ``prev`` ``(N, C // fold_div, H, W)``
        (channels of the previous frame; ``None`` or zeros before the first frame).

        Returns ``(shifted x, buffer for the next frame)``.
        """
        fold = x.shape[1] // self.fold_div
        if prev is None:
            prev = torch.zeros_like(x[:, :fold])
        return torch.cat((prev, x[:, fold:]), dim=1), x[:, :fold]

    def forward(self, x: Tensor) -> Tensor:
        io = self.step_io
        if io is None:
            return causal_temporal_shift(x, self.num_segments, self.fold_div)
        out, io.next = self.step(x, io.prev)
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + ", causal=True"
