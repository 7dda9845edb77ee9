"""Tensor-in, tensor-out functions for the MotionSqueeze math."""

from .correlation import local_correlation
from .displacement import (
    available_backends,
    displacement,
    displacement_reference,
    kernel_soft_argmax,
    l2_normalize,
    register_backend,
    use_backend,
)
from .displacement_cpu import register as _register_cpu

_register_cpu()  # backend="cpu", and "auto" on CPU tensors in eager mode

__all__ = [
    "local_correlation",
    "displacement",
    "displacement_reference",
    "kernel_soft_argmax",
    "l2_normalize",
    "register_backend",
    "available_backends",
    "use_backend",
]
