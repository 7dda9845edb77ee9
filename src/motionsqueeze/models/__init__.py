"""Backbones, the video recogniser, the registry, the model card, cost counting, weights in and out.

``load_checkpoint_file``, ``load_state_dict_file`` and ``load_pretrained_backbone`` are the
earlier names of ``read_checkpoint``, ``read_state_dict`` and ``load_backbone_weights``
(aliases, kept for existing code).
"""

from .complexity import Complexity, count_parameters, measure_complexity
from .recognizer import CustomRecognizer, ModelConfig, VideoRecognizer, build_model
from .card import ModelCard, Preprocess, Provenance, card_of, unwrap_model
from .mobilenetv2 import MobileNetV2, mobilenet_v2
from .registry import create_model, list_models, model_config, register_model
from .resnet import STAGE_NAMES, BasicBlock, Bottleneck, ResNet, resnet
from .weights import load_checkpoint_file, load_pretrained_backbone, load_state_dict_file  # earlier names
from .weights.imagenet import load_backbone_weights
from .weights.model_file import load_model, load_trained_model, read_model_card, save_model
from .weights.safe_load import WeightsFileError, read_checkpoint, read_state_dict
from .convert import convert_checkpoint, convert_state_dict, load_official
from .export import export_onnx, export_program

__all__ = [
    "ModelConfig",
    "VideoRecognizer",
    "CustomRecognizer",
    "MobileNetV2",
    "mobilenet_v2",
    "build_model",
    "create_model",
    "list_models",
    "model_config",
    "register_model",
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "resnet",
    "STAGE_NAMES",
    "Complexity",
    "measure_complexity",
    "count_parameters",
    "ModelCard",
    "Preprocess",
    "Provenance",
    "card_of",
    "unwrap_model",
    "WeightsFileError",
    "read_checkpoint",
    "read_state_dict",
    "load_backbone_weights",
    "save_model",
    "load_model",
    "read_model_card",
    "load_trained_model",
    "load_checkpoint_file",
    "load_state_dict_file",
    "load_pretrained_backbone",
    "convert_state_dict",
    "load_official",
    "convert_checkpoint",
    "export_onnx",
    "export_program",
]
