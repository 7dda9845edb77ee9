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

from . import imagenet, model_file, safe_load
from .imagenet import *  # noqa: F403 - the package's index is its modules' __all__
from .model_file import *  # noqa: F403
from .safe_load import *  # noqa: F403

# Earlier names, kept for existing code.
load_checkpoint_file = read_checkpoint  # noqa: F405
load_state_dict_file = read_state_dict  # noqa: F405
load_pretrained_backbone = load_backbone_weights  # noqa: F405

__all__ = [*safe_load.__all__, *imagenet.__all__, *model_file.__all__,
           "load_checkpoint_file", "load_state_dict_file", "load_pretrained_backbone"]
