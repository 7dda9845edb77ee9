"""Data-loading throughput: training clips per second for frame folders and videos.

Builds a small synthetic dataset in a temporary folder (or ``--dir``), then times

1. the reader alone: open a video and decode the 8 frames of a TSN clip, with seeking (the
   default) and without (decoding forward from the first frame);
2. the whole training item (decode + multi-scale crop + flip, uint8) through a
   ``DataLoader`` with 0, 1 and 2 workers, for JPEG frame folders (240x320, the
   Something-Something recipe size), H.264 mp4 (340x256, Kinetics style, keyframe every 2 s)
   and VP9 webm (320x240, Something-Something V2 style).

Prints tables; nothing is asserted. Usage::

    python benchmarks/data_loading.py [--videos 8] [--clips 96] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from motionsqueeze.data import DataConfig, build_dataset, collate_clips
from motionsqueeze.data.readers import VideoReader
from motionsqueeze.data.sampling import ClipSampler


def _frames(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Textured frames with motion, so that JPEG and video sizes are realistic."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height // 8 + 3, width // 8 + 3, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        dy, dx = (k * 2) % 16, (k * 3) % 16
        out[k] = texture[dy:dy + height, dx:dx + width]
    return out


def _encode(path: str, frames: np.ndarray, codec: str, fps: int, gop: int) -> None:
    import av

    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"g": str(gop), "preset": "veryfast"} if codec == "libx264" else \
            {"g": str(gop), "deadline": "realtime", "cpu-used": "8"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def build(folder: str, videos: int) -> dict[str, DataConfig]:
    from PIL import Image

    lists = {"frames": [], "mp4": [], "webm": []}
    for v in range(videos):
        clip = _frames(48, 240, 320, v)
        d = os.path.join(folder, "frames", f"v{v}")
        os.makedirs(d, exist_ok=True)
        for k, f in enumerate(clip):
            Image.fromarray(f).save(os.path.join(d, f"{k + 1:05d}.jpg"), quality=90)
        lists["frames"].append(f"v{v} 48 0")
        os.makedirs(os.path.join(folder, "mp4"), exist_ok=True)
        _encode(os.path.join(folder, "mp4", f"v{v}.mp4"), _frames(250, 256, 340, v), "libx264", 25, 50)
        lists["mp4"].append(f"v{v}.mp4 0")
        os.makedirs(os.path.join(folder, "webm"), exist_ok=True)
        _encode(os.path.join(folder, "webm", f"v{v}.webm"), _frames(48, 240, 320, v), "libvpx-vp9", 12, 48)
        lists["webm"].append(f"v{v}.webm 0")
    configs = {}
    for name, lines in lists.items():
        path = os.path.join(folder, f"{name}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        configs[name] = DataConfig(root=os.path.join(folder, name), train_list=path, num_classes=1,
                                   format="frames" if name == "frames" else "video",
                                   resize=[240, 320] if name != "mp4" else 256)
    return configs


def time_reader(folder: str, videos: int, repeats: int = 3) -> None:
    sampler = ClipSampler(8)
    print("\nreader only: open + decode the 8 frames of a TSN training clip (ms per clip)")
    print("| video | frames | keyframe every | seek (default) | decode forward only |")
    print("|---|---|---|---|---|")
    for name, gop in (("mp4", 50), ("webm", 48)):
        paths = [os.path.join(folder, name, f"v{v}.{name}") for v in range(videos)]
        totals = {16: 0.0, 10**9: 0.0}
        for r_ in range(repeats + 1):  # round 0 warms the file cache and is not counted
            for p in paths:
                torch.manual_seed(r_)
                indices = sampler.train(250 if name == "mp4" else 48)
                for seek_gap in totals:  # alternate, so that both see the same load
                    t0 = time.perf_counter()
                    with VideoReader(p, seek_gap=seek_gap) as r:
                        r.read(indices)
                    totals[seek_gap] += (time.perf_counter() - t0) * (r_ > 0)
        row = [1000 * t / (repeats * len(paths)) for t in totals.values()]
        with VideoReader(paths[0]) as r:
            n = r.num_frames
        print(f"| {name} | {n} | {gop} | {row[0]:.1f} | {row[1]:.1f} |")


def time_loader(cfg: DataConfig, workers: int, clips: int) -> float:
    ds = build_dataset(cfg, "train")
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers, collate_fn=collate_clips,
                        persistent_workers=workers > 0)
    seen, t0 = 0, None
    while seen < clips + 8:
        for batch in loader:
            if t0 is None:  # the first batch pays for worker start-up
                t0 = time.perf_counter()
            else:
                seen += batch["clip"].shape[0]
            if seen >= clips:
                break
        if seen >= clips:
            break
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8, help="videos per source (default 8)")
    p.add_argument("--clips", type=int, default=96, help="clips timed per setting (default 96)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dir", default=None, help="build the data here instead of a temporary folder")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        t0 = time.perf_counter()
        configs = build(folder, args.videos)
        print(f"built {args.videos} videos per source in {time.perf_counter() - t0:.1f} s; "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs")
        time_reader(folder, args.videos)
        print("\ntraining items (8 frames, multi-scale crop to 224, flip; uint8), DataLoader batch 8")
        print("| source | decoded frame size | workers | clips/s | clips/s per worker |")
        print("|---|---|---|---|---|")
        sizes = {"frames": "240x320 JPEG", "mp4": "256x340 H.264", "webm": "240x320 VP9"}
        for name, cfg in configs.items():
            for w in args.workers:
                rate = time_loader(cfg, w, args.clips)
                print(f"| {name} | {sizes[name]} | {w} | {rate:.1f} | {rate / max(1, w):.1f} |")


if __name__ == "__main__":
    main()
