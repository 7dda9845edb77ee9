"""The ``"cpu"`` backend of :func:`motionsqueeze.ops.displacement`: the same function as
the reference, laid out for a CPU.

Why the reference is slow on a CPU: its epilogue (max, softmax, expectation) reduces over
dim 1 of an ``(N, P*P, H, W)`` volume, i.e. with a stride of H*W elements, and autograd keeps
and replays a dozen such volumes. Here

* the volume is ``(N, H, W, P, P)``: the window is the innermost, contiguous dimension, so
  every reduction runs over consecutive memory;
* the correlation of small maps (where most of a 15 x 15 window falls outside the map) is one
  all-pairs matrix product per frame pair, ``(HW, C) x (C, HW)``, from which the window is
  gathered with a cached index; larger maps use one band product per window row, over the
  rows that have a partner in the map only (no products against zero padding rows);
* the backward pass is written by hand (one autograd node, a few passes over the volume):
  ``dlogits = p * (du * (dx - u) + dv * (dy - v))`` from the softmax of the expectation, times
  ``tau * g`` and the ReLU mask, plus the confidence gradient at the argmax, then the
  transposed products and the L2-normalisation backward.

Ties, borders and dtypes behave as in the reference (first index on ties, out-of-map scores 0
inside the softmax, half precision computed in float32). The in-place writes and the
autograd function are eager-only: ``backend="auto"`` picks this path for CPU tensors in eager
mode and the reference under torch.compile, torch.export, ONNX export and tracing.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .correlation import _band, _unband, no_autocast
from .displacement import L2_EPS, register_backend
from .tracing import recording

__all__ = ["displacement_cpu", "register"]

# All-pairs products cost H*W per pixel, band products about P * (W + P - 1): the first wins
# on small maps, and its one large matrix product runs faster per FLOP than P small ones.
ALL_PAIRS_FACTOR = 1.5
EXP_FLOOR = -60.0  # softmax exponents below this are raised to it (see _forward)


@functools.lru_cache(maxsize=32)
def _window_index(h: int, w: int, p: int) -> Tensor:
    """Flat index of pair (x, x + d) in an ``(HW, HW + 1)`` all-pairs matrix, ``(HW * P*P,)``;
    displacements out of the map point at the extra zero column of their row."""
    r = (p - 1) // 2
    y = torch.arange(h).view(h, 1, 1, 1)
    x = torch.arange(w).view(1, w, 1, 1)
    dy = torch.arange(p).view(1, 1, p, 1) - r
    dx = torch.arange(p).view(1, 1, 1, p) - r
    ty, tx = y + dy, x + dx
    inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
    col = torch.where(inside, ty * w + tx, torch.full_like(ty * tx, h * w))
    row = (y * w + x).expand_as(col)
    return (row * (h * w + 1) + col).reshape(-1)


def _use_all_pairs(h: int, w: int, p: int) -> bool:
    return h * w <= ALL_PAIRS_FACTOR * p * (w + p - 1)


def _row_range(i: int, h: int, r: int) -> tuple[int, int]:
    """Rows y of f1 whose partner row y + (i - r) lies in the map."""
    dy = i - r
    return max(0, -dy), min(h, h - dy)


def _correlation(a: Tensor, b: Tensor, p: int) -> Tensor:
    """``(N, H, W, C)`` x2 -> rectified scores ``(N, H, W, P, P)`` (dy, dx innermost)."""
    n, h, w, c = a.shape
    if _use_all_pairs(h, w, p):
        pairs = torch.matmul(a.reshape(n, h * w, c), b.reshape(n, h * w, c).transpose(1, 2))
        pairs = F.pad(pairs, (0, 1))  # the zero column for out-of-map displacements
        s = pairs.reshape(n, -1).index_select(1, _window_index(h, w, p).to(a.device))
        return torch.relu_(s.view(n, h, w, p, p))
    r = (p - 1) // 2
    bt = F.pad(b, (0, 0, r, r)).transpose(2, 3)  # (N, H, C, W + 2r)
    s = a.new_zeros(n, h, w, p, p)
    for i in range(p):
        y0, y1 = _row_range(i, h, r)
        if y0 < y1:
            prod = torch.matmul(a[:, y0:y1], bt[:, y0 + i - r : y1 + i - r])
            s[:, y0:y1, :, i, :] = _band(prod, w, p, 1)
    return torch.relu_(s)


def _correlation_backward(ds: Tensor, a: Tensor, b: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """Gradients of ``a`` and ``b`` (both ``(N, H, W, C)``) from that of the scores."""
    n, h, w, c = a.shape
    if _use_all_pairs(h, w, p):
        hw = h * w
        dpairs = ds.new_zeros(n, hw * (hw + 1))
        dpairs.index_add_(1, _window_index(h, w, p).to(ds.device), ds.reshape(n, -1))
        dpairs = dpairs.view(n, hw, hw + 1)[:, :, :hw]
        da = torch.matmul(dpairs, b.reshape(n, hw, c))
        db = torch.matmul(dpairs.transpose(1, 2), a.reshape(n, hw, c))
        return da.view(n, h, w, c), db.view(n, h, w, c)
    r = (p - 1) // 2
    wp = w + 2 * r
    bt = F.pad(b, (0, 0, r, r)).transpose(2, 3)  # (N, H, C, Wp)
    da = torch.zeros_like(a)
    dbt = a.new_zeros(n, h, c, wp)
    at = a.transpose(2, 3)  # (N, H, C, W)
    for i in range(p):
        y0, y1 = _row_range(i, h, r)
        if y0 < y1:
            band = _unband(ds[:, y0:y1, :, i, :], wp, p, 1)  # (N, h', W, Wp)
            rows = slice(y0 + i - r, y1 + i - r)
            da[:, y0:y1] += torch.matmul(band, bt[:, rows].transpose(2, 3))
            dbt[:, rows] += torch.matmul(at[:, y0:y1], band)
    return da, dbt[..., r : r + w].transpose(2, 3)


def _gaussian(idx: Tensor, p: int, sigma: float, scale: float, dtype: torch.dtype) -> Tensor:
    """``scale`` times the kernel g around the hard argmax ``idx`` (flat, dy-major):
    ``(..., P, P)``, from its two separable factors."""
    k = torch.arange(p, dtype=dtype, device=idx.device)
    iy = torch.div(idx, p, rounding_mode="floor").to(dtype).unsqueeze(-1)
    ix = (idx % p).to(dtype).unsqueeze(-1)
    gy = torch.exp((k - iy).square_().mul_(-0.5 / sigma**2)).mul_(scale)
    gx = torch.exp((k - ix).square_().mul_(-0.5 / sigma**2))
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def _axis(p: int, like: Tensor) -> Tensor:
    """``(P,)``: window offsets along one axis divided by r (0 for P = 1)."""
    r = (p - 1) / 2
    k = torch.arange(p, dtype=like.dtype, device=like.device)
    return (k - r) / r if p > 1 else k * 0


def _offsets(p: int, like: Tensor) -> Tensor:
    """``(P*P, 2)``: the (dx, dy) offset of every window cell divided by r."""
    k = _axis(p, like)
    return torch.stack((k.repeat(p), k.repeat_interleave(p)), 1)


def _normalize(f: Tensor, normalize: bool) -> tuple[Tensor, Tensor | None]:
    """``(N, C, H, W)`` -> channels-innermost ``(N, H, W, C)``, L2-normalised, and the norms."""
    x = f.permute(0, 2, 3, 1).contiguous()
    if not normalize:
        return x, None
    norm = x.square().sum(-1, keepdim=True).add_(L2_EPS).sqrt_()
    return x / norm, norm  # x may be f itself


def _normalize_backward(da: Tensor, a: Tensor, norm: Tensor | None) -> Tensor:
    """``(N, H, W, C)`` gradient of the normalised features -> ``(N, C, H, W)`` of the input."""
    if norm is not None:
        da = da.addcmul_(a, (da * a).sum(-1, keepdim=True), value=-1).div_(norm)
    return da.permute(0, 3, 1, 2)


def _forward(f1, f2, p, sigma, tau, normalize, for_backward=False):
    """``[u, v, conf]`` as ``(N, 3, H, W)`` and what the backward pass needs."""
    a, n1 = _normalize(f1, normalize)
    b, n2 = _normalize(f2, normalize)
    s = _correlation(a, b, p).flatten(-2)  # (N, H, W, P*P), rectified
    conf, idx = s.max(-1)  # first index on ties
    tau_g = _gaussian(idx, p, sigma, tau, s.dtype).flatten(-2)
    logits = tau_g * s
    # Softmax with the exponent floored at -60: at tau = 100, exp(logit - max) reaches 1e-44,
    # and subnormal floats slow x86 arithmetic ~100-fold. Terms below e^-60 change the sum
    # by < 225 e^-60 = 2e-24, far below float64 resolution, so the values are the same.
    prob = logits.sub_(logits.amax(-1, keepdim=True)).clamp_(min=EXP_FLOOR).exp_()
    prob = prob.div_(prob.sum(-1, keepdim=True))
    uv = prob @ _offsets(p, s)  # (N, H, W, 2): expectation of (dx, dy) / r
    out = torch.cat((uv, conf.unsqueeze(-1)), -1).permute(0, 3, 1, 2).contiguous()
    if not for_backward:
        return out, ()
    # dL/dS = tau * g * relu'(S) * dL/dlogits; everything but dL/dlogits is known now.
    weight = prob.mul_(tau_g).masked_fill_(s <= 0, 0.0)
    return out, (a, b, n1, n2, weight, idx, conf, uv)


class _DisplacementCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f1, f2, p, sigma, tau, normalize):
        out, saved = _forward(f1, f2, p, sigma, tau, normalize, for_backward=True)
        ctx.save_for_backward(*saved)
        ctx.patch_size = p
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        a, b, n1, n2, weight, idx, conf, uv = ctx.saved_tensors
        p = ctx.patch_size
        g = grad.permute(0, 2, 3, 1)  # (N, H, W, 3)
        # Softmax of an expectation: dL/dlogit_k = p_k * (du * (dx_k - u) + dv * (dy_k - v)).
        off = _axis(p, weight)
        along_x = g[..., 0:1] * (off - uv[..., 0:1])  # (N, H, W, P_dx)
        along_y = g[..., 1:2] * (off - uv[..., 1:2])  # (N, H, W, P_dy)
        ds = (along_y.unsqueeze(-1) + along_x.unsqueeze(-2)).flatten(-2).mul_(weight)
        dconf = g[..., 2:3].masked_fill(conf.unsqueeze(-1) <= 0, 0.0)  # conf = max relu(S)
        ds.scatter_add_(-1, idx.unsqueeze(-1), dconf)
        da, db = _correlation_backward(ds.view(*ds.shape[:-1], p, p), a, b, p)
        return _normalize_backward(da, a, n1), _normalize_backward(db, b, n2), None, None, None, None


def displacement_cpu(
    f1: Tensor, f2: Tensor, patch_size: int, sigma: float, temperature: float, normalize: bool
) -> Tensor:
    """The ``"cpu"`` backend of :func:`motionsqueeze.ops.displacement` (same arguments).

    Eager mode only (in-place writes, a hand-written backward); returns ``(N, 3, H, W)`` in
    the dtype of the features, half precision computed in float32.
    """
    work = torch.float32 if f1.dtype in (torch.float16, torch.bfloat16) else f1.dtype
    a, b = f1.to(work), f2.to(work)
    args = (patch_size, float(sigma), float(temperature), bool(normalize))
    with no_autocast(a.device.type):
        if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
            out = _DisplacementCPU.apply(a, b, *args)
        else:
            out = _forward(a, b, *args)[0]
    return out.to(f1.dtype)


def _available(f1: Tensor) -> bool:
    return f1.device.type == "cpu" and f1.is_floating_point() and not recording()


def register() -> None:
    """Make ``backend="cpu"`` (and ``"auto"`` on eager CPU tensors) use this implementation."""
    register_backend("cpu", displacement_cpu, _available, prefer=True)
