"""CPU speed of the motion path: the displacement op and TSN / TSM / MSNet end to end.

Two tables, every number a median over interleaved rounds in one process (in each round
every variant of a row runs once, in turn), ratios taken round by round, so that the ratios
hold on a loaded machine even when the times do not:

* ``displacement`` at P = 15, float32: forward (no autograd) and forward + backward of the
  ``"reference"`` and ``"cpu"`` backends, their speed-up and the largest deviation of the
  output and of the input gradients;
* whole models, float32, contiguous (channels-last with ``--channels-last``): a training
  step (forward, cross-entropy, backward, SGD update with the engine's optimiser) and single-clip inference (eval, no gradients) of
  tsn / tsm / msnet, msnet forced to the reference backend, and msnet with no matching (the
  displacement replaced by a zero map, see below); then FLOPs MSNet / TSM and the time ratios
  MSNet / TSM and TSM / TSN.

"msnet, no matching" is the floor that no faster displacement can go below: the model is
MSNet's, but the matching returns a zero map (``common.without_matching``: one addition and
one multiplication, still on the autograd graph, so that the training step's backward runs
through the channel reduction as well), so its time is TSM's plus MotionSqueeze's own layers
(the 1x1 reduction and the four depthwise-separable blocks of the feature transformation,
with their BatchNorms and ReLUs, and the residual addition). Its ratio to TSM is the lowest
MSNet / TSM any implementation of the displacement can reach with these layers run by
PyTorch's own kernels.

Usage (nothing is asserted)::

    python benchmarks/cpu.py                        # the issue's grid, 2 threads, 7 rounds
    python benchmarks/cpu.py --families tiny --rounds 3 --shapes 14x64x16x16   # quick look
    python benchmarks/cpu.py --shapes "" --families r50 --train-families r50   # r50 steps too
    python benchmarks/cpu.py --profile --families tiny,r18 --threads 1         # where MSNet's time goes
    python benchmarks/cpu.py --shapes "" --families tiny --channels-last       # the demo's layout

Families: ``tiny`` (16 clips x 8 frames x 64x64 per training step), ``r18`` and ``r50``
(2 clips x 8 frames x 224x224); inference is one clip of the same frames and size. By
default the training step is timed for tiny and r18 only, and msnet with the reference op
for tiny only (``--train-families``, ``--reference-op-families``), so that the default grid
stays within a few minutes on 2 idle cores.

Times are wall clock with ``--threads`` intra-op threads. On a machine shared with other
processes, a parallel region of every operator waits for its slowest thread, and a thread
that lost its core stalls it: a run with 2 threads on 2 busy cores can be 10-100x slower
than on idle ones (tiny inference: ~3 ms idle, 80-400 ms measured under load). Read times
only from an idle machine; ratios of one round hold up better, and ``--threads 1 --clock
thread`` (CPU time of the one thread) leaves out the waits for a core altogether.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import environment, fmt, interleaved, median_ratio, print_table, without_matching

FAMILIES = {"tiny": (64, 16), "r18": (224, 2), "r50": (224, 2)}  # frame size, training clips


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="14x64x16x16,7x64x28x28,56x64x28x28,7x64x56x56",
                   help="comma-separated NxCxHxW of the feature maps for the op table ('' skips it)")
    p.add_argument("--patch-size", type=int, default=15, help="P, the window is P x P cells")
    p.add_argument("--families", default="tiny,r18,r50",
                   help="comma-separated model families for the model table ('' skips it)")
    p.add_argument("--works", default="train,infer", help="train and/or infer")
    p.add_argument("--train-families", default="tiny,r18",
                   help="families whose training step is timed when --works has train (an r50 step "
                        "of 2 clips takes ~15 s on 2 cores: 'tiny,r18,r50' adds ~6 minutes)")
    p.add_argument("--reference-op-families", default="tiny",
                   help="families also timed as msnet with the reference op (the last column)")
    p.add_argument("--floor-families", default="tiny,r18,r50",
                   help="families also timed as msnet with no matching (the floor, see above; '' skips it)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--classes", type=int, default=174, help="classifier outputs")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds, medians are printed")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--profile", action="store_true",
                   help="instead of the tables, profile single-clip inference of tsm and msnet per family "
                        "(torch.profiler, self CPU time per operator, the largest differences first)")
    p.add_argument("--channels-last", action="store_true",
                   help="models and clips in the channels-last memory format (as the demo's recipe trains "
                        "on the CPU, train.channels_last) instead of contiguous")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="wall clock, or the CPU time of the calling thread ('thread', needs --threads 1): "
                        "on a busy machine the latter leaves out the waits for a core")
    args = p.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        p.error("--clock thread measures one thread's CPU time: use it with --threads 1")
    unknown = sorted(set(args.works.split(",")) - {"train", "infer"})
    if unknown:
        p.error(f"--works takes train and/or infer, got {','.join(unknown)}")
    return args


def _clock(args):
    return time.thread_time if args.clock == "thread" else time.perf_counter


def _unit(args) -> str:
    return "ms" if args.clock == "wall" else "ms of CPU time of the one thread"


def bench_ops(args) -> None:
    import torch

    from motionsqueeze.ops import displacement

    rows = []
    for spec in args.shapes.split(","):
        n, c, h, w = (int(v) for v in spec.split("x"))
        g = torch.Generator().manual_seed(0)
        f1, f2 = (torch.randn(n, c, h, w, generator=g) for _ in range(2))
        grad = torch.randn(n, 3, h, w, generator=g)

        def forward(backend):
            with torch.no_grad():
                return displacement(f1, f2, args.patch_size, backend=backend)

        def forward_backward(backend):
            a, b = f1.clone().requires_grad_(), f2.clone().requires_grad_()
            out = displacement(a, b, args.patch_size, backend=backend)
            return (out, *torch.autograd.grad(out, (a, b), grad))

        ref, cpu = forward_backward("reference"), forward_backward("cpu")
        out_err = (ref[0] - cpu[0]).abs().max().item()
        grad_err = max((x - y).abs().max().item() for x, y in zip(ref[1:], cpu[1:]))
        t = interleaved({
            "ref f": lambda: forward("reference"), "cpu f": lambda: forward("cpu"),
            "ref fb": lambda: forward_backward("reference"), "cpu fb": lambda: forward_backward("cpu"),
        }, args.rounds, args.warmup, _clock(args))
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append([spec, fmt(med["ref f"], 1), fmt(med["cpu f"], 1),
                     fmt(median_ratio(t["ref f"], t["cpu f"]), 2), fmt(med["ref fb"], 1), fmt(med["cpu fb"], 1),
                     fmt(median_ratio(t["ref fb"], t["cpu fb"]), 2), f"{out_err:.1e}", f"{grad_err:.1e}"])
    print(f"\ndisplacement, P = {args.patch_size}, float32, {args.threads} threads, medians of {args.rounds} "
          f"interleaved rounds ({_unit(args)}): {environment('cpu')}")
    print_table(["N x C x H x W", "reference fwd", "cpu fwd", "speed-up", "reference fwd+bwd", "cpu fwd+bwd",
                 "speed-up", "max |out diff|", "max |grad diff|"], rows)


def _variants(family, args):
    """name -> (model name, create_model overrides); the key ``no_matching`` is not a model
    option but asks :func:`_job` for the floor (see the module docstring)."""
    variants = {"tsn": (f"tsn_{family}", {}), "tsm": (f"tsm_{family}", {}), "msnet": (f"msnet_{family}", {})}
    if family in args.reference_op_families.split(","):
        variants["msnet ref"] = (f"msnet_{family}", {"backend": "reference"})
    if family in args.floor_families.split(","):
        variants["msnet floor"] = (f"msnet_{family}", {"no_matching": True})
    return variants


def _flops_ratio(family, args, size):
    import torch

    from motionsqueeze import create_model
    from motionsqueeze.models.complexity import measure_complexity

    flops = {}
    for arch in ("tsm", "msnet"):
        with torch.device("meta"):
            model = create_model(f"{arch}_{family}", num_classes=args.classes, num_segments=args.frames)
        flops[arch] = measure_complexity(model, frames=args.frames, size=size).gflops
    return flops["msnet"] / flops["tsm"]


def _job(work, name, overrides, args, size, clips):
    """A callable running one training step or one inference of a fresh model."""
    import torch
    import torch.nn.functional as F

    from motionsqueeze import create_model
    from motionsqueeze.engine.config import OptimConfig
    from motionsqueeze.engine.optim import build_optimizer

    overrides = dict(overrides)
    floor = overrides.pop("no_matching", False)
    torch.manual_seed(0)
    model = create_model(name, num_classes=args.classes, num_segments=args.frames, **overrides)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=layout)

    def frames(n):  # (n, T, 3, H, W), each frame in the layout
        x = torch.randn(n * args.frames, 3, size, size).contiguous(memory_format=layout)
        return x.view(n, args.frames, 3, size, size)

    if work == "infer":
        model.eval()
        clip = frames(1)

        def infer():
            with torch.no_grad():
                model(clip)

        return without_matching(infer) if floor else infer
    model.train()
    optimizer = build_optimizer(model, OptimConfig(), 0.01)
    x = frames(clips)
    labels = torch.randint(0, args.classes, (clips,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()

    return without_matching(step) if floor else step


def bench_models(args) -> None:
    rows = []
    for family in args.families.split(","):
        size, clips = FAMILIES[family]
        flops = _flops_ratio(family, args, size)
        for work in args.works.split(","):
            if work == "train" and family not in args.train_families.split(","):
                continue
            jobs = {k: _job(work, name, over, args, size, clips) for k, (name, over) in _variants(family, args).items()}
            t = interleaved(jobs, args.rounds, args.warmup, _clock(args))
            med = {k: statistics.median(v) for k, v in t.items()}
            what = f"{clips if work == 'train' else 1} x {args.frames} x {size}x{size}"
            ref, floor = (median_ratio(t[k], t["tsm"]) if k in t else None for k in ("msnet ref", "msnet floor"))
            rows.append([family, "training step" if work == "train" else "inference", what,
                         *(fmt(med.get(k), 1) for k in ("tsn", "tsm", "msnet", "msnet ref", "msnet floor")),
                         fmt(flops, 3), fmt(median_ratio(t["msnet"], t["tsm"]), 3),
                         fmt(median_ratio(t["tsm"], t["tsn"]), 3), fmt(ref, 3), fmt(floor, 3)])
            del jobs
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"\nwhole models, float32, {layout}, {args.threads} threads, medians of {args.rounds} interleaved "
          f"rounds ({_unit(args)}): {environment('cpu')}")
    print_table(["family", "work", "clips x frames x size", "tsn", "tsm", "msnet", "msnet (reference op)",
                 "msnet, no matching", "FLOPs MSNet/TSM", "MSNet/TSM", "TSM/TSN", "MSNet (reference op)/TSM",
                 "floor: no matching/TSM"], rows)


def profile_models(args) -> None:
    """Self CPU time per operator of tsm and msnet inference: what MotionSqueeze adds."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for family in args.families.split(","):
        size, _ = FAMILIES[family]
        jobs = {arch: _job("infer", f"{arch}_{family}", {}, args, size, 1) for arch in ("tsm", "msnet")}
        for _ in range(max(args.warmup, 1)):
            for infer in jobs.values():
                infer()
        # One profile per run, the two models in turn (interleaved); the median per operator
        # shrugs off a run stalled by other processes.
        runs = {arch: [] for arch in jobs}
        for _ in range(args.rounds):
            for arch, infer in jobs.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    infer()
                runs[arch].append({e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()})
        per_op = {}
        for arch, profiles in runs.items():
            for op in set().union(*profiles):
                per_op.setdefault(op, {})[arch] = statistics.median(r.get(op, 0.0) for r in profiles)
        total = {arch: sum(v.get(arch, 0.0) for v in per_op.values()) for arch in ("tsm", "msnet")}
        diff = sorted(per_op.items(), key=lambda kv: -abs(kv[1].get("msnet", 0.0) - kv[1].get("tsm", 0.0)))
        rows = [[op, fmt(v.get("tsm"), 2), fmt(v.get("msnet"), 2),
                 fmt(v.get("msnet", 0.0) - v.get("tsm", 0.0), 2)] for op, v in diff[:15]]
        rows.append(["(all operators)", fmt(total["tsm"], 2), fmt(total["msnet"], 2),
                     fmt(total["msnet"] - total["tsm"], 2)])
        print(f"\n{family}, single-clip inference (1 x {args.frames} x {size}x{size}), self CPU ms per clip, "
              f"{args.threads} threads, medians of {args.rounds} runs: {environment('cpu')}")
        print_table(["operator", "tsm", "msnet", "msnet - tsm"], rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.profile:
        profile_models(args)
        return 0
    if args.shapes:
        bench_ops(args)
    if args.families:
        bench_models(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
