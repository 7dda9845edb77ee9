"""The model card: what a model is, what it predicts, how its clips are prepared, where it came from.

A model carries one :class:`ModelCard` as ``model.card`` (``create_model`` attaches one,
``load_model`` reads it from the model file, training writes it, ``motionsqueeze convert``
records the official checkpoint it came from). Everything that prepares clips for a model
(``eval``, ``predict``, timelines, features, ``visualize``, ``stream``, ONNX export with
preprocessing) reads :attr:`ModelCard.preprocess`, and evaluation and prediction turn it into
clip settings through one function, :meth:`Preprocess.data_settings`, so the two cannot
prepare a video differently. Fields, units and defaults: ``docs/weights.md``.

The displacement backend is not on the card: it is a choice of the machine that runs the
model (:func:`motionsqueeze.ops.use_backend`), not a property of the trained model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Mapping

from torch import nn

from .. import __version__
from ..data.datasets import eval_pipeline
from ..data.sampling import SAMPLINGS
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .recognizer import ModelConfig

__all__ = ["Preprocess", "Provenance", "ModelCard", "card_of", "unwrap_model", "PROVENANCE_SOURCES",
           "RUNTIME_FIELDS", "model_sampler", "model_clip_indices", "eval_transform", "view_pipeline"]

# How a card's model came to be: built in code (untrained or trained by your own loop), trained by
# `motionsqueeze train`, or converted from an official checkpoint.
PROVENANCE_SOURCES = ("created", "trained", "converted")
# ModelConfig fields that are a choice of the machine running the model, never stored on a card.
RUNTIME_FIELDS = ("backend",)
# Old model files kept these in "extra"; they now have typed homes on the card.
_LEGACY_PREPROCESS_KEYS = ("resize", "sampling", "dense_stride", "dense_window", "template", "start_index")


def _size(value: Any, name: str) -> int | tuple[int, int]:
    """A positive int, or ``(height, width)`` of positive ints (lists from JSON accepted)."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = value[0]
        elif len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
            return int(value[0]), int(value[1])
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(f"{name} must be a positive int or (height, width) in pixels, got {value!r}")


def _triple(value: Any, name: str, positive: bool = False) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
        raise ValueError(f"{name} must hold 3 values (R, G, B), finite{' and above 0' if positive else ''}, "
                         f"got {value!r}")
    return values


