"""Weights in and out: safe file reading, ImageNet initialisation, our model files.

* :func:`load_checkpoint_file` / :func:`load_state_dict_file` read ``.pth`` / ``.pt`` /
  ``.tar`` (``torch.save``, zip or legacy) and ``.safetensors`` files. Pickled files are
  read with ``torch.load(weights_only=True)``: tensors, containers and numbers only, so a
  file that would run code while loading is refused, never executed. The format is told
  by the first bytes, not the suffix. Every failure is a :class:`WeightsFileError` (a
  ``ValueError``) that names the file.
* :func:`load_pretrained_backbone` copies an ImageNet ResNet or MobileNetV2 in torchvision's layout into
  the backbone of a :class:`~motionsqueeze.models.VideoRecognizer` (``create_model(...,
  pretrained=path)``) and says what was loaded and what kept its initialisation.
* :func:`save_model` / :func:`load_model`: one ``.safetensors`` file holding the weights
  and, in its metadata, everything needed to rebuild and use the model (see
  ``docs/weights.md``).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import __version__
from ..files import DIGEST_KEY, atomic_output, tensor_digest
from .recognizer import ModelConfig, VideoRecognizer, build_model
from .resnet import RESNET_DEPTHS, BasicBlock

__all__ = [
    "WeightsFileError",
    "load_checkpoint_file",
    "load_state_dict_file",
    "strip_prefix",
    "describe_resnet",
    "KeyMismatch",
    "compare_keys",
    "PretrainedReport",
    "load_pretrained_backbone",
    "save_model",
    "load_model",
    "read_model_metadata",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "check_torch_archive",
    "unsafe_file_error",
    "is_unsafe_pickle",
    "load_error_reason",
    "with_digest",
    "checked_digest",
]

MODEL_FORMAT = "motionsqueeze.model"
MODEL_FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsFileError(ValueError):
    """A weights file that cannot be used; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------
# Reading files safely


def _numpy_scalar_globals() -> list:
    """numpy scalars (``best_prec1`` in some training scripts) are plain data; allow them
    under both the numpy 1 and numpy 2 module names so old checkpoints open."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtype_classes = {type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG"}
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *dtype_classes,
    ]


# Bounds checked before anything is allocated (see docs/security.md).
MAX_SAFETENSORS_HEADER = 100_000_000  # bytes of JSON header; the safetensors library's own limit


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: a little-endian u64 header length that fits in the file, then a
    JSON object. Judged on that structure, not on one byte: the first byte is the low byte of
    the length and can be anything, 0x80 included."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= min(size - 8, MAX_SAFETENSORS_HEADER)


def _looks_like_torch(head: bytes) -> bool:
    """``torch.save``: a zip archive, or (legacy format) a pickle of protocol 2 to 5."""
    return head[:4] == b"PK\x03\x04" or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _sniff(path: Path) -> str:
    """``"torch"``, ``"safetensors"`` or an error, from the structure of the file's start."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise WeightsFileError(f"{path} is a directory; expected a .pth/.pt/.tar or .safetensors file")
    if not path.is_file():
        raise WeightsFileError(f"{path} is not a regular file (a pipe, socket or device); copy the "
                               f"weights into a file and give its path")
    size = path.stat().st_size
    if size == 0:
        raise WeightsFileError(
            f"{path} is empty (0 bytes): the copy or download did not finish; copy the file again"
        )
    with open(path, "rb") as f:
        head = f.read(9)
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if _looks_like_torch(head):
        return "torch"
    raise WeightsFileError(
        f"{path} is neither a PyTorch checkpoint (torch.save: .pth/.pt/.tar) nor a safetensors "
        f"file (first bytes {head!r}); check that it is the right file and that it was copied "
        f"completely"
    )


def check_torch_archive(path: str | os.PathLike) -> None:
    """Refuse a ``torch.save`` zip archive whose entries would inflate beyond the file.

    ``torch.save`` stores entries uncompressed, so their sizes add up to at most the file's
    size; a compressed entry (a "zip bomb" that inflates gigabytes from a small file) or an
    entry claiming more bytes than the file holds is refused before anything is read. Files
    that are not zip archives are left to the loader.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return
    with archive:
        total = 0
        for entry in archive.infolist():
            if entry.compress_type != zipfile.ZIP_STORED:
                raise WeightsFileError(
                    f"{path}: entry {entry.filename!r} is compressed; torch.save never compresses, so "
                    f"the file was not written by PyTorch or was repacked. Refused before inflating "
                    f"it; re-save the weights with torch.save"
                )
            total += entry.file_size
        if total > size:
            raise WeightsFileError(
                f"{path}: its entries claim {total:,} bytes but the file holds {size:,}; it is "
                f"corrupt or crafted, copy or download it again"
            )


def is_unsafe_pickle(exc: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a Python object (a global such as a
    class or function), rather than bytes that are no pickle at all."""
    return isinstance(exc, pickle.UnpicklingError) and "global" in str(exc).lower()


