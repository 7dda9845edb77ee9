"""The ``"cpu"`` backend of :func:`motionsqueeze.ops.displacement`: the same function as
the reference, laid out for a CPU.

Why the reference is slow on a CPU: its epilogue (max, softmax, expectation) reduces over
dim 1 of an ``(N, P*P, H, W)`` volume, i.e. with a stride of H*W elements, and autograd keeps
and replays a dozen such volumes. Here

* the candidates of a pixel are the innermost, contiguous dimension, so every reduction runs
  over consecutive memory;
* small maps (where most of a 15 x 15 window falls outside the map) are matched with one
  all-pairs matrix product per frame pair, ``(HW, C) x (C, HW)``, and the epilogue runs on
  those HW scores per pixel; the window cells outside the map all score 0, so they enter the
  softmax as a per-pixel count and offset sum (``_Geometry``) instead of 225 - HW columns;
* larger maps are cut into B x B tiles (``TILE``); each tile is matched against its
  (B + P - 1)^2 halo of the other map with one matrix product (4 products for a 28 x 28 map
  instead of 15 band products per image row, ~2x the window's multiply-adds at B = 7, P = 15),
  and every pixel's P x P window is read out of the products by a strided view and
  rectified in the same pass. Pixels stay in tile order through the epilogue (it is per
  pixel), so only the ``(N, 3, H, W)`` result is reordered;
* the backward pass is written by hand (one autograd node, a few passes over the volume):
  ``dlogits = p * (du * (dx - u) + dv * (dy - v))`` from the softmax of the expectation, times
  ``tau * g`` and the ReLU mask, plus the confidence gradient at the argmax, then the
  transposed products and the L2-normalisation backward.

Inference (autograd off) on maps too large for all pairs takes the window-major layout of the
streaming step instead (:func:`motionsqueeze.ops.displacement_step.displacement_prepared`: band
products per image row, every reduction vectorised along the pixels), the same function and
faster than the tiles at 28 x 28; the tiles stay the training path, whose backward they serve.
Pairs go in chunks whose products stay below ``PAIR_PATH_FLOATS``, in buffers reused from chunk
to chunk (fresh pages for every chunk cost more than the matching at 56 x 56).

Ties, borders and dtypes behave as in the reference (first index on ties, out-of-map scores 0
inside the softmax, half precision computed in float32). The in-place writes and the
autograd function are eager-only: ``backend="auto"`` picks this path for CPU tensors in eager
mode and the reference under torch.compile, torch.export, ONNX export and tracing.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .correlation import no_autocast
from .displacement import L2_EPS, register_backend
from .displacement_step import displacement_prepared, pair_features
from .tracing import recording

__all__ = ["displacement_cpu", "register"]

# All-pairs products score H*W candidates per pixel, the window P*P: the first is used up to
# this multiple of P*P (its one large matrix product runs faster per FLOP than P band ones).
ALL_PAIRS_FACTOR = 1.5
# Side of the square tiles of larger maps, in pixels: each tile is matched against its
# (TILE + P - 1)^2 halo, (1 + (P-1)/TILE)^2 times the window's products.
TILE = 7
EXP_FLOOR = -60.0  # softmax exponents below this are raised to it (see _epilogue)
# Inference on maps matched by tiles runs the streaming step's window-major path instead
# (module docstring); its row products take H * P * (W + P - 1) * W floats per pair, and
# the pairs go in chunks of at most this many floats of products (16 MB).
PAIR_PATH = True
PAIR_PATH_FLOATS = 1 << 22


class _Geometry(NamedTuple):
    """Where the candidate cells of each pixel lie, for one layout of the scores.

    Scores are ``(N, L, GH, GW)`` for L pixels: a grid of candidates per pixel, dy-major.
    ``rows`` (GH,) and ``cols`` (GW,) are the grid coordinates in cells, ``origin`` (L, 2) the
    (x, y) of the pixel itself in them; the offset of a candidate is its coordinate minus the
    origin. ``inside`` (L, GH, GW) marks candidates in the window (None: all are);
    ``zeros`` (L,) counts window cells that are not candidates (outside the map: score 0)
    and ``zero_offsets`` (L, 2) sums their (dx, dy); both None when there are none.
    """

    rows: Tensor
    cols: Tensor
    origin: Tensor
    inside: Tensor | None
    zeros: Tensor | None
    zero_offsets: Tensor | None


@functools.lru_cache(maxsize=32)
def _geometry(h: int, w: int, p: int, all_pairs: bool, dtype: torch.dtype = torch.float64) -> _Geometry:
    """Cached per map size, window and dtype, so that no call rebuilds or converts it (the
    all-pairs ``inside`` mask is H*W x H*W)."""
    if dtype != torch.float64:
        return _Geometry(*(None if t is None else t.to(dtype) for t in _geometry(h, w, p, all_pairs)))
    r = (p - 1) // 2
    if not all_pairs:  # the window itself: P x P candidates, the pixel at (r, r)
        k = torch.arange(p, dtype=torch.float64)
        return _Geometry(k, k, torch.tensor([[r, r]], dtype=torch.float64), None, None, None)
    py, px = (t.reshape(-1) for t in torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
    dy = py.view(1, -1) - py.view(-1, 1)  # (pixel, candidate)
    dx = px.view(1, -1) - px.view(-1, 1)
    inside = (dy.abs() <= r) & (dx.abs() <= r)
    zeros = p * p - inside.sum(1)
    # A whole window's offsets sum to zero: the cells off the map sum to minus those on it.
    zero_offsets = -torch.stack(((dx * inside).sum(1), (dy * inside).sum(1)), 1)
    f64 = torch.float64
    return _Geometry(
        torch.arange(h, dtype=f64), torch.arange(w, dtype=f64), torch.stack((px, py), 1).to(f64),
        None if inside.all() else inside.view(h * w, h, w).to(f64),
        None if (zeros == 0).all() else zeros.to(f64), zero_offsets.to(f64),
    )


def _use_all_pairs(h: int, w: int, p: int) -> bool:
    return h * w <= ALL_PAIRS_FACTOR * p * p


def _tiling(h: int, w: int, p: int) -> tuple[int, int, int, int]:
    """Tile side B, tiles down and across, and halo side B + 2r for a map of H x W."""
    b = min(TILE, max(h, w))
    return b, -(-h // b), -(-w // b), b + p - 1


def _tile_operands(a: Tensor, b: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """The pixels of ``a`` tile by tile and the halos of ``b`` as column strips.

    ``a`` (N, H, W, C) -> ``(nty, N * ntx, B*B, C)``: the B x B pixels of tile (ty, tx),
    zero-padded to whole tiles. ``b`` -> ``(N * ntx, H' + 2r, B + 2r, C)``, contiguous: the
    zero-padded map cut into overlapping column strips B + 2r wide, so that the halo of every
    tile, rows ``ty*B .. ty*B + B + 2r`` of its strip, is one contiguous (B+2r)^2 x C matrix.
    """
    n, h, w, c = a.shape
    bs, nty, ntx, hs = _tiling(h, w, p)
    r = (p - 1) // 2
    ap = a if (nty * bs, ntx * bs) == (h, w) else F.pad(a, (0, 0, 0, ntx * bs - w, 0, nty * bs - h))
    at = ap.view(n, nty, bs, ntx, bs, c).permute(1, 0, 3, 2, 4, 5).reshape(nty, n * ntx, bs * bs, c)
    bp = F.pad(b, (0, 0, r, r + ntx * bs - w, r, r + nty * bs - h))  # (N, Hp, Wp, C)
    _, hp, wp, _ = bp.shape
    strips = bp.as_strided((n, ntx, hp, hs, c), (hp * wp * c, bs * c, wp * c, c, 1)).contiguous()
    return at, strips.view(n * ntx, hp, hs, c)


def _halo(strips: Tensor, ty: int, bs: int, hs: int) -> Tensor:
    """``(N * ntx, (B+2r)^2, C)``: the halos of the tiles in tile row ty (a view)."""
    return strips[:, ty * bs : ty * bs + hs].flatten(1, 2)


def _windows(prod: Tensor, bs: int, p: int) -> Tensor:
    """The P x P window of every pixel inside ``(M, B*B, (B+2r)^2)`` tile products, as a
    view ``(M, B, B, P, P)``.

    Pixel (y, x) of a tile is row y*B + x; its window starts at halo cell (y, x), column
    y*(B+2r) + x, so one step in y moves B*(B+2r)^2 + (B+2r) elements and one in x moves
    (B+2r)^2 + 1: a strided view, no copy; distinct pixels never share an element.
    """
    m, bb, hh = prod.shape
    hs = bs + p - 1
    return prod.as_strided(
        (m, bs, bs, p, p), (bb * hh, bs * hh + hs, hh + 1, hs, 1), prod.storage_offset()
    )


def _pixels(x: Tensor, p: int, all_pairs: bool) -> Tensor:
    """``(N, K, H, W)`` -> ``(M, L, K)``: per-pixel values in the order of the scores.

    All pairs: ``(N, H*W, K)``. Tiles: pixel by pixel within each tile, tile by tile
    (``(nty * N * ntx, B*B, K)``), zero-padded to whole tiles.
    """
    n, k, h, w = x.shape
    if all_pairs:
        return x.permute(0, 2, 3, 1).reshape(n, h * w, k)
    bs, nty, ntx, _ = _tiling(h, w, p)
    x = F.pad(x, (0, ntx * bs - w, 0, nty * bs - h))
    return x.view(n, k, nty, bs, ntx, bs).permute(2, 0, 4, 3, 5, 1).reshape(nty * n * ntx, bs * bs, k)


def _unpixels(x: Tensor, n: int, h: int, w: int, p: int, all_pairs: bool) -> Tensor:
    """Inverse of :func:`_pixels`: ``(M, L, K)`` -> contiguous ``(N, K, H, W)``."""
    k = x.shape[-1]
    if all_pairs:
        return x.view(n, h, w, k).permute(0, 3, 1, 2).contiguous()
    bs, nty, ntx, _ = _tiling(h, w, p)
    x = x.view(nty, n, ntx, bs, bs, k).permute(1, 5, 0, 3, 2, 4).reshape(n, k, nty * bs, ntx * bs)
    return x[:, :, :h, :w].contiguous()


def _correlation(a: Tensor, b: Tensor, p: int, all_pairs: bool, geo: _Geometry) -> Tensor:
    """``(N, H, W, C)`` x2 -> rectified scores ``(M, L, GH, GW)``: pixels in the order of
    :func:`_pixels`, candidates in the layout of ``geo``."""
    n, h, w, c = a.shape
    if all_pairs:
        s = torch.relu_(torch.matmul(a.reshape(n, h * w, c), b.reshape(n, h * w, c).transpose(1, 2)))
        s = s.view(n, h * w, h, w)
        return s if geo.inside is None else s.mul_(geo.inside)
    # 2-D tiles: all pairs between a B x B tile and its (B + 2r)^2 halo, one matrix product
    # per tile; the windows are read out of the products (a strided view) and rectified in
    # one pass, one row of tiles at a time while its products are in cache.
    bs, nty, ntx, hs = _tiling(h, w, p)
    at, strips = _tile_operands(a, b, p)
    prod = a.new_empty(n * ntx, bs * bs, hs * hs)
    s = a.new_empty(nty, n * ntx, bs, bs, p, p)
    for ty in range(nty):
        torch.bmm(at[ty], _halo(strips, ty, bs, hs).transpose(1, 2), out=prod)
        torch.clamp_min(_windows(prod, bs, p), 0.0, out=s[ty])
    return s.view(nty * n * ntx, bs * bs, p, p)


def _correlation_backward(ds: Tensor, a: Tensor, b: Tensor, p: int, all_pairs: bool) -> tuple[Tensor, Tensor]:
    """Gradients of ``a`` and ``b`` (both ``(N, H, W, C)``) from that of the scores (in the
    layout :func:`_correlation` returns)."""
    n, h, w, c = a.shape
    if all_pairs:
        ds = ds.view(n, h * w, h * w)
        da = torch.matmul(ds, b.reshape(n, h * w, c))
        db = torch.matmul(ds.transpose(1, 2), a.reshape(n, h * w, c))
        return da.view(n, h, w, c), db.view(n, h, w, c)
    bs, nty, ntx, hs = _tiling(h, w, p)
    r = (p - 1) // 2
    at, strips = _tile_operands(a, b, p)
    ds = ds.view(nty, n * ntx, bs, bs, p, p)
    # The score gradient scattered back into tile products: zero off the windows, which sit
    # at the same places for every row of tiles, so one fill serves them all.
    dprod = a.new_zeros(n * ntx, bs * bs, hs * hs)
    dat = torch.empty_like(at)
    dstrips = torch.zeros_like(strips)
    for ty in range(nty):
        _windows(dprod, bs, p).copy_(ds[ty])
        torch.bmm(dprod, _halo(strips, ty, bs, hs), out=dat[ty])
        # (bmm then add: baddbmm_ into this strided view falls back to one addmm_ per tile,
        # ~100x slower with 2 threads)
        _halo(dstrips, ty, bs, hs).add_(torch.bmm(dprod.transpose(1, 2), at[ty]))
    da = dat.view(nty, n, ntx, bs, bs, c).permute(1, 0, 3, 2, 4, 5).reshape(n, nty * bs, ntx * bs, c)
    dstrips = dstrips.view(n, ntx, -1, hs, c)
    dbp = a.new_zeros(n, dstrips.shape[2], ntx * bs + 2 * r, c)
    for tx in range(ntx):
        dbp[:, :, tx * bs : tx * bs + hs] += dstrips[:, tx]
    return da[:, :h, :w], dbp[:, r : r + h, r : r + w]


def _offsets(geo: _Geometry, p: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Offsets / r of the candidate columns ``(L, GW)`` and rows ``(L, GH)`` of each pixel."""
    rr = max((p - 1) / 2, 1.0)  # P = 1: the only offset is 0
    origin = geo.origin.to(like)
    return (geo.cols.to(like) - origin[:, :1]) / rr, (geo.rows.to(like) - origin[:, 1:]) / rr


def _epilogue(s: Tensor, geo: _Geometry, p: int, sigma: float, tau: float, for_backward: bool):
    """Kernel-soft-argmax of rectified scores ``(N, L, GH, GW)``: ``(N, L, 3)`` = [u, v, conf]
    and, for the backward pass, ``(weight, idx, conf, uv, z)``."""
    n, length, gh, gw = s.shape
    conf, idx = s.flatten(-2).max(-1)  # first index on ties (grids are dy-major)
    # Kernel g around the argmax, times tau, from its separable factors.
    rows, cols = geo.rows.to(s), geo.cols.to(s)
    iy = torch.div(idx, gw, rounding_mode="floor").to(s.dtype).unsqueeze(-1)
    ix = (idx % gw).to(s.dtype).unsqueeze(-1)
    gy = torch.exp((rows - iy).square_().mul_(-0.5 / sigma**2)).mul_(tau)
    gx = torch.exp((cols - ix).square_().mul_(-0.5 / sigma**2))
    tau_g = (gy.unsqueeze(-1) * gx.unsqueeze(-2)).flatten(-2)  # (N, L, GH*GW)
    flat = s.flatten(-2)
    if for_backward:  # dL/dS = tau * g * relu'(S) * dL/dlogit: mask once, logits unchanged
        tau_g.mul_(torch.sign(flat))  # relu'(S) = sign(S) for S >= 0 (float ops: a boolean
        # mask and masked_fill_ were 15x slower here)
    # The largest logit is tau * conf (g = 1 at the argmax, g <= 1 and S <= conf elsewhere),
    # also >= the logit 0 of window cells off the map.
    top = tau * conf if tau >= 0 else (tau_g * flat).amax(-1).clamp(min=0)
    # Exponents floored at -60: at tau = 100, exp(logit - max) reaches 1e-44, and subnormal
    # floats slow x86 arithmetic ~100-fold. Terms below e^-60 change the sum by less than
    # 225 e^-60 = 2e-24, far below float64 resolution: the values are the same.
    e = torch.addcmul(-top.unsqueeze(-1), tau_g, flat).clamp_(min=EXP_FLOOR).exp_()
    if geo.inside is not None:
        e.mul_(geo.inside.to(s).flatten(-2))
    # Sums of e * (dx, dy) from the marginals, with offsets relative to each pixel: offsets
    # of the order of 1 keep the float32 rounding of u, v small, and tau multiplies it in
    # the backward pass.
    dx, dy = _offsets(geo, p, s)
    e4 = e.view(n, length, gh, gw)
    if geo.origin.shape[0] == 1:  # one window for all pixels: row sums of e and e * dx in
        # one pass, as a product with [1, dx] (two reductions over e cost twice that)
        rows_sum = torch.matmul(e4, torch.stack((torch.ones_like(dx[0]), dx[0]), -1))
        ey, ex_dx = rows_sum.unbind(-1)  # (N, L, GH) each
        z = ey.sum(-1)
        num = torch.stack((ex_dx.sum(-1), (ey * dy).sum(-1)), -1)
    else:
        ex, ey = e4.sum(-2), e4.sum(-1)
        z = ex.sum(-1)
        num = torch.stack(((ex * dx).sum(-1), (ey * dy).sum(-1)), -1)
    if geo.zeros is not None:  # off-map window cells: logit 0, weight exp(-top) each
        e0 = (-top).clamp_(min=EXP_FLOOR).exp_()
        z = z + geo.zeros.to(s) * e0
        num = num + e0.unsqueeze(-1) * geo.zero_offsets.to(s) / max((p - 1) / 2, 1.0)
    uv = num.div_(z.unsqueeze(-1))  # (N, L, 2): expectation of (dx, dy) / r
    out = torch.cat((uv, conf.unsqueeze(-1)), -1)
    if not for_backward:
        return out, ()
    return out, (e.mul_(tau_g), idx, conf, uv, z)


def _epilogue_backward(grad: Tensor, saved, geo: _Geometry, p: int) -> Tensor:
    """``(N, L, 3)`` gradient of [u, v, conf] -> that of the scores, ``(N, L, GH*GW)``."""
    weight, idx, conf, uv, z = saved
    du, dv, dconf = grad.unbind(-1)
    # Softmax of an expectation: dL/dlogit_k = prob_k * (du * (dx_k - u) + dv * (dy_k - v)),
    # with prob_k = e_k / z and dx_k = (col_k - origin_x) / r; weight = e * tau * g * relu'.
    dx, dy = _offsets(geo, p, weight)
    tx = (du / z).unsqueeze(-1) * (dx - uv[..., :1])  # (N, L, GW)
    ty = (dv / z).unsqueeze(-1) * (dy - uv[..., 1:])  # (N, L, GH)
    ds = (ty.unsqueeze(-1) + tx.unsqueeze(-2)).flatten(-2).mul_(weight)
    ds.scatter_add_(-1, idx.unsqueeze(-1), dconf.masked_fill(conf <= 0, 0.0).unsqueeze(-1))
    return ds


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
    n, _, h, w = f1.shape
    all_pairs = _use_all_pairs(h, w, p)
    geo = _geometry(h, w, p, all_pairs, f1.dtype)
    a, n1 = _normalize(f1, normalize)
    b, n2 = _normalize(f2, normalize)
    s = _correlation(a, b, p, all_pairs, geo)
    out, saved = _epilogue(s, geo, p, sigma, tau, for_backward)
    return _unpixels(out, n, h, w, p, all_pairs), (a, b, n1, n2, *saved)


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
        a, b, n1, n2, *saved = ctx.saved_tensors
        p = ctx.patch_size
        n, h, w, _ = a.shape
        all_pairs = _use_all_pairs(h, w, p)
        geo = _geometry(h, w, p, all_pairs, a.dtype)
        ds = _epilogue_backward(_pixels(grad, p, all_pairs), saved, geo, p)
        da, db = _correlation_backward(ds, a, b, p, all_pairs)
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
        elif PAIR_PATH and normalize and not _use_all_pairs(*a.shape[2:], patch_size):
            out = _pairs_in_chunks(a, b, *args[:3])
        else:
            out = _forward(a, b, *args)[0]
    return out.to(f1.dtype)


def _pairs_in_chunks(a: Tensor, b: Tensor, p: int, sigma: float, tau: float) -> Tensor:
    """Inference on maps matched by tiles: ``displacement_prepared`` over chunks of pairs, as
    a contiguous ``(N, 3, H, W)``."""
    n, _, h, w = a.shape
    chunk = max(1, PAIR_PATH_FLOATS // (h * p * (w + p - 1) * w))
    out, scratch = a.new_empty(n, 3, h, w), {}
    for i in range(0, n, chunk):
        pa, pb = pair_features(a[i : i + chunk], p), pair_features(b[i : i + chunk], p)
        out[i : i + chunk] = displacement_prepared(pa, pb, p, sigma, tau, scratch)
    return out


def _available(f1: Tensor) -> bool:
    return f1.device.type == "cpu" and f1.is_floating_point() and not recording()


def register() -> None:
    """Make ``backend="cpu"`` (and ``"auto"`` on eager CPU tensors) use this implementation."""
    register_backend("cpu", displacement_cpu, _available, prefer=True)
