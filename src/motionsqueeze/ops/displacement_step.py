"""One frame pair at a time: the displacement of a streaming step, fast on a CPU.

A streaming step (docs/streaming.md) matches the cached reduced features of frame t-1 with
those of frame t: one pair of small maps per stream (16-32 channels, 28 x 28 at 224 x 224
input), inference only. :func:`motionsqueeze.ops.displacement` is built for clips (many
pairs, autograd), and on one pair most of its time goes to per-operator overhead and to
reductions with index tracking. :func:`displacement_pair` computes the same function as
:func:`~motionsqueeze.ops.displacement_reference` (tested against it) with few operators:

* correlation: the second map is L2-normalised and zero-padded by r = (P-1)/2 cells once, so
  that cells off the map score exactly 0, as in the reference. The P padded rows that row y
  of the first map is matched with are P * (W + 2r) consecutive cells, i.e. one strided
  view, so one batched matrix product per stream, ``(H, P * (W + 2r), C) x (H, C, W)``,
  scores every row pair; the window is another strided view of the products (element
  (x + dx, x) of a row-major matrix with rows one element longer lies on a row), copied once
  by the ReLU into ``(N, P_dy, P_dx, H*W)``: candidates outer, pixels inner;
* kernel-soft-argmax in that layout, where every reduction over the candidates runs along
  contiguous pixel vectors: the first argmax (torch.max with indices is slow over the whole
  window) comes from the per-row maxima, the first row holding the maximum, then the first
  column of that row holding it; the Gaussian factors are looked up in a ``(P, P)`` table
  cached per window size and width; the expectations come from the two marginals.

No gradient: under autograd, tracing, export or for non-CPU tensors call
:func:`~motionsqueeze.ops.displacement` instead (:func:`pair_path_applies` says when this
one may be used). Half precision is computed in float32, as by the other backends.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .correlation import check_pair, check_patch_size
from .displacement import l2_normalize
from .tracing import recording

__all__ = ["displacement_pair", "pair_path_applies"]

EXP_FLOOR = -60.0  # softmax exponents below this are raised to it: no subnormal floats


def pair_path_applies(f: Tensor) -> bool:
    """Whether :func:`displacement_pair` may replace ``displacement`` for features ``f``:
    eager CPU inference, autograd off (``torch.no_grad``), no tracing or export."""
    return f.device.type == "cpu" and f.is_floating_point() and not torch.is_grad_enabled() and not recording()


@functools.lru_cache(maxsize=16)
def _constants(p: int, sigma: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per window size: ``(P, P)`` Gaussian factors ``exp(-(k - i)^2 / 2 sigma^2)`` (row k,
    centre i) and ``(P, 1)`` offsets / r of the window rows and columns, ``-1 .. 1``."""
    k = torch.arange(p, dtype=torch.float64)
    gauss = torch.exp(-((k.view(p, 1) - k.view(1, p)) ** 2) / (2.0 * sigma**2))
    r = max((p - 1) / 2, 1.0)  # P = 1: the only offset is 0
    offsets = ((k - (p - 1) / 2) / r).view(p, 1)
    return gauss.to(dtype=dtype, device=device), offsets.to(dtype=dtype, device=device)


def _normalized(f: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> channels-innermost ``(N, H, W, C)``, ``f / sqrt(sum f^2 + eps)``."""
    return l2_normalize(f.permute(0, 2, 3, 1), dim=-1)


def _window_scores(a: Tensor, b: Tensor, p: int) -> Tensor:
    """Rectified correlation ``(N, P_dy, P_dx, H*W)`` of two ``(N, H, W, C)`` maps."""
    n, h, w, c = a.shape
    r = (p - 1) // 2
    wp = w + 2 * r
    bp = F.pad(b, (0, 0, r, r, r, r)).contiguous()  # (N, H + 2r, Wp, C), zeros off the map
    prod = a.new_empty(n, h, p * wp, w)
    s = a.new_empty(n, p, p, h, w)
    for i in range(n):
        # Row y of a meets padded rows y .. y + P - 1 of b: P * Wp consecutive cells.
        rows = bp[i].as_strided((h, p * wp, c), (wp * c, c, 1))
        torch.bmm(rows, a[i].transpose(1, 2), out=prod[i])
        # prod[y, dy * Wp + x + dx, x] scores pixel (y, x) at offset (dy, dx) - r.
        window = prod[i].as_strided((p, p, h, w), (wp * w, w, p * wp * w, w + 1))
        torch.clamp_min(window, 0, out=s[i])
    return s.view(n, p, p, h * w)


def _soft_argmax(s: Tensor, sigma: float, tau: float) -> Tensor:
    """Kernel-soft-argmax of rectified scores ``(N, P_dy, P_dx, L)`` -> ``(N, 3, L)``
    [u, v, conf]; every reduction runs over outer dimensions, vectorised along L."""
    n, p, _, length = s.shape
    gauss, offsets = _constants(p, sigma, s.dtype, s.device)
    # torch.max with indices, slow on the whole window, runs on the (P, L) row maxima and one
    # row: the first row holding the maximum, then the first column of that row holding it
    # (first index on ties, as over the dy-major window).
    conf, iy = s.amax(2).max(1)  # (N, L)
    row = torch.gather(s, 1, iy.view(n, 1, 1, length).expand(n, 1, p, length)).squeeze(1)
    ix = row.max(1).indices  # (N, L); argmax over dim 1 is several times slower
    gy = torch.index_select(gauss, 1, iy.view(-1)).view(p, n, length).transpose(0, 1).mul(tau)
    gx = torch.index_select(gauss, 1, ix.view(-1)).view(p, n, length).transpose(0, 1)
    logits = (gy.unsqueeze(2) * gx.unsqueeze(1)).mul_(s)  # (N, P_dy, P_dx, L): tau * g * S
    # The largest logit is tau * conf for tau >= 0 (g = 1 at the argmax, g <= 1 and
    # 0 <= S <= conf elsewhere); exponents floored as in the "cpu" backend.
    top = tau * conf.view(n, 1, 1, length) if tau >= 0 else logits.amax((1, 2), keepdim=True)
    e = logits.sub_(top).clamp_(min=EXP_FLOOR).exp_()
    ex, ey = e.sum(1), e.sum(2)  # marginals over dy and dx: (N, P_dx, L), (N, P_dy, L)
    z = ex.sum(1)
    u = (ex * offsets).sum(1) / z
    v = (ey * offsets).sum(1) / z
    return torch.stack((u, v, conf), 1)


def displacement_pair(
    f1: Tensor, f2: Tensor, patch_size: int = 15, sigma: float = 5.0, temperature: float = 100.0
) -> Tensor:
    """:func:`motionsqueeze.ops.displacement` (L2-normalised) for inference on a CPU, fastest
    for few pairs.

    Args:
        f1, f2: features of frames t-1 and t, ``(N, C, H, W)`` (one pair per stream).
        patch_size, sigma, temperature: as for ``displacement``.

    Returns:
        ``(N, 3, H, W)`` in the input dtype: u, v in [-1, 1] and the confidence.
    """
    check_pair(f1, f2)
    check_patch_size(patch_size)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive (cells), got {sigma}")
    work = torch.float32 if f1.dtype in (torch.float16, torch.bfloat16) else f1.dtype
    n, _, h, w = f1.shape
    with torch.no_grad():
        s = _window_scores(_normalized(f1.to(work)), _normalized(f2.to(work)), patch_size)
        out = _soft_argmax(s, float(sigma), float(temperature))
    return out.view(n, 3, h, w).to(f1.dtype)
