"""Exponential moving average of the weights (EMA), kept beside the trained model.

After every optimiser update ``ema = decay * ema + (1 - decay) * weights`` for every
floating-point parameter and buffer (BatchNorm running statistics included); integer
buffers (``num_batches_tracked``) are copied. The averaged model is validated next to the
trained one and written as its own model file (``ema.safetensors``); its state is part of
the training checkpoint, so a resumed run continues the same average.

With ``decay`` d the average spans about ``1 / (1 - d)`` updates: 0.999 suits runs of tens of
thousands of updates, 0.99 short fine-tuning runs of a few thousand.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """An averaged copy of ``model`` (evaluation mode, no gradients).

    Args:
        model: the unwrapped model being trained (not its DDP or compiled wrapper).
        decay: weight of the old average at each update, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1) when EMA is on, got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        self.updates += 1
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            new = current[name].detach()
            if avg.is_floating_point():
                avg.lerp_(new.to(avg.dtype), 1.0 - self.decay)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