@dataclass(frozen=True)
class Preprocess:
    """How a video becomes the model's input (evaluation's clip: one centre view).

    Attributes:
        input_size: side of the network input in pixels (the centre crop), or
            ``(height, width)``; default 224.
        resize: frames are resized to this before cropping, in pixels: an int for the
            shorter side, ``(height, width)``, or ``None`` for frames as decoded; default 256
            (TSN / TSM testing, 256/224 of a 224 input).
        mean, std: per-channel normalisation of RGB values in [0, 1],
            ``(x - mean) / std``; default ImageNet's.
        num_segments: T, frames per clip; default 8.
        sampling: ``"segment"`` (the centre frame of each of T equal segments, default) or
            ``"dense"`` (T frames ``dense_stride`` apart around the video's centre).
        dense_stride: frames between dense samples; ``None`` (default) is
            ``dense_window // num_segments``.
        dense_window: dense window in frames; default 64.
        template: frame file name from its number for frame folders (``"{:05d}.jpg"``);
            ``None`` (default): the reader's default.
        start_index: number of the first frame file; ``None`` (default): 1.
    """

    input_size: int | tuple[int, int] = 224
    resize: int | tuple[int, int] | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_segments: int = 8
    sampling: str = "segment"
    dense_stride: int | None = None
    dense_window: int = 64
    template: str | None = None
    start_index: int | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the values once, here
        set_(self, "input_size", _size(self.input_size, "input_size"))
        if self.resize is not None:
            set_(self, "resize", _size(self.resize, "resize"))
        set_(self, "mean", _triple(self.mean, "mean"))
        set_(self, "std", _triple(self.std, "std", positive=True))
        for name, lo in (("num_segments", 1), ("dense_window", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{name} must be an integer of at least {lo}, got {value!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {self.sampling!r}")
        for name in ("dense_stride", "start_index"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or null, got {value!r}")
        if self.template is not None and not isinstance(self.template, str):
            raise ValueError(f"template must be a string such as '{{:05d}}.jpg', got {self.template!r}")

    @property
    def crop_size(self) -> int:
        """Side of the centre crop in pixels (the height of a ``(height, width)`` input)."""
        return self.input_size if isinstance(self.input_size, int) else self.input_size[0]

    def replace(self, **changes) -> "Preprocess":
        return dataclasses.replace(self, **changes)

    def data_settings(self) -> dict[str, Any]:
        """The clip settings of this preprocessing as data-config fields: ``num_segments``,
        ``crop_size``, ``resize``, ``sampling``, ``dense_stride``, ``dense_window``, ``mean``,
        ``std`` (lists where the data config holds lists).

        The one translation from a card to clips: evaluation applies these to the recipe's
        data section, prediction builds its sampler and transform from them.
        """
        resize = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        return {"num_segments": self.num_segments, "crop_size": self.crop_size, "resize": resize,
                "sampling": self.sampling, "dense_stride": self.dense_stride, "dense_window": self.dense_window,
                "mean": list(self.mean), "std": list(self.std)}

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocess":
        """From :meth:`to_dict` output. A dict of an older model file may lack ``resize``
        (then 256/224 of the input side, as TSN/TSM test) and the sampling keys (then the
        defaults)."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown preprocess field(s) {unknown}")
        data = dict(data)
        if "resize" not in data:
            size = _size(data.get("input_size", 224), "input_size")
            data["resize"] = round((size if isinstance(size, int) else size[0]) * 256 / 224)
        return cls(**data)

    @classmethod
    def from_data(cls, data: Any) -> "Preprocess":
        """What a data section (``DataConfig``, the synthetic set's config, or its dict as a
        training checkpoint stores it) trains and evaluates with."""
        def get(key: str, default: Any = None) -> Any:
            return data.get(key, default) if isinstance(data, Mapping) else getattr(data, key, default)

        return cls(input_size=get("crop_size", get("size")), resize=get("resize"), mean=get("mean"), std=get("std"),
                   num_segments=get("num_segments"), sampling=get("sampling", "segment"),
                   dense_stride=get("dense_stride"), dense_window=get("dense_window", 64),
                   template=get("template"), start_index=get("start_index"))


@dataclass(frozen=True)
class Provenance:
    """Where a model came from.

    Attributes:
        source: ``"created"`` (built in code; default), ``"trained"`` (by
            ``motionsqueeze train``) or ``"converted"`` (from an official checkpoint).
        recipe: the training recipe's file or bundled name (trained models), else ``None``.
        converted_from: for converted models, ``{"source": layout ("official-ms" or
            "official-tsm"), "file": checkpoint file name, and what the checkpoint recorded
            ("epoch", "arch", "best_prec1"), "dropped": unused tensors left out}``.
        library_version: the motionsqueeze version that wrote the card.
    """

    source: str = "created"
    recipe: str | None = None
    converted_from: Mapping[str, Any] | None = None
    library_version: str = __version__

    def __post_init__(self):
        if self.source not in PROVENANCE_SOURCES:
            raise ValueError(f"provenance source must be one of {list(PROVENANCE_SOURCES)}, got {self.source!r}")
        if self.converted_from is not None:
            object.__setattr__(self, "converted_from", dict(self.converted_from))  # a copy: the caller's may change

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "recipe": self.recipe,
                "converted_from": None if self.converted_from is None else dict(self.converted_from),
                "library_version": self.library_version}


@dataclass(frozen=True)
class ModelCard:
    """Everything about a model but its weights; ``model.card``.

    Attributes:
        config: the full :class:`ModelConfig` (the architecture, overrides included; the
            displacement ``backend`` is a runtime choice and is never stored).
        arch: registered architecture name (``"msnet_r50"``), or ``None`` for a model built
            from a config alone.
        class_names: one name per output, or ``None``.
        preprocess: how clips are prepared (:class:`Preprocess`).
        provenance: where the model came from (:class:`Provenance`).
        extra: any other JSON-serialisable information (e.g. metrics).
    """

    config: ModelConfig | None = None
    arch: str | None = None
    class_names: tuple[str, ...] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    provenance: Provenance = field(default_factory=Provenance)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "extra", dict(self.extra or {}))  # a copy (plain, so models deep-copy)
        if self.config is not None:
            if self.config.num_segments != self.preprocess.num_segments:
                raise ValueError(f"the card's config has num_segments={self.config.num_segments} but its "
                                 f"preprocessing {self.preprocess.num_segments}")
            if self.class_names is not None and len(self.class_names) != self.config.num_classes:
                raise ValueError(f"got {len(self.class_names)} class names for a model with "
                                 f"{self.config.num_classes} outputs")

    @classmethod
    def for_config(cls, config: ModelConfig, arch: str | None = None, **fields) -> "ModelCard":
        """A card for ``config`` (default preprocessing at the config's frame count)."""
        pre = fields.pop("preprocess", None) or Preprocess()
        return cls(config=config, arch=arch, preprocess=pre.replace(num_segments=config.num_segments), **fields)

    def replace(self, **changes) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def with_num_segments(self, num_segments: int) -> "ModelCard":
        """The card of the same model run at another frame count (``test_segments``)."""
        config = None if self.config is None else self.config.replace(num_segments=num_segments)
        return self.replace(config=config, preprocess=self.preprocess.replace(num_segments=num_segments))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; what the model file and ONNX metadata store."""
        config = None
        if self.config is not None:
            config = {k: v for k, v in self.config.to_dict().items() if k not in RUNTIME_FIELDS}
        return {"arch": self.arch, "config": config,
                "class_names": None if self.class_names is None else list(self.class_names),
                "preprocess": self.preprocess.to_dict(), "provenance": self.provenance.to_dict(),
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelCard":
        """From :meth:`to_dict` output, or from the metadata of an older model file (no
        ``provenance``; ``resize``, ``sampling``, ``dense_*``, ``template``, ``start_index``,
        ``recipe`` and ``converted_from`` inside ``extra``; a stored ``backend``).

        Raises:
            ValueError: a field of the wrong type or out of range (the message names it).
        """
        extra = dict(data.get("extra") or {})
        pre = dict(data.get("preprocess") or {})
        for key in _LEGACY_PREPROCESS_KEYS:  # format 1 kept these in extra (so does save_model(extra=))
            if key in extra:
                pre[key] = extra.pop(key)
        raw = dict(data.get("provenance") or {"library_version": data.get("library_version", __version__)})
        if "recipe" in extra:
            raw.update(source="trained", recipe=extra.pop("recipe") or None)
        converted = extra.pop("converted_from", None)
        if converted:
            raw.update(source="converted", converted_from=converted)
        config = data.get("config")
        if config is not None:
            config = ModelConfig().replace(**{k: v for k, v in config.items() if k not in RUNTIME_FIELDS})
        return cls(config=config, arch=data.get("arch"), class_names=data.get("class_names"),
                   preprocess=Preprocess.from_dict(pre), provenance=Provenance(**raw), extra=extra)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The recogniser inside ``DistributedDataParallel`` / ``DataParallel`` (``.module``),
    ``torch.compile`` (``._orig_mod``) and :class:`~motionsqueeze.engine.ema.ModelEMA`, in any
    nesting."""
    for _ in range(8):  # wrappers nest a few deep at most
        inner = next((getattr(model, a) for a in ("_orig_mod", "module")
                      if isinstance(getattr(model, a, None), nn.Module)), None)
        if inner is None:
            break
        model = inner
    return model


def card_of(model: nn.Module) -> ModelCard:
    """The card of ``model`` (wrappers unwrapped): ``model.card`` with the model's current
    config (a classifier replaced since drops class names of another count), or for a model
    built without a card (``build_model``, your own code) its config and the default
    :class:`Preprocess` at its frame count."""
    model = unwrap_model(model)
    card = getattr(model, "card", None)
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        config = None
    if card is None:
        frames = config.num_segments if config is not None else getattr(model, "num_segments", 8)
        return ModelCard(config=config, preprocess=Preprocess(num_segments=frames))
    if config is None or card.config == config:
        return card
    names = card.class_names
    if names is not None and len(names) != config.num_classes:
        names = None
    return card.replace(config=config, class_names=names,
                        preprocess=card.preprocess.replace(num_segments=config.num_segments))


def model_sampler(model: nn.Module, count: int | None = None):
    """The :class:`ClipSampler` that samples clips as the model was (from the model file);
    ``count`` frames instead of the model's ``num_segments`` if given."""
    settings = card_of(model).preprocess.data_settings()
    if count:
        settings["num_segments"] = count
    return _pipeline(settings)[0]


def model_clip_indices(model: nn.Module, num_frames: int, count: int | None = None) -> list[int]:
    """Frame indices of the evaluation clip of a ``num_frames`` video, sampled as the model
    was (segment centres, or the centre dense clip at its stride; from the model file).
    ``count`` frames instead of the model's ``num_segments`` if given."""
    return model_sampler(model, count).even(num_frames, 1)[0]


def eval_transform(model: nn.Module, crops: int = 1):
    """The :class:`EvalTransform` (``crops``: 1 centre crop, or 3 along the longer side) that
    evaluation applies for ``model``."""
    return view_pipeline(model, crops)[1]


def _pipeline(settings: dict, crops: int = 1):
    return eval_pipeline(SimpleNamespace(**settings), settings["crop_size"], crops)


def view_pipeline(model: nn.Module, crops: int = 1):
    """``(ClipSampler, EvalTransform)`` that take clips for ``model`` as its recipe did."""
    return _pipeline(card_of(model).preprocess.data_settings(), crops)
