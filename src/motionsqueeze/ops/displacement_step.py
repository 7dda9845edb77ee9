"""One frame pair at a time: the displacement of a streaming step, fast on a CPU.

A streaming step (docs/streaming.md) matches the cached reduced features of frame t-1 with
those of frame t: one pair of small maps per stream (16-32 channels, 28 x 28 at 224 x 224
input), inference only. :func:`motionsqueeze.ops.displacement` is built for clips (many
pairs, autograd), and on one pair most of its time goes to per-operator overhead and to
reductions with index tracking. :func:`displacement_pair` computes the same function as
:func:`~motionsqueeze.ops.displacement_reference` (tested against it) with few operators:

* features (:func:`pair_features`): each map is L2-normalised once into a zero border of
  r = (P-1)/2 cells, channels innermost, ``(N, H + 2r, W + 2r, C)``, so that cells off the
  map score exactly 0, as in the reference. A stream prepares frame t once and matches it as
  the later map now and as the earlier map (its interior) at the next frame;
* correlation: the P padded rows that row y of the first map is matched with are
  P * (W + 2r) consecutive cells, i.e. one strided view, so one batched matrix product per
  stream, ``(H, P * (W + 2r), C) x (H, C, W)``, scores every row pair; the window is another
  strided view of the products (element (x + dx, x) of a row-major matrix with rows one
  element longer lies on a row), copied once by the ReLU into ``(N, P_dy, P_dx, H*W)``:
  candidates outer, pixels inner;
* kernel-soft-argmax in that layout, where every reduction over the candidates runs along
  contiguous pixel vectors: the first argmax (torch.max with indices is slow over the whole
  window) comes from the per-row maxima, the first row holding the maximum, then the first
  column of that row holding it; the Gaussian factors are looked up in a ``(P, P)`` table
  cached per window size and width and applied in place (row factor, then column factor
  fused with the shift of the exponents); the softmax sum and the two expectations are two
  small matrix products with the exponentials (over dx, then over dy).

No gradient: under autograd, tracing, export or for non-CPU tensors call
:func:`~motionsqueeze.ops.displacement` instead (:func:`pair_path_applies` says when this
one may be used). Half precision is computed in float32, as by the other backends.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .correlation import check_pair, check_patch_size
from .displacement import l2_normalize
from .tracing import recording

__all__ = ["displacement_pair", "displacement_prepared", "pair_features", "pair_path_applies"]

# exp() of less than about -87 is a subnormal float, and exp and sums over subnormals run
# 50-100x slower on x86 CPUs: softmax exponents stay above EXP_FLOOR (as in the "cpu" backend,
# which raises lower ones to it), and below EXP_SPAN (e^60 ~ 1e26: sums of P*P terms stay finite).
EXP_FLOOR = -60.0
EXP_SPAN = 60.0


def pair_path_applies(f: Tensor) -> bool:
    """Whether :func:`displacement_pair` may replace ``displacement`` for features ``f``:
    eager CPU inference, autograd off (``torch.no_grad``), no tracing or export."""
    return f.device.type == "cpu" and f.is_floating_point() and not torch.is_grad_enabled() and not recording()


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@functools.lru_cache(maxsize=16)
def _constants(p: int, sigma: float, tau: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """Per window size, width and temperature: ``(P, P)`` Gaussian factors
    ``exp(-(k - i)^2 / 2 sigma^2)`` (row k, centre i) and the same times tau; the weights of
    the moments of the window's exponentials, in two sums of P terms each (one sum of P*P
    float32 terms loses ~1e-5): ``(2, P)`` over dx (ones, column offsets / r), then ``(3, 2P)``
    over dy of those, giving ``sum e``, ``sum e * dx / r`` (u) and ``sum e * dy / r`` (v),
    offsets ``-1 .. 1``; ``EXP_SPAN`` as a tensor."""
    k = torch.arange(p, dtype=torch.float64)
    gauss = torch.exp(-((k.view(p, 1) - k.view(1, p)) ** 2) / (2.0 * sigma**2))
    r = max((p - 1) / 2, 1.0)  # P = 1: the only offset is 0
    offsets = (k - (p - 1) / 2) / r
    over_dx = torch.stack((torch.ones(p, dtype=torch.float64), offsets))
    over_dy = torch.zeros(3, p, 2, dtype=torch.float64)  # columns (dy, [sum, sum * dx])
    over_dy[0, :, 0], over_dy[1, :, 1], over_dy[2, :, 0] = 1.0, 1.0, offsets
    span = torch.tensor(EXP_SPAN, dtype=torch.float64)
    return tuple(t.to(dtype=dtype, device=device) for t in (gauss, gauss * tau, over_dx, over_dy.view(3, 2 * p), span))


def pair_features(f: Tensor, patch_size: int) -> Tensor:
    """The form in which :func:`displacement_prepared` matches a map.

    Args:
        f: ``(N, C, H, W)`` features.
        patch_size: P, odd.

    Returns:
        ``(N, H + 2r, W + 2r, C)``, r = (P-1)/2: ``f / sqrt(sum_c f^2 + eps)`` with channels
        innermost (float32 for half-precision ``f``), zeros on the border of r cells.
    """
    check_patch_size(patch_size)
    n, c, h, w = f.shape
    r = (patch_size - 1) // 2
    out = f.new_zeros(n, h + 2 * r, w + 2 * r, c, dtype=_work_dtype(f.dtype))
    out[:, r : r + h, r : r + w].permute(0, 3, 1, 2).copy_(l2_normalize(f.to(out.dtype), dim=1))
    return out


def _scratch(scratch: dict | None, key: str, like: Tensor, *shape: int) -> Tensor:
    """An uninitialised ``shape`` tensor like ``like``; kept in ``scratch`` (when given) for
    the next call, so that the same pages are written every frame instead of fresh ones."""
    t = scratch.get(key) if scratch is not None else None
    if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
        t = like.new_empty(shape)
        if scratch is not None:
            scratch[key] = t
    return t


def _window_scores(pa: Tensor, pb: Tensor, p: int, scratch: dict | None = None) -> Tensor:
    """Rectified correlation ``(N, P_dy, P_dx, H*W)`` of two prepared maps."""
    n, hp, wp, c = pa.shape
    r = (p - 1) // 2
    h, w = hp - 2 * r, wp - 2 * r
    a = pa[:, r : r + h, r : r + w]  # the first map, (N, H, W, C) with padded strides
    prod = _scratch(scratch, "products", pa, n, h, p * wp, w)
    s = _scratch(scratch, "window", pa, n, p, p, h, w)
    for i in range(n):
        # Row y of a meets padded rows y .. y + P - 1 of b: P * Wp consecutive cells.
        rows = pb[i].as_strided((h, p * wp, c), (wp * c, c, 1))
        torch.bmm(rows, a[i].transpose(1, 2), out=prod[i])
        # prod[y, dy * Wp + x + dx, x] scores pixel (y, x) at offset (dy, dx) - r.
        window = prod[i].as_strided((p, p, h, w), (wp * w, w, p * wp * w, w + 1))
        torch.clamp_min(window, 0, out=s[i])
    return s.view(n, p, p, h * w)


def _soft_argmax(s: Tensor, sigma: float, tau: float, out: Tensor) -> None:
    """Kernel-soft-argmax of rectified scores ``(N, P_dy, P_dx, L)`` into ``out``
    ``(N, 3, L)`` [u, v, conf] (any strides); ``s`` is overwritten. Every reduction runs
    over outer dimensions, vectorised along L."""
    n, p, _, length = s.shape
    gauss, gauss_tau, over_dx, over_dy, span = _constants(p, sigma, tau, s.dtype, s.device)
    # torch.max with indices, slow on the whole window, runs on the (P, L) row maxima and one
    # row: the first row holding the maximum, then the first column of that row holding it
    # (first index on ties, as over the dy-major window).
    conf, iy = s.amax(2).max(1)  # (N, L)
    row = torch.gather(s, 1, iy.view(n, 1, 1, length).expand(n, 1, p, length)).squeeze(1)
    ix = row.max(1).indices  # (N, L); argmax over dim 1 is several times slower
    gy = torch.index_select(gauss_tau, 1, iy.view(-1)).view(p, n, length).transpose(0, 1)
    gx = torch.index_select(gauss, 1, ix.view(-1)).view(p, n, length).transpose(0, 1)
    logits = s.mul_(gy.unsqueeze(2))
    if 0 <= tau <= EXP_SPAN - EXP_FLOOR:
        # Shifted by tau * conf - EXP_SPAN instead of the largest logit tau * conf (g = 1 at
        # the argmax, g <= 1 and 0 <= S <= conf elsewhere): the exponents then lie in
        # [EXP_SPAN - tau * conf, EXP_SPAN], finite and, as S <= 1 for normalised features,
        # above EXP_FLOOR, so no pass is needed to floor them; one fused pass applies the
        # column factor and the shift.
        torch.addcmul(torch.add(span, conf.view(n, 1, 1, length), alpha=-tau), logits, gx.unsqueeze(1), out=logits)
    else:
        logits.mul_(gx.unsqueeze(1))
        logits.sub_(logits.amax((1, 2), keepdim=True)).clamp_min_(EXP_FLOOR)
    e = logits.exp_().view(n * p, p, length)
    per_row = torch.matmul(over_dx, e).view(n, 2 * p, length)  # per dy: sum e, sum e * dx
    sums = torch.matmul(over_dy, per_row)  # (N, 3, L): sum e, sum e * dx, sum e * dy
    torch.div(sums[:, 1:], sums[:, :1], out=out[:, :2])  # z > 0: the largest term is e^0 or e^EXP_SPAN
    out[:, 2].copy_(conf)


def displacement_prepared(
    pa: Tensor,
    pb: Tensor,
    patch_size: int = 15,
    sigma: float = 5.0,
    temperature: float = 100.0,
    scratch: dict | None = None,
) -> Tensor:
    """:func:`displacement_pair` of two maps already in :func:`pair_features` form.

    Args:
        pa, pb: ``pair_features`` of frames t-1 and t (same patch size), ``(N, H + 2r, W + 2r, C)``.
        scratch: a dict kept by the caller from one call to the next (one per stream and
            stage; not shared between threads), or ``None``: the working buffers of the
            products and the window (~2.7 MB at C' = 32, 28 x 28) stay in it.

    Returns:
        ``(N, 3, H, W)`` in the dtype of ``pa``, stored channels-last (``torch.channels_last``):
        u, v in [-1, 1] and the confidence.
    """
    check_patch_size(patch_size)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive (cells), got {sigma}")
    r = (patch_size - 1) // 2
    if pa.dim() != 4 or pa.shape != pb.shape or pa.shape[1] <= 2 * r or pa.shape[2] <= 2 * r:
        raise ValueError(
            f"expected two maps prepared by pair_features(f, {patch_size}), (N, H + {2 * r}, W + {2 * r}, C), "
            f"got shapes {tuple(pa.shape)} and {tuple(pb.shape)}"
        )
    n, hp, wp, _ = pa.shape
    h, w = hp - 2 * r, wp - 2 * r
    out = pa.new_empty(n, h, w, 3)
    with torch.no_grad():
        s = _window_scores(pa, pb, patch_size, scratch)
        _soft_argmax(s, float(sigma), float(temperature), out.view(n, h * w, 3).transpose(1, 2))
    return out.permute(0, 3, 1, 2)


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
    with torch.no_grad():
        d = displacement_prepared(pair_features(f1, patch_size), pair_features(f2, patch_size), patch_size, sigma, temperature)
    return d.to(f1.dtype)
