"""``motionsqueeze visualize VIDEO``: displacement and confidence of each neighbouring frame pair."""

from __future__ import annotations

import argparse


def add_parser(sub):
    p = sub.add_parser(
        "visualize",
        help="draw the displacement field and confidence between neighbouring frames (PNG grid, GIF or MP4)",
        description="For each neighbouring frame pair, draw the frame, the displacement field (optical-flow "
        "colour wheel, optional arrows) and the confidence map, with a legend giving the scale in pixels. "
        "With --checkpoint, the MotionSqueeze layers of a trained model; without, the same correlation and "
        "kernel-soft-argmax on fixed, parameter-free features (a block-matching flow estimator).",
    )
    p.add_argument("source", metavar="VIDEO_OR_FRAME_DIR", help="video file or folder of frames")
    p.add_argument("--checkpoint", default=None,
                   help="model file (.safetensors) or training checkpoint (.pt) of a model with MotionSqueeze")
    p.add_argument("--out", default=None,
                   help="output: .png grid, .gif or .mp4 animation (default ./<source name>_motion.png)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to use, T-1 pairs (default: the model's frames per clip, or 5)")
    p.add_argument("--size", type=int, default=None,
                   help="shorter side of the working frames in pixels (default: the model's input size, or 224)")
    p.add_argument("--step", type=int, default=None,
                   help="frames between the chosen frames (default: 1 without a checkpoint; with one, the "
                   "model's own sampling as evaluation does: segment centres, or its dense clip and stride)")
    p.add_argument("--start", type=int, default=None, help="first frame (0-based) with --step (default: centred)")
    p.add_argument("--arrows", action=argparse.BooleanOptionalAction, default=True,
                   help="draw arrows over the displacement colours (default on)")
    p.add_argument("--max-pixels", type=float, default=None,
                   help="displacement drawn fully saturated, in pixels (default: 99th percentile of the clip)")
    p.add_argument("--fps", type=float, default=2.0, help="pictures per second of a .gif or .mp4 (default 2)")
    p.add_argument("--layout", choices=("auto", "rows", "columns"), default="auto",
                   help="PNG grid: one row or one column per frame pair (default: whichever is closer to 3:2)")
    p.add_argument("--template", default="{:05d}.jpg", help="frame file names of a folder (default {:05d}.jpg)")
    p.add_argument("--start-index", type=int, default=1, help="number of a folder's first frame file (default 1)")
    est = p.add_argument_group("parameter-free estimator (without --checkpoint)")
    est.add_argument("--stride", type=int, default=None, help="pixels per cell (default 4)")
    est.add_argument("--patch-size", type=int, default=None, help="search window P x P cells, odd (default 15)")
    est.add_argument("--temperature", type=float, default=None, help="kernel-soft-argmax temperature (default 10)")
    return p


def run(args) -> int:
    import dataclasses
    from pathlib import Path

    import numpy as np

    from ..viz.estimator import BlockMatching
    from ..viz.fields import check_output_path, motion_fields

    out = check_output_path(args.out or f"{Path(args.source.rstrip('/')).stem}_motion.png")
    if not Path(args.source).exists():
        raise FileNotFoundError(f"{args.source}: no such video file or frame folder")
    changes = {k: v for k, v in (("stride", args.stride), ("patch_size", args.patch_size),
                                 ("temperature", args.temperature)) if v is not None}
    if changes and args.checkpoint:
        raise ValueError("--stride, --patch-size and --temperature set the parameter-free estimator; "
                         "with --checkpoint the model's own MotionSqueeze settings are used")
    estimator = dataclasses.replace(BlockMatching(), **changes)
    result = motion_fields(args.source, args.checkpoint, frames=args.frames, size=args.size, step=args.step,
                           start=args.start, estimator=estimator, template=args.template,
                           start_index=args.start_index)
    h, w = result.frames.shape[1:3]
    what = f"MotionSqueeze of {result.model}" if result.model else "parameter-free block matching"
    print(f"{result.source}: frames {result.indices} at {w}x{h} px (source {result.source_size[1]}x"
          f"{result.source_size[0]}), {what}")
    for name, f in result.fields.items():
        speed = np.hypot(f[:, 0], f[:, 1])
        print(f"  {name}: {f.shape[-1]}x{f.shape[-2]} cells of {result.strides[name]} px, reach +-"
              f"{result.reach[name]:.0f} px; displacement median {np.median(speed):.2f} px, 99th percentile "
              f"{np.percentile(speed, 99):.2f} px; confidence mean {f[:, 2].mean():.2f}")
    path = result.save(out, arrows=args.arrows, max_pixels=args.max_pixels, fps=args.fps,
                       orientation=None if args.layout == "auto" else args.layout)
    print(f"wrote {path}")
    return 0