def load_error_reason(exc: BaseException) -> str:
    """``"Type: detail"`` of a loading error, without torch's advice to load with
    ``weights_only=False`` (which would run the file's code)."""
    text = str(exc)
    if "weights_only" in text:
        detail = [line.strip() for line in text.splitlines()
                  if line.strip() and "weights_only" not in line and "torch.load" not in line]
        text = detail[0] if detail else "not a pickle that torch.load(weights_only=True) can read"
    return f"{type(exc).__name__}: {_first_line(Exception(text))}"


def unsafe_file_error(path: str | os.PathLike, exc: BaseException) -> WeightsFileError:
    """The refusal of a pickle that needs arbitrary Python objects (never suggests
    ``weights_only=False``, which would run the file's code)."""
    found = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    what = f" (it references {found[0]})" if found else ""
    return WeightsFileError(
        f"{path} was refused: loading it would need arbitrary Python objects{what}, and "
        f"unpickling those can execute code. motionsqueeze only reads tensors, containers "
        f"and numbers (torch.load with weights_only=True). If you trust the file, re-save "
        f"just its state dict with torch.save(model.state_dict(), ...) or as .safetensors"
    )


def with_digest(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` plus its :func:`~motionsqueeze.files.tensor_digest` under ``"sha256"``."""
    return {**state, DIGEST_KEY: tensor_digest(state)}


def checked_digest(state: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Verify the ``"sha256"`` entry written by :func:`with_digest` (files without one, from
    before checksums, are accepted) and return ``state`` without it."""
    state = dict(state)
    stored = state.pop(DIGEST_KEY, None)
    if isinstance(stored, str) and stored != tensor_digest(state):
        raise WeightsFileError(
            f"{path} fails its checksum: its contents changed after it was written (a disk or "
            f"copy error, or an edit). Use an earlier checkpoint or copy the file again"
        )
    return state


def _load_torch(path: Path, map_location) -> Any:
    check_torch_archive(path)
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError) as exc:
        if is_unsafe_pickle(exc):
            raise unsafe_file_error(path, exc) from None
        raise WeightsFileError(
            f"{path} is truncated or corrupt ({load_error_reason(exc)}); copy "
            f"or download it again"
        ) from None
    return checked_digest(obj, path) if isinstance(obj, Mapping) else obj


def _load_safetensors(path: Path, map_location) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    device = "cpu" if map_location is None else str(torch.device(map_location))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsFileError(
            f"{path} is truncated or corrupt (safetensors: {_first_line(exc)}); copy or download "
            f"it again"
        ) from None
    return checked_digest(tensors | {DIGEST_KEY: metadata.get(DIGEST_KEY)}, path), metadata


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no details"


def load_checkpoint_file(path: str | os.PathLike, map_location="cpu") -> Any:
    """Read a weights file without executing code from it.

    Returns the stored object: for ``torch.save`` files whatever was saved (usually a dict),
    for ``.safetensors`` files the ``{name: tensor}`` dict. Raises
    :class:`WeightsFileError` naming the file for empty, truncated, corrupt or unsafe files.
    """
    path = Path(path)
    if _sniff(path) == "safetensors":
        return _load_safetensors(path, map_location)[0]
    return _load_torch(path, map_location)


_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "model_state")


def load_state_dict_file(path: str | os.PathLike, map_location="cpu") -> dict[str, Tensor]:
    """The ``{name: tensor}`` state dict stored in a weights file.

    Accepts a bare state dict or a training checkpoint that holds one under ``state_dict``,
    ``model``, ``model_state_dict`` or ``model_state`` (other entries are ignored).
    """
    path = Path(path)
    obj = load_checkpoint_file(path, map_location)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else "an empty dict"
        raise WeightsFileError(f"{path} holds {kind}, not a state dict of named tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise WeightsFileError(
            f"{path} holds no tensors at its top level (keys {sorted(map(str, obj))[:8]}); "
            f"expected a state dict or a checkpoint with one of {list(_STATE_DICT_KEYS)}"
        )
    return tensors


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Remove ``prefix`` from every key when all keys carry it (``module.`` of DataParallel)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


# ---------------------------------------------------------------------------------------
# ImageNet initialisation


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


@dataclass
class KeyMismatch:
    """How a state dict differs from the one a model expects."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 3) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} tensor(s) missing, e.g. {self.missing[:limit]}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected tensor(s), e.g. {self.unexpected[:limit]}")
        if self.wrong_shape:
            parts.append(f"{len(self.wrong_shape)} shape mismatch(es), e.g. {self.wrong_shape[:limit]}")
        return "; ".join(parts)


def compare_keys(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> KeyMismatch:
    """Compare ``given`` with ``expected`` (a model's state dict) by names and shapes.

    ``num_batches_tracked`` counters may be absent from ``given`` (files from before
    PyTorch 0.4.1 lack them; they only matter with BatchNorm momentum=None).
    """
    return KeyMismatch(
        missing=[k for k in expected if k not in given and not k.endswith("num_batches_tracked")],
        unexpected=sorted(k for k in given if k not in expected),
        wrong_shape=[
            f"{k}: file {tuple(given[k].shape)}, model {tuple(v.shape)}"
            for k, v in expected.items()
            if k in given and given[k].shape != v.shape
        ],
    )


def _model_resnet_name(model: VideoRecognizer) -> str:
    return describe_resnet(model.backbone.state_dict())


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained_backbone` did (``str(report)`` is the printed summary)."""

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


def load_pretrained_backbone(
    model: VideoRecognizer,
    path: str | os.PathLike,
    *,
    log: Callable[[str], None] | None = print,
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
        log: where the summary goes (``print`` by default; ``None`` for silence).

    Returns:
        A :class:`PretrainedReport`.
    """
    path = Path(path)
    state = strip_prefix(load_state_dict_file(path), "module.")
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
                f"({getattr(model, 'arch', None) or 'this model'}) has a {expected} backbone; use "
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


# ---------------------------------------------------------------------------------------
# Our model files


def load_finetune_weights(model: VideoRecognizer, path: str | os.PathLike, log=print) -> list[str]:
    """Initialise every tensor of ``model`` from a trained model of the same architecture,
    except a classifier of another size (fine-tuning, e.g. HMDB-51 from a Kinetics MSNet).

    ``path`` is a model file (``.safetensors``) or a training checkpoint. Returns the names
    left at their initialisation. Any other mismatch (another depth, MotionSqueeze placement
    or frame count) is refused before the model is touched.
    """
    path = Path(path)
    given = load_state_dict_file(path)
    expected = model.state_dict()
    head = [k for k in ("fc.weight", "fc.bias") if k in given and k in expected and given[k].shape != expected[k].shape]
    mismatch = compare_keys(expected, {k: v for k, v in given.items() if k not in head})
    mismatch.missing = [k for k in mismatch.missing if k not in head]
    if mismatch:
        raise WeightsFileError(
            f"{path} does not match {getattr(model, 'arch', 'the model')}: {mismatch.describe()}; "
            f"init_from needs a model of the same architecture (only the classifier may differ)"
        )
    model.load_state_dict({k: v for k, v in given.items() if k not in head}, strict=False)
    kept = sum(v.numel() for k, v in given.items() if k not in head)
    note = f"; classifier {tuple(given[head[0]].shape)} -> {tuple(expected[head[0]].shape)} left at its initialisation" if head else ""
    log(f"initialised from {path}: {kept:,} values{note}")
    return head


def _unwrap(model: nn.Module) -> nn.Module:
    """The recogniser inside DistributedDataParallel / DataParallel / torch.compile."""
    for attr in ("module", "_orig_mod"):
        while isinstance(getattr(model, attr, None), nn.Module):
            model = getattr(model, attr)
    return model


def _check_triple(name: str, values: Sequence[float]) -> list[float]:
    values = [float(v) for v in values]
    if len(values) != 3:
        raise ValueError(f"{name} must hold 3 values (R, G, B), got {values}")
    return values


def save_model(
    model: VideoRecognizer,
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    input_size: int | Sequence[int] = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as one ``.safetensors`` file that :func:`load_model` rebuilds alone.

    The tensors are the state dict; the metadata entry ``motionsqueeze`` holds JSON with the
    architecture name, the full :class:`ModelConfig` (overrides included), class names and
    preprocessing (input size in pixels, mean and std of 0..1 RGB, frames per clip). The
    file is written next to ``path`` and renamed into place, so an interrupted save never
    leaves a half-written file under ``path``. Training state (optimizer, epoch) belongs in
    separate training checkpoints.

    Args:
        model: a :class:`VideoRecognizer` (DDP / compiled wrappers are unwrapped).
        path: destination, normally ``*.safetensors``.
        class_names: one name per output, or ``None``.
        input_size: side (or ``(height, width)``) of the network input in pixels.
        mean, std: per-channel normalisation of RGB values in [0, 1].
        extra: JSON-serialisable information to keep (e.g. metrics, provenance).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    model = _unwrap(model)
    if not isinstance(model, VideoRecognizer):
        raise ValueError(f"save_model expects a VideoRecognizer, got {type(model).__name__}")
    if not model.rebuildable:
        raise ValueError(f"a {type(model).__name__} holds user code that a file cannot rebuild; "
                         f"save model.state_dict() and rebuild the model with the same code")
    config: ModelConfig = model.config
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != model.num_classes:
            raise ValueError(
                f"got {len(class_names)} class names for a model with {model.num_classes} outputs"
            )
    size = [int(input_size)] if isinstance(input_size, int) else [int(s) for s in input_size]
    if len(size) not in (1, 2) or min(size) < 1:
        raise ValueError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    info = {
        "arch": getattr(model, "arch", None),
        "config": config.to_dict(),
        "class_names": class_names,
        "preprocess": {
            "input_size": size[0] if len(size) == 1 else size,
            "mean": _check_triple("mean", mean),
            "std": _check_triple("std", std),
            "num_segments": config.num_segments,
        },
        "extra": dict(extra or {}),
        "library_version": __version__,
    }
    try:
        text = json.dumps(info)
    except TypeError as exc:
        raise ValueError(f"save_model: extra must be JSON-serialisable ({exc})") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION), "motionsqueeze": text,
                DIGEST_KEY: tensor_digest(tensors)}

    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_model_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a :func:`save_model` file (reads the header only)."""
    return _read_model(Path(path), "cpu", tensors=False)[0]


def _read_model(path: Path, map_location, tensors: bool = True):
    kind = _sniff(path)
    if kind != "safetensors":
        raise WeightsFileError(
            f"{path} is a pickled PyTorch checkpoint, not a motionsqueeze model file (.safetensors "
            f"written by save_model). Official MotionSqueeze/TSM checkpoints are imported with "
            f"`motionsqueeze convert`; a bare state dict loads with "
            f"create_model(...).load_state_dict(load_state_dict_file(path))"
        )
    if tensors:
        state, metadata = _load_safetensors(path, map_location)
    else:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
        except (SafetensorError, OSError) as exc:
            raise WeightsFileError(f"{path} is truncated or corrupt (safetensors: {_first_line(exc)})") from None
        state = None
    if metadata.get("format") != MODEL_FORMAT or "motionsqueeze" not in metadata:
        raise WeightsFileError(
            f"{path} has no motionsqueeze metadata (format={metadata.get('format')!r}): it holds "
            f"weights only, so the architecture, frames per clip and classes are unknown. Save "
            f"models with motionsqueeze.save_model, or rebuild with create_model(name, ...) and "
            f"load_state_dict(load_state_dict_file(path))"
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


# Sane bounds for the settings of a model file that no tensor shape confirms (see
# docs/security.md); values outside them are refused before anything is built.
MODEL_FILE_BOUNDS = {
    "num_segments": (1, 1024),       # frames per clip
    "patch_size": (1, 99),           # matching window side, in cells
    "input_size": (8, 4096),         # network input side, in pixels
}


def _check_model_bounds(path: Path, config: ModelConfig, preprocess: Mapping[str, Any],
                        state: Mapping[str, Tensor] | None) -> None:
    """Refuse stored settings that would allocate without limit, before building anything."""
    def refuse(key: str, value: Any, expected: str) -> None:
        raise WeightsFileError(f"{path}: the stored {key} is {value!r}, expected {expected}; the file "
                               f"was edited or damaged")

    size = preprocess.get("input_size", 224)
    values = {"num_segments": config.num_segments, "patch_size": config.patch_size,
              "input_size": max(size) if isinstance(size, list) and size else size}
    for key, (lo, hi) in MODEL_FILE_BOUNDS.items():
        value = values[key]
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
    """Rebuild a model saved by :func:`save_model`, in eval mode.

    Returns a :class:`VideoRecognizer` carrying ``arch`` (registered name or ``None``),
    ``class_names`` (list or ``None``), ``preprocess`` (``input_size``, ``mean``, ``std``,
    ``num_segments``) and ``extra`` (the dict given to ``save_model``). ``test_segments``:
    frames per clip to run at instead of the trained count (TSM's ``test_segments``; see
    :meth:`VideoRecognizer.set_num_segments`).
    """
    from ..ops import available_backends

    path = Path(path)
    info, state = _read_model(path, map_location)
    try:
        config = ModelConfig().replace(**info["config"])
    except (ValueError, TypeError) as exc:
        raise WeightsFileError(f"{path}: the stored model configuration is not usable: {exc}") from None
    try:
        _check_model_bounds(path, config, info["preprocess"], state)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, WeightsFileError):
            raise
        raise WeightsFileError(f"{path}: the stored model configuration is not usable: {exc}") from None
    if config.backend not in available_backends():
        # A model trained with a backend that this machine lacks (Triton on a CPU box)
        # computes the same function with the automatic choice.
        config = config.replace(backend="auto")
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
    model.arch = info.get("arch")
    model.class_names = info.get("class_names")
    model.preprocess = dict(info["preprocess"])
    model.extra = dict(info.get("extra") or {})
    if test_segments is not None:
        model.set_num_segments(test_segments)
    return model.eval()
