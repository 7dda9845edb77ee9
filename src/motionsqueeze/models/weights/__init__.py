"""Weights in and out, one module per concern (docs/weights.md lists every loader):

* :mod:`.safe_load`: reading any weights file without executing code from it
  (:func:`read_checkpoint`, :func:`read_state_dict`), type by structure, checksums, bounds;
* :mod:`.imagenet`: ImageNet initialisation of a backbone (:func:`load_backbone_weights`);
* :mod:`.model_file`: our model file with its card (:func:`save_model`, :func:`load_model`,
  :func:`read_model_card`), loading a trained model from a model file or a training
  checkpoint (:func:`load_trained_model`), fine-tuning initialisation
  (:func:`load_finetune_weights`).

Official MotionSqueeze / TSM checkpoints are imported by
:func:`motionsqueeze.models.convert.load_official`; training checkpoints are written and
read by :mod:`motionsqueeze.engine.checkpoint`, through :func:`read_checkpoint`.

``load_checkpoint_file``, ``load_state_dict_file`` and ``load_pretrained_backbone`` are the
earlier names of :func:`read_checkpoint`, :func:`read_state_dict` and
:func:`load_backbone_weights`, kept as aliases.
"""

from __future__ import annotations

import importlib

_SUBMODULES = ("safe_load", "imagenet", "model_file")
# Earlier names, kept for existing code.
_ALIASES = {"load_checkpoint_file": "read_checkpoint", "load_state_dict_file": "read_state_dict",
            "load_pretrained_backbone": "load_backbone_weights"}


def _submodule_all() -> dict[str, str]:
    """Public name -> the submodule that defines it (each submodule's ``__all__``)."""
    found = {}
    for sub in _SUBMODULES:
        for name in importlib.import_module(f"{__name__}.{sub}").__all__:
            found[name] = sub
    return found


def __getattr__(name: str):
    # The index is resolved on first use, so that importing one submodule (the registry
    # needs ``imagenet``, and ``model_file`` needs the registry) never imports the others.
    names = _submodule_all()
    target = _ALIASES.get(name, name)
    if target not in names:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{names[target]}"), target)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_submodule_all()) | set(_ALIASES))
