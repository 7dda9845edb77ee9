"""Reading weight files safely: the one path every loader of the package goes through.

* :func:`read_checkpoint` reads ``.pth`` / ``.pt`` / ``.tar`` (``torch.save``, zip or legacy)
  and ``.safetensors`` files. Pickled files are read with ``torch.load(weights_only=True)``:
  tensors, containers and numbers only, so a file that would run code while loading is
  refused, never executed. The format is told by the structure of the first bytes, not the
  suffix; sizes are checked before anything is inflated or allocated; a stored checksum is
  verified. Every failure is a :class:`WeightsFileError` (a ``ValueError``) that names the
  file.
* :func:`read_state_dict`: the ``{name: tensor}`` state dict inside such a file.
* :func:`read_safetensors`: tensors and metadata of a ``.safetensors`` file (or its metadata
  alone, reading the header only).
* :func:`compare_keys`: how a state dict differs from the one a model expects.

Training checkpoints (:mod:`motionsqueeze.engine.checkpoint`), ImageNet files
(:mod:`.imagenet`), our model files (:mod:`.model_file`) and official checkpoints
(:mod:`motionsqueeze.models.convert`) are all read through here.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ...files import DIGEST_KEY, tensor_digest

__all__ = [
    "WeightsFileError",
    "read_checkpoint",
    "read_state_dict",
    "read_safetensors",
    "sniff",
    "strip_prefix",
    "KeyMismatch",
    "compare_keys",
    "check_torch_archive",
    "unsafe_file_error",
    "is_unsafe_pickle",
    "load_error_reason",
    "with_digest",
    "checked_digest",
    "first_line",
    "MAX_SAFETENSORS_HEADER",
]


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


def sniff(path: str | os.PathLike) -> str:
    """``"torch"``, ``"safetensors"`` or an error, from the structure of the file's start."""
    path = Path(path)
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
    return f"{type(exc).__name__}: {first_line(Exception(text))}"


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


def read_safetensors(path: str | os.PathLike, map_location="cpu", tensors: bool = True
                     ) -> tuple[dict[str, Tensor] | None, dict[str, str]]:
    """``(tensors, metadata)`` of a ``.safetensors`` file, the checksum verified; with
    ``tensors=False`` only the header is read and ``tensors`` is ``None``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    device = "cpu" if map_location is None else str(torch.device(map_location))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsFileError(
            f"{path} is truncated or corrupt (safetensors: {first_line(exc)}); copy or download "
            f"it again"
        ) from None
    if state is not None:
        state = checked_digest(state | {DIGEST_KEY: metadata.get(DIGEST_KEY)}, path)
    return state, metadata


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no details"


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> Any:
    """Read a weights file without executing code from it.

    Returns the stored object: for ``torch.save`` files whatever was saved (usually a dict),
    for ``.safetensors`` files the ``{name: tensor}`` dict. Raises
    :class:`WeightsFileError` naming the file for empty, truncated, corrupt or unsafe files.
    """
    path = Path(path)
    if sniff(path) == "safetensors":
        return read_safetensors(path, map_location)[0]
    return _load_torch(path, map_location)


_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "model_state")


def read_state_dict(path: str | os.PathLike, map_location="cpu") -> dict[str, Tensor]:
    """The ``{name: tensor}`` state dict stored in a weights file.

    Accepts a bare state dict or a training checkpoint that holds one under ``state_dict``,
    ``model``, ``model_state_dict`` or ``model_state`` (other entries are ignored).
    """
    path = Path(path)
    obj = read_checkpoint(path, map_location)
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

