"""Training loss: cross-entropy with label smoothing, soft (mixed) targets and class weights,
and the class-balancing helpers for imbalanced data.

``training_loss`` with its defaults is exactly ``F.cross_entropy(logits, labels)``, the
paper's loss.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CLASS_BALANCE_MODES", "class_counts", "class_weights", "balanced_item_weights", "training_loss"]

CLASS_BALANCE_MODES = ("none", "loss", "sampler")


def class_counts(labels: Sequence[int], num_classes: int) -> Tensor:
    """Items per class ``(num_classes,)`` (negative labels, i.e. unlabelled items, ignored)."""
    t = torch.as_tensor(list(labels), dtype=torch.long)
    t = t[t >= 0]
    if len(t) and int(t.max()) >= num_classes:
        raise ValueError(f"label {int(t.max())} is out of range for {num_classes} classes")
    return torch.bincount(t, minlength=num_classes)


def class_weights(labels: Sequence[int], num_classes: int) -> Tensor:
    """Inverse-frequency weights ``n / (C * n_c)`` (1 on average over the items; classes
    without items get weight 1, which no item uses)."""
    counts = class_counts(labels, num_classes).double()
    present = counts > 0
    w = torch.ones(num_classes, dtype=torch.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.float()


def balanced_item_weights(labels: Sequence[int], num_classes: int) -> Tensor:
    """Sampling weight of each item, ``1 / n_c`` of its class, so that every class present
    is drawn equally often in expectation."""
    counts = class_counts(labels, num_classes).double()
    t = torch.as_tensor(list(labels), dtype=torch.long)
    w = torch.zeros(len(t), dtype=torch.float64)
    ok = t >= 0
    w[ok] = 1.0 / counts[t[ok]]
    return w


def training_loss(logits: Tensor, labels: Tensor, targets: Tensor | None = None, label_smoothing: float = 0.0,
                  weight: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of ``logits (N, K)``.

    Args:
        labels: ``(N,)`` class indices (used when ``targets`` is None).
        targets: ``(N, K)`` class probabilities (MixUp / CutMix), or None.
        label_smoothing: epsilon: the target puts ``1 - eps + eps / K`` on the class.
        weight: ``(K,)`` class weights or None.
    """
    return F.cross_entropy(logits.float(), labels if targets is None else targets,
                           weight=weight, label_smoothing=label_smoothing)
