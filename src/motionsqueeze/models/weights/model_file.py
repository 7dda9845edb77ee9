"""Our model file, and loading a trained model from it or from a training checkpoint.

* :func:`save_model` / :func:`load_model`: one ``.safetensors`` file holding the weights and,
  in its metadata, the model's :class:`~motionsqueeze.models.card.ModelCard` (everything
  needed to rebuild and use the model; ``docs/weights.md``).
* :func:`read_model_card`: the card of a model file, reading its header only.
* :func:`load_trained_model`: a model with its card from a model file or from a training
  checkpoint (``.pt``, rebuilt from the recipe stored in it); what ``eval``, ``predict`` and
  the other commands open.
* :func:`load_finetune_weights`: initialise a model from a trained one of the same
  architecture (``model.init_from``), leaving a classifier of another size.

Every file is read through :mod:`.safe_load`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ... import __version__
from ...files import DIGEST_KEY, atomic_output, tensor_digest
from ..card import RUNTIME_FIELDS, ModelCard, Preprocess, Provenance, card_of, unwrap_model
from ..recognizer import ModelConfig, VideoRecognizer, build_model
from .safe_load import WeightsFileError, compare_keys, read_checkpoint, read_safetensors, read_state_dict, sniff
from ..registry import create_model

_log = logging.getLogger(__name__)

__all__ = [
    "save_model",
    "load_model",
    "read_model_card",
    "read_model_metadata",
    "load_trained_model",
    "load_finetune_weights",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "MODEL_FILE_BOUNDS",
]

MODEL_FORMAT = "motionsqueeze.model"
# 1: preprocessing split between "preprocess" and "extra", the backend stored in "config";
# 2: the model card (typed preprocessing and provenance, no backend). Both are read.
MODEL_FORMAT_VERSION = 2

# Sane bounds for the settings of a model file that no tensor shape confirms (see
# docs/security.md); values outside them are refused before anything is built.
MODEL_FILE_BOUNDS = {
    "num_segments": (1, 1024),       # frames per clip
    "patch_size": (1, 99),           # matching window side, in cells
    "input_size": (8, 4096),         # network input side, in pixels
    "resize": (8, 4096),             # frame side before cropping, in pixels
}


def save_model(
    model: VideoRecognizer,
    path: str | os.PathLike,
    *,
    card: ModelCard | None = None,
    class_names: Sequence[str] | None = None,
    input_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as one ``.safetensors`` file that :func:`load_model` rebuilds alone.

    The tensors are the state dict; the metadata entry ``motionsqueeze`` holds the model card
    as JSON (``docs/weights.md``). The card written is ``card``, else ``model.card`` (a
    default card for a model built without one), with the model's current config and the
    keywords below applied. The file is written next to ``path`` and renamed into place, so
    an interrupted save never leaves a half-written file under ``path``. Training state
    (optimizer, epoch) belongs in separate training checkpoints.

    Args:
        model: a :class:`VideoRecognizer` (DDP / compiled wrappers are unwrapped).
        path: destination, normally ``*.safetensors``.
        card: the card to store (default: the model's).
        class_names: one name per output.
        input_size: side (or ``(height, width)``) of the network input in pixels; giving it
            also sets ``resize`` to 256/224 of it unless ``extra`` holds a ``resize``.
        mean, std: per-channel normalisation of RGB values in [0, 1].
        extra: JSON-serialisable information to keep (e.g. metrics). Keys that the card
            has typed fields for (``resize``, ``sampling``, ``dense_stride``,
            ``dense_window``, ``template``, ``start_index``, ``recipe``, ``converted_from``)
            go to those fields, as when an older model file is read.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    model = unwrap_model(model)
    if not isinstance(model, VideoRecognizer):
        raise ValueError(f"save_model expects a VideoRecognizer, got {type(model).__name__}")
    if not model.rebuildable:
        raise ValueError(f"a {type(model).__name__} holds user code that a file cannot rebuild; "
                         f"save model.state_dict() and rebuild the model with the same code")
    config = card_of(model).config  # the model's current config is what the weights fit
    card = card_of(model) if card is None else card.replace(
        config=config, preprocess=card.preprocess.replace(num_segments=config.num_segments))
    info = card.to_dict()
    pre = info["preprocess"]
    if class_names is not None:
        info["class_names"] = [str(c) for c in class_names]
    if input_size is not None:
        pre["input_size"] = [int(input_size)] if isinstance(input_size, int) else list(input_size)
        del pre["resize"]  # the standard 256/224 of the new size, unless extra gives one
    if mean is not None:
        pre["mean"] = list(mean)
    if std is not None:
        pre["std"] = list(std)
    info["extra"] = {**info["extra"], **dict(extra or {})}
    info["provenance"]["library_version"] = __version__
    try:
        text = json.dumps(ModelCard.from_dict(info).to_dict())
    except TypeError as exc:
        raise ValueError(f"save_model: extra must be JSON-serialisable ({exc})") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION), "motionsqueeze": text,
                DIGEST_KEY: tensor_digest(tensors)}

    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _read_model(path: Path, map_location, tensors: bool = True) -> tuple[dict, dict[str, Tensor] | None]:
    """``(metadata JSON, state dict or None)`` of a model file, its format checked."""
    if sniff(path) != "safetensors":
        raise WeightsFileError(
            f"{path} is a pickled PyTorch checkpoint, not a motionsqueeze model file (.safetensors "
            f"written by save_model). Official MotionSqueeze/TSM checkpoints are imported with "
            f"`motionsqueeze convert`; a bare state dict loads with "
            f"create_model(...).load_state_dict(read_state_dict(path))"
        )
    state, metadata = read_safetensors(path, map_location, tensors=tensors)
    if metadata.get("format") != MODEL_FORMAT or "motionsqueeze" not in metadata:
        raise WeightsFileError(
            f"{path} has no motionsqueeze metadata (format={metadata.get('format')!r}): it holds "
            f"weights only, so the architecture, frames per clip and classes are unknown. Save "
            f"models with motionsqueeze.save_model, or rebuild with create_model(name, ...) and "
            f"load_state_dict(read_state_dict(path))"
        )
    version = metadata.get("format_version", "?")
    if not version.isdigit() or int(version) > MODEL_FORMAT_VERSION:
        raise WeightsFileError(
            f"{path} uses model format version {version}; this motionsqueeze "
            f"({__version__}) reads up to {MODEL_FORMAT_VERSION}: upgrade motionsqueeze"
        )
    try:
        info = json.loads(metadata["motionsqueeze"])
    except json.JSONDecodeError as exc:
        raise WeightsFileError(f"{path}: the motionsqueeze metadata is not valid JSON ({exc})") from None
    absent = [k for k in ("config", "preprocess") if not isinstance(info, dict) or not isinstance(info.get(k), dict)]
    if absent:
        raise WeightsFileError(f"{path}: the motionsqueeze metadata lacks {absent}; the file was edited or damaged")
    return info, state


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a :func:`save_model` file as stored (reads the header only);
    :func:`read_model_card` gives it typed."""
    return _read_model(Path(path), "cpu", tensors=False)[0]


