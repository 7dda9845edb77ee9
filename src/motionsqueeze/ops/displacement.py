"""Correlation to displacement: docs/method.md §2-§5 of MotionSqueeze (Kwon et al., ECCV 2020).

Given the reduced features of two neighbouring frames, :func:`displacement` returns, per
pixel of the first frame, ``[u, v, confidence]``:

* L2 normalisation over channels, ``f / sqrt(sum f^2 + 1e-6)`` (§2);
* local correlation over a P x P window and ReLU (step 3, :mod:`.correlation`);
* confidence ``max_d S(x, d)`` (step 4);
* kernel-soft-argmax (step 5, from SFNet): a Gaussian of width sigma (in window cells)
  centred on the hard argmax reweights the scores, ``p = softmax(tau * g * S)``, and the
  displacement is the expectation of the offset under p, divided by ``r = (P-1)/2`` so that
  u (horizontal) and v (vertical) lie in [-1, 1].

The hard argmax takes the first index on ties and carries no gradient. Displacements that
point outside the map score 0 and stay in the softmax, as in the authors' code.

``backend`` selects the implementation behind one public entry point; all backends compute
the same function and are tested against the reference below.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Callable, Iterator

import torch
from torch import Tensor

from .correlation import check_pair, check_patch_size, local_correlation

__all__ = [
    "l2_normalize",
    "kernel_soft_argmax",
    "displacement",
    "displacement_reference",
    "register_backend",
    "available_backends",
    "use_backend",
]

L2_EPS = 1e-6


def l2_normalize(x: Tensor, dim: int = 1, eps: float = L2_EPS) -> Tensor:
    """``x / sqrt(sum(x^2, dim) + eps)`` (the authors' normalisation, eps inside the root)."""
    return x / torch.sqrt(x.pow(2).sum(dim=dim, keepdim=True) + eps)


def _window_offsets(patch_size: int, like: Tensor) -> Tensor:
    """Cell offsets ``0 .. P-1`` of the window, in the dtype and device of ``like``."""
    return torch.arange(patch_size, dtype=like.dtype, device=like.device)


def kernel_soft_argmax(
    corr: Tensor, patch_size: int, sigma: float = 5.0, temperature: float = 100.0
) -> Tensor:
    """Kernel-soft-argmax of a rectified correlation volume.

    Args:
        corr: ``(N, P*P, H, W)`` scores, dy-major, already rectified (ReLU).
        patch_size: P.
        sigma: width of the Gaussian around the hard argmax, in window cells.
        temperature: multiplier tau on the logits ``g * S``.

    Returns:
        ``(N, 3, H, W)``: ``[u, v, conf]`` with u, v in [-1, 1] (offset / r) and
        ``conf = max_d S``.
    """
    n, pp, h, w = corr.shape
    p = patch_size
    if pp != p * p:
        raise ValueError(f"corr has {pp} channels, expected patch_size^2 = {p * p}")
    conf, idx = corr.max(dim=1, keepdim=True)  # first index on ties
    k = _window_offsets(p, corr).view(1, p, 1, 1)
    iy = torch.div(idx, p, rounding_mode="floor").to(corr.dtype)  # (N, 1, H, W)
    ix = (idx % p).to(corr.dtype)
    # Separable Gaussian: exp(-(a^2 + b^2) / 2s^2) = exp(-a^2 / 2s^2) * exp(-b^2 / 2s^2).
    gy = torch.exp(-((k - iy) ** 2) / (2.0 * sigma**2))  # (N, P_dy, H, W)
    gx = torch.exp(-((k - ix) ** 2) / (2.0 * sigma**2))  # (N, P_dx, H, W)
    g = (gy.unsqueeze(2) * gx.unsqueeze(1)).reshape(n, pp, h, w)
    prob = torch.softmax(temperature * g * corr, dim=1).reshape(n, p, p, h, w)
    r = (p - 1) / 2
    offset = (k - r) / r if p > 1 else k * 0  # P = 1 has a single, zero displacement
    u = (prob.sum(dim=1) * offset).sum(dim=1, keepdim=True)
    v = (prob.sum(dim=2) * offset).sum(dim=1, keepdim=True)
    return torch.cat([u, v, conf], dim=1)


def displacement_reference(
    f1: Tensor, f2: Tensor, patch_size: int, sigma: float, temperature: float, normalize: bool
) -> Tensor:
    """The PyTorch reference of :func:`displacement` (same arguments, no checks)."""
    # Half-precision features are matched in float32: the softmax at tau = 100 needs it,
    # and the fused kernel likewise accumulates in float32.
    work = torch.float32 if f1.dtype in (torch.float16, torch.bfloat16) else f1.dtype
    a, b = f1.to(work), f2.to(work)
    if normalize:
        a, b = l2_normalize(a), l2_normalize(b)
    corr = torch.relu(local_correlation(a, b, patch_size))
    return kernel_soft_argmax(corr, patch_size, sigma, temperature).to(f1.dtype)


# name -> (implementation, predicate "can run on these inputs")
_BACKENDS: dict[str, tuple[Callable[..., Tensor], Callable[[Tensor], bool]]] = {
    "reference": (displacement_reference, lambda t: True),
}
# Order in which "auto" tries backends; the reference always works.
_AUTO_ORDER: list[str] = ["reference"]
# Backends whose module (which registers them) is imported on first use, so that importing
# motionsqueeze or running on the CPU never imports triton. "auto" tries them for CUDA
# tensors only. name -> module; failed imports are remembered with their reason.
_LAZY_BACKENDS: dict[str, str] = {"triton": "motionsqueeze.ops.displacement_op"}
_LAZY_FAILED: dict[str, str] = {}


def _load_backend(name: str) -> bool:
    """Import a lazy backend once and let it register; whether it is registered now."""
    if name in _BACKENDS:
        return True
    if name not in _LAZY_FAILED:
        try:
            importlib.import_module(_LAZY_BACKENDS[name]).register()
        except (ImportError, OSError, RuntimeError) as err:  # absent or unusable triton
            _LAZY_FAILED[name] = f"{type(err).__name__}: {err}"
    return name in _BACKENDS


# torch.compile must run the import rather than trace it (tracing importlib breaks the
# graph). This marker is what torch.compiler.assume_constant_result sets; calling that
# instead would import torch._dynamo, and with it triton, whenever motionsqueeze is imported.
_load_backend._dynamo_marked_constant = True  # type: ignore[attr-defined]


def register_backend(
    name: str,
    fn: Callable[..., Tensor],
    available: Callable[[Tensor], bool],
    prefer: bool = True,
) -> None:
    """Plug in another implementation of :func:`displacement_reference`.

    ``available(f1)`` tells whether ``backend="auto"`` may use it for these inputs; a
    preferred backend is tried before the reference.
    """
    _BACKENDS[name] = (fn, available)
    if name not in _AUTO_ORDER:
        _AUTO_ORDER.insert(0 if prefer else len(_AUTO_ORDER), name)


def available_backends() -> list[str]:
    """Names accepted by ``displacement(backend=...)`` (lazy ones may still fail to load)."""
    return ["auto", *_BACKENDS, *(n for n in _LAZY_BACKENDS if n not in _BACKENDS)]


# Backends forced by use_backend(), innermost last; empty: each call uses its own argument.
_FORCED: list[str] = []


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run every :func:`displacement` inside the block with backend ``name``, whatever the
    calling modules were built with (process-wide; blocks nest).

    The backend is a choice of the machine, not of the model: exporters run a model under
    ``use_backend("reference")`` (the plain PyTorch formulation they can record), a
    benchmark or a debugging session can compare backends without touching the model.
    """
    if name not in available_backends():
        raise ValueError(f"unknown backend {name!r}; expected one of {available_backends()}")
    _FORCED.append(name)
    try:
        yield
    finally:
        _FORCED.pop()


def displacement(
    f1: Tensor,
    f2: Tensor,
    patch_size: int = 15,
    sigma: float = 5.0,
    temperature: float = 100.0,
    normalize: bool = True,
    backend: str = "auto",
) -> Tensor:
    """Displacement and confidence from frame t to frame t+1 (MotionSqueeze steps 2-5).

    Args:
        f1, f2: features of frames t and t+1, ``(N, C, H, W)``, fp32 / fp16 / bf16 / fp64.
        patch_size: P (odd), the matching window is P x P cells.
        sigma: Gaussian width of the kernel-soft-argmax, in cells.
        temperature: tau, multiplier on the softmax logits.
        normalize: L2-normalise the features over channels first.
        backend: ``"auto"`` (the fused Triton kernel for CUDA tensors when triton imports;
            ``"cpu"`` for CPU tensors in eager mode; else the reference), ``"reference"``
            (PyTorch, what compilers and exporters record), ``"cpu"`` (PyTorch laid out for
            a CPU, eager only, :mod:`.displacement_cpu`) or ``"triton"`` (forced; CPU
            tensors only under ``TRITON_INTERPRET=1``). Inside :func:`use_backend` that
            block's backend is used instead.

    Returns:
        ``(N, 3, H, W)`` in the input dtype: u (x), v (y) in [-1, 1] and the confidence.
    """
    if _FORCED:
        backend = _FORCED[-1]
    check_pair(f1, f2)
    check_patch_size(patch_size)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive (cells), got {sigma}")
    # Lazy backends load before _BACKENDS is first read, so that torch.compile sees them.
    if backend == "auto" and f1.is_cuda:
        for name in _LAZY_BACKENDS:
            _load_backend(name)
    elif backend in _LAZY_BACKENDS and not _load_backend(backend):
        raise ValueError(
            f"backend {backend!r} is not available ({_LAZY_FAILED[backend]}); install it with "
            f"pip install 'motionsqueeze[gpu]' or use backend='reference'"
        )
    if backend == "auto":
        for name in _AUTO_ORDER:
            fn, available = _BACKENDS[name]
            if available(f1):
                break
    elif backend in _BACKENDS:
        fn = _BACKENDS[backend][0]
    else:
        raise ValueError(f"unknown backend {backend!r}; expected one of {available_backends()}")
    return fn(f1, f2, patch_size, float(sigma), float(temperature), bool(normalize))
