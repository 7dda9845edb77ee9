"""Tensor-in, tensor-out functions for the MotionSqueeze math."""

from .correlation import local_correlation
from .displacement import (
    available_backends,
    displacement,
    displacement_reference,
    kernel_soft_argmax,
    l2_normalize,
    register_backend,
)

__all__ = [
    "local_correlation",
    "displacement",
    "displacement_reference",
    "kernel_soft_argmax",
    "l2_normalize",
    "register_backend",
    "available_backends",
]
