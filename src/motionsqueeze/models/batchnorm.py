"""Frozen and partial BatchNorm for fine-tuning (TSN's "partial BN").

Fine-tuning on a small set (HMDB-51, UCF-101) with a few clips per GPU gives noisy batch
statistics; the TSN and TSM authors therefore keep the BatchNorm layers of the pretrained
network as they are: running statistics are not updated (the layer normalises with its
stored mean and variance, in training mode too) and its affine weight and bias get no
gradient. ``partial`` freezes every BatchNorm layer but the first (the stem's, in module
order), which TSN leaves trainable because the input distribution changes the most there;
``all`` freezes every one.

A frozen layer is the same module with another class (``FrozenBatchNorm2d`` for
``nn.BatchNorm2d`` ...) whose ``train()`` always leaves it in evaluation mode, so
``model.train()`` anywhere (the loop, DDP, EMA copies) keeps it frozen, and the state dict
keys do not change.
"""

from __future__ import annotations

from torch import nn

__all__ = ["FREEZE_BN_MODES", "freeze_batchnorm", "frozen_batchnorm_layers"]

FREEZE_BN_MODES = ("none", "partial", "all")


class _FrozenStatistics:
    """Mixin: the layer stays in evaluation mode whatever ``train(mode)`` asks."""

    def train(self, mode: bool = True):
        return super().train(False)


class FrozenBatchNorm1d(_FrozenStatistics, nn.BatchNorm1d):
    pass


class FrozenBatchNorm2d(_FrozenStatistics, nn.BatchNorm2d):
    pass


class FrozenBatchNorm3d(_FrozenStatistics, nn.BatchNorm3d):
    pass


class FrozenSyncBatchNorm(_FrozenStatistics, nn.SyncBatchNorm):
    pass


_FROZEN = {
    nn.BatchNorm1d: FrozenBatchNorm1d,
    nn.BatchNorm2d: FrozenBatchNorm2d,
    nn.BatchNorm3d: FrozenBatchNorm3d,
    nn.SyncBatchNorm: FrozenSyncBatchNorm,
}


def frozen_batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``model`` that are frozen."""
    return [name for name, m in model.named_modules() if isinstance(m, _FrozenStatistics)]


def freeze_batchnorm(model: nn.Module, mode: str = "none") -> list[str]:
    """Freeze BatchNorm layers of ``model`` in place (see the module docstring).

    Args:
        model: any module; its ``nn.BatchNorm{1,2,3}d`` / ``SyncBatchNorm`` layers are
            visited in ``model.modules()`` order.
        mode: ``"none"`` (nothing changes), ``"partial"`` (all but the first) or ``"all"``.

    Returns:
        The names of the layers frozen.
    """
    if mode not in FREEZE_BN_MODES:
        raise ValueError(f"model.freeze_bn must be one of {FREEZE_BN_MODES}, got {mode!r}")
    if mode == "none":
        return []
    norms = [(name, m) for name, m in model.named_modules() if type(m) in _FROZEN]
    frozen = []
    for i, (name, m) in enumerate(norms):
        if mode == "partial" and i == 0:
            continue
        m.__class__ = _FROZEN[type(m)]
        m.train(False)
        for p in m.parameters(recurse=False):
            p.requires_grad_(False)
        frozen.append(name)
    return frozen
