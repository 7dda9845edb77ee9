"""The fused displacement kernel as a PyTorch custom op, and the ``"triton"`` backend.

``torch.ops.motionsqueeze.displacement`` wraps the Triton forward kernel and
``torch.ops.motionsqueeze.displacement_backward`` the two backward kernels. Both have fake
(meta) implementations, so ``torch.compile`` traces through them without a graph break, and
the forward carries an autograd formula that calls the backward op, so AOTAutograd puts
both into the compiled graphs. Neither synchronises with the host, so CUDA graphs can
capture them.

Importing this module imports triton; :func:`register` plugs the backend in with
:func:`motionsqueeze.ops.displacement.register_backend`. :func:`displacement` does both on
first use of ``backend="triton"`` (or ``"auto"`` on CUDA tensors), never at package import.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import triton_displacement as kernels
from .displacement import L2_EPS, register_backend

__all__ = ["displacement_triton", "register"]


@torch.library.custom_op("motionsqueeze::displacement", mutates_args=())
def _displacement_op(
    f1: Tensor, f2: Tensor, patch_size: int, sigma: float, temperature: float, normalize: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``[u, v, conf]`` (float32 ``(N, 3, H, W)``), argmax (int32) and log-sum-exp (float32)."""
    return kernels.displacement_forward(f1, f2, patch_size, sigma, temperature, normalize, L2_EPS)


@_displacement_op.register_fake
def _(f1, f2, patch_size, sigma, temperature, normalize):
    n, _, h, w = f1.shape
    return (
        f1.new_empty(n, 3, h, w, dtype=torch.float32),
        f1.new_empty(n, h, w, dtype=torch.int32),
        f1.new_empty(n, h, w, dtype=torch.float32),
    )


@torch.library.custom_op("motionsqueeze::displacement_backward", mutates_args=())
def _displacement_backward_op(
    grad_out: Tensor, f1: Tensor, f2: Tensor, out: Tensor, argmax: Tensor, lse: Tensor,
    patch_size: int, sigma: float, temperature: float, normalize: bool,
) -> tuple[Tensor, Tensor]:
    """Gradients of ``f1`` and ``f2`` given the float32 gradient of ``[u, v, conf]``."""
    return kernels.displacement_backward(
        grad_out, f1, f2, out, argmax, lse, patch_size, sigma, temperature, normalize, L2_EPS
    )


@_displacement_backward_op.register_fake
def _(grad_out, f1, f2, out, argmax, lse, patch_size, sigma, temperature, normalize):
    return torch.empty_like(f1), torch.empty_like(f2)


def _setup_context(ctx, inputs, output):
    f1, f2, patch_size, sigma, temperature, normalize = inputs
    out, argmax, lse = output
    ctx.save_for_backward(f1, f2, out, argmax, lse)
    ctx.params = (patch_size, sigma, temperature, normalize)
    ctx.mark_non_differentiable(argmax, lse)


def _backward(ctx, grad_out, grad_argmax, grad_lse):
    f1, f2, out, argmax, lse = ctx.saved_tensors
    grad_f1, grad_f2 = _displacement_backward_op(
        grad_out.float().contiguous(), f1, f2, out, argmax, lse, *ctx.params
    )
    return grad_f1, grad_f2, None, None, None, None


_displacement_op.register_autograd(_backward, setup_context=_setup_context)


def displacement_triton(
    f1: Tensor, f2: Tensor, patch_size: int, sigma: float, temperature: float, normalize: bool
) -> Tensor:
    """The ``"triton"`` backend of :func:`motionsqueeze.ops.displacement` (same arguments).

    Returns ``(N, 3, H, W)`` in the dtype of the features; float32 accumulation inside.
    """
    if f1.dtype not in kernels.SUPPORTED_DTYPES:
        raise ValueError(
            f"the triton backend takes float32, float16 or bfloat16 features, got {f1.dtype}; "
            f"use backend='reference' for other dtypes"
        )
    if f1.device.type != "cuda" and not kernels.interpreting():
        raise ValueError(
            f"the triton backend needs CUDA tensors, got {f1.device}; for CPU tensors set "
            f"TRITON_INTERPRET=1 before importing motionsqueeze (Triton's interpreter: slow, "
            f"for testing) or use backend='reference'"
        )
    out, _, _ = _displacement_op(
        f1.contiguous(), f2.contiguous(), patch_size, sigma, temperature, normalize
    )
    return out.to(f1.dtype)


def _available(f1: Tensor) -> bool:
    return f1.device.type == "cuda" and f1.dtype in kernels.SUPPORTED_DTYPES


def register() -> None:
    """Make ``backend="triton"`` (and ``"auto"`` on CUDA) use this implementation."""
    register_backend("triton", displacement_triton, _available, prefer=True)
