"""Local correlation (the "matching" step of MotionSqueeze, docs/method.md §3).

``S(x, d) = <f1(x), f2(x + d)>`` for every displacement ``d = (dy, dx)`` in a P x P window,
channels in dy-major order (``index = (dy + r) * P + (dx + r)``, ``r = (P - 1) // 2``);
positions ``x + d`` that fall outside the map contribute 0.

The naive formulation multiplies ``f1`` with P*P shifted copies of ``f2`` and keeps a
``(N, C, P*P, H, W)`` product alive for the backward pass (2.5 GB at the ResNet-50 shape).
Here each displacement row ``dy`` is one batched matrix product between the rows of ``f1``
and the matching padded rows of ``f2`` (all horizontal pairs, ``(N, H, W, W + 2r)``), from
which the diagonal band of width P is read out. A custom autograd function saves only the
two inputs and recomputes those products in the backward pass, so training memory is the
output plus the inputs.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["local_correlation", "check_pair", "check_patch_size"]


def check_patch_size(patch_size: int) -> None:
    if not isinstance(patch_size, int) or isinstance(patch_size, bool):
        raise ValueError(f"patch_size must be an odd positive integer, got {patch_size!r}")
    if patch_size <= 0 or patch_size % 2 == 0:
        raise ValueError(
            f"patch_size must be an odd positive integer (the window is centred on the pixel), "
            f"got {patch_size}"
        )


def check_pair(f1: Tensor, f2: Tensor) -> None:
    """Validate two feature maps of shape (N, C, H, W) that are to be matched."""
    if f1.dim() != 4 or f2.dim() != 4:
        raise ValueError(
            f"expected two feature maps of shape (N, C, H, W), got shapes "
            f"{tuple(f1.shape)} and {tuple(f2.shape)}"
        )
    if f1.shape != f2.shape:
        raise ValueError(
            f"f1 and f2 must have the same shape (N, C, H, W), got {tuple(f1.shape)} and "
            f"{tuple(f2.shape)}"
        )
    if f1.dtype != f2.dtype or f1.device != f2.device:
        raise ValueError(
            f"f1 and f2 must share dtype and device, got {f1.dtype} on {f1.device} and "
            f"{f2.dtype} on {f2.device}"
        )


def no_autocast(device: str):
    """A context that turns autocast off on ``device``.

    Autocast would run the forward matmuls in bf16 / fp16 but not the backward ones; the
    correlation works in its inputs' dtype instead (the caller chooses it). (Devices without
    autocast, like "meta" for FLOP counting, need no guard.)
    """
    available = _AUTOCAST_AVAILABLE.get(device)
    if available is None:
        available = _AUTOCAST_AVAILABLE[device] = torch.amp.is_autocast_available(device)
    return torch.autocast(device, enabled=False) if available else nullcontext()


# Asked once per device type, outside any compiled region: torch.compile in some PyTorch
# releases (2.11) cannot trace torch.amp.is_autocast_available, and the graph break it made
# inside this context sent the compiled reference into endless recompilation on CUDA.
_AUTOCAST_AVAILABLE: dict[str, bool] = {d: torch.amp.is_autocast_available(d) for d in ("cpu", "cuda", "meta")}


def _band(prod: Tensor, width: int, patch_size: int, dilation: int) -> Tensor:
    """Read ``prod[..., x, x + j * dilation]`` for j in [0, P) out of ``(..., W, Wp)``.

    Element (x, x + k) of a row-major (W, Wp) matrix sits at flat index x * (Wp + 1) + k,
    so viewing the (zero-extended) flat buffer with row length Wp + 1 turns the band into
    columns. Only reshapes, a pad and a strided slice: traceable and exportable.
    """
    wp = prod.shape[-1]
    flat = prod.reshape(*prod.shape[:-2], width * wp)
    flat = F.pad(flat, (0, width))
    skew = flat.reshape(*prod.shape[:-2], width, wp + 1)
    return skew[..., : (patch_size - 1) * dilation + 1 : dilation]


def _unband(band: Tensor, wp: int, patch_size: int, dilation: int) -> Tensor:
    """Inverse of :func:`_band`: scatter ``(..., W, P)`` into a zero ``(..., W, Wp)``."""
    width = band.shape[-2]
    skew = band.new_zeros(*band.shape[:-2], width, wp + 1)
    skew[..., : (patch_size - 1) * dilation + 1 : dilation] = band
    flat = skew.reshape(*band.shape[:-2], width * (wp + 1))[..., : width * wp]
    return flat.reshape(*band.shape[:-2], width, wp)


def _rows(f2p: Tensor, i: int, height: int, dilation: int) -> Tensor:
    """Padded rows of f2 seen by displacement row i, as (N, H, C, Wp)."""
    return f2p[:, :, i * dilation : i * dilation + height, :].permute(0, 2, 1, 3)


def _forward(f1: Tensor, f2: Tensor, patch_size: int, dilation: int) -> Tensor:
    n, c, h, w = f1.shape
    pad = (patch_size - 1) // 2 * dilation
    f2p = F.pad(f2, (pad, pad, pad, pad))
    a = f1.permute(0, 2, 3, 1)  # (N, H, W, C)
    rows = []
    for i in range(patch_size):
        prod = torch.matmul(a, _rows(f2p, i, h, dilation))  # (N, H, W, Wp)
        rows.append(_band(prod, w, patch_size, dilation))  # (N, H, W, P)
    out = torch.stack(rows, dim=1)  # (N, P_dy, H, W, P_dx)
    return out.permute(0, 1, 4, 2, 3).reshape(n, patch_size * patch_size, h, w)


class _LocalCorrelation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f1: Tensor, f2: Tensor, patch_size: int, dilation: int) -> Tensor:
        ctx.save_for_backward(f1, f2)
        ctx.patch_size = patch_size
        ctx.dilation = dilation
        return _forward(f1, f2, patch_size, dilation)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        f1, f2 = ctx.saved_tensors
        p, dil = ctx.patch_size, ctx.dilation
        n, c, h, w = f1.shape
        pad = (p - 1) // 2 * dil
        need1, need2 = ctx.needs_input_grad[:2]
        f2p = F.pad(f2, (pad, pad, pad, pad))
        wp = w + 2 * pad
        a = f1.permute(0, 2, 3, 1)
        g = grad.reshape(n, p, p, h, w).permute(0, 1, 3, 4, 2)  # (N, P_dy, H, W, P_dx)
        grad_a = torch.zeros_like(a) if need1 else None
        grad_f2p = torch.zeros_like(f2p) if need2 else None
        for i in range(p):
            band = _unband(g[:, i], wp, p, dil)  # (N, H, W, Wp)
            rows = _rows(f2p, i, h, dil)  # (N, H, C, Wp)
            if need1:
                grad_a += torch.matmul(band, rows.transpose(-1, -2))
            if need2:
                grad_rows = torch.matmul(a.transpose(-1, -2), band)  # (N, H, C, Wp)
                grad_f2p[:, :, i * dil : i * dil + h, :] += grad_rows.permute(0, 2, 1, 3)
        grad_f1 = grad_a.permute(0, 3, 1, 2).contiguous() if need1 else None
        grad_f2 = grad_f2p[:, :, pad : pad + h, pad : pad + w].contiguous() if need2 else None
        return grad_f1, grad_f2, None, None


def local_correlation(f1: Tensor, f2: Tensor, patch_size: int = 15, dilation: int = 1) -> Tensor:
    """Dot products of ``f1`` at x with ``f2`` at x + d over a P x P window.

    Args:
        f1, f2: feature maps ``(N, C, H, W)`` of the same shape, dtype and device.
        patch_size: P, odd; displacements run over ``-(P-1)/2 .. (P-1)/2`` cells.
        dilation: spacing of the window in cells (displacement = dilation * offset).

    Returns:
        ``(N, P*P, H, W)`` in the input dtype (also under autocast), channel
        ``(dy + r) * P + (dx + r)``; zero where ``x + d`` is outside the map.
        Differentiable with respect to both inputs.
    """
    check_pair(f1, f2)
    check_patch_size(patch_size)
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be a positive integer, got {dilation!r}")
    with no_autocast(f1.device.type):
        if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
            return _LocalCorrelation.apply(f1, f2, patch_size, dilation)
        return _forward(f1, f2, patch_size, dilation)
