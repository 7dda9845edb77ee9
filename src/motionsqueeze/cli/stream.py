"""``motionsqueeze stream SOURCE --checkpoint M``: live, frame-by-frame action recognition.

A reader thread decodes SOURCE (a video file, a frame folder, or a camera such as
``/dev/video0`` through PyAV's v4l2 input) into a bounded queue; when the model falls behind,
the oldest queued frame is dropped, so the output stays current instead of lagging. The main
thread pushes each frame through the causal model's step (:mod:`motionsqueeze.models.streaming`)
and prints the top classes with the frame's latency (one JSON object per line with ``--json``),
and can write an annotated copy of the stream. See docs/streaming.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import sys
import threading
import time

_END = object()
_CAMERA = re.compile(r"^(/dev/video\d+|\d+)$")


def add_parser(sub):
    p = sub.add_parser(
        "stream",
        help="classify a live stream frame by frame with a causal model",
        description="Run a causal model (causal: true) frame by frame on a video file, a JPEG/PNG frame folder "
        "or a camera (/dev/videoN, or N), printing the top classes and the per-frame latency. Frames are read "
        "into a bounded queue that drops the oldest frame when the model falls behind.",
    )
    p.add_argument("source", help="video file, frame folder, or camera (/dev/video0 or 0)")
    p.add_argument("--checkpoint", required=True, help="causal model file (.safetensors) or training checkpoint (.pt)")
    p.add_argument("--topk", type=int, default=3, help="classes to show per frame (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object per frame")
    p.add_argument("--window", type=int, default=None,
                   help="frames whose logits are averaged into the scores (default: the model's frames per clip)")
    p.add_argument("--queue", type=int, default=4, help="frames the queue holds before dropping the oldest (default 4)")
    p.add_argument("--rate", type=float, default=None,
                   help="frames per second at which a file or folder is played, as a camera would deliver them "
                   "(default: the video's own rate, 25 for folders; 0: as fast as the model goes, nothing dropped)")
    p.add_argument("--stall-timeout", type=float, default=10.0,
                   help="seconds without a new frame after which the stream counts as stalled (default 10)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many processed frames")
    p.add_argument("--write-video", default=None, metavar="PATH", help="write the frames with the top classes drawn on")
    p.add_argument("--template", default="{:05d}.jpg", help="frame file names of folders (default {:05d}.jpg)")
    p.add_argument("--start-index", type=int, default=1, help="number of the first frame file (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


class _Source:
    """Frames ``(H, W, 3)`` uint8 with their time in seconds, and the delivery rate."""

    def __init__(self, source: str, template: str, start_index: int):
        self.name = source
        self.live = bool(_CAMERA.match(source))
        self._container = None
        self._folder = None
        if self.live:
            self._open_camera(source)
        elif os.path.isdir(source):
            from ..data import open_clip_source

            self._folder = open_clip_source(source, template=template, start_index=start_index)
            self.rate = 25.0
        elif not os.path.exists(source):
            raise FileNotFoundError(f"{source}: no such video file, frame folder or camera")
        else:
            import av

            try:
                self._container = av.open(source)
                stream = self._container.streams.video[0]
            except (av.error.FFmpegError, IndexError) as exc:
                raise ValueError(f"{source}: cannot be read as a video ({exc}); check the file or convert it with ffmpeg") from exc
            self.rate = float(stream.average_rate or 25)

    def _open_camera(self, source: str) -> None:
        import av

        device = source if source.startswith("/dev/") else f"/dev/video{source}"
        if not os.path.exists(device):
            raise ValueError(f"camera {device} does not exist: no camera is connected, or it has another number "
                             f"(ls /dev/video*); stream a video file or frame folder instead")
        try:
            self._container = av.open(device, format="v4l2")
        except Exception as exc:  # noqa: BLE001 - PyAV raises several kinds; all mean "cannot open"
            raise ValueError(f"camera {device} cannot be opened ({type(exc).__name__}: {exc}); check that no other "
                             f"program uses it and that you may read it (group 'video')") from exc
        stream = self._container.streams.video[0]
        self.rate = float(stream.average_rate or 30)

    def frames(self):
        if self._folder is not None:
            for i in range(self._folder.num_frames):
                yield i / self.rate, self._folder.read([i])[0].numpy()
            return
        for frame in self._container.decode(video=0):
            t = float(frame.time) if frame.time is not None else None
            yield t, frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        if self._folder is not None and hasattr(self._folder, "close"):
            self._folder.close()


def _reader(source: _Source, q: queue.Queue, rate: float, stop: threading.Event, counts: dict) -> None:
    """Fill ``q`` with ``(index, time, frame, read_at)``; drop the oldest when full (unless rate == 0)."""
    started = time.perf_counter()
    try:
        for i, (t, frame) in enumerate(source.frames()):
            if stop.is_set():
                return
            if rate > 0 and not source.live:  # play a file like a camera: frame i at i / rate
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            item = (i, t if t is not None else i / (rate or source.rate), frame, time.perf_counter())
            if rate == 0 and not source.live:  # wait for room: every frame is processed
                _put_waiting(q, item, stop)
                continue
            while True:
                try:
                    q.put_nowait(item)
                    break
                except queue.Full:
                    try:
                        q.get_nowait()
                        counts["dropped"] += 1
                    except queue.Empty:
                        pass
        _put_waiting(q, _END, stop)
    except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it
        _put_waiting(q, exc, stop)


def _put_waiting(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _prepare(frame, transform, pre):
    import torch

    from ..data.transforms import normalize_clip

    clip = transform(torch.from_numpy(frame).unsqueeze(0))  # (1, 1, 3, S, S)
    return normalize_clip(clip[0, 0], pre.mean, pre.std)


def _annotate(frame, rows, latency_ms):
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    lines = [f"{r['class']} {r['probability'] * 100:.0f}%" for r in rows] + [f"{latency_ms:.0f} ms"]
    draw.rectangle((0, 0, image.width, 12 * len(lines) + 4), fill=(0, 0, 0))
    for k, line in enumerate(lines):
        draw.text((3, 2 + 12 * k), line, fill=(255, 255, 0))
    import numpy as np

    return np.asarray(image)


class _VideoWriter:
    """The annotated video, written to a temporary file next to ``path`` that replaces
    ``path`` only once the video is finished (``files.atomic_output``): a stream killed midway
    leaves an earlier video of that name as it was."""

    def __init__(self, path: str, rate: float):
        self.path, self.rate = path, rate
        self._container = self._stream = None
        self._output = contextlib.ExitStack()

    def write(self, frame) -> None:
        import av

        from ..files import atomic_output

        if self._container is None:
            tmp = self._output.enter_context(atomic_output(self.path, suffix=os.path.splitext(self.path)[1]))
            self._container = av.open(str(tmp), "w")
            self._stream = self._container.add_stream("libx264" if self.path.endswith((".mp4", ".mkv")) else "mpeg4",
                                                      rate=max(1, round(self.rate)))
            self._stream.height, self._stream.width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
            self._stream.pix_fmt = "yuv420p"
        f = frame[: self._stream.height, : self._stream.width]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(f.copy(), format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._output.__exit__(*sys.exc_info())  # drops the temporary file; path stays as it was
            raise
        self._output.close()  # the finished video replaces path


def run(args) -> int:
    import torch

    from ..models.weights.model_file import load_trained_model
    from ..engine.predict import eval_transform
    from ..models.streaming import StreamingRecognizer, check_causal

    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    if args.queue < 1:
        raise ValueError(f"--queue must be at least 1 frame, got {args.queue}")
    if args.rate is not None and args.rate < 0:
        raise ValueError(f"--rate must be 0 (as fast as possible) or positive, got {args.rate}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_trained_model(args.checkpoint)
    try:
        check_causal(model)
    except ValueError as exc:
        raise ValueError(f"{args.checkpoint}: {exc}") from None
    streamer = StreamingRecognizer(model, args.window)
    transform = eval_transform(model)
    names = model.card.class_names or [f"class {i}" for i in range(model.num_classes)]

    source = _Source(args.source, args.template, args.start_index)
    rate = source.rate if args.rate is None else args.rate
    q: queue.Queue = queue.Queue(maxsize=args.queue)
    stop = threading.Event()
    counts = {"dropped": 0}
    reader = threading.Thread(target=_reader, args=(source, q, rate, stop, counts), daemon=True)
    writer = _VideoWriter(args.write_video, source.rate) if args.write_video else None
    processed, status, latencies = 0, 0, []
    reader.start()
    try:
        while args.max_frames is None or processed < args.max_frames:
            try:
                item = q.get(timeout=args.stall_timeout)
            except queue.Empty:
                print(f"motionsqueeze stream: {args.source}: no frame for {args.stall_timeout:g} s, the stream "
                      f"stalled; stopping after {processed} frames", file=sys.stderr)
                status = 1
                break
            if item is _END:
                break
            if isinstance(item, Exception):
                print(f"motionsqueeze stream: {args.source}: reading stopped after {processed} frames: "
                      f"{type(item).__name__}: {item}", file=sys.stderr)
                status = 1
                break
            index, t, frame, read_at = item
            begin = time.perf_counter()
            probs = streamer.step(_prepare(frame, transform, model.card.preprocess)).softmax(dim=0)
            done = time.perf_counter()
            latency_ms, age_ms = (done - begin) * 1000, (done - read_at) * 1000
            latencies.append(latency_ms)
            values, indices = probs.topk(min(args.topk, probs.numel()))
            rows = [{"class": names[int(i)], "index": int(i), "probability": round(float(v), 4)}
                    for v, i in zip(values, indices)]
            if args.json:
                print(json.dumps({"frame": index, "time": round(t, 3), "latency_ms": round(latency_ms, 2),
                                  "age_ms": round(age_ms, 2), "dropped": counts["dropped"], "top": rows}), flush=True)
            else:
                top = "  ".join(f"{r['class']} {r['probability'] * 100:.1f}%" for r in rows)
                print(f"frame {index:6d}  {t:8.2f}s  {latency_ms:7.1f} ms  {top}", flush=True)
            if writer is not None:
                writer.write(_annotate(frame, rows, latency_ms))
            processed += 1
    finally:
        stop.set()
        while True:  # unblock the reader if it waits on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        reader.join(timeout=2)
        source.close()
        if writer is not None:
            writer.close()
    if latencies:
        ordered = sorted(latencies)
        summary = {"frames": processed, "dropped": counts["dropped"],
                   "median_latency_ms": round(ordered[len(ordered) // 2], 2),
                   "fps": round(1000 / (sum(latencies) / len(latencies)), 1)}
    else:
        summary = {"frames": 0, "dropped": counts["dropped"]}
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        print(f"stream ended: {json.dumps(summary)}", file=sys.stderr)
    return status
