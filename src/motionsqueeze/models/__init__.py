"""Backbones, the video recogniser, the registry, cost counting, weights in and out."""

from .complexity import Complexity, count_parameters, measure_complexity
from .recognizer import CustomRecognizer, ModelConfig, VideoRecognizer, build_model
from .mobilenetv2 import MobileNetV2, mobilenet_v2
from .registry import create_model, list_models, model_config, register_model
from .resnet import STAGE_NAMES, BasicBlock, Bottleneck, ResNet, resnet
from .weights import (
    WeightsFileError,
    load_checkpoint_file,
    load_model,
    load_pretrained_backbone,
    load_state_dict_file,
    save_model,
)
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
    "WeightsFileError",
    "load_checkpoint_file",
    "load_state_dict_file",
    "load_pretrained_backbone",
    "save_model",
    "load_model",
    "convert_state_dict",
    "load_official",
    "convert_checkpoint",
    "export_onnx",
    "export_program",
]
