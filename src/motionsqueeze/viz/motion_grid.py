"""A picture of what a MotionSqueeze layer (or the block-matching estimator) computes on a
clip: for each neighbouring frame pair, the frame, the displacement field in the
optical-flow colour code (with optional arrows) and the confidence map, with a legend for
the colour wheel, the displacement scale in pixels of the input, and the confidence ramp.

Drawn with NumPy and Pillow only, at exact pixel positions, so the layout is predictable:

* every panel is ``panel_height`` px high and ``round(W * panel_height / H)`` px wide for
  frames of ``H x W``, under a caption strip of ``caption`` px;
* the panels of one pair are ``[frame t, displacement, confidence]`` (a displacement and a
  confidence panel per field, in the order given); with ``orientation="rows"`` each pair is
  a row of panels, with ``"columns"`` each pair is a column;
* panels are ``gap`` px apart, the grid has a ``margin`` px border, an optional title strip
  of ``title_height`` px on top, and a legend strip of ``legend_height`` px below the grid
  (after one more ``gap``; taller only if many legend lines need it).

So a ``"rows"`` grid of ``n`` pairs and ``m`` panels per pair, without title, is
``2 * margin + m * panel_w + (m - 1) * gap`` px wide (or the legend's width if that is
wider) and ``2 * margin + n * (caption + panel_h) + n * gap + legend_height`` px high.

The colour scale (``max_pixels``, drawn fully saturated) is shared by every panel; by
default it is the 99th percentile of the displacement magnitude over the clip's confident
cells (:func:`motion_scale`; not the maximum, so that failed matches do not wash the
picture out). Confidence is drawn on the fixed range 0..1: both the layer and the estimator
correlate L2-normalised features, so the confidence is a cosine similarity.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..files import atomic_output
from .flow_colors import confidence_to_color, flow_to_color, wheel_legend

__all__ = [
    "GridStyle",
    "field_to_pixels",
    "motion_scale",
    "choose_orientation",
    "render_motion_grid",
    "save_motion_grid",
    "write_image",
]

ORIENTATIONS = ("rows", "columns")


@dataclass(frozen=True)
class GridStyle:
    """Sizes of the grid picture, in pixels (see the module docstring)."""

    panel_height: int = 144
    caption: int = 16
    gap: int = 4
    margin: int = 8
    title_height: int = 22
    legend_height: int = 112
    font_size: int = 12
    arrow_spacing: int = 16


def field_to_pixels(field: torch.Tensor, patch_size: int, stride: int) -> np.ndarray:
    """``[u, v, conf]`` in half-window units -> ``(..., 3, h, w)`` with u, v in input pixels.

    ``stride`` is the stage's stride (8 after res3): one cell of the map is ``stride`` pixels,
    and u = 1 is ``(patch_size - 1) / 2`` cells.
    """
    out = field.detach().float().cpu().numpy().copy()
    cells = (patch_size - 1) / 2
    out[..., :2, :, :] *= cells * stride
    return out


def _as_field_dict(fields) -> dict[str, np.ndarray]:
    if isinstance(fields, Mapping):
        items = {str(k): np.asarray(v, dtype=np.float32) for k, v in fields.items()}
    else:
        items = {"motion": np.asarray(fields, dtype=np.float32)}
    if not items:
        raise ValueError("no displacement field to draw")
    for name, f in items.items():
        if f.ndim != 4 or f.shape[1] != 3:
            raise ValueError(f"field {name!r} must be (T-1, 3, h, w) [u, v, conf], got shape {f.shape}")
    return items


def motion_scale(fields, percentile: float = 99.0, confident: float = 0.5) -> float:
    """Displacement (px) drawn fully saturated: a high percentile of the speed over all fields.

    Only cells whose confidence is at least ``confident`` times the clip's highest count:
    the others are mostly failed matches (no texture, occluded, just entering the view)
    whose displacement is arbitrary and often large; they are drawn, but do not set the
    scale. Never below 0.5 px, so that a still clip is drawn white instead of amplifying noise.
    """
    speeds = []
    for f in _as_field_dict(fields).values():
        speed, conf = np.hypot(f[:, 0], f[:, 1]), f[:, 2]
        keep = conf >= confident * conf.max() if conf.max() > 0 else np.ones_like(conf, bool)
        speeds.append(speed[keep].ravel())
    return max(float(np.percentile(np.concatenate(speeds), percentile)), 0.5)


def choose_orientation(frame_hw: tuple[int, int], pairs: int, panels_per_pair: int,
                       style: GridStyle = GridStyle()) -> str:
    """``"rows"`` or ``"columns"``, whichever gives a picture closer to a 3:2 landscape."""
    h, w = frame_hw
    pw, ph = max(1, round(w * style.panel_height / h)), style.panel_height + style.caption
    ratios = {
        "rows": (panels_per_pair * pw) / (pairs * ph),
        "columns": (pairs * pw) / (panels_per_pair * ph),
    }
    return min(ORIENTATIONS, key=lambda k: abs(math.log(ratios[k] / 1.5)))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _arrow(draw, x0: float, y0: float, dx: float, dy: float, color=(0, 0, 0)) -> None:
    length = math.hypot(dx, dy)
    if length < 2.0:
        return
    x1, y1 = x0 + dx, y0 + dy
    draw.line([(x0, y0), (x1, y1)], fill=color, width=1)
    head = max(3.0, 0.35 * length)
    angle = math.atan2(dy, dx)
    for side in (-1, 1):
        a = angle + math.pi - side * math.radians(28)
        draw.line([(x1, y1), (x1 + head * math.cos(a), y1 + head * math.sin(a))], fill=color, width=1)


def _displacement_panel(field: np.ndarray, size: tuple[int, int], scale: float, arrows: bool,
                        spacing: int) -> np.ndarray:
    """``(3, h, w)`` pixel field -> ``(ph, pw, 3)`` colour panel, arrows drawn on top."""
    from PIL import Image, ImageDraw

    pw, ph = size
    u, v = field[0], field[1]
    img = Image.fromarray(flow_to_color(u, v, scale)).resize((pw, ph), Image.NEAREST)
    if arrows:
        h, w = u.shape
        step = max(1, math.ceil(spacing / (ph / h)))  # cells per arrow
        draw = ImageDraw.Draw(img)
        gain = spacing * 0.9 / scale  # full colour = an arrow as long as the arrow spacing
        for i in range(0, h - step + 1, step):
            for j in range(0, w - step + 1, step):
                bu = float(u[i:i + step, j:j + step].mean())
                bv = float(v[i:i + step, j:j + step].mean())
                mag = math.hypot(bu, bv)
                k = gain * min(1.0, scale / mag) if mag > 0 else 0.0
                cx, cy = (j + step / 2) * pw / w, (i + step / 2) * ph / h
                _arrow(draw, cx, cy, bu * k, bv * k)
    return np.asarray(img)


def render_motion_grid(
    frames: np.ndarray,
    fields,
    *,
    notes: Sequence[str] = (),
    title: str = "",
    max_pixels: float | None = None,
    arrows: bool = True,
    orientation: str | None = None,
    frame_labels: Sequence[int] | None = None,
    style: GridStyle = GridStyle(),
) -> tuple[np.ndarray, dict]:
    """Draw the grid picture (layout in the module docstring).

    Args:
        frames: ``(T, H, W, 3)`` uint8, the frames the fields were computed on.
        fields: ``(T-1, 3, h, w)`` [u, v, conf] with u, v in pixels of ``frames``
            (:func:`field_to_pixels`), or a dict ``{name: field}`` for several (e.g. one per
            MotionSqueeze stage); a dict's order is the panels' order.
        notes: extra legend lines (e.g. each field's cell size and reach).
        title: text of a title strip on top (none when empty).
        max_pixels: displacement drawn fully saturated; ``None`` for :func:`motion_scale`.
        arrows: draw the displacement as arrows over the colour field (one per
            ``style.arrow_spacing`` px; full colour = an arrow as long as that spacing).
        orientation: ``"rows"`` (one row per pair), ``"columns"``, or ``None`` for
            :func:`choose_orientation`.
        frame_labels: frame numbers for the captions (default ``0..T-1``).
        style: sizes.

    Returns:
        ``(image, boxes)``: the ``(height, width, 3)`` uint8 picture, and for every panel its
        ``(top, left, height, width)`` under the key ``("frame", t)``,
        ``("displacement", name, t)`` or ``("confidence", name, t)``; ``("legend",)`` is the
        legend strip.
    """
    from PIL import Image, ImageDraw

    named = _as_field_dict(fields)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    pairs = frames.shape[0] - 1
    for name, f in named.items():
        if f.shape[0] != pairs:
            raise ValueError(f"expected {pairs} displacement fields for {frames.shape[0]} frames, "
                             f"field {name!r} has {f.shape[0]}")
    if pairs < 1:
        raise ValueError("need at least 2 frames (one pair) to draw motion")
    labels = list(frame_labels) if frame_labels is not None else list(range(frames.shape[0]))
    scale = float(max_pixels) if max_pixels else motion_scale(named)
    s = style
    h, w = frames.shape[1:3]
    ph, pw = s.panel_height, max(1, round(w * s.panel_height / h))
    kinds = [("frame",)] + [(k, name) for name in named for k in ("displacement", "confidence")]
    m = len(kinds)
    orientation = orientation or choose_orientation((h, w), pairs, m, s)
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    rows, cols = (pairs, m) if orientation == "rows" else (m, pairs)
    font = _font(s.font_size)

    # Legend content first: its width may set the picture's width.
    wheel = max(16, s.legend_height - 2 * s.gap)
    lines = ["displacement: colour = direction, saturation = speed",
             f"full colour = {scale:.1f} px per frame pair",
             f"(pixels of the {w} x {h} frames)"]
    if arrows:
        lines.append(f"arrows: {s.arrow_spacing} px blocks; full colour = {s.arrow_spacing} px")
    lines.extend(notes)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(int(probe.textlength(t, font=font)) for t in lines)
    bar_w = 160
    line_h = s.font_size + 4
    legend_w = wheel + s.gap * 3 + max(text_w, bar_w + 90)
    legend_h = max(s.legend_height, 2 + (len(lines) + 1) * line_h + 8)

    title_h = s.title_height if title else 0
    grid_w = cols * pw + (cols - 1) * s.gap
    grid_h = rows * (s.caption + ph) + (rows - 1) * s.gap
    width = 2 * s.margin + max(grid_w, legend_w)
    height = 2 * s.margin + title_h + grid_h + s.gap + legend_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((s.margin, s.margin + 2), title, fill="black", font=_font(s.font_size + 3))

    boxes: dict = {}
    top0 = s.margin + title_h
    for t in range(pairs):
        for k, kind in enumerate(kinds):
            r, c = (t, k) if orientation == "rows" else (k, t)
            left = s.margin + c * (pw + s.gap)
            top = top0 + r * (s.caption + ph + s.gap)
            if kind[0] == "frame":
                panel = np.asarray(Image.fromarray(frames[t]).resize((pw, ph), Image.BILINEAR))
                caption = f"frame {labels[t]} -> {labels[t + 1]}"
                key = ("frame", t)
            elif kind[0] == "displacement":
                panel = _displacement_panel(named[kind[1]][t], (pw, ph), scale, arrows, s.arrow_spacing)
                caption = f"{kind[1]}: displacement"
                key = ("displacement", kind[1], t)
            else:
                conf = Image.fromarray(confidence_to_color(named[kind[1]][t, 2]))
                panel = np.asarray(conf.resize((pw, ph), Image.NEAREST))
                caption = f"{kind[1]}: confidence"
                key = ("confidence", kind[1], t)
            draw.text((left + 1, top + 2), caption, fill="black", font=font)
            canvas.paste(Image.fromarray(panel), (left, top + s.caption))
            boxes[key] = (top + s.caption, left, ph, pw)

    # Legend strip: colour wheel, explanation, confidence ramp.
    ltop = top0 + grid_h + s.gap
    boxes[("legend",)] = (ltop, s.margin, legend_h, width - 2 * s.margin)
    disc = Image.fromarray(wheel_legend(wheel))
    canvas.paste(disc, (s.margin, ltop + (legend_h - wheel) // 2))
    tx = s.margin + wheel + 2 * s.gap
    for i, text in enumerate(lines):
        draw.text((tx, ltop + 2 + i * line_h), text, fill="black", font=font)
    by = ltop + 2 + len(lines) * line_h + 4
    ramp = confidence_to_color(np.linspace(0, 1, bar_w)[None].repeat(10, 0))
    draw.text((tx, by - 1), "confidence 0", fill="black", font=font)
    bx = tx + int(probe.textlength("confidence 0", font=font)) + s.gap
    canvas.paste(Image.fromarray(ramp), (bx, by))
    draw.text((bx + bar_w + s.gap, by - 1), "1", fill="black", font=font)
    return np.asarray(canvas), boxes


def write_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Save an RGB picture as PNG; written beside ``path`` and renamed, so an old file is never torn."""
    from PIL import Image

    path = Path(path)
    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=True)
    return path


def save_motion_grid(frames: np.ndarray, fields, path: str | os.PathLike, **options) -> Path:
    """Draw :func:`render_motion_grid` (same arguments) and save it as a PNG at ``path``."""
    image, _ = render_motion_grid(frames, fields, **options)
    return write_image(image, path)
