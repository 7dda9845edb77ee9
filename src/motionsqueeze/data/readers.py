"""Readers that decode only the frames a clip needs.

:func:`open_clip_source` opens a JPEG frame folder (a directory) or a video file (anything
else) as a :class:`ClipReader`; ``reader.read(indices)`` returns those frames, 0-based, as a
uint8 tensor ``(T, H, W, 3)`` in RGB order. Every failure is a :class:`DataError` naming the
file and the problem.

Frame folders
    Frame ``i`` (0-based) is the file ``template.format(start_index + i)``, e.g.
    ``00001.jpg`` for ``i = 0`` with the defaults (Something-Something V1). When the list gives
    the frame count, the folder is not listed; otherwise the frames are counted and a gap in
    the numbering is an error.

Videos (PyAV / FFmpeg: H.264 mp4, VP9 webm, MPEG-4 avi, ...)
    Opening a video reads its packets once without decoding them (cheap) to learn the
    presentation time stamp of every frame and where the keyframes are; frame ``i`` is the
    frame with the ``i``-th smallest time stamp, so frame numbers do not depend on the
    frame rate being constant or on the container's frame count, which is often wrong.
    Reading decodes forward from the current position, and seeks to the last keyframe before
    the next wanted frame when that skips at least ``seek_gap`` frames. If decoded frames do
    not carry the time stamps of the packets (some avi files), the reader falls back to
    decoding from the start and counting frames. A packet the decoder rejects is skipped, as
    FFmpeg's own tools do (the next frame stands in); more than ``max(2, 5%)`` is an error.

    When decoding ends before the packet count says it should, the video is truncated: up to
    ``max(2, 5%)`` missing frames at the end are treated as an imprecise count (the last
    decodable frame stands in and ``num_frames`` is corrected), more is an error.
"""

from __future__ import annotations

import bisect
import errno
import os
import re
import stat
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

__all__ = [
    "ClipReader",
    "FrameFolderReader",
    "VideoReader",
    "open_clip_source",
    "scan_frame_folder",
    "FolderScan",
    "check_template",
    "start_index_hint",
]


