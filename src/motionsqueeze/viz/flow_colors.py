"""The standard optical-flow colour coding (the Middlebury colour wheel, Baker et al. 2011).

Direction is hue, magnitude is saturation: white is no motion; right is red, down is
orange-yellow, left is cyan, up is blue-violet (image coordinates, y pointing down). The
wheel is built from six ramps between red, yellow, green, cyan, blue and magenta whose
lengths (15, 6, 4, 11, 13, 6) give perceptually even steps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["color_wheel", "flow_to_color", "wheel_legend"]

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
