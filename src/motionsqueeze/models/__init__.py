"""Backbones, the video recogniser, the registry and cost counting."""

from .complexity import Complexity, count_parameters, measure_complexity
from .recognizer import ModelConfig, VideoRecognizer, build_model
from .registry import create_model, list_models, model_config, register_model
from .resnet import STAGE_NAMES, BasicBlock, Bottleneck, ResNet, resnet

__all__ = [
    "ModelConfig",
    "VideoRecognizer",
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
]
