"""ImageNet initialisation of a recogniser's backbone from a local file in torchvision's layout.

:func:`load_backbone_weights` copies an ImageNet ResNet or MobileNetV2 (``.pth`` or
``.safetensors``, read by :mod:`.safe_load`) into ``model.backbone``
(``create_model(..., pretrained=path)`` calls it) and says what was loaded and what kept its
initialisation. Nothing is ever downloaded. The normalisation such weights expect is
:data:`~motionsqueeze.data.transforms.IMAGENET_MEAN` / ``IMAGENET_STD``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..card import card_of
from ..recognizer import VideoRecognizer
from ..resnet import RESNET_DEPTHS, BasicBlock
from .safe_load import WeightsFileError, compare_keys, read_state_dict, strip_prefix

_log = logging.getLogger(__name__)

__all__ = ["describe_resnet", "PretrainedReport", "load_backbone_weights"]


def describe_resnet(state_dict: Mapping[str, Tensor], prefix: str = "") -> str:
    """Name the ResNet a torchvision-layout state dict holds, e.g. ``"ResNet-50"``.

    Used to explain a depth mismatch; returns a description of the blocks when the layout
    is not a standard depth. A MobileNetV2 state dict (``features.0.0.weight``) is named
    with its width instead.
    """
    stem = state_dict.get(f"{prefix}features.0.0.weight")
    if stem is not None:
        return f"MobileNetV2 (stem width {stem.shape[0]}, width multiplier {stem.shape[0] / 32:g})"
    blocks = []
    for stage in range(1, 5):
        pattern = re.compile(rf"^{re.escape(prefix)}layer{stage}\.(\d+)\.")
        ids = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
        blocks.append(max(ids) + 1 if ids else 0)
    if not any(blocks):
        return "no ResNet stages (no layer1..layer4 keys)"
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state_dict
    for depth, (block, layers) in RESNET_DEPTHS.items():
        if tuple(blocks) == tuple(layers) and (block is not BasicBlock) == bottleneck:
            stem = state_dict.get(f"{prefix}conv1.weight")
            width = "" if stem is None or stem.shape[0] == 64 else f", stem width {stem.shape[0]}"
            return f"ResNet-{depth}{width}"
    kind = "bottleneck" if bottleneck else "basic"
    return f"a ResNet with {tuple(blocks)} {kind} blocks"


def _model_resnet_name(model: VideoRecognizer) -> str:
    return describe_resnet(model.backbone.state_dict())


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class PretrainedReport:
    """What :func:`load_backbone_weights` did (``str(report)`` is the printed summary)."""

    path: str
    source: str
    loaded: list[str] = field(default_factory=list)
    loaded_params: int = 0
    ignored: list[str] = field(default_factory=list)
    initialised: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        kept = ", ".join(f"{name} ({n:,} parameters)" for name, n in self.initialised.items())
        lines = [
            f"ImageNet weights from {self.path} ({self.source}, torchvision layout):",
            f"  loaded       backbone: {len(self.loaded)} tensors, {self.loaded_params:,} parameters",
        ]
        if self.ignored:
            lines.append(f"  ignored      {', '.join(self.ignored)} (the ImageNet classifier)")
        if kept:
            lines.append(f"  initialised  {kept}: left at their initialisation")
        return "\n".join(lines)


def _foreign_layout_hint(keys: Sequence[str]) -> str:
    if any(k.startswith("backbone.") for k in keys):
        return (" It looks like a motionsqueeze model (backbone.* keys): open it with "
                "motionsqueeze.load_model instead.")
    if any(k.startswith(("module.base_model.", "base_model.")) for k in keys):
        return (" It looks like an official MotionSqueeze/TSM checkpoint (base_model.* keys): "
                "import it with `motionsqueeze convert official-ms|official-tsm`.")
    return ""


def load_backbone_weights(
    model: VideoRecognizer,
    path: str | os.PathLike,
    *,
    log: Callable[[str], None] | None = _log.info,
) -> PretrainedReport:
    """Initialise ``model.backbone`` from an ImageNet ResNet or MobileNetV2 file in
    torchvision's layout.

    The file (``.pth`` or ``.safetensors``, optionally with a ``module.`` prefix) must hold
    exactly the backbone's tensors plus, optionally, the ImageNet classifier (``fc.*``, or
    ``classifier.*`` for MobileNetV2; ignored: the video classifier is new).
    ``num_batches_tracked`` may be absent (older torchvision files).
    MotionSqueeze modules and the classifier keep their initialisation. Anything else that
    does not match (a missing or extra tensor, a wrong shape, another depth) is refused
    before the model is touched.

    Args:
        model: the recogniser to initialise (modified in place).
        path: the weights file.
        log: where the summary goes; by default the ``motionsqueeze.models.weights.imagenet``
            logger at INFO (the command line shows it); ``None`` for silence.

    Returns:
        A :class:`PretrainedReport`.
    """
    path = Path(path)
    state = strip_prefix(read_state_dict(path), "module.")
    target = model.backbone.state_dict()
    # fc.* is a ResNet's ImageNet classifier, classifier.* a MobileNetV2's.
    ignored = sorted(k for k in state if k.startswith(("fc.", "classifier.")))
    mismatch = compare_keys(target, {k: v for k, v in state.items() if k not in ignored})
    if mismatch:
        found, expected = describe_resnet(state), _model_resnet_name(model)
        message = f"{path} does not fit the backbone of this model"
        if found != expected:
            message += (
                f": the file holds {found} weights, the model "
                f"({card_of(model).arch or 'this model'}) has a {expected} backbone; use "
                f"a {expected} ImageNet file or a model of the file's depth"
            )
        raise WeightsFileError(f"{message}. {mismatch.describe()}.{_foreign_layout_hint(list(state))}")

    loaded = [k for k in target if k in state]
    with torch.no_grad():
        for k in loaded:
            target[k].copy_(state[k])
    initialised = {f"motion.{name}": _param_count(m) for name, m in model.motion.items()}
    initialised["fc"] = _param_count(model.fc)
    report = PretrainedReport(
        path=str(path),
        source=describe_resnet(state),
        loaded=loaded,
        loaded_params=sum(p.numel() for k, p in model.backbone.named_parameters() if k in state),
        ignored=ignored,
        initialised=initialised,
    )
    if log is not None:
        log(str(report))
    return report
