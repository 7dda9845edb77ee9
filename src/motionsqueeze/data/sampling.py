"""Which frames of a video make a clip: TSN segment sampling and dense sampling.

All indices are 0-based frame numbers of a video with ``n >= 1`` frames; a clip has ``T``
indices, always, also when ``n < T`` (frames then repeat).

Segment sampling (TSN; Something-Something, HMDB-51, UCF-101)
    The video is cut into ``T`` equal segments of ``n / T`` frames (real-valued), and segment
    ``i`` gives the frame at position ``i + o_i`` in segment units::

        index_i = min(n - 1, floor((i + o_i) * n / T)),   o_i in [0, 1)

    * training: ``o_i`` uniform in ``[0, 1)``, drawn for each segment (a random frame of
      every segment; frames a segment only partly covers are drawn less often);
    * validation: ``o_i = 1/2``, the centre of each segment (identical to TSM's
      ``int(tick / 2 + tick * i)`` with ``tick = n / T``);
    * ``K`` evenly spaced test clips: clip ``k`` uses ``o_i = (k + 1/2) / K`` for every
      segment (``K = 1`` is the validation clip); ``K`` random test clips draw as in training.

    Example, ``n = 10, T = 4``: validation gives ``[1, 3, 6, 8]``; training draws from
    ``{0, 1, 2}, {2, 3, 4}, {5, 6, 7}, {7, 8, 9}``. With ``n = 3, T = 8`` validation gives
    ``[0, 0, 0, 1, 1, 2, 2, 2]``. (TSM's code differs in two corner cases: training uses
    integer segments of ``n // T`` frames, leaving the last ``n mod T`` frames out, and
    ``n <= T`` gives frame 0 ``T`` times.)

Dense sampling (I3D / TSM "dense"; Kinetics-400)
    ``T`` frames ``stride`` apart (default ``stride = window // T``, 64 // 8 = 8) starting at
    ``s``, wrapping around the video when it is short::

        index_i = (s + i * stride) mod n,    s in 0..S,    S = max(0, n - T * stride)

    * training: ``s`` uniform in ``0..S``;
    * validation: the centre start ``s = floor((S + 1) / 2)``;
    * ``K`` evenly spaced test clips: ``s_k = floor((k + 1/2) * (S + 1) / K)``;
      ``K`` random clips draw ``s`` as in training.

    Example, ``n = 100, T = 8, stride = 8``: ``S = 36``, validation ``s = 18`` gives
    ``[18, 26, ..., 74]``; ``n = 20`` gives ``S = 0`` and ``[0, 8, 16, 4, 12, 0, 8, 16]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["SAMPLINGS", "segment_indices", "dense_indices", "ClipSampler"]

SAMPLINGS = ("segment", "dense")


def _check(num_frames: int, num_segments: int) -> None:
    if num_frames < 1:
        raise ValueError(f"cannot sample a clip from a video with {num_frames} frames")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")


def segment_indices(num_frames: int, num_segments: int, offsets: Sequence[float] | float) -> list[int]:
    """TSN segment sampling: ``min(n - 1, floor((i + o_i) * n / T))`` for ``i < T``.

    Args:
        num_frames: n, frames in the video (>= 1).
        num_segments: T, frames in the clip.
        offsets: ``o_i`` in ``[0, 1)``, one per segment or one for all.
    """
    _check(num_frames, num_segments)
    n, t = num_frames, num_segments
    if isinstance(offsets, (int, float)):
        offsets = [float(offsets)] * t
    if len(offsets) != t:
        raise ValueError(f"need {t} segment offsets, got {len(offsets)}")
    return [min(n - 1, int((i + o) * n / t)) for i, o in enumerate(offsets)]


def _even_segment_indices(num_frames: int, num_segments: int, k: int, num_clips: int) -> list[int]:
    # Offsets (k + 1/2) / K in exact integer arithmetic, so that the centre rule gives the
    # same frames as TSM's int(tick / 2 + tick * i) without floating-point surprises.
    _check(num_frames, num_segments)
    n, t, c = num_frames, num_segments, num_clips
    return [min(n - 1, ((2 * c * i + 2 * k + 1) * n) // (2 * c * t)) for i in range(t)]


def dense_indices(num_frames: int, num_segments: int, stride: int, start: int) -> list[int]:
    """Dense sampling: ``(start + i * stride) mod n`` for ``i < T``."""
    _check(num_frames, num_segments)
    if stride < 1:
        raise ValueError(f"dense stride must be >= 1, got {stride}")
    return [(start + i * stride) % num_frames for i in range(num_segments)]


@dataclass(frozen=True)
class ClipSampler:
    """Frame indices of the clips of one video, following the module docstring.

    Attributes:
        num_segments: T, frames per clip.
        sampling: ``"segment"`` (TSN) or ``"dense"``.
        stride: frames between dense samples; ``None`` for ``window // T``.
        window: dense window in frames (64), used only to default ``stride``.
    """

    num_segments: int = 8
    sampling: str = "segment"
    stride: int | None = None
    window: int = 64

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {self.num_segments}")
        if self.sampling == "dense" and self.dense_stride < 1:
            raise ValueError(f"dense stride must be >= 1 (window {self.window} // T "
                             f"{self.num_segments} is {self.window // self.num_segments}); set the stride")

    @property
    def dense_stride(self) -> int:
        return self.stride if self.stride is not None else self.window // self.num_segments

    def _max_start(self, num_frames: int) -> int:
        return max(0, num_frames - self.num_segments * self.dense_stride)

    def train(self, num_frames: int, generator: torch.Generator | None = None) -> list[int]:
        """One random training clip (``T`` indices)."""
        _check(num_frames, self.num_segments)
        if self.sampling == "segment":
            offsets = torch.rand(self.num_segments, generator=generator).tolist()
            return segment_indices(num_frames, self.num_segments, offsets)
        start = int(torch.randint(self._max_start(num_frames) + 1, (1,), generator=generator))
        return dense_indices(num_frames, self.num_segments, self.dense_stride, start)

    def even(self, num_frames: int, num_clips: int = 1) -> list[list[int]]:
        """``num_clips`` evenly spaced clips; one clip is the validation (centre) clip."""
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        if self.sampling == "segment":
            return [_even_segment_indices(num_frames, self.num_segments, k, num_clips)
                    for k in range(num_clips)]
        positions = self._max_start(num_frames) + 1
        return [dense_indices(num_frames, self.num_segments, self.dense_stride,
                              ((2 * k + 1) * positions) // (2 * num_clips)) for k in range(num_clips)]

    def random(self, num_frames: int, num_clips: int, generator: torch.Generator | None = None
               ) -> list[list[int]]:
        """``num_clips`` clips drawn like training clips."""
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        return [self.train(num_frames, generator) for _ in range(num_clips)]
