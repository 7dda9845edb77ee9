"""A synthetic motion dataset in which the class is carried by motion alone.

Each clip shows one textured object over a textured background. The object's shape,
texture, colours, size, position and the background are random; the class says only how
the object moves from frame to frame:

====  ==========================
 0    moving right
 1    moving left
 2    moving down
 3    moving up
 4    rotating clockwise
 5    rotating counter-clockwise
 6    growing (zooming in)
 7    shrinking (zooming out)
====  ==========================

Every single frame is drawn from the same distribution whatever the class (positions,
orientations and sizes are spread symmetrically), so a model that looks at frames one at a
time (TSN) stays near chance, and only temporal reasoning can solve it.

Clips are generated on the fly and deterministically: clip ``i`` of a dataset with seed
``s`` is the same on every machine and in every worker. Nothing is shipped or cached.
Items follow the data-pipeline protocol: ``{"clip": uint8 (T, 3, H, W) or (1, T, 3, H, W),
"label": int, "index": int, "skipped": []}``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..typed_config import Range, setting, validate
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticMotionConfig",
    "SyntheticMotion",
    "SyntheticDataConfig",
    "build_synthetic_dataset",
    "render_clip",
]

SYNTHETIC_CLASSES = [
    "moving right",
    "moving left",
    "moving down",
    "moving up",
    "rotating clockwise",
    "rotating counter-clockwise",
    "growing",
    "shrinking",
]


def _ordered(pair: tuple[float, float]) -> str | None:
    lo, hi = pair
    return None if lo <= hi else f"must be [low, high] with low <= high, got {list(pair)}"


# The rules of the settings both classes below share (the recipe's ``data:`` section and the
# renderer's own config), declared once.
_RULES = {
    # 32 pixels: the backbones' total stride, so that res5 still has one cell of real pixels;
    # every size >= 1 renders, but below 32 the stride-32 stages pool padding and
    # MotionSqueeze after res3 matches 2 x 2 cells or fewer. 4096: as a model file's input
    # size (an 8-frame clip is then 400 MB).
    "size": dict(range=Range(32, 4096)),
    # A speed, spin or zoom on the wrong side of its bound would move the object the other
    # way and give the clip the wrong label; 180 degrees per frame or more looks like the
    # opposite rotation.
    "speed": dict(range=Range(0, lo_open=True), check=_ordered),
    "spin": dict(range=Range(0, 180, lo_open=True, hi_open=True), check=_ordered),
    "zoom": dict(range=Range(1, lo_open=True), check=_ordered),
    "object_size": dict(range=Range(0, 1, lo_open=True), check=_ordered),
}


@dataclass
class SyntheticMotionConfig:
    """How the synthetic clips look.

    Attributes:
        frames: frames per clip (T); default 8; range [1, inf).
        size: frame height and width, in pixels; default 64; range [32, 4096] (32: the
            backbones' total stride).
        speed: [low, high] translation speeds, in pixels per frame, low <= high; default
            [4, 7]; each in range (0, inf).
        spin: [low, high] rotation speeds, in degrees per frame, low <= high; default
            [15, 30]; each in range (0, 180) (180 or more looks like the other way round).
        zoom: [low, high] scale factors per frame for growing / shrinking, low <= high;
            default [1.08, 1.16]; each in range (1, inf).
        object_size: [low, high] of the object's size as a fraction of the frame side, low <=
            high; default [0.35, 0.6]; each in range (0, 1].
    """

    frames: int = setting(8, range=Range(1))
    size: int = setting(64, **_RULES["size"])
    speed: tuple[float, float] = setting((4.0, 7.0), **_RULES["speed"])
    spin: tuple[float, float] = setting((15.0, 30.0), **_RULES["spin"])
    zoom: tuple[float, float] = setting((1.08, 1.16), **_RULES["zoom"])
    object_size: tuple[float, float] = setting((0.35, 0.6), **_RULES["object_size"])

    def __post_init__(self):
        validate(self)


@contextlib.contextmanager
def _one_thread():
    """Rendering is hundreds of tiny tensor ops; with several intra-op threads their
    synchronisation costs far more than the work (25x slower seen on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _texture(g: torch.Generator, size: int, grain: int) -> Tensor:
    """Smooth random colour texture (3, size, size) in [0, 1]: two palette colours mixed by
    low-frequency noise, plus fine noise so that features have something to match."""
    palette = torch.rand(2, 3, 1, 1, generator=g)
    mix = torch.rand(1, 1, grain, grain, generator=g)
    mix = F.interpolate(mix, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    tex = palette[0] * mix + palette[1] * (1 - mix)
    tex = tex + 0.15 * (torch.rand(3, size, size, generator=g) - 0.5)
    return tex.clamp(0, 1)


def _shape_mask(g: torch.Generator, size: int) -> Tensor:
    """(1, size, size) mask of a random shape centred in the sprite: ellipse, box or star-like
    blob, never rotationally symmetric so that rotation is visible."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    kind = int(torch.randint(3, (), generator=g))
    aspect = _uniform(g, 0.45, 0.8)
    if kind == 0:
        inside = (xs / 0.95) ** 2 + (ys / (0.95 * aspect)) ** 2 <= 1
    elif kind == 1:
        inside = (xs.abs() <= 0.9) & (ys.abs() <= 0.9 * aspect)
    else:
        radius = torch.sqrt(xs**2 + ys**2)
        angle = torch.atan2(ys, xs)
        lobes = int(torch.randint(3, 6, (), generator=g))
        phase = _uniform(g, 0, 2 * math.pi)
        edge = 0.6 + 0.3 * torch.cos(lobes * angle + phase) + 0.1 * torch.cos(angle)
        inside = radius <= edge
    return inside.float().unsqueeze(0)


def render_clip(label: int, g: torch.Generator, config: SyntheticMotionConfig, return_alpha: bool = False):
    """Render one clip of class ``label`` as uint8 ``(T, 3, H, W)``.

    With ``return_alpha`` also returns the object's coverage ``(T, H, W)`` in [0, 1].
    """
    if not 0 <= label < len(SYNTHETIC_CLASSES):
        raise ValueError(f"label must be in [0, {len(SYNTHETIC_CLASSES)}), got {label}")
    c = config
    t_idx = torch.arange(c.frames, dtype=torch.float32) - (c.frames - 1) / 2  # centred time
    background = _texture(g, c.size, grain=int(torch.randint(3, 7, (), generator=g)))
    sprite_px = 48
    sprite = torch.cat([_texture(g, sprite_px, grain=4), _shape_mask(g, sprite_px)])  # (4, s, s)

    # Half-size of the object in normalised frame coordinates ([-1, 1] spans the frame).
    half = _uniform(g, *c.object_size)
    angle0 = _uniform(g, 0, 2 * math.pi)
    scale = torch.ones(c.frames)
    angle = torch.full((c.frames,), angle0)
    shift = torch.zeros(c.frames, 2)  # displacement of the centre, normalised units (x, y)
    if label < 4:
        step = 2 * _uniform(g, *c.speed) / c.size
        direction = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])[label]
        shift = t_idx[:, None] * step * direction
    elif label < 6:
        omega = math.radians(_uniform(g, *c.spin)) * (1 if label == 4 else -1)
        angle = angle0 + omega * t_idx  # clockwise on screen: y points down
    else:
        k = _uniform(g, *c.zoom)
        scale = k ** (t_idx if label == 6 else -t_idx)
    # Centre: random, kept so that the object's path stays mostly inside the frame.
    reach = (half * scale.max() + shift.abs().max(0).values.max()).item()
    room = max(0.0, 1.0 - 0.6 * reach)
    centre = torch.tensor([_uniform(g, -room, room), _uniform(g, -room, room)])

    # affine_grid maps output coords to sprite coords: p_sprite = R(-a) (p - c - shift) / (half * s).
    cos, sin = torch.cos(angle), torch.sin(angle)
    inv = 1.0 / (half * scale)
    theta = torch.zeros(c.frames, 2, 3)
    theta[:, 0, 0] = cos * inv
    theta[:, 0, 1] = sin * inv
    theta[:, 1, 0] = -sin * inv
    theta[:, 1, 1] = cos * inv
    pos = centre + shift
    theta[:, :, 2] = -(theta[:, :, :2] @ pos.unsqueeze(-1)).squeeze(-1)
    grid = F.affine_grid(theta, (c.frames, 4, c.size, c.size), align_corners=False)
    layer = F.grid_sample(sprite.expand(c.frames, -1, -1, -1), grid, align_corners=False, padding_mode="zeros")
    rgb, alpha = layer[:, :3], layer[:, 3:]
    frames = alpha * rgb + (1 - alpha) * background
    clip = (frames * 255).round().clamp(0, 255).to(torch.uint8)
    return (clip, alpha[:, 0]) if return_alpha else clip


class SyntheticMotion(Dataset):
    """``num_clips`` clips, balanced over the classes, generated from ``seed``.

    Args:
        num_clips: length of the dataset.
        seed: different seeds give disjoint-looking sets (use one for train, one for test).
        config: appearance and motion ranges.
        views: when set, clips come as ``(views, T, 3, H, W)`` (the evaluation layout) with
            the same clip repeated; ``None`` gives ``(T, 3, H, W)`` (training layout).
        cache: keep rendered clips in memory (``T * 3 * size^2`` bytes each) so that later
            epochs read them instead of rendering again; per process (each DataLoader
            worker keeps its own).
    """

    classes = SYNTHETIC_CLASSES

    def __init__(self, num_clips: int, seed: int = 0, config: SyntheticMotionConfig | None = None,
                 views: int | None = None, cache: bool = False):
        if num_clips < 1:
            raise ValueError(f"num_clips must be positive, got {num_clips}")
        self.num_clips = num_clips
        self.seed = seed
        self.config = config or SyntheticMotionConfig()
        self.views = views
        self._cache: dict[int, Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_clips

    def label_of(self, index: int) -> int:
        return index % len(self.classes)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range for {self.num_clips} clips")
        label = self.label_of(index)
        clip = self._cache.get(index) if self._cache is not None else None
        if clip is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            with _one_thread():
                clip = render_clip(label, g, self.config)
            if self._cache is not None:
                self._cache[index] = clip
        if self.views is not None:
            clip = clip.unsqueeze(0).expand(self.views, *clip.shape).contiguous()
        return {"clip": clip, "label": label, "index": index, "skipped": []}


@dataclass
class SyntheticDataConfig:
    """``data:`` section of a recipe that trains on the synthetic motion set.

    Attributes:
        dataset: always ``synthetic`` (selects this section type).
        train_clips: clips in the training split; default 3200; range [1, inf).
        val_clips: clips in the validation (and test) split; default 800; range [1, inf).
        seed: seed of the training split; validation uses ``seed + 1``; default 0; range
            [0, 4294967295].
        num_segments: frames per clip (T); default 8; range [1, inf) (at least 2 for a
            model with MotionSqueeze).
        size: frame side, in pixels (clips are square and not cropped); default 64; range
            [32, 4096] (32: the backbones' total stride, so that res5 keeps a cell of real
            pixels).
        speed: [low, high] translation speeds, pixels per frame, low <= high; default
            [4, 7]; each in range (0, inf).
        spin: [low, high] rotation speeds, degrees per frame, low <= high; default
            [15, 30]; each in range (0, 180) (180 or more looks like the other way round).
        zoom: [low, high] scale factors per frame, low <= high; default [1.08, 1.16]; each
            in range (1, inf).
        object_size: [low, high] object half-size as a fraction of half the frame side, low
            <= high; default [0.35, 0.6]; each in range (0, 1].
        mean: per-channel mean for normalisation, in [0, 1] units, 3 values (ImageNet's by
            default); each in range [0, 1].
        std: per-channel standard deviation, in [0, 1] units, 3 values (ImageNet's by
            default); each in range (0, inf).
        cache: keep rendered clips in memory (98 KB per clip at 8 x 64 x 64).
    """

    config_key = "data"

    dataset: str = setting("synthetic", choices=("synthetic",))
    train_clips: int = setting(3200, range=Range(1))
    val_clips: int = setting(800, range=Range(1))
    seed: int = setting(0, range=Range(0, 2**32 - 1))
    num_segments: int = setting(8, range=Range(1))
    size: int = setting(SyntheticMotionConfig.size, **_RULES["size"])
    speed: tuple[float, float] = setting(SyntheticMotionConfig.speed, **_RULES["speed"])
    spin: tuple[float, float] = setting(SyntheticMotionConfig.spin, **_RULES["spin"])
    zoom: tuple[float, float] = setting(SyntheticMotionConfig.zoom, **_RULES["zoom"])
    object_size: tuple[float, float] = setting(SyntheticMotionConfig.object_size, **_RULES["object_size"])
    mean: tuple[float, float, float] = setting(IMAGENET_MEAN, range=Range(0, 1))
    std: tuple[float, float, float] = setting(IMAGENET_STD, range=Range(0, lo_open=True))
    cache: bool = True

    def __post_init__(self):
        validate(self)

    @property
    def class_names(self) -> list[str]:
        return list(SYNTHETIC_CLASSES)

    @property
    def crop_size(self) -> int:
        return self.size

    def motion_config(self) -> SyntheticMotionConfig:
        return SyntheticMotionConfig(
            frames=self.num_segments, size=self.size, speed=self.speed, spin=self.spin,
            zoom=self.zoom, object_size=self.object_size,
        )


# Cached datasets of this process by (split, settings): the demo trains three models on the
# same clips, which then render once.
_SHARED: dict[tuple, SyntheticMotion] = {}


def build_synthetic_dataset(cfg: SyntheticDataConfig, split: str) -> SyntheticMotion:
    """Training split: ``(T, 3, H, W)`` clips; "val" / "test": ``(1, T, 3, H, W)``.

    With ``cfg.cache`` the same dataset object (and its rendered clips) is returned for the
    same settings within a process.
    """
    if split == "train":
        args = (cfg.train_clips, cfg.seed, cfg.motion_config(), None)
    elif split in ("val", "test"):
        args = (cfg.val_clips, cfg.seed + 1, cfg.motion_config(), 1)
    else:
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if not cfg.cache:
        return SyntheticMotion(*args)
    key = (args[0], args[1], tuple(vars(args[2]).items()), args[3])
    if key not in _SHARED:
        _SHARED[key] = SyntheticMotion(*args, cache=True)
    return _SHARED[key]
