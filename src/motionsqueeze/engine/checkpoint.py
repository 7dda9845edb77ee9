"""Training checkpoints: written atomically, read safely.

A training checkpoint holds everything needed to continue a run bit for bit: model,
optimizer, schedule and gradient-scaler state, epoch and step, the RNG states, the best
metric so far and the config. It is a ``torch.save`` file of tensors and plain Python
data only, read back through the package's one safe reader
(:func:`motionsqueeze.models.weights.read_checkpoint`: ``weights_only=True``, sizes checked
before inflating, the checksum verified).

Writes go to a temporary file in the same folder, are flushed to disk, and are renamed over
the old file (``os.replace`` is atomic on POSIX and Windows), so a kill at any moment leaves
either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write
from ..models.weights.safe_load import WeightsFileError, read_checkpoint, with_digest

__all__ = ["atomic_write", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "capture_rng", "restore_rng"]

LAST = "last.pt"


def capture_rng() -> dict:
    """RNG states of torch (CPU and CUDA), NumPy and Python, as plain data."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    state = with_digest(state)  # a checksum of every tensor and value, verified on load
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = read_checkpoint(path, map_location=map_location)
    except WeightsFileError as exc:
        raise WeightsFileError(f"cannot read training checkpoint {path}: {exc}; use an earlier checkpoint") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a motionsqueeze training checkpoint (no model/step entries)")
    return state


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume auto`` continues from: ``<run>/checkpoints/last.pt``."""
    path = Path(run_dir) / "checkpoints" / LAST
    return path if path.is_file() else None