def _card_of_file(path: Path, info: Mapping[str, Any]) -> ModelCard:
    try:
        return ModelCard.from_dict(info)
    except (ValueError, TypeError) as exc:
        raise WeightsFileError(f"{path}: the stored model configuration is not usable: {exc}") from None


def read_model_card(path: str | os.PathLike) -> ModelCard:
    """The :class:`ModelCard` of a :func:`save_model` file (reads the header only)."""
    path = Path(path)
    return _card_of_file(path, _read_model(path, "cpu", tensors=False)[0])


def _check_model_bounds(path: Path, config: ModelConfig, preprocess: Mapping[str, Any],
                        state: Mapping[str, Tensor] | None) -> None:
    """Refuse stored settings that would allocate without limit, before building anything."""
    def refuse(key: str, value: Any, expected: str) -> None:
        raise WeightsFileError(f"{path}: the stored {key} is {value!r}, expected {expected}; the file "
                               f"was edited or damaged")

    def side(value: Any) -> Any:
        return max(value) if isinstance(value, list) and value else value

    values = {"num_segments": config.num_segments, "patch_size": config.patch_size,
              "input_size": side(preprocess.get("input_size", 224)), "resize": side(preprocess.get("resize", 224))}
    for key, (lo, hi) in MODEL_FILE_BOUNDS.items():
        value = values[key]
        if key == "resize" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            refuse(key, value, f"an integer in [{lo}, {hi}]")
    for key in ("mean", "std"):
        value = preprocess.get(key)
        if (not isinstance(value, list) or len(value) != 3
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                or (key == "std" and min(value) <= 0)):
            refuse(f"preprocess {key}", value, "3 finite numbers" + (" above 0" if key == "std" else ""))
    # Every residual block and transform layer holds tensors, so the file's tensor count
    # bounds how many the configuration may ask for (a stored layers: [100000, ...] would
    # otherwise spend minutes building modules).
    if state is not None:
        blocks = sum(config.layers or ()) + len(config.transform_channels or ())
        if blocks > len(state):
            refuse("layers", list(config.layers or ()),
                   f"at most {len(state)} blocks in all (the file holds {len(state)} tensors)")
    for key in ("sigma", "temperature", "dropout"):
        if not math.isfinite(float(getattr(config, key))):
            refuse(key, getattr(config, key), "a finite number")