class ClipReader(ABC):
    """A source of frames: ``path``, ``num_frames``, ``fps`` and ``read(indices)``.

    A context manager; ``close()`` releases the file.
    """

    path: str
    num_frames: int
    fps: float | None

    @abstractmethod
    def read(self, indices: Sequence[int]) -> Tensor:
        """Frames ``indices`` (0-based, any order, repeats allowed) as uint8 ``(T, H, W, 3)`` RGB."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "ClipReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps})"

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        if not idx:
            raise ValueError("read() needs at least one frame index")
        bad = [i for i in idx if not 0 <= i < self.num_frames]
        if bad:
            raise DataError(
                f"{self.path}: frame index {bad[0]} is outside 0..{self.num_frames - 1} "
                f"({self.num_frames} frames)"
            )
        return idx

    def _stack(self, frames: dict[int, np.ndarray], idx: list[int]) -> Tensor:
        shapes = {frames[i].shape for i in idx}
        if len(shapes) > 1:
            raise DataError(f"{self.path}: frames differ in size ({sorted(shapes)}); all frames of a "
                            "clip must have the same size")
        return torch.from_numpy(np.stack([frames[i] for i in idx]))


# --------------------------------------------------------------------------- frame folders


def check_template(template: str) -> tuple[str, str]:
    """``(prefix, suffix)`` around the single integer field of a file-name template.

    Raises:
        DataError: if ``template`` does not have exactly one field that formats an integer.
    """
    try:
        parts = list(string.Formatter().parse(template))
        fields = [p for p in parts if p[1] is not None]
        template.format(1)
    except (ValueError, IndexError, KeyError) as exc:
        raise DataError(f"bad frame file-name template {template!r} ({exc}); use e.g. '{{:05d}}.jpg'") from None
    if len(fields) != 1 or "/" in template or os.sep in template:
        raise DataError(f"bad frame file-name template {template!r}: it must contain exactly one "
                        "integer field and no folder, e.g. '{:05d}.jpg' or 'img_{:05d}.jpg'")
    prefix = "".join(p[0] for p in parts[: parts.index(fields[0]) + 1])
    suffix = "".join(p[0] for p in parts[parts.index(fields[0]) + 1:])
    return prefix, suffix


@dataclass
class FolderScan:
    """What a frame folder holds.

    Attributes:
        num_frames: frames numbered consecutively from ``start_index``.
        missing: 0-based indices missing below the highest frame present (gaps).
        last: 0-based index of the highest-numbered frame present (-1 if none).
        other_files: up to 3 names in the folder that do not match the template.
        before_start: a frame numbered ``start_index - 1`` exists (numbering from 0 read
            as numbering from 1 looks like this).
    """

    num_frames: int
    missing: list[int]
    last: int
    other_files: list[str]
    before_start: bool = False


def scan_frame_folder(path: str, template: str = "{:05d}.jpg", start_index: int = 1) -> FolderScan:
    """List a frame folder and count its frames (see :class:`FolderScan`)."""
    prefix, suffix = check_template(template)
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        raise DataError(f"{path}: frame folder not found", "missing") from None
    except NotADirectoryError:
        raise DataError(f"{path}: not a folder") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except OSError as exc:  # a path too long, a loop of links
        raise DataError(f"{path}: cannot list the folder ({exc.strerror}); fix the path") from None
    present, other = set(), []
    for name in names:
        m = pattern.fullmatch(name)
        # The exact check rejects a different zero padding than the template's.
        if m and template.format(int(m.group(1))) == name:
            present.add(int(m.group(1)) - start_index)
        elif len(other) < 3:
            other.append(name)
    n = 0
    while n in present:
        n += 1
    last = max((i for i in present if i >= 0), default=-1)
    missing = [i for i in range(n, last) if i not in present]
    return FolderScan(num_frames=n, missing=missing, last=last, other_files=sorted(other),
                      before_start=-1 in present)


def start_index_hint(folder: str, template: str, start_index: int) -> str:
    """A hint when the folder holds frame ``start_index - 1`` (0- vs 1-based numbering)."""
    if start_index > 0 and os.path.exists(os.path.join(folder, template.format(start_index - 1))):
        return (f" (the folder has {template.format(start_index - 1)!r}: if its frames are numbered "
                f"from {start_index - 1}, set start_index to {start_index - 1})")
    return ""


class FrameFolderReader(ClipReader):
    """A folder of JPEG (or any Pillow-readable) frames.

    Args:
        path: the folder.
        template: file name of a frame from its number, e.g. ``"{:05d}.jpg"``.
        start_index: number of the first frame in file names (1 for ``00001.jpg``).
        num_frames: frames in the folder when known (from the list): the folder is then not
            listed, and a missing file is reported when it is read. ``None`` counts them.
    """

    def __init__(self, path: str, template: str = "{:05d}.jpg", start_index: int = 1,
                 num_frames: int | None = None):
        self.path = os.fspath(path)
        self.template = template
        self.start_index = start_index
        self.fps = None
        check_template(template)
        if num_frames is None:
            scan = scan_frame_folder(self.path, template, start_index)
            if scan.num_frames == 0:
                hint = (start_index_hint(self.path, template, start_index)
                        or (f" (it holds e.g. {scan.other_files})" if scan.other_files else " (it is empty)"))
                raise DataError(f"{self.path}: no frame named {template.format(start_index)!r}{hint}; "
                                "set the file-name template and start index of your frames", "missing")
            if scan.missing:
                raise DataError(f"{self.path}: missing frame {self.frame_file(scan.missing[0])!r} "
                                f"({len(scan.missing)} missing below frame "
                                f"{self.frame_file(scan.last)!r}); re-extract the frames", "missing")
            num_frames = scan.num_frames
        elif not os.path.isdir(self.path):
            if not os.path.exists(self.path):
                raise DataError(f"{self.path}: frame folder not found", "missing")
            raise DataError(f"{self.path}: not a folder (the list is a frame list; use format "
                            "'video' for video files)")
        self.num_frames = int(num_frames)

    def frame_file(self, index: int) -> str:
        """File name of 0-based frame ``index``."""
        return self.template.format(self.start_index + index)

    def read(self, indices: Sequence[int]) -> Tensor:
        from PIL import Image

        idx = self._check_indices(indices)
        frames = {}
        for i in sorted(set(idx)):
            file = os.path.join(self.path, self.frame_file(i))
            try:
                with _open_regular(file) as f, Image.open(f) as img:
                    _check_pixels(file, img.size)
                    frames[i] = np.asarray(img.convert("RGB"))
            except FileNotFoundError:
                hint = start_index_hint(self.path, self.template, self.start_index)
                raise DataError(f"{file}: missing frame {i + 1} of {self.num_frames}; the list says "
                                f"{self.num_frames} frames{hint or ' (re-extract the frames or fix the list)'}",
                                "missing") from None
            except DataError:
                raise
            except OSError as exc:
                if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES):
                    raise DataError(f"{file}: cannot open ({exc.strerror}); fix the path or its "
                                    "permissions") from None
                # Pillow raises OSError for truncated data and UnidentifiedImageError
                # (an OSError) for files that are not images.
                raise DataError(f"{file}: cannot decode the image ({exc}); the file is corrupt or "
                                "truncated, re-extract it") from None
            except Image.DecompressionBombError:
                raise DataError(f"{file}: the image declares more pixels than Pillow allows "
                                f"({Image.MAX_IMAGE_PIXELS:,}); re-extract the frames at video size") from None
            except (ValueError, SyntaxError) as exc:
                raise DataError(f"{file}: cannot decode the image ({exc}); the file is corrupt or "
                                "truncated, re-extract it") from None
        return self._stack(frames, idx)


# Frames larger than this are refused before they are decoded (an 8K frame has 33 million
# pixels; a forged JPEG header can declare billions).
MAX_FRAME_PIXELS = 50_000_000


def _open_regular(file: str):
    """Open ``file`` for reading, refusing anything but a regular file: reading a named pipe
    would wait forever for a writer, and a device may never end. The check is made on the
    open descriptor (non-blocking open), so the file cannot be swapped in between."""
    f = open(file, "rb", opener=lambda name, flags: os.open(name, flags | getattr(os, "O_NONBLOCK", 0)))
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise DataError(f"{file}: not a regular file (a named pipe, socket or device); frames and "
                        "videos must be plain files")
    return f


def _check_pixels(file: str, size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_FRAME_PIXELS:
        raise DataError(f"{file}: the image declares {width}x{height} pixels, more than the "
                        f"{MAX_FRAME_PIXELS:,} a frame may have; re-extract the frames at video size")


# --------------------------------------------------------------------------- videos


class VideoReader(ClipReader):
    """A video file decoded with PyAV (see the module docstring for the frame numbering).

    Args:
        path: the video file.
        threads: FFmpeg decoding threads (1 in DataLoader workers; more for one big video).
        seek_gap: seek instead of decoding forward when that skips at least this many frames.

    Attributes:
        num_frames: frames found in the file (packets with data; corrected downwards if
            decoding ends early).
        header_frames: frame count written in the container (0 when it has none).
        expected_frames: frame count stored in the container, else ``None``.
        covered_seconds: time from the first frame to the end of the last (``truncation``
            compares it with the container's duration when no count is stored).
        index_error: FFmpeg's message if reading the packets stopped on an error.
        decode_errors: packets the decoder rejected so far (skipped).
    """

    def __init__(self, path: str, *, threads: int = 1, seek_gap: int = 16):
        import av

        self.path = os.fspath(path)
        self.seek_gap = max(1, int(seek_gap))
        self._av = av
        self._container = None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise DataError(f"{self.path}: video file not found", "missing") from None
        except OSError as exc:  # a path too long, a loop of links, no permission
            raise DataError(f"{self.path}: cannot open ({exc.strerror}); fix the path or its "
                            "permissions") from None
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{self.path}: not a regular file (a named pipe, socket or device); "
                            "videos must be plain files")
        size = info.st_size
        if size == 0:
            raise DataError(f"{self.path}: empty file (0 bytes); re-download or re-encode it")
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
            if not self._container.streams.video:
                raise DataError(f"{self.path}: the file has no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = max(1, int(threads))
            # Frame threading decodes several frames at once: only worth it with threads.
            self._stream.thread_type = "AUTO" if threads > 1 else "SLICE"
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.fps = float(rate) if rate else None
            self.header_frames = int(self._stream.frames or 0)
            self.expected_frames = self._expected_frames()
            self._index()
        except DataError:
            self.close()
            raise
        except PermissionError:
            self.close()
            raise DataError(f"{self.path}: permission denied") from None
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            self.close()
            raise DataError(f"{self.path}: cannot open the video ({exc}); the file is truncated, "
                            "not a video, or its header is corrupt") from None

    def _expected_frames(self) -> int | None:
        # Only a count the container stores: duration x average rate is no frame count for a
        # variable-frame-rate video (an intact one would look truncated).
        return self.header_frames or None

    def _claimed_seconds(self) -> float | None:
        s = self._stream
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        if self._container.duration:
            return self._container.duration / 1_000_000
        return None

    def _covered_seconds(self, pts: list) -> float | None:
        """Time from the first frame to the end of the last (its duration guessed from the
        gap before it), or ``None`` without usable time stamps."""
        known = sorted(p for p in pts if p is not None)
        if len(known) < 2 or not self._stream.time_base:
            return None
        return float((known[-1] - known[0] + (known[-1] - known[-2])) * self._stream.time_base)

    def _index(self) -> None:
        """Read every packet once (no decoding): frame ``i`` has time stamp ``self._pts[i]``,
        keyframes are at the indices ``self._keys``."""
        pts, keys = [], []
        self.index_error = None
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:  # the last packet is an empty flush packet
                    pts.append(packet.pts)
                    keys.append(packet.is_keyframe)
        except self._av.FFmpegError as exc:
            self.index_error = str(exc)  # keep what was read: the first frames are usable
        if not pts:
            why = f" ({self.index_error})" if self.index_error else ""
            raise DataError(f"{self.path}: the video stream has no frames{why}; the file is truncated "
                            "or corrupt, re-download or re-encode it", "truncated")
        self.num_frames = len(pts)
        self.covered_seconds = self._covered_seconds(pts)
        self.decode_errors = 0
        self._pts, self._index_of, self._keys = None, {}, [0]
        if None not in pts and len(set(pts)) == len(pts):
            self._pts = sorted(pts)
            self._index_of = {p: i for i, p in enumerate(self._pts)}
            self._keys = sorted(self._index_of[p] for p, k in zip(pts, keys) if k) or [0]

    @property
    def truncation(self) -> str | None:
        """Why the file looks truncated (fewer frames than the container claims), else ``None``."""
        why = f" ({self.index_error})" if self.index_error else ""
        claimed = self.expected_frames
        if claimed and _too_short(self.num_frames, claimed):
            return f"truncated: the container claims {claimed} frames but holds {self.num_frames}{why}"
        seconds, covered = self._claimed_seconds(), self.covered_seconds
        if not claimed and seconds and covered is not None and seconds - covered > max(0.1, seconds / 20):
            # Without a stored count (webm, avi), compare times: the same test for any frame rate.
            return (f"truncated: the container claims {seconds:.2f} s but its {self.num_frames} frames end "
                    f"at {covered:.2f} s{why}")
        return None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _decode(self, start_pts: int | None):
        """Seek to the keyframe at or before ``start_pts`` (``None``: the start of the file)
        and yield decoded ``av.VideoFrame`` objects.

        A packet the decoder rejects is skipped, as FFmpeg's own tools do (its frame is then
        missing and the next frame stands in); more than ``max(2, 5%)`` such packets, or an
        error reading the file, is a DataError.
        """
        if self._container is None:
            raise DataError(f"{self.path}: the reader is closed")
        av = self._av
        try:
            if start_pts is None:
                self._container.seek(0, backward=True)  # in av.time_base units
            else:
                self._container.seek(start_pts, stream=self._stream, backward=True)
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:
                    self.decode_errors += 1
                    if _too_short(self.num_frames - self.decode_errors, self.num_frames):
                        raise DataError(f"{self.path}: {self.decode_errors} packets could not be "
                                        f"decoded (last: {exc}); the file is corrupt, re-encode or "
                                        "re-download it") from None
                    continue
                yield from frames
        except av.FFmpegError as exc:
            raise DataError(f"{self.path}: reading failed ({exc}); the file is corrupt, re-encode "
                            "or re-download it") from None

    def iter_frames(self):
        """Every frame from the start, in order, as ``(H, W, 3)`` uint8 RGB arrays."""
        for frame in self._decode(None):
            yield frame.to_ndarray(format="rgb24")

    def read(self, indices: Sequence[int]) -> Tensor:
        idx = self._check_indices(indices)
        wanted = sorted(set(idx))
        frames: dict[int, np.ndarray] = {}
        end = self._read_by_pts(wanted, frames) if self._pts is not None else None
        if end is None:  # no usable time stamps, or a seek that missed: count from the start
            frames.clear()
            end = self._read_counting(wanted, frames)
        missing = [i for i in wanted if i not in frames]
        if missing:
            self._fill_tail(missing, frames, end)
        return self._stack(frames, idx)

    def _read_by_pts(self, wanted: list[int], frames: dict[int, np.ndarray]) -> int | None:
        """Decode the ``wanted`` frames by time stamp, seeking over long gaps.

        Returns the number of frames before the end of the stream when decoding reached it
        (else ``num_frames``), or ``None`` when a seek landed after its target or decoded time
        stamps do not match the packets (the caller then decodes from the start).
        """
        last = None  # index of the last frame decoded since the last seek
        decoded = iter(())
        for target in wanted:
            if target in frames:
                continue
            key = self._keys[bisect.bisect_right(self._keys, target) - 1]
            if last is None or key - last >= self.seek_gap:
                decoded, last = self._decode(self._pts[key]), None
            reached_end = True
            for frame in decoded:
                i = self._index_of.get(frame.pts)
                if i is None or (last is None and i > target):
                    return None
                # Frames that never come out of the decoder take the next one that does.
                _keep(frame, wanted, frames, i if last is None else last + 1, i)
                last = i
                if i >= target:
                    reached_end = False
                    break
            if reached_end:
                return 0 if last is None else last + 1
        return self.num_frames

    def _read_counting(self, wanted: list[int], frames: dict[int, np.ndarray]) -> int:
        """Decode from the start, numbering frames in decoding order; returns the frames seen."""
        i = -1
        for i, frame in enumerate(self._decode(None)):
            _keep(frame, wanted, frames, i, i)
            if i >= wanted[-1]:
                return self.num_frames
        return i + 1

    def _fill_tail(self, missing: list[int], frames: dict[int, np.ndarray], end: int) -> None:
        """Decoding stopped after ``end`` frames: accept a short tail or report truncation."""
        if end <= 0:
            raise DataError(f"{self.path}: no frame could be decoded; the file is corrupt, "
                            "re-encode or re-download it")
        if missing[0] < end or _too_short(end, self.num_frames):
            raise DataError(
                f"{self.path}: truncated: the file indexes {self.num_frames} frames but decoding "
                f"stops after {end}; re-download or re-encode it, or drop it from the list "
                f"(`motionsqueeze check-data` finds all such files)", "truncated"
            )
        # A header count a frame or two too high: the last frame stands in for the rest.
        self.num_frames = end
        last = frames.get(end - 1)
        if last is None:
            last = self.read([end - 1])[0].numpy()
        for i in missing:
            frames[i] = last


def _too_short(found: int, claimed: int) -> bool:
    """More frames missing than an imprecise header explains: ``max(2, 5%)``."""
    return claimed - found > max(2, claimed // 20)


def _keep(frame, wanted: list[int], frames: dict[int, np.ndarray], lo: int, hi: int) -> None:
    """Store the RGB of ``frame`` for every wanted index in ``lo..hi`` not stored yet."""
    a, b = bisect.bisect_left(wanted, lo), bisect.bisect_right(wanted, hi)
    todo = [j for j in wanted[a:b] if j not in frames]
    if todo:
        rgb = frame.to_ndarray(format="rgb24")
        for j in todo:
            frames[j] = rgb


def open_clip_source(path: str | os.PathLike, *, template: str = "{:05d}.jpg", start_index: int = 1,
                     num_frames: int | None = None, threads: int = 1) -> ClipReader:
    """Open a frame folder (a directory) or a video file (anything else) for reading.

    Args:
        path: folder of frames or video file.
        template, start_index: frame file names (folders only): frame ``i`` (0-based) is
            ``template.format(start_index + i)``.
        num_frames: frame count from the list (folders only; skips listing the folder).
        threads: FFmpeg decoding threads (videos only).

    Raises:
        DataError: the path does not exist or cannot be read as frames.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return FrameFolderReader(path, template, start_index, num_frames)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder", "missing")
    return VideoReader(path, threads=threads)
