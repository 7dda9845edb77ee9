"""Colour codes: optical flow (the Middlebury colour wheel, Baker et al. 2011) and confidence.

Direction is hue, magnitude is saturation: white is no motion; right is red, down is
orange-yellow, left is cyan, up is blue-violet (image coordinates, y pointing down). The
wheel is built from six ramps between red, yellow, green, cyan, blue and magenta whose
lengths (15, 6, 4, 11, 13, 6) give perceptually even steps.

Confidence (a cosine similarity in [0, 1]) is drawn with a dark-to-light ramp through
purple, red and orange (anchor colours of matplotlib's "magma"), so it reads in grey too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["color_wheel", "flow_to_color", "wheel_legend", "confidence_to_color"]

_RAMPS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def color_wheel() -> np.ndarray:
    """``(55, 3)`` float RGB in [0, 1], going round from red (angle 0)."""
    cols = []
    for name, n in _RAMPS:
        ramp = np.arange(n) / n
        if name == "RY":
            cols.append(np.stack([np.ones(n), ramp, np.zeros(n)], 1))
        elif name == "YG":
            cols.append(np.stack([1 - ramp, np.ones(n), np.zeros(n)], 1))
        elif name == "GC":
            cols.append(np.stack([np.zeros(n), np.ones(n), ramp], 1))
        elif name == "CB":
            cols.append(np.stack([np.zeros(n), 1 - ramp, np.ones(n)], 1))
        elif name == "BM":
            cols.append(np.stack([ramp, np.zeros(n), np.ones(n)], 1))
        else:
            cols.append(np.stack([np.ones(n), np.zeros(n), 1 - ramp], 1))
    return np.concatenate(cols)


def flow_to_color(u: np.ndarray, v: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a displacement field.

    Args:
        u, v: ``(H, W)`` horizontal and vertical displacement (any unit; y points down).
        max_magnitude: magnitude drawn fully saturated; ``None`` uses the field's maximum.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"u and v must be (H, W) arrays of one shape, got {u.shape} and {v.shape}")
    mag = np.sqrt(u**2 + v**2)
    scale = max_magnitude if max_magnitude is not None else float(mag.max())
    scale = scale if scale > 0 else 1.0
    rad = np.clip(mag / scale, 0, 1)
    wheel = color_wheel()
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]; 0 means pointing left
    pos = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(pos).astype(int)
    k1 = (k0 + 1) % n
    frac = (pos - k0)[..., None]
    col = (1 - frac) * wheel[k0] + frac * wheel[k1]
    col = 1 - rad[..., None] * (1 - col)  # desaturate towards white for small motion
    return (col * 255).round().astype(np.uint8)


def wheel_legend(size: int = 64) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 disc showing the colour of every direction and magnitude."""
    r = np.linspace(-1, 1, size)
    x, y = np.meshgrid(r, r)
    img = flow_to_color(x, y, max_magnitude=1.0)
    img[np.sqrt(x**2 + y**2) > 1] = 255
    return img


# (value, RGB) anchors of a magma-like ramp: black-purple -> red -> orange -> pale yellow.
_CONFIDENCE_RAMP = (
    (0.0, (0, 0, 4)),
    (0.25, (81, 18, 124)),
    (0.5, (183, 55, 121)),
    (0.75, (252, 137, 97)),
    (1.0, (252, 253, 191)),
)


def confidence_to_color(conf: np.ndarray, vmax: float = 1.0) -> np.ndarray:
    """``(H, W)`` confidence (0 at black .. ``vmax`` at pale yellow) -> ``(H, W, 3)`` uint8 RGB."""
    x = np.clip(np.asarray(conf, dtype=np.float64) / vmax, 0.0, 1.0)
    stops = np.array([a for a, _ in _CONFIDENCE_RAMP])
    colors = np.array([c for _, c in _CONFIDENCE_RAMP], dtype=np.float64)
    out = np.stack([np.interp(x, stops, colors[:, i]) for i in range(3)], axis=-1)
    return out.round().astype(np.uint8)
