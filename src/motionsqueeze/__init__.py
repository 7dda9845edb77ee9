"""MotionSqueeze: motion-aware video action recognition (Kwon et al., ECCV 2020) in PyTorch.

``import motionsqueeze`` is light: the names below are looked up in
:mod:`motionsqueeze.models` on first use, so the command line can answer ``--help``
without loading PyTorch, and no module of the package depends on this index.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "create_model": "motionsqueeze.models.registry",
    "list_models": "motionsqueeze.models.registry",
    "load_model": "motionsqueeze.models.weights.model_file",
    "save_model": "motionsqueeze.models.weights.model_file",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'motionsqueeze' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
