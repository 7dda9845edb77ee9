"""Clip transforms on uint8 tensors: one geometry for every frame of a clip.

Clips are uint8 ``(T, 3, H, W)`` (channels first, RGB) until :func:`normalize_clip`, which
the training engine applies on its device after the transfer. Geometry is planned as boxes
``(top, left, height, width)`` in pixels; a resize followed by a crop is carried out as one
bilinear (anti-aliased) interpolation of the matching region of the decoded frames, so a
training clip is interpolated once however many steps the recipe has.

Training (:class:`TrainTransform`, the TSN/TSM recipe)
    resize (fixed ``(H, W)`` such as 240x320, or the shorter side to ``s``) -> multi-scale
    crop: crop height and width each ``int(min(H, W) * scale)`` for scales
    ``(1, .875, .75, .66)`` (a size within 3 px of the output snaps to it), height and width
    scales at most ``max_distort`` steps apart, placed at one of 13 fixed positions (corners,
    centre, edge midpoints, quarter points; step ``(W - w) // 4``) -> resized to
    ``crop_size`` x ``crop_size`` -> horizontal flip with probability 1/2
    (:class:`FlipPolicy`).
Evaluation (:class:`EvalTransform`)
    resize -> centre crop, or three crops along the longer side (start, centre, end; the
    "3 crops" of Kinetics testing) -> ``(num_crops, T, 3, S, S)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Box",
    "resized_shape",
    "multi_scale_crop_box",
    "center_crop_box",
    "three_crop_boxes",
    "crop_resize",
    "resize_clip",
    "crop_clip",
    "hflip_clip",
    "normalize_clip",
    "direction_partners",
    "FlipPolicy",
    "TrainTransform",
    "EvalTransform",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FLIP_MODES = ("none", "plain", "direction-aware")
DIRECTION_POLICIES = ("skip", "swap")

Box = tuple[int, int, int, int]
"""``(top, left, height, width)`` in pixels."""


# --------------------------------------------------------------------------- geometry


def resized_shape(height: int, width: int, resize: int | Sequence[int] | None) -> tuple[int, int]:
    """Frame size after ``resize``: ``(H, W)`` fixed, ``s`` for the shorter side, ``None`` kept."""
    if resize is None:
        return height, width
    if isinstance(resize, int):
        short = min(height, width)
        return (resize, max(1, round(width * resize / short))) if height <= width else \
            (max(1, round(height * resize / short)), resize)
    h, w = resize
    return int(h), int(w)


def multi_scale_crop_box(height: int, width: int, crop_size: int,
                         scales: Sequence[float] = (1, 0.875, 0.75, 0.66), max_distort: int = 1,
                         generator: torch.Generator | None = None) -> Box:
    """A random multi-scale crop of an image of ``height`` x ``width`` (see module docstring)."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    sizes = [crop_size if abs(s - crop_size) < 3 else s for s in sizes]
    pairs = [(sizes[i], sizes[j]) for i in range(len(sizes)) for j in range(len(sizes))
             if abs(i - j) <= max_distort]
    ch, cw = pairs[_randint(len(pairs), generator)]
    ch, cw = max(1, min(ch, height)), max(1, min(cw, width))
    hs, ws = (height - ch) // 4, (width - cw) // 4
    positions = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2),  # corners and centre
                 (2, 0), (2, 4), (4, 2), (0, 2),  # edge midpoints
                 (1, 1), (1, 3), (3, 1), (3, 3)]  # quarter points
    py, px = positions[_randint(len(positions), generator)]
    return py * hs, px * ws, ch, cw


def center_crop_box(height: int, width: int, size: int) -> Box:
    """The centred ``size`` x ``size`` box (clipped to the image)."""
    ch, cw = min(size, height), min(size, width)
    return (height - ch) // 2, (width - cw) // 2, ch, cw


def three_crop_boxes(height: int, width: int, size: int) -> list[Box]:
    """Three ``size`` x ``size`` boxes along the longer side: start, centre, end."""
    ch, cw = min(size, height), min(size, width)
    top, left = (height - ch) // 2, (width - cw) // 2
    if width >= height:
        return [(top, 0, ch, cw), (top, left, ch, cw), (top, width - cw, ch, cw)]
    return [(0, left, ch, cw), (top, left, ch, cw), (height - ch, left, ch, cw)]


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (1,), generator=generator))


