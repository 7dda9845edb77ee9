"""Import checkpoints of the authors' MotionSqueeze code and of the official TSM code.

Both save ``{'epoch', 'arch', 'state_dict', 'best_prec1'}`` (TSM also ``'optimizer'``)
from ``DataParallel(TSN(...))``, so keys start with ``module.`` (docs/weights.md):

==========================================================  =================================
official MotionSqueeze (``official-ms``)                     ours
==========================================================  =================================
``module.base_model.<torchvision ResNet key>``               ``backbone.<same>``
``module.base_model.bn2.*`` (a BatchNorm their ResNet        dropped
never uses)
``module.base_model.chnl_reduction.{0,1}.*``                 ``motion.res3.chnl_reduction.*``
``module.base_model.flow_refinement.conv{1..4}.{0,1,3,4}.*``  ``motion.res3.flow_refinement.*``
``module.new_fc.weight`` ``(classes, C, 1)`` (a Conv1d), or   ``fc.weight`` ``(classes, C)``
``module.base_model.fc1.weight`` when dropout was 0
==========================================================  =================================

The official TSM code wraps each block's ``conv1`` in its shift module
(``module.base_model.layerX.Y.conv1.net.weight`` -> ``backbone.layerX.Y.conv1.weight``) and
uses a Linear ``module.new_fc`` (or ``module.base_model.fc`` when dropout was 0).

Its MobileNetV2 (``archs/mobilenet_v2.py``, width 1.0, for ``tsm_mbv2``) keeps each
block's branch as one flat Sequential (conv, BN, ReLU6, conv, BN, ReLU6, conv, BN) and
wraps the first conv of residual blocks in the shift; torchvision nests each conv + BN:

==========================================================  =================================
official TSM MobileNetV2                                     ours
==========================================================  =================================
``module.base_model.features.{0,18}.{0,1}.*``                ``backbone.features.{0,18}.{0,1}.*``
``module.base_model.features.1.conv.{0,1,3,4}.*``            ``...features.1.conv.{0.0,0.1,1,2}.*``
``module.base_model.features.i.conv.{0,1,3,4,6,7}.*``        ``...features.i.conv.{0.0,0.1,1.0,1.1,2,3}.*``
(``conv.0.net.*`` where the shift wraps it)
``module.new_fc.*`` or ``module.base_model.classifier.*``    ``fc.*``
==========================================================  =================================

A bare state dict and keys without ``module.`` are accepted too. Nothing is guessed: a key
that has no place in the chosen architecture, or a tensor of the wrong shape, is reported
with a hint, and nothing is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import Tensor

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .card import Provenance
from .recognizer import VideoRecognizer
from .weights.imagenet import describe_resnet
from .weights.model_file import save_model
from .weights.safe_load import compare_keys, read_checkpoint, strip_prefix
from .registry import create_model

__all__ = ["SOURCES", "Conversion", "convert_state_dict", "load_official", "convert_checkpoint", "describe_conversion"]

SOURCES = ("official-ms", "official-tsm")

_BACKBONE = re.compile(r"^base_model\.((?:conv1|bn1|layer[1-4]|features)\..*)$")
_TSM_MBV2_BRANCH = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(?:net\.)?([^.]+)$")
# Flat index in the official TSM MobileNetV2 block -> torchvision's nested index; the first
# block (expansion 1) has no expansion conv.
_TSM_MBV2_FIRST = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}
_TSM_MBV2_EXPAND = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
_TSM_CONV1 = re.compile(r"^(layer[1-4]\.\d+\.conv1)\.net\.(.*)$")
_MS = re.compile(r"^base_model\.((?:chnl_reduction|flow_refinement)\..*)$")
_CLASSIFIER = {
    "official-ms": ("new_fc.", "base_model.fc1."),
    "official-tsm": ("new_fc.", "base_model.fc.", "base_model.classifier."),
}
# Keys of the authors' ResNet that hold parameters but are never used in forward().
_UNUSED = {"official-ms": re.compile(r"^base_model\.bn2\."), "official-tsm": None}


@dataclass
class Conversion:
    """Result of :func:`convert_state_dict`.

    Attributes:
        source: ``"official-ms"`` or ``"official-tsm"``.
        state_dict: tensors under our names.
        dropped: source keys deliberately left out (the unused ``bn2``).
        unexpected: source keys that have no place in our layout.
        info: ``epoch``, ``arch``, ``best_prec1`` of the checkpoint when present.
    """

    source: str
    state_dict: dict[str, Tensor] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        w = self.state_dict.get("fc.weight")
        return None if w is None else int(w.shape[0])

    @property
    def has_motion(self) -> bool:
        return any(k.startswith("motion.") for k in self.state_dict)

    def provenance(self, file: str | None = None) -> dict[str, Any]:
        """What the model card records (``Provenance.converted_from``): the layout
        (``source``), the checkpoint's ``file`` name, its ``epoch`` / ``arch`` /
        ``best_prec1``, the number of ``tensors`` loaded and the ``dropped`` keys."""
        out = {"source": self.source, "file": file, **self.info, "tensors": len(self.state_dict)}
        if self.dropped:
            out["dropped"] = list(self.dropped)
        return out

    def summary(self) -> str:
        return describe_conversion(self.provenance())


_NOT_ABOUT = ("source", "file", "tensors", "dropped")


def describe_conversion(converted_from: Mapping[str, Any]) -> str:
    """One line about a conversion from its record, e.g. ``official-ms checkpoint (epoch 40,
    arch MS, best_prec1 45.5): 176 tensors; dropped 5 unused (base_model.bn2.*)``."""
    c = converted_from
    about = ", ".join(f"{k} {v}" for k, v in c.items() if k not in _NOT_ABOUT)
    text = f"{c.get('source')} checkpoint{f' ({about})' if about else ''}"
    if c.get("tensors") is not None:
        text += f": {c['tensors']} tensors"
    dropped = c.get("dropped") or []
    if dropped:
        text += f"; dropped {len(dropped)} unused ({', '.join(sorted({_stem(k) for k in dropped}))})"
    return text


def _tsm_mobilenet_key(rest: str) -> str | None:
    """``features.i.conv.j[.net].p`` of the official TSM MobileNetV2 -> torchvision's key
    (``None`` when it has no place there); other ``features.*`` keys are the same."""
    m = _TSM_MBV2_BRANCH.match(rest)
    if m is None:
        return rest if re.match(r"^features\.(\d+)\.[01]\.[^.]+$", rest) else None
    block, flat, param = int(m.group(1)), int(m.group(2)), m.group(3)
    nested = (_TSM_MBV2_FIRST if block == 1 else _TSM_MBV2_EXPAND).get(flat)
    return None if nested is None else f"features.{block}.conv.{nested}.{param}"


def _stem(key: str) -> str:
    """``base_model.bn2.weight`` -> ``base_model.bn2.*`` (a stem stays as it is)."""
    return key if key.endswith(".*") else key.rsplit(".", 1)[0] + ".*"


def _plain(value: Any) -> Any:
    """Checkpoint scalars (tensors, numpy numbers) as JSON-friendly Python values."""
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    try:
        return value.item()
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return str(value)


def convert_state_dict(checkpoint: Mapping[str, Any], source: str) -> Conversion:
    """Rename an official checkpoint (or its bare state dict) to our layout.

    Args:
        checkpoint: the loaded file: ``{'state_dict': ..., 'epoch': ..., ...}`` or the state
            dict itself, keys with or without ``module.``.
        source: ``"official-ms"`` (the authors' MotionSqueeze code) or ``"official-tsm"``.

    Returns:
        A :class:`Conversion`; nothing is checked against a model yet (see
        :func:`load_official`).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; expected one of {list(SOURCES)}")
    conv = Conversion(source)
    state = checkpoint
    if isinstance(checkpoint.get("state_dict"), Mapping):
        state = checkpoint["state_dict"]
        conv.info = {k: _plain(checkpoint[k]) for k in ("epoch", "arch", "best_prec1") if k in checkpoint}
    state = strip_prefix({k: v for k, v in state.items() if isinstance(v, Tensor)}, "module.")
    classifier = _CLASSIFIER[source]
    unused = _UNUSED[source]
    for key, value in state.items():
        if unused is not None and unused.match(key):
            conv.dropped.append(key)
        elif key.startswith(classifier):
            name = "fc." + key.split(".")[-1]
            if name in conv.state_dict:
                conv.unexpected.append(key)  # two classifiers: ambiguous
                continue
            # The authors' classifier is a Conv1d with a (classes, C, 1) kernel.
            conv.state_dict[name] = value.squeeze(-1) if value.dim() == 3 else value
        elif (m := _BACKBONE.match(key)) is not None:
            rest = m.group(1)
            if rest.startswith("features."):
                rest = _tsm_mobilenet_key(rest) if source == "official-tsm" else None
                if rest is None:
                    conv.unexpected.append(key)
                    continue
            elif source == "official-tsm":
                rest = _TSM_CONV1.sub(r"\1.\2", rest)
            elif _TSM_CONV1.match(rest):
                conv.unexpected.append(key)
                continue
            conv.state_dict[f"backbone.{rest}"] = value
        elif source == "official-ms" and (m := _MS.match(key)) is not None:
            conv.state_dict[f"motion.res3.{m.group(1)}"] = value
        else:
            conv.unexpected.append(key)
    return conv


def _source_hint(conv: Conversion) -> str:
    keys = " ".join(conv.unexpected)
    if conv.source == "official-ms" and ".conv1.net." in keys:
        return " The keys look like the official TSM code's (conv1.net): use official-tsm."
    if conv.source == "official-tsm" and re.search(r"chnl_reduction|flow_refinement|fc1\.", keys):
        return " The keys look like the authors' MotionSqueeze code's: use official-ms."
    return ""


def _arch_hint(conv: Conversion, model: VideoRecognizer, arch: str) -> str:
    hints = []
    found = describe_resnet(conv.state_dict, "backbone.")
    expected = describe_resnet(model.state_dict(), "backbone.")
    if found != expected:
        hints.append(f"the checkpoint holds a {found} backbone, {arch} is a {expected}")
    if conv.has_motion and not model.motion:
        hints.append(f"the checkpoint has MotionSqueeze weights but {arch} has no MotionSqueeze "
                     f"(use an msnet_* architecture)")
    elif model.motion and not conv.has_motion:
        hints.append(f"{arch} has MotionSqueeze but the checkpoint has none (use a tsm_* architecture)")
    return f": {'; '.join(hints)}" if hints else ""


def load_official(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    source: str,
    *,
    arch: str,
    num_segments: int,
    **overrides,
) -> VideoRecognizer:
    """Build ``arch`` and load an official checkpoint into it, strictly.

    Args:
        checkpoint: a file path (read with ``weights_only=True``) or the loaded object.
        source: ``"official-ms"`` or ``"official-tsm"``.
        arch: registered model name, e.g. ``"msnet_r50"`` or ``"tsm_r50"``.
        num_segments: T the checkpoint was trained with (not stored in the file).
        **overrides: further :class:`ModelConfig` fields.

    Returns:
        The model in eval mode; its card records the conversion
        (``model.card.provenance.converted_from``, see :meth:`Conversion.provenance`).
    """

    where = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "the checkpoint"
    file = Path(checkpoint).name if isinstance(checkpoint, (str, os.PathLike)) else None
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{where} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    conv = convert_state_dict(checkpoint, source)
    if conv.unexpected:
        raise ValueError(
            f"{where}: {len(conv.unexpected)} tensor(s) have no place in the {source} layout, "
            f"e.g. {conv.unexpected[:4]}.{_source_hint(conv)}"
        )
    if conv.num_classes is None:
        names = _CLASSIFIER[source]
        raise ValueError(f"{where}: no classifier found (expected {' or '.join(n + 'weight' for n in names)})")
    model = create_model(arch, num_classes=conv.num_classes, num_segments=num_segments, **overrides)
    mismatch = compare_keys(model.state_dict(), conv.state_dict)
    if mismatch:
        raise ValueError(
            f"{where} does not fit {arch}{_arch_hint(conv, model, arch)}. {mismatch.describe()}."
        )
    model.load_state_dict(conv.state_dict, strict=False)  # only num_batches_tracked may be absent
    model.card = model.card.replace(provenance=Provenance("converted", converted_from=conv.provenance(file)))
    return model.eval()


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    source: str,
    *,
    arch: str,
    num_segments: int,
    class_names: Sequence[str] | None = None,
    input_size: int | Sequence[int] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    overwrite: bool = False,
    **overrides,
) -> VideoRecognizer:
    """Convert an official checkpoint file into our model file (:func:`save_model`).

    The Python form of ``motionsqueeze convert``. Refuses to replace an existing ``dst``
    unless ``overwrite``. Returns the converted model.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst} already exists; choose another output or allow overwriting (--force)")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"the output {dst} is the input checkpoint; write to another file")
    model = load_official(src, source, arch=arch, num_segments=num_segments, **overrides)
    save_model(model, dst, class_names=class_names, input_size=input_size, mean=mean, std=std)
    return model
