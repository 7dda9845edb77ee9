"""Clip-consistent augmentation of training batches: colour jitter, RandAugment, MixUp, CutMix.

Every random parameter is drawn once per clip and applied to all T frames of that clip, so
augmentation changes appearance without inventing motion (a brightness that flickers from
frame to frame, or a box that jumps, would be motion the network could learn). None of the
operations mirrors a clip: the horizontal flip stays in
:class:`~motionsqueeze.data.transforms.TrainTransform`, with its direction-aware policy.

* :func:`color_jitter` and :func:`rand_augment` take and return uint8 batches
  ``(N, T, 3, H, W)`` (on any device; arithmetic in float, rounded back to uint8).
* :func:`mix_clips` takes normalised float batches and integer labels and returns mixed
  clips and soft targets ``(N, K)`` (MixUp: one lambda per clip; CutMix: one box per clip,
  the same on every frame, lambda set to the kept area).

Random numbers come from an explicit ``torch.Generator`` on the CPU (the trainer seeds one
per batch from ``(seed, epoch, step)``), so an augmented batch does not depend on worker
counts, devices or what ran before, and an interrupted run resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..typed_config import Range, setting, validate

__all__ = [
    "AugmentConfig",
    "ColorJitterParams",
    "sample_color_jitter",
    "color_jitter",
    "RAND_AUGMENT_OPS",
    "rand_augment",
    "mix_clips",
    "BatchAugment",
]


@dataclass
class AugmentConfig:
    """``augment:`` section: batch augmentation during training (every field off by default,
    which is the paper's protocol).

    Attributes:
        brightness: colour jitter, brightness factor drawn from ``[1 - b, 1 + b]``; 0 off;
            range [0, 1].
        contrast: colour jitter, contrast factor from ``[1 - c, 1 + c]``; 0 off; range [0, 1].
        saturation: colour jitter, saturation factor from ``[1 - s, 1 + s]``; 0 off; range
            [0, 1].
        hue: colour jitter, hue rotation in turns from ``[-h, h]``; 0 off; range [0, 0.5].
        randaugment_ops: RandAugment, operations applied per clip (N); 0 off; range [0, 12]
            (the number of operations).
        randaugment_magnitude: RandAugment strength M on a 0..10 scale (10 = strongest);
            default 9; range [0, 10].
        mixup_alpha: MixUp, Beta(alpha, alpha) for lambda; 0 off; range [0, inf).
        cutmix_alpha: CutMix, Beta(alpha, alpha) for the box area; 0 off; range [0, inf).
        mix_prob: probability that a batch is mixed at all (when MixUp or CutMix is on);
            default 1; range [0, 1].
        cutmix_prob: with both on, probability that a mixed batch uses CutMix; default 0.5;
            range [0, 1].
    """

    config_key = "augment"

    brightness: float = setting(0.0, range=Range(0, 1))
    contrast: float = setting(0.0, range=Range(0, 1))
    saturation: float = setting(0.0, range=Range(0, 1))
    hue: float = setting(0.0, range=Range(0, 0.5))
    randaugment_ops: int = setting(0, range=Range(0, 12))  # len(RAND_AUGMENT_OPS), checked by a test
    randaugment_magnitude: float = setting(9.0, range=Range(0, 10))
    mixup_alpha: float = setting(0.0, range=Range(0))
    cutmix_alpha: float = setting(0.0, range=Range(0))
    mix_prob: float = setting(1.0, range=Range(0, 1))
    cutmix_prob: float = setting(0.5, range=Range(0, 1))

    def __post_init__(self):
        validate(self)

    @property
    def jitter(self) -> bool:
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))

    @property
    def mixing(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def enabled(self) -> bool:
        return self.jitter or self.randaugment_ops > 0 or self.mixing


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _grey(x: Tensor) -> Tensor:
    """ITU-R 601 luma of ``(..., 3, H, W)`` -> ``(..., 1, H, W)``."""
    return (0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :])


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return other + factor * (x - other)


def _to_uint8(x: Tensor) -> Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- colour jitter


@dataclass
class ColorJitterParams:
    """Per-clip factors, each ``(N,)``: brightness, contrast, saturation, hue (turns)."""

    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor


def sample_color_jitter(n: int, cfg: AugmentConfig, g: torch.Generator) -> ColorJitterParams:
    """Draw one set of colour-jitter parameters per clip (factors of 1 and hue 0 when off)."""
    return ColorJitterParams(
        brightness=_uniform(n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, g),
        contrast=_uniform(n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, g),
        saturation=_uniform(n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, g),
        hue=_uniform(n, -cfg.hue, cfg.hue, g),
    )


def _rotate_hue(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate the chroma of RGB ``x`` (N, T, 3, H, W) by ``turns`` (N,) in the YIQ plane."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=x.dtype, device=x.device)
    from_yiq = torch.linalg.inv(to_yiq)
    theta = turns.to(x.device, x.dtype) * 2 * math.pi
    cos, sin = theta.cos(), theta.sin()
    rot = torch.zeros(len(theta), 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = from_yiq @ rot @ to_yiq  # (N, 3, 3): one colour matrix per clip
    return torch.einsum("nij,ntjhw->ntihw", m, x)


def color_jitter(clips: Tensor, params: ColorJitterParams) -> Tensor:
    """Brightness, contrast, saturation, hue (in this order) of uint8 clips ``(N, T, 3, H, W)``.

    Clip n uses ``params.*[n]`` on every frame; contrast blends with the mean grey level of
    the whole clip, so it too is one transform for all frames.
    """
    if clips.dim() != 5 or clips.shape[2] != 3:
        raise ValueError(f"expected uint8 clips (N, T, 3, H, W), got {tuple(clips.shape)}")
    x = clips.float()
    view = lambda v: v.to(x.device, x.dtype).view(-1, 1, 1, 1, 1)  # noqa: E731
    x = (x * view(params.brightness)).clamp_(0, 255)
    mean = _grey(x).mean(dim=(1, 2, 3, 4), keepdim=True)
    x = _blend(x, mean, view(params.contrast)).clamp_(0, 255)
    x = _blend(x, _grey(x), view(params.saturation)).clamp_(0, 255)
    if bool((params.hue != 0).any()):
        x = _rotate_hue(x, params.hue)
    return _to_uint8(x)


# --------------------------------------------------------------------------- RandAugment


def _affine(x: Tensor, matrix: list[list[float]]) -> Tensor:
    """Warp every frame of ``x`` (T, 3, H, W) float with one 2x3 matrix in normalised
    coordinates (output -> input); uncovered pixels are mid-grey."""
    theta = torch.tensor(matrix, dtype=x.dtype, device=x.device).unsqueeze(0).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - 128, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 128


def _op_identity(x, m, s):
    return x


def _op_brightness(x, m, s):
    return x * (1 + s * 0.9 * m)


def _op_contrast(x, m, s):
    return _blend(x, _grey(x).mean(), 1 + s * 0.9 * m)


def _op_color(x, m, s):
    return _blend(x, _grey(x), 1 + s * 0.9 * m)


def _op_posterize(x, m, s):
    shift = int(round(4 * m))  # keep 8..4 bits
    return torch.div(x.round(), 2**shift, rounding_mode="floor") * 2**shift


def _op_solarize(x, m, s):
    threshold = 256 - 256 * m
    return torch.where(x >= threshold, 255 - x, x)


def _op_autocontrast(x, m, s):
    low = x.amin(dim=(0, 2, 3), keepdim=True)
    high = x.amax(dim=(0, 2, 3), keepdim=True)
    scale = 255 / (high - low).clamp(min=1)
    return torch.where(high > low, (x - low) * scale, x)


def _op_rotate(x, m, s):
    a = math.radians(s * 30 * m)
    h, w = x.shape[-2:]
    return _affine(x, [[math.cos(a), -math.sin(a) * h / w, 0], [math.sin(a) * w / h, math.cos(a), 0]])


def _op_shear_x(x, m, s):
    return _affine(x, [[1, s * 0.3 * m, 0], [0, 1, 0]])


def _op_shear_y(x, m, s):
    return _affine(x, [[1, 0, 0], [s * 0.3 * m, 1, 0]])


def _op_translate_x(x, m, s):
    return _affine(x, [[1, 0, s * 2 * 0.45 * m], [0, 1, 0]])


def _op_translate_y(x, m, s):
    return _affine(x, [[1, 0, 0], [0, 1, s * 2 * 0.45 * m]])


RAND_AUGMENT_OPS = {
    "identity": _op_identity,
    "brightness": _op_brightness,
    "contrast": _op_contrast,
    "color": _op_color,
    "posterize": _op_posterize,
    "solarize": _op_solarize,
    "autocontrast": _op_autocontrast,
    "rotate": _op_rotate,
    "shear_x": _op_shear_x,
    "shear_y": _op_shear_y,
    "translate_x": _op_translate_x,
    "translate_y": _op_translate_y,
}
"""RandAugment's operations at magnitude ``m`` in [0, 1] and sign ``s`` (+1 or -1): factors
``1 +- 0.9 m``, posterize to ``8 - 4m`` bits, solarize above ``256 (1 - m)``, rotate
``+-30 m`` degrees, shear ``+-0.3 m``, translate ``+-45 m`` % of the size. No flip: mirroring
belongs to the direction-aware flip policy."""


def rand_augment(clips: Tensor, num_ops: int, magnitude: float, g: torch.Generator) -> tuple[Tensor, list[list[tuple[str, int]]]]:
    """RandAugment on uint8 clips ``(N, T, 3, H, W)``: per clip, ``num_ops`` operations drawn
    uniformly (with replacement), each with a random sign, applied to all its frames.

    Args:
        magnitude: M on the 0..10 scale.

    Returns:
        The augmented uint8 clips and, per clip, the ``(operation, sign)`` pairs applied.
    """
    if clips.dim() != 5 or clips.shape[2] != 3:
        raise ValueError(f"expected uint8 clips (N, T, 3, H, W), got {tuple(clips.shape)}")
    names = list(RAND_AUGMENT_OPS)
    m = magnitude / 10.0
    out, plan = [], []
    for clip in clips:
        picks = torch.randint(len(names), (num_ops,), generator=g).tolist()
        signs = (torch.randint(2, (num_ops,), generator=g) * 2 - 1).tolist()
        x = clip.float()
        for k, s in zip(picks, signs):
            x = RAND_AUGMENT_OPS[names[k]](x, m, s).clamp(0, 255)
        out.append(_to_uint8(x))
        plan.append([(names[k], s) for k, s in zip(picks, signs)])
    return torch.stack(out), plan


# --------------------------------------------------------------------------- MixUp / CutMix


def _cutmix_boxes(lam: Tensor, height: int, width: int, g: torch.Generator) -> list[tuple[int, int, int, int]]:
    """One box ``(top, left, bottom, right)`` of area about ``1 - lam`` per clip, centre
    uniform in the frame, clipped to it."""
    boxes = []
    for v in lam.tolist():
        cut = math.sqrt(1 - v)
        bh, bw = int(height * cut), int(width * cut)
        cy = int(torch.randint(height, (1,), generator=g))
        cx = int(torch.randint(width, (1,), generator=g))
        top, bottom = max(cy - bh // 2, 0), min(cy + bh // 2, height)
        left, right = max(cx - bw // 2, 0), min(cx + bw // 2, width)
        boxes.append((top, left, bottom, right))
    return boxes


def mix_clips(clips: Tensor, labels: Tensor, num_classes: int, cfg: AugmentConfig, g: torch.Generator
              ) -> tuple[Tensor, Tensor, Tensor]:
    """MixUp or CutMix of a float batch ``(N, T, 3, H, W)`` with its own reverse.

    Clip n is mixed with clip ``N-1-n`` with its own lambda (MixUp: ``lam x_n + (1 - lam)
    x_partner`` on every frame; CutMix: one box pasted from the partner into every frame,
    lambda the kept area). The batch is left alone with probability ``1 - mix_prob``.

    Returns:
        ``(clips, targets (N, num_classes), lam (N,))``; targets are
        ``lam * onehot(label) + (1 - lam) * onehot(partner label)``.
    """
    n = clips.shape[0]
    onehot = F.one_hot(labels, num_classes).to(clips.dtype if clips.is_floating_point() else torch.float32)
    lam = torch.ones(n)
    mixed = cfg.mixing and bool(torch.rand((), generator=g) < cfg.mix_prob)
    if not mixed:
        return clips, onehot, lam
    use_cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha <= 0 or bool(torch.rand((), generator=g) < cfg.cutmix_prob))
    alpha = cfg.cutmix_alpha if use_cutmix else cfg.mixup_alpha
    lam = _beta(alpha, n, g)
    partner = clips.flip(0)
    if use_cutmix:
        h, w = clips.shape[-2:]
        out = clips.clone()
        boxes = _cutmix_boxes(lam, h, w, g)
        kept = []
        for i, (top, left, bottom, right) in enumerate(boxes):
            out[i, ..., top:bottom, left:right] = partner[i, ..., top:bottom, left:right]
            kept.append(1 - (bottom - top) * (right - left) / (h * w))
        lam = torch.tensor(kept)
    else:
        view = lam.to(clips.device, clips.dtype).view(-1, *([1] * (clips.dim() - 1)))
        out = view * clips + (1 - view) * partner
    lam_t = lam.to(onehot.device, onehot.dtype).view(-1, 1)
    targets = lam_t * onehot + (1 - lam_t) * onehot.flip(0)
    return out, targets, lam


def _beta(alpha: float, n: int, g: torch.Generator) -> Tensor:
    """``n`` samples of Beta(alpha, alpha) drawn from ``g`` as ``X / (X + Y)`` with X, Y ~
    Gamma(alpha) (``torch.distributions.Beta`` takes no generator; ``_standard_gamma``,
    which it uses, does)."""
    a = torch.full((2, n), float(alpha), dtype=torch.float64)
    x, y = torch._standard_gamma(a, generator=g)
    return (x / (x + y).clamp(min=1e-300)).float()


class BatchAugment:
    """What the trainer applies to a batch: uint8 stage (colour jitter, RandAugment) before
    normalisation, mixing stage after it. Built from an :class:`AugmentConfig`."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def pixels(self, clips: Tensor, g: torch.Generator) -> Tensor:
        """uint8 ``(N, T, 3, H, W)`` -> uint8, colour jitter then RandAugment."""
        if self.cfg.jitter:
            clips = color_jitter(clips, sample_color_jitter(clips.shape[0], self.cfg, g))
        if self.cfg.randaugment_ops > 0:
            clips, _ = rand_augment(clips, self.cfg.randaugment_ops, self.cfg.randaugment_magnitude, g)
        return clips

    def mix(self, clips: Tensor, labels: Tensor, num_classes: int, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Normalised clips and labels -> (clips, soft targets), or ``(clips, None)`` when off."""
        if not self.cfg.mixing:
            return clips, None
        out, targets, _ = mix_clips(clips, labels, num_classes, self.cfg, g)
        return out, targets
