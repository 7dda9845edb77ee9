"""Motion as an animation: one picture per frame pair, written as GIF (Pillow) or MP4 (PyAV).

Each picture is the one-pair grid of :func:`~motionsqueeze.viz.motion_grid.render_motion_grid`
(frame t, then a displacement and a confidence panel per field, with the legend below),
drawn with one colour scale for the whole clip so that speeds compare across pictures.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_output
from .motion_grid import _as_field_dict, motion_scale, render_motion_grid

__all__ = ["ANIMATION_SUFFIXES", "render_motion_frames", "write_animation", "save_motion_animation"]

ANIMATION_SUFFIXES = (".gif", ".mp4")


def render_motion_frames(frames: np.ndarray, fields, *, max_pixels: float | None = None,
                         frame_labels: Sequence[int] | None = None, **options) -> list[np.ndarray]:
    """One ``(H, W, 3)`` uint8 picture per frame pair (arguments as ``render_motion_grid``)."""
    named = _as_field_dict(fields)
    scale = float(max_pixels) if max_pixels else motion_scale(named)
    labels = list(frame_labels) if frame_labels is not None else list(range(len(frames)))
    options.setdefault("orientation", "rows")
    return [
        render_motion_grid(frames[t:t + 2], {k: f[t:t + 1] for k, f in named.items()}, max_pixels=scale,
                           frame_labels=labels[t:t + 2], **options)[0]
        for t in range(len(frames) - 1)
    ]


def _even(image: np.ndarray) -> np.ndarray:
    """Pad with white to even height and width (H.264 in 4:2:0 needs them)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)


def write_animation(images: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 2.0) -> Path:
    """Write same-sized ``(H, W, 3)`` uint8 pictures as ``.gif`` or ``.mp4``, ``fps`` per second.

    The file is written beside ``path`` and renamed into place, so an existing file is only
    replaced by a complete one.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"{path}: an animation must be one of {', '.join(ANIMATION_SUFFIXES)}")
    if not images:
        raise ValueError(f"{path}: no pictures to animate")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with atomic_output(path, suffix) as tmp:
        if suffix == ".gif":
            from PIL import Image

            pics = [Image.fromarray(np.ascontiguousarray(im)) for im in images]
            pics[0].save(tmp, format="GIF", save_all=True, append_images=pics[1:],
                         duration=round(1000 / fps), loop=0)
        else:
            import av

            with av.open(str(tmp), "w") as container:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                first = _even(images[0])
                stream.height, stream.width = first.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18"}
                for im in images:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(im)), format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    return path


def save_motion_animation(frames: np.ndarray, fields, path: str | os.PathLike, *, fps: float = 2.0,
                          **options) -> Path:
    """:func:`render_motion_frames` written by :func:`write_animation`."""
    return write_animation(render_motion_frames(frames, fields, **options), path, fps)
