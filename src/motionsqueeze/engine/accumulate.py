"""Gradient accumulation: K batches per optimiser update, resumable mid-way.

Batches ``i = 0 .. S-1`` of an epoch form groups ``[gK, min((g + 1) K, S))``; the gradients
of a group are summed and the optimiser steps after its last batch (the last group of an
epoch may be shorter). Each batch's mean loss is weighted by its share of the group's clips,
so a group computes the gradient of the mean loss over all its clips: accumulating K batches
of B clips equals one batch of K*B clips (for a model without BatchNorm, whose statistics
still come from B clips at a time). A checkpoint written inside a group carries the
gradients summed so far, so a resumed run continues the same group.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["group_bounds", "loss_share", "gradient_state", "load_gradient_state"]


def group_bounds(step_in_epoch: int, accumulate: int, steps_per_epoch: int) -> tuple[bool, bool]:
    """``(first, last)``: does batch ``step_in_epoch`` open its group, does it close it."""
    first = step_in_epoch % accumulate == 0
    last = (step_in_epoch + 1) % accumulate == 0 or step_in_epoch + 1 >= steps_per_epoch
    return first, last


def loss_share(step_in_epoch: int, accumulate: int, steps_per_epoch: int, batch_size: int, epoch_items: int) -> float:
    """Weight of batch ``step_in_epoch``'s mean loss: its clips / the clips of its group.

    Args:
        epoch_items: clips this process reads in a whole epoch (the last batch may be short).
    """
    def clips(i: int) -> int:
        return max(0, min(batch_size, epoch_items - i * batch_size))

    start = step_in_epoch - step_in_epoch % accumulate
    end = min(start + accumulate, steps_per_epoch)
    total = sum(clips(i) for i in range(start, end))
    return clips(step_in_epoch) / max(total, 1)


def gradient_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The gradients accumulated so far, by parameter name (for a checkpoint)."""
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def load_gradient_state(model: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    """Put saved gradients back on the parameters of ``model``."""
    params = dict(model.named_parameters())
    missing = sorted(set(grads) - set(params))
    if missing:
        raise KeyError(f"the checkpoint holds gradients of parameters this model lacks: {missing[:5]}")
    for name, g in grads.items():
        p = params[name]
        p.grad = g.to(device=p.device, dtype=p.dtype).clone()