# --------------------------------------------------------------------------- clip operations


def crop_resize(clip: Tensor, box: Box, out_size: tuple[int, int], from_size: tuple[int, int] | None = None
                ) -> Tensor:
    """Cut ``box`` out of every frame and resize it to ``out_size`` in one interpolation.

    Args:
        clip: ``(..., 3, H, W)`` uint8 (or float).
        box: ``(top, left, height, width)``, in the coordinates of a frame of ``from_size``
            (``None``: of the clip itself); with ``from_size`` the box is mapped onto the
            clip's own size, which is how a resize followed by a crop is done at once.
        out_size: ``(height, width)`` of the result.

    Returns:
        ``(..., 3, out_h, out_w)`` with the dtype of ``clip``.
    """
    h, w = clip.shape[-2:]
    top, left, bh, bw = box
    if from_size is not None and tuple(from_size) != (h, w):
        sy, sx = h / from_size[0], w / from_size[1]
        y0, x0 = round(top * sy), round(left * sx)
        y1, x1 = max(y0 + 1, round((top + bh) * sy)), max(x0 + 1, round((left + bw) * sx))
        top, left, bh, bw = y0, x0, min(y1, h) - y0, min(x1, w) - x0
    region = clip[..., top:top + bh, left:left + bw]
    return resize_clip(region, out_size)


