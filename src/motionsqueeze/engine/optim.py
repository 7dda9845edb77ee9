"""Optimiser with the recipes' parameter groups, and the learning-rate schedule.

Groups (as in the TSN / TSM / MotionSqueeze training code):

* weights of convolutions and linear layers: lr x 1, weight decay;
* biases: lr x ``bias_lr_mult`` (2), no decay unless ``bias_decay``;
* BatchNorm weights and biases: lr x 1, no decay unless ``norm_decay``;
* the classifier ``fc``: its weight lr x ``classifier_lr_mult``, its bias additionally x
  ``bias_lr_mult``.

The schedule sets every group's lr at every step to ``base_lr * group multiplier *
factor(epoch)`` with ``epoch`` fractional, so warm-up is smooth and resuming mid-epoch needs
only the step counter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig

__all__ = ["parameter_groups", "build_optimizer", "lr_factor", "LRSchedule", "scaled_lr"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into the groups above (empty groups left out)."""
    classifier = getattr(model, "fc", None)
    classifier_ids = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    norm_ids = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    groups = {
        "weights": {"params": [], "lr_mult": 1.0, "weight_decay": cfg.weight_decay},
        "biases": {"params": [], "lr_mult": cfg.bias_lr_mult, "weight_decay": cfg.weight_decay if cfg.bias_decay else 0.0},
        "norms": {"params": [], "lr_mult": 1.0, "weight_decay": cfg.weight_decay if cfg.norm_decay else 0.0},
        "classifier_weight": {"params": [], "lr_mult": cfg.classifier_lr_mult, "weight_decay": cfg.weight_decay},
        "classifier_bias": {
            "params": [],
            "lr_mult": cfg.classifier_lr_mult * cfg.bias_lr_mult,
            "weight_decay": cfg.weight_decay if cfg.bias_decay else 0.0,
        },
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in classifier_ids:
            key = "classifier_weight" if p.ndim > 1 else "classifier_bias"
        elif id(p) in norm_ids:
            key = "norms"
        elif p.ndim <= 1:
            key = "biases"
        else:
            key = "weights"
        groups[key]["params"].append(p)
    return [{"name": k, **g} for k, g in groups.items() if g["params"]]


def scaled_lr(cfg: OptimConfig, total_batch: int) -> float:
    """Linear scaling: ``lr * total_batch / reference_batch_size``."""
    if cfg.reference_batch_size <= 0:
        return cfg.lr
    return cfg.lr * total_batch / cfg.reference_batch_size


def build_optimizer(model: nn.Module, cfg: OptimConfig, base_lr: float) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    for g in groups:
        g["lr"] = base_lr * g["lr_mult"]
    # foreach: one kernel per group of tensors instead of a Python loop over them (PyTorch
    # picks it on CUDA by itself, not on the CPU, where small models pay for the loop).
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, foreach=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(cfg.betas), foreach=True)
    raise ValueError(f"optim.name must be sgd or adamw, got {cfg.name!r}")


def lr_factor(epoch: float, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak lr at (fractional) ``epoch``."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * epoch / cfg.warmup_epochs
    if cfg.kind == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.kind == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-8)
        progress = min(max((epoch - cfg.warmup_epochs) / span, 0.0), 1.0)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


class LRSchedule:
    """Sets each group's lr from the global step; its state is the step counter."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int):
        self.optimizer = optimizer
        self.cfg = cfg
        self.base_lr = base_lr
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.step_count = 0
        self.apply()

    def apply(self) -> float:
        factor = lr_factor(self.step_count / self.steps_per_epoch, self.cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * g.get("lr_mult", 1.0) * factor
        return self.base_lr * factor

    def step(self) -> float:
        self.step_count += 1
        return self.apply()

    @property
    def lr(self) -> float:
        return self.base_lr * lr_factor(self.step_count / self.steps_per_epoch, self.cfg)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.apply()