def load_model(path: str | os.PathLike, map_location="cpu", test_segments: int | None = None) -> VideoRecognizer:
    """Rebuild a model saved by :func:`save_model`, in eval mode, with its card as
    ``model.card`` (files of format 1 are read too).

    ``test_segments``: frames per clip to run at instead of the trained count (TSM's
    ``test_segments``; see :meth:`VideoRecognizer.set_num_segments`).
    """
    path = Path(path)
    info, state = _read_model(path, map_location)
    try:
        config = ModelConfig().replace(**{k: v for k, v in info["config"].items() if k not in RUNTIME_FIELDS})
        extra = info.get("extra") if isinstance(info.get("extra"), dict) else {}
        legacy = {"resize": extra["resize"]} if "resize" in extra else {}  # format 1 kept it in extra
        _check_model_bounds(path, config, {**legacy, **info["preprocess"]}, state)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, WeightsFileError):
            raise
        raise WeightsFileError(f"{path}: the stored model configuration is not usable: {exc}") from None
    card = _card_of_file(path, info)
    # The stored configuration is checked against the file's tensors on the meta device
    # (no memory) before the real model is allocated: edited metadata cannot ask for more.
    with torch.device("meta"):
        mismatch = compare_keys(build_model(config).state_dict(), state)
    if mismatch:
        raise WeightsFileError(
            f"{path}: the weights do not match the stored configuration ({mismatch.describe()}); "
            f"the file was edited or damaged"
        )
    with torch.device(map_location if map_location is not None else "cpu"):
        model = build_model(config)
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent
    model.card = card
    if test_segments is not None:
        model.set_num_segments(test_segments)
    return model.eval()


# Entries of a training checkpoint's stored model section that are training settings, not
# part of the architecture.
_TRAINING_ONLY = ("arch", "pretrained", "init_from", "freeze_bn", *RUNTIME_FIELDS)


def load_trained_model(path: str | os.PathLike, map_location="cpu", test_segments: int | None = None) -> VideoRecognizer:
    """A trained model with its card, in eval mode: from a model file (``.safetensors``, see
    :func:`load_model`) or from a training checkpoint (``.pt``, rebuilt from the recipe
    stored in it; the card's preprocessing is the recipe's data section).

    ``test_segments``: frames per clip to run at instead of the trained count.
    """

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix != ".pt":
        return load_model(path, map_location=map_location, test_segments=test_segments)
    state = read_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("config"), dict):
        raise WeightsFileError(f"{path} is not a motionsqueeze training checkpoint (no model/config entries); "
                               f"give a run's checkpoints/*.pt or a model file (.safetensors)")
    m = dict(state["config"]["model"])
    names = state.get("class_names")
    data = state["config"]["data"]
    fc = state["model"].get("fc.weight")
    if not names or (fc is not None and fc.shape[0] != len(names)):
        raise ValueError(f"training checkpoint {path} has {len(names or [])} class names for a classifier of "
                         f"{None if fc is None else fc.shape[0]} outputs: it was edited or damaged; use the run's "
                         f"best.safetensors or final.safetensors")
    arch = m.get("arch")
    model = create_model(arch, num_classes=len(names), num_segments=data["num_segments"],
                         **{k: v for k, v in m.items() if k not in _TRAINING_ONLY})
    mismatch = compare_keys(model.state_dict(), state["model"])
    if mismatch:
        raise ValueError(f"training checkpoint {path} does not match the model its recipe describes "
                         f"({mismatch.describe()}): it was edited or damaged")
    model.load_state_dict(state["model"])
    model.card = model.card.replace(class_names=names, preprocess=Preprocess.from_data(data),
                                    provenance=Provenance("trained", recipe=state["config"].get("source") or None))
    if test_segments is not None:
        model.set_num_segments(test_segments)
    return model.eval()


def load_finetune_weights(model: VideoRecognizer, path: str | os.PathLike, log=None) -> list[str]:
    """Initialise every tensor of ``model`` from a trained model of the same architecture,
    except a classifier of another size (fine-tuning, e.g. HMDB-51 from a Kinetics MSNet).

    ``path`` is a model file (``.safetensors``) or a training checkpoint. Returns the names
    left at their initialisation. Any other mismatch (another depth, MotionSqueeze placement
    or frame count) is refused before the model is touched. ``log`` receives the one-line
    summary (default: this module's logger at INFO).
    """
    path = Path(path)
    given = read_state_dict(path)
    expected = model.state_dict()
    head = [k for k in ("fc.weight", "fc.bias") if k in given and k in expected and given[k].shape != expected[k].shape]
    mismatch = compare_keys(expected, {k: v for k, v in given.items() if k not in head})
    mismatch.missing = [k for k in mismatch.missing if k not in head]
    if mismatch:
        raise WeightsFileError(
            f"{path} does not match {card_of(model).arch or 'the model'}: {mismatch.describe()}; "
            f"init_from needs a model of the same architecture (only the classifier may differ)"
        )
    model.load_state_dict({k: v for k, v in given.items() if k not in head}, strict=False)
    kept = sum(v.numel() for k, v in given.items() if k not in head)
    note = f"; classifier {tuple(given[head[0]].shape)} -> {tuple(expected[head[0]].shape)} left at its initialisation" if head else ""
    (log or _log.info)(f"initialised from {path}: {kept:,} values{note}")
    return head

