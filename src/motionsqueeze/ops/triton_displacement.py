"""Fused Triton kernels for :func:`motionsqueeze.ops.displacement` (docs/method.md §2-§5).

Forward: per pixel, the P*P correlations, ReLU, confidence, hard argmax and the
Gaussian-weighted softmax expectation, in one kernel that never writes the ``(N, P*P, H, W)``
correlation volume. Backward: two kernels that recompute the scores instead of storing
them, one gathering the gradient of each ``f1`` pixel and one the gradient of each ``f2``
pixel (no atomics, so the result is deterministic).

Tiling. One program handles ``BLOCK_W`` consecutive pixels of one image row (the "query"
row). For each of the P vertical displacements it multiplies the query features
``(BLOCK_W, C)`` with the ``BLOCK_K >= BLOCK_W + P - 1`` features of the displaced row of
the other map ``(C, BLOCK_K)`` (``tl.dot``, fp32 accumulation): entry ``(i, k)`` is the
score of pixel ``i`` at horizontal displacement index ``j = k - i`` (the band
``0 <= k - i < P``); the rest is masked. Columns outside the map load zeros, so
out-of-map displacements score 0 and stay in the softmax, as in the reference.

The Gaussian of the kernel-soft-argmax is centred on the hard argmax, so the forward makes
two passes over the displacements, recomputing the dot products: pass 1 finds the maximum
(first index on ties, dy-major order), pass 2 runs an online softmax of
``tau * g * S``. The backward needs the argmax and the log-sum-exp of every pixel, which the
forward writes (4 + 4 bytes per pixel), and ``[u, v]`` in float32.

L2 normalisation is fused: the kernels read the raw features and the per-pixel inverse
norms ``1 / sqrt(sum f^2 + eps)`` (computed once in PyTorch, ``(N, H, W)``, cheap), so
half-precision features are never rounded after normalisation and nothing of the input
size is stored. With ``a = inv * f`` the gradient through the normalisation is
``inv * (G - a * <a, G>)``, and ``<a, G> = sum_d dS * S`` is available in the kernel
without a reduction over channels, so the kernels write the final gradients directly.

Precision: scores accumulate in float32. Half-precision features feed tensor cores as they
are (their products are exact in float32); float32 features use ``FP32_DOT_PRECISION``. In
the backward, ``dS`` multiplies bfloat16 features as two bfloat16 parts (hi + lo, 16 bits)
and float16 features in float32 (``dS`` can exceed the float16 range).

Backward, per pixel with ``p = softmax(l)``, ``l = tau * g * S`` and offsets in units of r:
``dL/dl = p * (gu * dx/r + gv * dy/r - (gu * u + gv * v))`` and
``dL/dS = [S > 0] * (tau * g * dL/dl + gconf * [d == argmax])``. Then
``dL/da(x) = sum_d dS(x, d) b(x + d)`` (query = f1) and
``dL/db(y) = sum_d dS(y - d, d) a(y - d)`` (query = f2, sources gathered from f1).

Requires triton. On CPU tensors the kernels run only under ``TRITON_INTERPRET=1`` set before
this module is imported (Triton's interpreter; slow, for tests).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = [
    "SUPPORTED_DTYPES",
    "interpreting",
    "inverse_norms",
    "launch_config",
    "displacement_forward",
    "displacement_backward",
    "compile_for_gpu",
    "resource_usage",
]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Precision of tl.dot for float32 features on GPU: None picks "tf32x3" (three TF32
# tensor-core products, close to float32 accuracy) on compute capability >= 8.0 and
# "ieee" (CUDA-core FMA) elsewhere; set "ieee", "tf32x3" or "tf32" to override.
FP32_DOT_PRECISION: str | None = None
# Launch settings, not tuned on a GPU (none was at hand): 4 warps per 16-pixel tile and no
# software pipelining, the fewest registers on sm_90 (docs/benchmarks.md).
NUM_WARPS = 4
NUM_STAGES = 1


@triton.jit
def _load_cols(img, y, xs, ok, c, c_ok, HW, W):
    """Features ``[c, y, xs]`` of one image ``(C, H, W)`` as ``(len(c), len(xs))``; 0 if masked."""
    return tl.load(
        img + c[:, None] * HW + y * W + xs[None, :], mask=c_ok[:, None] & ok[None, :], other=0.0
    )


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``a @ b`` with float32 accumulation; ``PRECISION`` applies to float32 operands."""
    if a.dtype == tl.float32:
        out = tl.dot(a, b.to(tl.float32), input_precision=PRECISION)
    elif UPCAST:  # the interpreter multiplies bfloat16 as raw integers
        out = tl.dot(a.to(tl.float32), b.to(tl.float32))
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def _scores(
    q, q_img, k_img, yq, xq, q_ok, yk, xk, k_ok, C, HW, W,
    BLOCK_C: tl.constexpr, SINGLE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """Raw dot products ``<q(yq, xq_i), k(yk, xk_j)>`` as (BLOCK_W, BLOCK_K) float32.

    ``q_img`` and ``k_img`` point at one image ``(C, H, W)``; masked pixels give 0. With
    ``SINGLE`` all channels fit one chunk and ``q`` is the query tile ``(BLOCK_W, BLOCK_C)``
    loaded once per program; otherwise the channels are walked in chunks.
    """
    cs = tl.arange(0, BLOCK_C)
    if SINGLE:
        acc = _dot(q, _load_cols(k_img, yk, xk, k_ok, cs, cs < C, HW, W), UPCAST, PRECISION)
    else:
        acc = tl.zeros((xq.shape[0], xk.shape[0]), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            c_ok = c < C
            qc = tl.trans(_load_cols(q_img, yq, xq, q_ok, c, c_ok, HW, W))
            acc += _dot(qc, _load_cols(k_img, yk, xk, k_ok, c, c_ok, HW, W), UPCAST, PRECISION)
    return acc


@triton.jit
def _inside(yk, xk, H, W):
    """Mask of the pixels ``(yk, xk)`` (a scalar row, a vector of columns) inside the map."""
    yk = yk + xk * 0  # a tensor: the interpreter mistypes scalar-and-tensor masks
    return (xk >= 0) & (xk < W) & (yk >= 0) & (yk < H)


@triton.jit
def _gaussian(d, inv_two_sigma_sq):
    """``exp(-d^2 / (2 sigma^2))`` for integer cell offsets ``d``: one factor of the
    separable window; the horizontal factor of a tile is computed once per program where
    the argmax is fixed, which saves an exponential per score."""
    d = d.to(tl.float32)
    return tl.exp(-d * d * inv_two_sigma_sq)


@triton.jit
def _row_tile(n_seg, H, W, BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr, R: tl.constexpr):
    """This program's tile: image ``n``, row ``y``, query columns ``xq`` (mask ``q_ok``),
    partner columns ``xk`` and ``band_k = k - i`` for entry (i, k) of a score tile."""
    pid = tl.program_id(0)
    seg = pid % n_seg
    y = (pid // n_seg) % H
    n = (pid // (n_seg * H)).to(tl.int64)
    rows = tl.arange(0, BLOCK_W)
    cols = tl.arange(0, BLOCK_K)
    xq = seg * BLOCK_W + rows
    xk = seg * BLOCK_W - R + cols
    return n, y, xq, xq < W, xk, cols[None, :] - rows[:, None]


@triton.jit
def _pixel_state(idx_ptr, lse_ptr, out_img, gout_img, pix, ok, HW):
    """What the backward needs of pixels ``pix`` of one image: argmax, log-sum-exp, u, v and
    the three output gradients (masked pixels: lse = inf, so that p = 0)."""
    return (
        tl.load(idx_ptr + pix, mask=ok, other=0),
        tl.load(lse_ptr + pix, mask=ok, other=float("inf")),
        tl.load(out_img + pix, mask=ok, other=0.0),
        tl.load(out_img + HW + pix, mask=ok, other=0.0),
        tl.load(gout_img + pix, mask=ok, other=0.0),
        tl.load(gout_img + HW + pix, mask=ok, other=0.0),
        tl.load(gout_img + 2 * HW + pix, mask=ok, other=0.0),
    )


@triton.jit
def _rectified_scores(
    q, f1_img, f2_img, inv_q, inv2_img, y, yk, xq, q_ok, xk, C, H, W,
    BLOCK_C: tl.constexpr, SINGLE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """ReLU of the normalised scores of the query tile against ``f2`` row ``yk``."""
    k_ok = _inside(yk, xk, H, W)
    inv_k = tl.load(inv2_img + yk * W + xk, mask=k_ok, other=0.0)
    s = _scores(q, f1_img, f2_img, y, xq, q_ok, yk, xk, k_ok, C, H * W, W,
                BLOCK_C, SINGLE, UPCAST, PRECISION)
    return tl.maximum(s * inv_q[:, None] * inv_k[None, :], 0.0)


@triton.jit
def _forward_kernel(
    f1_ptr, f2_ptr, inv1_ptr, inv2_ptr, out_ptr, idx_ptr, lse_ptr,
    C, H, W, n_seg, tau, inv_two_sigma_sq, inv_r,
    P: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
    SINGLE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    R: tl.constexpr = (P - 1) // 2
    n, y, xq, q_ok, xk, j = _row_tile(n_seg, H, W, BLOCK_W, BLOCK_K, R)  # j: dx + R
    band = (j >= 0) & (j < P)
    HW = H * W
    f1_img = f1_ptr + n * C * HW
    f2_img = f2_ptr + n * C * HW
    pix0 = n * HW  # this image in the (N, H, W) tensors
    cs = tl.arange(0, BLOCK_C)
    inv_q = tl.load(inv1_ptr + pix0 + y * W + xq, mask=q_ok, other=0.0)
    q = tl.trans(_load_cols(f1_img, y, xq, q_ok, cs, cs < C, HW, W))  # used when SINGLE

    # Pass 1: confidence and hard argmax (first index on ties, dy-major).
    best = tl.full((BLOCK_W,), -1.0, tl.float32)
    best_idx = tl.zeros((BLOCK_W,), dtype=tl.int32)
    for i in range(P):
        s = _rectified_scores(q, f1_img, f2_img, inv_q, inv2_ptr + pix0, y, y + i - R, xq, q_ok, xk,
                              C, H, W, BLOCK_C, SINGLE, UPCAST, PRECISION)
        s = tl.where(band, s, -1.0)
        m = tl.max(s, axis=1)
        first = tl.min(tl.where(s == m[:, None], j, P), axis=1)
        take = m > best  # strict: an earlier row wins a tie
        best = tl.where(take, m, best)
        best_idx = tl.where(take, i * P + first, best_idx)

    # Pass 2: online softmax of tau * g * S with the Gaussian around the argmax.
    iy = best_idx // P
    ix = best_idx % P
    m_run = tl.full((BLOCK_W,), float("-inf"), tl.float32)
    z = tl.zeros((BLOCK_W,), dtype=tl.float32)
    su = tl.zeros((BLOCK_W,), dtype=tl.float32)
    sv = tl.zeros((BLOCK_W,), dtype=tl.float32)
    dx = (j - R).to(tl.float32)
    gx = _gaussian(j - ix[:, None], inv_two_sigma_sq)
    for i in range(P):
        s = _rectified_scores(q, f1_img, f2_img, inv_q, inv2_ptr + pix0, y, y + i - R, xq, q_ok, xk,
                              C, H, W, BLOCK_C, SINGLE, UPCAST, PRECISION)
        g = _gaussian(i - iy, inv_two_sigma_sq)[:, None] * gx
        logit = tl.where(band, tau * g * s, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(logit, axis=1))
        alpha = tl.exp(m_run - m_new)
        e = tl.exp(logit - m_new[:, None])
        e_sum = tl.sum(e, axis=1)
        z = z * alpha + e_sum
        su = su * alpha + tl.sum(e * dx, axis=1)
        sv = sv * alpha + e_sum * (i - R)
        m_run = m_new

    out_img = out_ptr + n * 3 * HW + y * W + xq
    tl.store(out_img, su / z * inv_r, mask=q_ok)
    tl.store(out_img + HW, sv / z * inv_r, mask=q_ok)
    tl.store(out_img + 2 * HW, best, mask=q_ok)
    tl.store(idx_ptr + pix0 + y * W + xq, best_idx, mask=q_ok)
    tl.store(lse_ptr + pix0 + y * W + xq, m_run + tl.log(z), mask=q_ok)


@triton.jit
def _score_grad(s_pre, valid, g, di, j, idx, lse, u, v, gu, gv, gc, tau, inv_r, P: tl.constexpr):
    """``dL/dS`` (before the ReLU) for a tile of scores of displacement row ``di``.

    ``j`` is the horizontal displacement index of each entry, ``g`` its Gaussian weight
    and ``valid`` marks the entries that are real (pixel, displacement) pairs; the
    per-pixel values (argmax ``idx``, ``lse``, ``u``, ``v`` and the output gradients
    ``gu, gv, gc``) broadcast against the tile as a column or a row.
    """
    R: tl.constexpr = (P - 1) // 2
    s = tl.maximum(s_pre, 0.0)
    p = tl.exp(tl.where(valid, tau * g * s - lse, float("-inf")))
    dlogit = p * ((gu * (j - R).to(tl.float32) + gv * (di - R)) * inv_r - (gu * u + gv * v))
    ds = tau * g * dlogit + tl.where(di * P + j == idx, gc, 0.0)
    return tl.where(valid & (s_pre > 0), ds, 0.0)


@triton.jit
def _backward_kernel(
    q_ptr, k_ptr, inv_q_ptr, inv_k_ptr, out_ptr, idx_ptr, lse_ptr, gout_ptr, grad_ptr,
    C, H, W, n_seg, tau, inv_two_sigma_sq, inv_r,
    P: tl.constexpr, GATHER: tl.constexpr, NORMALIZE: tl.constexpr,
    BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE: tl.constexpr,
    LOWP: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """Gradient of the query map for a row segment and a chunk of channels.

    ``GATHER = False``: query = f1, other map = f2; the per-pixel softmax state belongs to
    the query pixels and the partner of query pixel x at displacement d is f2(x + d).
    ``GATHER = True``: query = f2, other map = f1 (the sources); pixel y of f2 receives
    from every source x = y - d, whose softmax state is loaded per column.
    """
    R: tl.constexpr = (P - 1) // 2
    n, y, xq, q_ok, xk, band_k = _row_tile(n_seg, H, W, BLOCK_W, BLOCK_K, R)
    band = (band_k >= 0) & (band_k < P)
    HW = H * W
    q_img = q_ptr + n * C * HW
    k_img = k_ptr + n * C * HW
    pix0 = n * HW
    out_img = out_ptr + n * 3 * HW
    gout_img = gout_ptr + n * 3 * HW
    # Horizontal displacement index of entry (i, k): from query i to column k, or, when
    # gathering, from source k to query i (the opposite direction).
    if GATHER:
        j = (P - 1) - band_k
    else:
        j = band_k
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    inv_q = tl.load(inv_q_ptr + pix0 + y * W + xq, mask=q_ok, other=0.0)
    q = tl.trans(_load_cols(q_img, y, xq, q_ok, c, c_ok, HW, W))  # this chunk, (BLOCK_W, BLOCK_C)
    if not GATHER:  # softmax state of the query pixels, as (BLOCK_W, 1) columns
        idx, lse, u, v, gu, gv, gc = _pixel_state(
            idx_ptr + pix0, lse_ptr + pix0, out_img, gout_img, y * W + xq, q_ok, HW
        )
        idx, lse, u, v = idx[:, None], lse[:, None], u[:, None], v[:, None]
        gu, gv, gc = gu[:, None], gv[:, None], gc[:, None]
        gx = _gaussian(j - idx % P, inv_two_sigma_sq)  # the argmax is fixed per query row

    acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    dot_a = tl.zeros((BLOCK_W,), dtype=tl.float32)  # <a, dL/da> = sum_d dS * S
    for i in range(P):
        if GATHER:
            yk = y - (i - R)  # the source row that reaches this row at vertical index i
        else:
            yk = y + i - R
        k_ok = _inside(yk, xk, H, W)
        kpix = yk * W + xk
        inv_k = tl.load(inv_k_ptr + pix0 + kpix, mask=k_ok, other=0.0)
        k = _load_cols(k_img, yk, xk, k_ok, c, c_ok, HW, W)  # this chunk, (BLOCK_C, BLOCK_K)
        if SINGLE:
            s_pre = _dot(q, k, UPCAST, PRECISION)
        else:
            s_pre = _scores(q, q_img, k_img, y, xq, q_ok, yk, xk, k_ok, C, HW, W,
                            BLOCK_C, SINGLE, UPCAST, PRECISION)
        s_pre = s_pre * inv_q[:, None] * inv_k[None, :]
        if GATHER:  # softmax state of the source pixels, as (1, BLOCK_K) rows
            idx, lse, u, v, gu, gv, gc = _pixel_state(
                idx_ptr + pix0, lse_ptr + pix0, out_img, gout_img, kpix, k_ok, HW
            )
            idx, lse, u, v = idx[None, :], lse[None, :], u[None, :], v[None, :]
            gu, gv, gc = gu[None, :], gv[None, :], gc[None, :]
            gx = _gaussian(j - idx % P, inv_two_sigma_sq)
        g = _gaussian(i - idx // P, inv_two_sigma_sq) * gx
        valid = band & k_ok[None, :]
        ds = _score_grad(s_pre, valid, g, i, j, idx, lse, u, v, gu, gv, gc, tau, inv_r, P)
        dot_a += tl.sum(ds * s_pre, axis=1)
        ds = ds * inv_k[None, :]
        if LOWP:
            # bfloat16 features on tensor cores: dS = hi + lo in two bfloat16 parts keeps 16
            # bits of it (one part alone loses too much where the normalisation cancels).
            hi = ds.to(k.dtype)
            lo = (ds - hi.to(tl.float32)).to(k.dtype)
            kt = tl.trans(k)
            acc += _dot(hi, kt, UPCAST, PRECISION) + _dot(lo, kt, UPCAST, PRECISION)
        else:
            acc += _dot(ds, tl.trans(k), UPCAST, PRECISION)

    grad_ptrs = grad_ptr + n * C * HW + c[None, :] * HW + y * W + xq[:, None]
    if NORMALIZE:  # through a = inv * f: inv * (G - a <a, G>)
        a = q.to(tl.float32) * inv_q[:, None]
        acc = inv_q[:, None] * (acc - a * dot_a[:, None])
    tl.store(grad_ptrs, acc.to(grad_ptr.dtype.element_ty), mask=q_ok[:, None] & c_ok[None, :])


def interpreting() -> bool:
    """Whether the kernels were defined under ``TRITON_INTERPRET=1`` (they then run on CPU)."""
    return type(_forward_kernel).__name__ == "InterpretedFunction"


def _next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


# Widest channel count held in one tile: the query tile is then loaded once per program and
# the partner rows once per displacement row; wider features are walked in chunks of CHUNK.
MAX_SINGLE_CHUNK = 128
CHUNK = 64


def launch_config(patch_size: int, channels: int) -> dict[str, int]:
    """Tile sizes: ``BLOCK_W`` query pixels, ``BLOCK_K`` partner columns, ``BLOCK_C`` channels.

    tl.dot wants powers of two of at least 16. ``BLOCK_K`` is the smallest such width
    holding 16 pixels plus the ``P - 1`` band, and ``BLOCK_W`` the largest power of two that
    still fits in it (P = 15: 16 pixels against 32 columns, 15 of which each pixel uses).
    ``SINGLE`` says whether all channels fit one ``BLOCK_C`` tile.
    """
    span = patch_size - 1
    block_k = max(16, _next_pow2(16 + span))
    block_w = 1 << (block_k - span).bit_length() - 1
    single = channels <= MAX_SINGLE_CHUNK
    block_c = max(16, _next_pow2(channels)) if single else CHUNK
    return {"BLOCK_W": block_w, "BLOCK_K": block_k, "BLOCK_C": block_c, "SINGLE": single}


def _dot_precision(t: Tensor) -> str:
    """input_precision of float32 dot products (features, or dS with float16 features)."""
    if FP32_DOT_PRECISION is not None:
        return FP32_DOT_PRECISION
    nvidia = t.is_cuda and torch.version.hip is None
    if nvidia and torch.cuda.get_device_capability(t.device)[0] >= 8:
        return "tf32x3"
    return "ieee"


def inverse_norms(f: Tensor, normalize: bool, eps: float) -> Tensor:
    """``1 / sqrt(sum_c f^2 + eps)`` per pixel as float32 ``(N, H, W)``, or ones."""
    if not normalize:
        return torch.ones(f.shape[0], f.shape[2], f.shape[3], dtype=torch.float32, device=f.device)
    norm = torch.linalg.vector_norm(f, dim=1, dtype=torch.float32)
    return torch.rsqrt(norm * norm + eps)


def _constexprs(dtype: torch.dtype, patch_size: int, channels: int, precision: str) -> dict:
    return dict(
        P=patch_size,
        UPCAST=interpreting() and dtype == torch.bfloat16,
        PRECISION=precision,
        **launch_config(patch_size, channels),
    )


def _common(f1: Tensor, patch_size: int, sigma: float) -> tuple[dict, tuple]:
    n, c, h, w = f1.shape
    consts = _constexprs(f1.dtype, patch_size, c, _dot_precision(f1))
    n_seg = triton.cdiv(w, consts["BLOCK_W"])
    r = (patch_size - 1) // 2
    return consts, (c, h, w, n_seg, 1.0 / (2.0 * sigma * sigma), 1.0 / r if r > 0 else 0.0)


def _device_guard(t: Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def displacement_forward(
    f1: Tensor, f2: Tensor, patch_size: int, sigma: float, temperature: float, normalize: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the fused forward kernel.

    Args:
        f1, f2: contiguous ``(N, C, H, W)`` float32 / float16 / bfloat16 on one device.

    Returns:
        ``out`` float32 ``(N, 3, H, W)`` = ``[u, v, conf]``; ``argmax`` int32 ``(N, H, W)``
        (dy-major displacement index); ``lse`` float32 ``(N, H, W)``, the log-sum-exp of
        the softmax logits. The last two are what the backward needs.
    """
    n, c, h, w = f1.shape
    out = torch.empty(n, 3, h, w, dtype=torch.float32, device=f1.device)
    argmax = torch.empty(n, h, w, dtype=torch.int32, device=f1.device)
    lse = torch.empty(n, h, w, dtype=torch.float32, device=f1.device)
    if out.numel() == 0:
        return out, argmax, lse
    inv1, inv2 = inverse_norms(f1, normalize, eps), inverse_norms(f2, normalize, eps)
    consts, (c, h, w, n_seg, inv_2s2, inv_r) = _common(f1, patch_size, sigma)
    with _device_guard(f1):
        _forward_kernel[(n * h * n_seg,)](
            f1, f2, inv1, inv2, out, argmax, lse,
            c, h, w, n_seg, float(temperature), inv_2s2, inv_r,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES, **consts,
        )
    return out, argmax, lse


def displacement_backward(
    grad_out: Tensor, f1: Tensor, f2: Tensor, out: Tensor, argmax: Tensor, lse: Tensor,
    patch_size: int, sigma: float, temperature: float, normalize: bool, eps: float,
) -> tuple[Tensor, Tensor]:
    """Gradients of both feature maps, recomputing the scores (no correlation volume).

    Args:
        grad_out: float32 ``(N, 3, H, W)``, gradient of ``out``.
        f1, f2, out, argmax, lse: inputs and outputs of :func:`displacement_forward`.

    Returns:
        ``(grad_f1, grad_f2)`` in the dtype of the features.
    """
    n, c, h, w = f1.shape
    grad_f1, grad_f2 = torch.empty_like(f1), torch.empty_like(f2)
    if f1.numel() == 0:
        return grad_f1, grad_f2
    inv1, inv2 = inverse_norms(f1, normalize, eps), inverse_norms(f2, normalize, eps)
    consts, (c, h, w, n_seg, inv_2s2, inv_r) = _common(f1, patch_size, sigma)
    grid = (n * h * n_seg, triton.cdiv(c, consts["BLOCK_C"]))
    common = (out, argmax, lse, grad_out)
    scalars = (c, h, w, n_seg, float(temperature), inv_2s2, inv_r)
    lowp = f1.dtype == torch.bfloat16
    with _device_guard(f1):
        _backward_kernel[grid](
            f1, f2, inv1, inv2, *common, grad_f1, *scalars,
            GATHER=False, NORMALIZE=normalize, LOWP=lowp, num_warps=NUM_WARPS,
            num_stages=NUM_STAGES, **consts,
        )
        _backward_kernel[grid](
            f2, f1, inv2, inv1, *common, grad_f2, *scalars,
            GATHER=True, NORMALIZE=normalize, LOWP=lowp, num_warps=NUM_WARPS,
            num_stages=NUM_STAGES, **consts,
        )
    return grad_f1, grad_f2



def compile_for_gpu(
    dtype: torch.dtype, patch_size: int = 15, channels: int = 64, arch: int = 90,
    precision: str = "tf32x3", normalize: bool = True,
) -> dict[str, object]:
    """Compile the three kernels for an NVIDIA GPU of compute capability ``arch`` (90 = H100)
    without one, as the launch wrappers would configure them.

    Returns ``{"forward", "backward_f1", "backward_f2"}`` -> triton ``CompiledKernel`` (its
    ``asm`` holds the PTX and cubin). Needs kernels defined without ``TRITON_INTERPRET``.
    Used by the tests and by ``benchmarks/displacement.py --resources`` to check that the
    kernels build for the GPU and how many registers they take.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreting():
        raise RuntimeError("the kernels were defined under TRITON_INTERPRET=1; unset it to compile")
    ty = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    consts = _constexprs(dtype, patch_size, channels, precision)
    consts.pop("UPCAST")
    features = {"f1_ptr", "f2_ptr", "q_ptr", "k_ptr", "grad_ptr"}

    def signature(fn, fixed):
        sig = {}
        for name in fn.arg_names:
            if name in fixed:
                sig[name] = "constexpr"
            elif name.endswith("_ptr"):
                elem = ty if name in features else "i32" if name == "idx_ptr" else "fp32"
                sig[name] = f"*{elem}"
            else:
                sig[name] = "i32" if name in ("C", "H", "W", "n_seg") else "fp32"
        return sig

    kernels = {}
    options = {"num_warps": NUM_WARPS, "num_stages": NUM_STAGES}
    target = GPUTarget("cuda", arch, 32)
    for name, fn, extra in [
        ("forward", _forward_kernel, {}),
        ("backward_f1", _backward_kernel, {"GATHER": False}),
        ("backward_f2", _backward_kernel, {"GATHER": True}),
    ]:
        fixed = {**consts, "UPCAST": False, **extra}
        if fn is _backward_kernel:
            fixed.update(NORMALIZE=normalize, LOWP=dtype == torch.bfloat16)
        src = ASTSource(fn=fn, signature=signature(fn, fixed), constexprs=fixed)
        kernels[name] = triton.compile(src, target=target, options=options)
    return kernels


def resource_usage(kernel) -> dict[str, int]:
    """``registers`` per thread, ``stack`` bytes (register spills) and ``shared`` bytes of a
    kernel from :func:`compile_for_gpu`, read from its cubin with the cuobjdump that ships
    with triton."""
    import os
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run(
            [tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    return {
        "registers": int(re.search(r"REG:(\d+)", usage).group(1)),
        "stack": int(re.search(r"STACK:(\d+)", usage).group(1)),
        "shared": int(kernel.metadata.shared),
    }
