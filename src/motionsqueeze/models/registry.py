"""Named model variants: ``create_model(name, **overrides)`` and ``list_models(pattern)``.

A variant is a :class:`~motionsqueeze.models.recognizer.ModelConfig` with defaults; any
field can be overridden by keyword. To add one, call :func:`register_model` with a name and
the fields that differ from ``ModelConfig()``.
"""

from __future__ import annotations

import fnmatch
import os

from .card import ModelCard
from .recognizer import ModelConfig, VideoRecognizer, build_model
from .weights.imagenet import load_backbone_weights

__all__ = ["register_model", "create_model", "list_models", "model_config"]

_REGISTRY: dict[str, dict] = {}


def register_model(name: str, **fields) -> None:
    """Register a variant; ``fields`` are :class:`ModelConfig` fields."""
    ModelConfig().replace(**fields)  # validate now, not at first use
    _REGISTRY[name] = fields


_FAMILIES = {
    "tsn": dict(temporal_shift=False, motion_stages=()),
    "tsm": dict(temporal_shift=True, motion_stages=()),
    "msnet": dict(temporal_shift=True, motion_stages=("res3",)),
}
for _family, _fields in _FAMILIES.items():
    for _depth in (18, 34, 50, 101):
        register_model(f"{_family}_r{_depth}", depth=_depth, **_fields)
    # A small ResNet-10 (one block per stage, a quarter of the width) for CPU experiments
    # and the built-in demo.
    register_model(
        f"{_family}_tiny", depth=10, widths=(16, 32, 64, 128), reduced_channels=32, **_fields
    )
    # MobileNetV2 (torchvision layout) at width 1.0 and 0.5; MotionSqueeze after res3
    # (stride 8, 32 or 16 channels) matches frames at the stage's own width.
    register_model(f"{_family}_mbv2", backbone="mobilenet_v2", reduced_channels=32, **_fields)
    register_model(
        f"{_family}_mbv2_050", backbone="mobilenet_v2", width_mult=0.5, reduced_channels=16, **_fields
    )

# The small causal (streaming) variants the demo trains; any other model is made causal by the
# keyword or recipe field ``causal=True`` (docs/streaming.md).
for _family in ("tsm", "msnet"):
    register_model(f"{_family}_tiny_causal", **_REGISTRY[f"{_family}_tiny"], causal=True)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_config(name: str, **overrides) -> ModelConfig:
    """The :class:`ModelConfig` of a registered variant with overrides applied."""
    if name not in _REGISTRY:
        close = fnmatch.filter(_REGISTRY, f"*{name.split('_')[0]}*") or list_models()
        raise ValueError(f"unknown model {name!r}; registered models include {sorted(close)}")
    return ModelConfig().replace(**{**_REGISTRY[name], **overrides})


def create_model(
    name: str,
    *,
    num_classes: int = 174,
    num_segments: int = 8,
    pretrained: str | os.PathLike | None = None,
    **overrides,
) -> VideoRecognizer:
    """Build a registered variant, e.g. ``create_model("msnet_r50", num_classes=174)``.

    Any :class:`ModelConfig` field can be overridden by keyword (``patch_size=9``,
    ``motion_stages=("res2", "res3")``, ...); an unknown keyword is a ``ValueError``.
    ``pretrained`` is a local ImageNet ResNet file in torchvision's layout (``.pth`` or
    ``.safetensors``) loaded into the backbone by
    :func:`~motionsqueeze.models.weights.load_backbone_weights`, which logs what was
    loaded; no weights are ever downloaded. The model carries a
    :class:`~motionsqueeze.models.card.ModelCard` (``model.card``: the name, the config and
    default preprocessing).
    """
    config = model_config(name, num_classes=num_classes, num_segments=num_segments, **overrides)
    model = build_model(config)
    model.card = ModelCard.for_config(config, arch=name)
    if pretrained is not None:
        load_backbone_weights(model, pretrained)
    return model
