"""Single-clip CPU inference of TSM and MSNet on MobileNetV2, ResNet-18 and ResNet-50.

One clip of T frames (8x224x224 by default), eval mode, no gradients, fp32, on the CPU with
a fixed number of torch threads (2 by default, the CI machine). Rounds are interleaved: each
round times every model once, in the same order, so that a change in machine load touches
all models alike; the table gives each model's median over the rounds and, for every
backbone, the median over rounds of that round's MSNet time over its TSM time.

Usage (nothing is asserted; the table is printed at the end)::

    python benchmarks/backbones.py                            # mbv2, r18, r50 at 8x224x224
    python benchmarks/backbones.py --backbones mbv2_050,mbv2 --rounds 5
    python benchmarks/backbones.py --size 64 --frames 2 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import cpu_name, environment, interleaved, median_ratio, print_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="mbv2,r18,r50",
                   help="comma-separated suffixes of registered tsm_* / msnet_* models (default mbv2,r18,r50)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--size", type=int, default=224, help="frame height and width in pixels (default 224)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds, each timing every model once (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per model before the rounds (default 1)")
    p.add_argument("--classes", type=int, default=174, help="classifier outputs (default 174)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from motionsqueeze import create_model, list_models

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    names = [f"{family}_{b}" for b in args.backbones.split(",") for family in ("tsm", "msnet")]
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise SystemExit(f"backbones.py: --backbones {args.backbones!r} names unregistered models {unknown}; "
                         f"registered TSM models: {', '.join(list_models('tsm_*'))}")
    torch.manual_seed(0)
    models = {n: create_model(n, num_classes=args.classes, num_segments=args.frames).eval() for n in names}
    clip = torch.randn(1, args.frames, 3, args.size, args.size)
    with torch.no_grad():
        times = interleaved({n: (lambda m=models[n]: m(clip)) for n in names}, args.rounds, args.warmup)
    median = {n: statistics.median(t) for n, t in times.items()}
    print(f"\nsingle-clip inference, 1 clip of {args.frames}x{args.size}x{args.size}, fp32, eval, "
          f"{args.threads} torch threads, median of {args.rounds} interleaved rounds")
    print(f"{cpu_name()} ({os.cpu_count()} cores), {environment('cpu')}\n")
    rows = []
    for b in args.backbones.split(","):
        tsm, ms = median[f"tsm_{b}"], median[f"msnet_{b}"]
        rows.append([b, f"{tsm:.1f}", f"{ms:.1f}", f"{median_ratio(times[f'msnet_{b}'], times[f'tsm_{b}']):.3f}"])
    print_table(["backbone", "TSM (ms)", "MSNet (ms)", "MSNet / TSM"], rows)
    print(f"\n{time.perf_counter() - started:.0f} s in all (model building, warm-up and rounds)")


if __name__ == "__main__":
    main()
