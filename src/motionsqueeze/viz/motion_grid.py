"""A picture of what a MotionSqueeze layer computes on a clip: for each neighbouring frame
pair, the frame, the displacement field in the optical-flow colour code, and the
confidence map, with a colour-wheel legend and the displacement scale in input pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .flow_colors import flow_to_color, wheel_legend

__all__ = ["field_to_pixels", "save_motion_grid"]


def field_to_pixels(field: torch.Tensor, patch_size: int, stride: int) -> np.ndarray:
    """``[u, v, conf]`` in half-window units -> ``(..., 3, h, w)`` with u, v in input pixels.

    ``stride`` is the stage's stride (8 after res3): one cell of the map is ``stride`` pixels.
    """
    out = field.detach().float().cpu().numpy().copy()
    cells = (patch_size - 1) / 2
    out[..., :2, :, :] *= cells * stride
    return out


def save_motion_grid(
    frames: np.ndarray,
    fields: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    max_pixels: float | None = None,
    arrows: bool = True,
) -> Path:
    """Save a grid image: one column per frame pair; rows frame t / displacement / confidence.

    Args:
        frames: ``(T, H, W, 3)`` uint8 input frames.
        fields: ``(T-1, 3, h, w)`` from :func:`field_to_pixels` (u, v in input pixels).
        path: output PNG.
        max_pixels: displacement drawn fully saturated; ``None`` for the largest in the clip.
        arrows: overlay the displacement as arrows on the colour field.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = fields.shape[0]
    if frames.shape[0] != pairs + 1:
        raise ValueError(f"expected {pairs + 1} frames for {pairs} displacement fields, got {frames.shape[0]}")
    mag = np.sqrt(fields[:, 0] ** 2 + fields[:, 1] ** 2)
    scale = max_pixels or max(float(mag.max()), 1e-6)
    conf_max = max(float(fields[:, 2].max()), 1e-6)
    fig, axes = plt.subplots(3, pairs + 1, figsize=(1.9 * (pairs + 1), 6.0), squeeze=False)
    h, w = frames.shape[1:3]
    for t in range(pairs):
        u, v, conf = fields[t]
        axes[0, t].imshow(frames[t])
        axes[0, t].set_title(f"frame {t} -> {t + 1}", fontsize=8)
        axes[1, t].imshow(flow_to_color(u, v, scale), extent=(0, w, h, 0), interpolation="nearest")
        if arrows:
            fh, fw = u.shape
            ys, xs = (np.arange(fh) + 0.5) * h / fh, (np.arange(fw) + 0.5) * w / fw
            step = max(1, fh // 8)
            xx, yy = np.meshgrid(xs[::step], ys[::step])
            axes[1, t].quiver(xx, yy, u[::step, ::step], -v[::step, ::step], color="black", scale=scale * 12,
                              width=0.012, headwidth=3)
            axes[1, t].set_xlim(0, w)
            axes[1, t].set_ylim(h, 0)
        axes[2, t].imshow(conf, cmap="magma", vmin=0, vmax=conf_max, extent=(0, w, h, 0), interpolation="nearest")
    axes[0, pairs].imshow(frames[pairs])
    axes[0, pairs].set_title(f"frame {pairs}", fontsize=8)
    axes[1, pairs].imshow(wheel_legend(96))
    axes[1, pairs].set_title(f"direction; full colour\n= {scale:.1f} px / frame", fontsize=7)
    axes[2, pairs].imshow(np.linspace(conf_max, 0, 64)[:, None].repeat(8, 1), cmap="magma", aspect=0.15)
    axes[2, pairs].set_title(f"confidence 0..{conf_max:.2f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("frame", fontsize=8)
    axes[1, 0].set_ylabel("displacement", fontsize=8)
    axes[2, 0].set_ylabel("confidence", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
