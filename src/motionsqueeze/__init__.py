"""MotionSqueeze: motion-aware video action recognition (Kwon et al., ECCV 2020) in PyTorch."""

__version__ = "0.1.0"

from .models import create_model, list_models, load_model, save_model  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "load_model", "save_model"]
