"""Training, evaluation, checkpoints, distributed execution and metrics."""

from .config import TrainConfig, load_config
from .trainer import NonFiniteLossError, TrainResult, fit

__all__ = ["TrainConfig", "load_config", "fit", "TrainResult", "NonFiniteLossError"]
