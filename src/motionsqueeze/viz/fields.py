"""Displacement fields of a clip as NumPy arrays, for notebooks and for ``motionsqueeze visualize``.

:func:`motion_fields` reads frames from a video, a frame folder or an array, brings them to
a working size, and returns what either computes for each neighbouring frame pair:

* with a model (a file or a :class:`~motionsqueeze.models.VideoRecognizer`): every
  MotionSqueeze layer of the model, one field per stage (``"res3"``), on the stage's map
  (stride 8 for res3);
* without one: the parameter-free block-matching estimator
  (:mod:`motionsqueeze.viz.estimator`), field ``"block matching"``.

Every field is ``(T-1, 3, h, w)`` float32 ``[u, v, conf]``: u (right) and v (down) in pixels
of the returned (working-size) frames per frame pair, conf in [0, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import open_clip_source
from ..data.transforms import normalize_clip, resize_clip
from ..models.card import Preprocess, card_of, model_clip_indices
from ..models.recognizer import build_model
from ..models.weights.model_file import load_trained_model
from .animate import save_motion_animation
from .estimator import BlockMatching, block_matching_flow
from .motion_grid import field_to_pixels, save_motion_grid

__all__ = ["ESTIMATOR_NAME", "OUTPUT_SUFFIXES", "MotionFields", "motion_fields", "working_size", "load_motion_model",
           "check_output_path"]

ESTIMATOR_NAME = "block matching"
OUTPUT_SUFFIXES = (".png", ".gif", ".mp4")
DEFAULT_ESTIMATOR_SIZE = 224
DEFAULT_ESTIMATOR_FRAMES = 5
STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}  # input pixels per cell of each stage


@dataclass
class MotionFields:
    """What :func:`motion_fields` returns.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8, the frames at working size the fields belong to.
        indices: their 0-based frame numbers in the source.
        fields: ``{name: (T-1, 3, h, w) float32}``: u, v in pixels of ``frames`` (right and
            down positive) per frame pair, confidence in [0, 1].
        strides: ``{name: pixels per cell}`` of each field.
        reach: ``{name: pixels}``, the largest displacement per axis each field can express
            (``(P - 1) / 2`` cells); motion beyond it is not measured.
        source: where the frames came from.
        source_size: ``(height, width)`` of the source frames before resizing.
        model: the model's name when the fields come from a checkpoint, else ``None``.
    """

    frames: np.ndarray
    indices: list[int]
    fields: dict[str, np.ndarray]
    strides: dict[str, int]
    reach: dict[str, float]
    source: str = ""
    source_size: tuple[int, int] = (0, 0)
    model: str | None = None

    def save(self, path: str | os.PathLike, *, arrows: bool = True, max_pixels: float | None = None,
             fps: float = 2.0, title: str | None = None, orientation: str | None = None) -> Path:
        """Draw the fields to ``path``: ``.png`` grid, ``.gif`` or ``.mp4`` animation."""
        path = check_output_path(path)
        if title is None:
            title = f"{Path(self.source).name or 'clip'}: " + (
                f"MotionSqueeze of {self.model}" if self.model else "parameter-free block matching")
        notes = [f"{n}: 1 cell = {self.strides[n]} px, reaches +-{self.reach[n]:.0f} px" for n in self.fields]
        options = dict(notes=notes, title=title, max_pixels=max_pixels, arrows=arrows,
                       frame_labels=self.indices)
        if path.suffix.lower() == ".png":
            return save_motion_grid(self.frames, self.fields, path, orientation=orientation, **options)
        return save_motion_animation(self.frames, self.fields, path, fps=fps, **options)


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if its extension is one the pictures can be written as."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"cannot write {path}: unknown output type {path.suffix or '(none)'!r}; "
                         f"use .png for a grid picture, .gif or .mp4 for an animation")
    return path


def working_size(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
    """``(h, w)`` with the shorter side about ``size`` px, both multiples of ``multiple``.

    The aspect ratio is kept up to the rounding to ``multiple`` (a few percent at most),
    so that the grid of cells covers the frame exactly.
    """
    if size < multiple:
        raise ValueError(f"size {size} is smaller than one cell ({multiple} px); use a larger size")
    factor = size / min(height, width)
    return (max(multiple, round(height * factor / multiple) * multiple),
            max(multiple, round(width * factor / multiple) * multiple))


def _frame_indices(num_frames: int, count: int, step: int | None, start: int | None,
                   sample=None, where: str = "clip") -> list[int]:
    """Which frames to show: ``sample(num_frames, count)`` (a model's own sampling) unless a
    step or start is given, else ``count`` frames ``step`` apart.

    ``where`` names the source in error messages.
    """
    if num_frames < 2:
        raise ValueError(f"{where}: has {num_frames} frame(s); motion needs at least 2")
    if count < 2:
        raise ValueError(f"frames must be at least 2 (one pair), got {count}")
    if sample is not None and step is None and start is None:
        return sample(num_frames, count)
    step = 1 if step is None else step
    if step < 1:
        raise ValueError(f"step must be a positive number of frames, got {step}")
    span = (count - 1) * step
    if span >= num_frames:
        raise ValueError(f"{where}: {count} frames {step} apart need {span + 1} frames but it has {num_frames}; "
                         f"ask for fewer frames or a smaller step")
    if start is None:
        start = (num_frames - 1 - span) // 2  # the middle of the clip
    if not 0 <= start <= num_frames - 1 - span:
        raise ValueError(f"{where}: start {start} is outside 0..{num_frames - 1 - span} for {count} frames "
                         f"{step} apart in {num_frames} frames")
    return [start + i * step for i in range(count)]


class _ArrayReader:
    """The reader interface over frames already in memory."""

    def __init__(self, frames):
        x = torch.as_tensor(np.asarray(frames))
        if x.dim() != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"frames must be a uint8 array (T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
        self.frames, self.num_frames, self.path = x, x.shape[0], "array"

    def read(self, indices):
        return self.frames[list(indices)]

    def close(self):
        pass


def load_motion_model(checkpoint) -> tuple[torch.nn.Module, Preprocess, str]:
    """``(model, preprocess, name)`` from a model file, a training checkpoint or a model
    (preprocessing from its card; ImageNet's at 224 px for a model built without one).

    Raises:
        ValueError: the model has no MotionSqueeze layer, so there is nothing to show.
    """
    if isinstance(checkpoint, torch.nn.Module):
        model, path = checkpoint, None
    else:
        path = Path(checkpoint)
        model = load_trained_model(path)  # the card: from the model file or the stored recipe
    card = card_of(model)
    pre = card.preprocess
    name = card.arch or (type(model).__name__ if path is None else path.name)
    if not hasattr(model, "motion_fields") or len(getattr(model, "motion", ())) == 0:
        where = f"{path}: " if path is not None else ""
        raise ValueError(
            f"{where}the model {name} has no MotionSqueeze layer (motion_stages is empty: a TSN or TSM "
            f"model), so there is no displacement to show. Use an MSNet checkpoint, or leave out the "
            f"checkpoint to see the parameter-free block-matching estimator"
        )
    return model, pre, name


def _model_fields(model, clip: torch.Tensor, pre: Preprocess) -> tuple[dict, dict, dict]:
    t = clip.shape[0]
    if t != model.num_segments:
        # Weights do not depend on T: the same layers run on a clip of any length.
        other = build_model(model.config.replace(num_segments=t))
        other.load_state_dict(model.state_dict())
        model = other
    device = next(model.parameters()).device
    x = normalize_clip(clip.to(device), pre.mean, pre.std).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            raw = model.motion_fields(x)
    finally:
        model.train(was_training)
    height = clip.shape[-2]
    fields, strides, reach = {}, {}, {}
    for stage, f in raw.items():
        layer = model.motion[stage]
        stride = round(height / f.shape[-2])
        fields[stage] = field_to_pixels(f[0], layer.patch_size, stride)
        strides[stage] = stride
        reach[stage] = (layer.patch_size - 1) / 2 * stride
    return fields, strides, reach


def motion_fields(
    source,
    checkpoint=None,
    *,
    frames: int | None = None,
    size: int | None = None,
    step: int | None = None,
    start: int | None = None,
    estimator: BlockMatching = BlockMatching(),
    template: str = "{:05d}.jpg",
    start_index: int = 1,
) -> MotionFields:
    """Displacement and confidence between neighbouring frames of a clip, as NumPy arrays.

    Args:
        source: a video file, a folder of frames (``template`` / ``start_index`` name them),
            or a uint8 array ``(N, H, W, 3)``.
        checkpoint: ``None`` for the parameter-free estimator; otherwise a model file
            (``.safetensors``), a training checkpoint (``.pt``) or a ``VideoRecognizer``
            with at least one MotionSqueeze layer.
        frames: T, frames to use (T-1 pairs); default the model's ``num_segments``, or 5
            (all of a shorter clip).
        size: shorter side of the working frames in pixels; default the model's input
            size, or 224. Both sides are rounded to a multiple of the estimator's stride
            (for a model, the stride of its deepest MotionSqueeze stage: 8 for res3).
        step: frames between the chosen frames. Default: 1 (consecutive frames) for the
            estimator; for a model, its own evaluation sampling (stored in the model file):
            segment centres (frames ``n / T`` apart) or the centre dense clip.
        start: first frame when ``step`` is used; default centres the frames in the clip.
        estimator: settings of the block-matching estimator (without a checkpoint).

    Returns:
        :class:`MotionFields`; ``.fields[name]`` is ``(T-1, 3, h, w)`` float32, u and v in
        pixels of ``.frames`` per pair (right, down), confidence in [0, 1].

    Raises:
        ValueError: unreadable source, fewer than 2 frames, or a model without MotionSqueeze.
        FileNotFoundError: a missing checkpoint.
    """
    model = pre = name = None
    if checkpoint is not None:
        model, pre, name = load_motion_model(checkpoint)
    if isinstance(source, (str, os.PathLike)):
        reader = open_clip_source(source, template=template, start_index=start_index)
        label = os.fspath(source)
    else:
        reader, label = _ArrayReader(source), "array"
    try:
        if frames is not None:
            count = frames
        elif model is not None:
            count = model.num_segments
        else:  # a short clip is shown whole rather than refused
            count = max(2, min(DEFAULT_ESTIMATOR_FRAMES, (reader.num_frames - 1) // (step or 1) + 1))
        sample = None
        if model is not None:
            # The frames the model sees: its own sampling (segment centres or a dense clip).
            def sample(n, c):
                return model_clip_indices(model, n, c)
        indices = _frame_indices(reader.num_frames, count, step, start, sample=sample, where=label)
        clip = reader.read(indices)  # (T, H, W, 3) uint8
    finally:
        reader.close()
    source_size = tuple(clip.shape[1:3])
    if model is not None:
        default = pre.input_size
        default = min(default) if isinstance(default, tuple) else default
        # Cells of the deepest MotionSqueeze stage stay whole; a coarser multiple would bend
        # the aspect ratio of small inputs (56 px: 64 x 64 for a 2.35:1 frame at 32).
        multiple = max(STAGE_STRIDES[s] for s in model.motion)
    else:
        default, multiple = DEFAULT_ESTIMATOR_SIZE, estimator.stride
    hw = working_size(*source_size, int(size or default), multiple)
    clip = resize_clip(clip.permute(0, 3, 1, 2).contiguous(), hw)  # (T, 3, h, w) uint8
    if model is not None:
        fields, strides, reach = _model_fields(model, clip, pre)
    else:
        raw = block_matching_flow(clip, estimator)
        fields = {ESTIMATOR_NAME: field_to_pixels(raw, estimator.patch_size, estimator.stride)}
        strides = {ESTIMATOR_NAME: estimator.stride}
        reach = {ESTIMATOR_NAME: float(estimator.reach)}
    return MotionFields(
        frames=clip.permute(0, 2, 3, 1).contiguous().numpy(), indices=[int(i) for i in indices],
        fields=fields, strides=strides, reach=reach, source=label, source_size=source_size, model=name,
    )