def resize_clip(clip: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, anti-aliased resize of ``(..., 3, H, W)`` to ``size = (h, w)`` (dtype kept)."""
    size = (int(size[0]), int(size[1]))
    if tuple(clip.shape[-2:]) == size:
        return clip
    lead = clip.shape[:-3]
    x = clip.reshape(-1, *clip.shape[-3:])
    # uint8 has a fast CPU kernel in channels-last layout, which a (T, H, W, 3) decode already is.
    x = x.contiguous(memory_format=torch.channels_last)
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.contiguous().reshape(*lead, *y.shape[-3:])


def crop_clip(clip: Tensor, box: Box) -> Tensor:
    """``clip[..., top:top + height, left:left + width]``."""
    top, left, h, w = box
    return clip[..., top:top + h, left:left + w]


def hflip_clip(clip: Tensor) -> Tensor:
    """Mirror every frame left to right."""
    return clip.flip(-1)


def normalize_clip(clip: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """``(clip / 255 - mean) / std`` per channel, on the clip's device.

    Args:
        clip: ``(..., 3, H, W)``; integer values in 0..255 (uint8), or floating values already
            scaled to [0, 1].
        mean, std: per-channel statistics in [0, 1] units (ImageNet's by default).
        dtype: floating dtype of the result.

    Returns:
        ``(..., 3, H, W)`` tensor of ``dtype``.
    """
    if clip.dim() < 3 or clip.shape[-3] != 3:
        raise ValueError(f"expected a clip of shape (..., 3, H, W), got {tuple(clip.shape)}")
    x = clip.to(dtype)
    if not clip.is_floating_point():
        x = x / 255.0
    m = torch.as_tensor(mean, dtype=dtype, device=clip.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=clip.device).view(3, 1, 1)
    return (x - m) / s


# --------------------------------------------------------------------------- flipping


# Words a horizontal mirror exchanges: sides, and the sense of a rotation (a mirrored
# clockwise turn is counterclockwise; Jester's "Turning Hand Clockwise"/"Counterclockwise").
_MIRROR_WORDS = {"left": "right", "right": "left", "clockwise": "counterclockwise",
                 "counterclockwise": "clockwise", "anticlockwise": "clockwise"}
_SIDE = re.compile(r"\b(" + "|".join(_MIRROR_WORDS) + r")\b", re.IGNORECASE)


def _swap_sides(name: str) -> str:
    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = _MIRROR_WORDS[word.lower()]
        return new.capitalize() if word[0].isupper() else new
    return _SIDE.sub(swap, name)


def direction_partners(class_names: Sequence[str]) -> dict[int, int]:
    """Direction-dependent classes and their mirror classes, found from the names.

    A class is direction-dependent when its name contains the word "left" or "right" (or
    "clockwise", "counterclockwise", "anticlockwise") and the list also holds its mirror: the
    name with "left" and "right" (clockwise and counterclockwise) exchanged ("Pushing
    something from left to right" <-> "Pushing something from right to left"; Jester's
    "Turning Hand Clockwise" <-> "Turning Hand Counterclockwise"). Requiring the
    mirror leaves out names such as "... pulling it right out ...", and on the sorted
    Something-Something V1 names gives exactly the authors' classes 86, 87, 93, 94, 166, 167.
    """
    index = {n.strip().lower(): i for i, n in enumerate(class_names)}
    out: dict[int, int] = {}
    for i, name in enumerate(class_names):
        mirror = index.get(_swap_sides(name).strip().lower()) if _SIDE.search(name) else None
        if mirror is not None and mirror != i:
            out[i] = mirror
    for i, mirror in list(out.items()):  # "anticlockwise" -> "clockwise" -> "counterclockwise"
        out.setdefault(mirror, i)
    return out


@dataclass
class FlipPolicy:
    """Random horizontal flip of a training clip (probability 1/2) and what it does to labels.

    Attributes:
        mode: ``"none"``; ``"plain"`` (flip, labels unchanged); ``"direction-aware"``:
            clips of the classes in ``partners`` are treated by ``direction``.
        direction: ``"skip"``: never flip those clips (the authors' choice); ``"swap"``: flip
            them and take the mirror class as label (clips of a class without mirror are not
            flipped).
        partners: direction-dependent class -> mirror class (:func:`direction_partners`),
            or ``None`` for a class to leave unflipped that has no mirror.
    """

    mode: str = "plain"
    direction: str = "skip"
    partners: dict[int, int | None] = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in FLIP_MODES:
            raise ValueError(f"flip must be one of {FLIP_MODES}, got {self.mode!r}")
        if self.direction not in DIRECTION_POLICIES:
            raise ValueError(f"flip direction policy must be one of {DIRECTION_POLICIES}, got {self.direction!r}")

    def decide(self, label: int, generator: torch.Generator | None = None) -> tuple[bool, int]:
        """``(flip?, label after the flip)``; draws one random number whatever the mode."""
        coin = bool(torch.rand((), generator=generator) < 0.5)
        if self.mode == "none" or not coin:
            return False, label
        if self.mode == "plain" or label not in self.partners:
            return True, label
        partner = self.partners[label]
        if self.direction == "skip" or partner is None:
            return False, label
        return True, partner


def _channels_first(frames: Tensor) -> Tensor:
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected decoded frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2)


@dataclass
class TrainTransform:
    """Decoded frames ``(T, H, W, 3)`` uint8 -> training clip ``(T, 3, S, S)`` uint8 and label.

    Attributes:
        resize: ``(H, W)``, shorter side, or ``None`` (frames as decoded).
        crop_size: S, output height and width in pixels.
        scales: multi-scale crop scales relative to the shorter side.
        max_distort: how many scale steps height and width may differ.
        flip: the :class:`FlipPolicy`.
    """

    resize: int | tuple[int, int] | None = (240, 320)
    crop_size: int = 224
    scales: tuple[float, ...] = (1, 0.875, 0.75, 0.66)
    max_distort: int = 1
    flip: FlipPolicy = field(default_factory=FlipPolicy)

    def __call__(self, frames: Tensor, label: int, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, int]:
        clip = _channels_first(frames)
        size = resized_shape(*clip.shape[-2:], self.resize)
        box = multi_scale_crop_box(*size, self.crop_size, self.scales, self.max_distort, generator)
        clip = crop_resize(clip, box, (self.crop_size, self.crop_size), from_size=size)
        flip, label = self.flip.decide(label, generator)
        return (hflip_clip(clip) if flip else clip).contiguous(), label


@dataclass
class EvalTransform:
    """Decoded frames ``(T, H, W, 3)`` -> ``(num_crops, T, 3, S, S)`` uint8 (centre or 3 crops)."""

    resize: int | tuple[int, int] | None = (240, 320)
    crop_size: int = 224
    num_crops: int = 1

    def __post_init__(self):
        if self.num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 (centre) or 3 (along the longer side), got {self.num_crops}")

    def __call__(self, frames: Tensor) -> Tensor:
        clip = _channels_first(frames)
        size = resized_shape(*clip.shape[-2:], self.resize)
        boxes = ([center_crop_box(*size, self.crop_size)] if self.num_crops == 1
                 else three_crop_boxes(*size, self.crop_size))
        out = (self.crop_size, self.crop_size)
        return torch.stack([crop_resize(clip, b, out, from_size=size) for b in boxes])
