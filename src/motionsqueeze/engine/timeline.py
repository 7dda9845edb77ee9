"""Long videos: a sliding window gives a timeline of top classes (``predict --window``).

Windows of ``window`` frames start every ``stride`` frames (both may be given in seconds and
are converted with the video's frame rate); the last window is aligned with the end of the
video so that every frame is covered, and a video shorter than one window is one window.
Each window is classified like a whole video by ``predict``: T frames at the centres of T
equal segments of the window, resized and centre-cropped as the model's recipe did.

Written as JSON (``{"source", "fps", "window", "stride", "windows": [...], "segments": [...]}``),
CSV (one row per window) and optionally as an annotated copy of the video.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data import open_clip_source
from ..data.transforms import normalize_clip
from ..files import atomic_output, atomic_write
from ..models.card import card_of
from .predict import top_classes, view_pipeline

__all__ = ["Window", "Timeline", "window_starts", "frames_of", "predict_timeline", "write_timeline",
           "write_annotated_video"]


@dataclass
class Window:
    """One window: frames ``start`` (inclusive) to ``end`` (exclusive), seconds when the fps is
    known, and its top classes ``[{"rank", "index", "class", "probability"}]``."""

    start: int
    end: int
    start_s: float | None
    end_s: float | None
    top: list[dict]


@dataclass
class Timeline:
    source: str
    num_frames: int
    fps: float | None
    window: int  # frames
    stride: int  # frames
    windows: list[Window] = field(default_factory=list)

    def owners(self) -> list[int]:
        """First frame from which each window speaks for the video: a frame belongs to the
        window whose centre is nearest (boundaries halfway between neighbouring centres)."""
        centres = [(w.start + w.end) / 2 for w in self.windows]
        return [0] + [int((a + b) / 2 + 0.5) for a, b in zip(centres[:-1], centres[1:])]

    def segments(self) -> list[dict]:
        """The video cut where the top class changes: ``{"class", "start", "end"}`` in frames
        (``end`` exclusive), consecutive and covering every frame (see :meth:`owners`)."""
        runs: list[dict] = []
        for w, first in zip(self.windows, self.owners()):
            name = w.top[0]["class"]
            if runs and runs[-1]["class"] == name:
                continue
            if runs:
                runs[-1]["end"] = first
            runs.append({"class": name, "start": first, "end": self.num_frames})
        return runs

    def to_dict(self) -> dict:
        return {"source": self.source, "num_frames": self.num_frames, "fps": self.fps, "window": self.window,
                "stride": self.stride, "windows": [asdict(w) for w in self.windows], "segments": self.segments()}


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """First frames of the windows (see the module docstring)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be at least one frame, got {window} and {stride}")
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


def frames_of(value: float, unit: str, fps: float | None, what: str) -> int:
    """A window or stride in frames from a value in ``"frames"`` or ``"seconds"``."""
    if unit == "frames":
        if value != int(value) or value < 1:
            raise ValueError(f"{what} in frames must be a positive whole number, got {value}")
        return int(value)
    if unit != "seconds":
        raise ValueError(f"unit must be 'frames' or 'seconds', got {unit!r}")
    if not fps:
        raise ValueError(f"{what} is given in seconds but the input has no frame rate (frame folders have "
                         f"none); give it in frames")
    frames = round(value * fps)
    if frames < 1:
        raise ValueError(f"{what} of {value} s is less than one frame at {fps:g} fps")
    return frames


@torch.no_grad()
def predict_timeline(model: nn.Module, source: str | Path, *, window: float, stride: float, unit: str = "frames",
                     topk: int = 3, template: str = "{:05d}.jpg", start_index: int = 1,
                     device: str | torch.device = "cpu", batch_size: int = 8) -> Timeline:
    """Top classes of every window of ``source`` (see the module docstring)."""

    sampler, transform = view_pipeline(model)
    card = card_of(model)
    pre, names = card.preprocess, card.class_names
    model = model.to(device).eval()
    with open_clip_source(source, template=template, start_index=start_index) as reader:
        n, fps = reader.num_frames, reader.fps
        if n < 1:
            raise ValueError(f"{source}: no frames could be read")
        w, s = frames_of(window, unit, fps, "the window"), frames_of(stride, unit, fps, "the stride")
        timeline = Timeline(str(source), n, fps, w, s)
        starts = window_starts(n, w, s)
        for b in range(0, len(starts), batch_size):
            chunk = starts[b:b + batch_size]
            clips = []
            for start in chunk:
                length = min(w, n - start)
                indices = [start + i for i in sampler.even(length, 1)[0]]
                clips.append(transform(reader.read(indices)))  # (1, T, 3, S, S)
            x = normalize_clip(torch.cat(clips).to(device), pre.mean, pre.std)
            probs = model(x).float().softmax(dim=1).cpu()
            for start, p in zip(chunk, probs):
                end = min(start + w, n)
                timeline.windows.append(Window(start, end, start / fps if fps else None, end / fps if fps else None,
                                               top_classes(p, names, topk)))
    return timeline


def write_timeline(timeline: Timeline, path: str | Path) -> None:
    """``.json`` (:meth:`Timeline.to_dict`) or ``.csv`` (``start,end,start_s,end_s,rank,class,
    probability``... one row per window with its top-1 and the top-k as ``class:probability``)."""
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps(timeline.to_dict(), indent=2)
    elif path.suffix == ".csv":
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(["start_frame", "end_frame", "start_s", "end_s", "class", "probability", "top"])
        for w in timeline.windows:
            out.writerow([w.start, w.end, "" if w.start_s is None else f"{w.start_s:.3f}",
                          "" if w.end_s is None else f"{w.end_s:.3f}", w.top[0]["class"],
                          f"{w.top[0]['probability']:.4f}",
                          " | ".join(f"{t['class']}:{t['probability']:.4f}" for t in w.top)])
        text = buf.getvalue()
    else:
        raise ValueError(f"timeline files end in .json or .csv, got {path}")
    atomic_write(path, lambda f: f.write(text.encode()))


def write_annotated_video(timeline: Timeline, path: str | Path, *, template: str = "{:05d}.jpg",
                          start_index: int = 1, chunk: int = 64) -> None:
    """A copy of the video (H.264 ``.mp4``) with each frame's top class written on it: the
    class of the window whose centre is nearest (as in :meth:`Timeline.segments`)."""
    import av
    import numpy as np
    from PIL import Image, ImageDraw

    starts = timeline.owners()
    with open_clip_source(timeline.source, template=template, start_index=start_index) as reader, \
            atomic_output(path) as tmp:
        container = av.open(str(tmp), "w", format="mp4")
        stream = container.add_stream("libx264", rate=round(timeline.fps or 25))
        stream.pix_fmt = "yuv420p"
        w_idx = 0
        for first in range(0, reader.num_frames, chunk):
            frames = reader.read(range(first, min(first + chunk, reader.num_frames))).numpy()
            if first == 0:
                stream.height, stream.width = (frames.shape[1] // 2) * 2, (frames.shape[2] // 2) * 2
            for k, frame in enumerate(frames):
                while w_idx + 1 < len(starts) and starts[w_idx + 1] <= first + k:
                    w_idx += 1
                top = timeline.windows[w_idx].top[0]
                image = Image.fromarray(frame[: stream.height, : stream.width])
                draw = ImageDraw.Draw(image)
                draw.rectangle([0, 0, image.width, 12], fill=(0, 0, 0))
                draw.text((2, 0), f"{top['class']} {top['probability'] * 100:.0f}%", fill=(255, 255, 255))
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
