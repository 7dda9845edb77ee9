"""Whole-model speed: training steps and single-clip inference of TSM vs MSNet.

Training step = forward, cross-entropy, backward, gradient clipping and the SGD update with
the recipes' parameter groups (the engine's own optimiser), on random clips already on the
device (data loading is measured by ``benchmarks/data_loading.py``). Inference = one clip,
eval mode, no gradients. Times are medians (CUDA events on a GPU, wall clock on the CPU);
peak memory is the CUDA allocator's peak during a step. The last table gives MSNet's time
over TSM's for every setting measured for both.

Usage (nothing is asserted; the tables are printed at the end)::

    python benchmarks/throughput.py                          # CUDA: the full grid below
    python benchmarks/throughput.py --frames 8 --precisions bf16 --modes compile
    python benchmarks/throughput.py --device cpu --models tsm_tiny,msnet_tiny --size 64 \\
        --frames 8 --batch 4 --modes eager                   # CPU smoke run

Grid by default: tsm_r50 and msnet_r50; 8 and 16 frames; fp32 and bf16 autocast; eager and
torch.compile; contiguous and channels-last; 8 clips of 224x224 per training step.
"""

from __future__ import annotations

import argparse
import sys

from common import Timer, environment, fmt, print_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    p.add_argument("--models", default="tsm_r50,msnet_r50", help="comma-separated registered models")
    p.add_argument("--frames", default="8,16", help="comma-separated frames per clip")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    p.add_argument("--modes", default="eager,compile", help="eager and/or compile (torch.compile)")
    p.add_argument("--memory-formats", default="contiguous,channels_last",
                   help="contiguous and/or channels_last")
    p.add_argument("--batch", type=int, default=8, help="clips per training step")
    p.add_argument("--size", type=int, default=224, help="frame height and width")
    p.add_argument("--classes", type=int, default=174, help="classifier outputs")
    p.add_argument("--backend", default="auto", help="MotionSqueeze displacement backend")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs (default 5 CUDA, 1 CPU)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs (default 20 CUDA, 3 CPU)")
    p.add_argument("--no-train", action="store_true", help="skip the training steps")
    p.add_argument("--no-inference", action="store_true", help="skip single-clip inference")
    p.add_argument("--profile", action="store_true",
                   help="also print the 25 costliest operators of 3 training steps of each model "
                        "(torch.profiler, first precision/mode/format given)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also time inference replayed from a captured CUDA graph")
    return p.parse_args(argv)


def _build(name, frames, args, device, channels_last):
    import torch

    from motionsqueeze import create_model

    torch.manual_seed(0)
    overrides = {"backend": args.backend} if name.startswith("msnet") else {}
    model = create_model(name, num_classes=args.classes, num_segments=frames, **overrides).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _clips(n, frames, args, device, channels_last):
    import torch

    x = torch.randn(n, frames, 3, args.size, args.size, device=device)
    if channels_last:  # each frame channels-last, as the engine lays out its batches
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(x.shape)
    return x


def _peak_gib(device, fn):
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def _training_step(args, device, setting):
    """A training step of one setting as a callable: forward, cross-entropy, backward, gradient
    clipping and the SGD update with the recipes' parameter groups."""
    import torch
    import torch.nn.functional as F

    from motionsqueeze.engine.config import OptimConfig
    from motionsqueeze.engine.optim import build_optimizer
    from motionsqueeze.engine.step import autocast_context

    name, frames, precision, mode, layout = setting
    channels_last = layout == "channels_last"
    model = _build(name, frames, args, device, channels_last).train()
    optim_cfg = OptimConfig()
    optimizer = build_optimizer(model, optim_cfg, 0.01)
    clips = _clips(args.batch, frames, args, device, channels_last)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    net = torch.compile(model) if mode == "compile" else model
    amp = "bf16" if precision == "bf16" else "none"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(amp, torch.device(device)):
            loss = F.cross_entropy(net(clips).float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim_cfg.clip_grad_norm)
        optimizer.step()

    return step


def bench_training(args, device, timer, settings):
    import torch

    rows, times = [], {}
    for setting in settings:
        step = _training_step(args, device, setting)
        ms = timer(step)
        peak = _peak_gib(device, step)
        times[setting] = ms
        rows.append([*setting, fmt(ms, 1), fmt(args.batch / ms * 1e3, 1), fmt(peak, 2)])
        del step
        torch._dynamo.reset()
    print(f"\ntraining step, {args.batch} clips of {args.size}x{args.size}: {environment(device)}")
    print_table(["model", "frames", "precision", "mode", "memory format", "step ms", "clips/s", "peak GiB"], rows)
    return times


def bench_inference(args, device, timer, settings):
    import torch

    from motionsqueeze.engine.step import autocast_context

    rows, times = [], {}
    modes = sorted({s[3] for s in settings}) + (["cuda-graph"] if args.cuda_graphs and device == "cuda" else [])
    for name, frames, precision, _, layout in sorted({(*s[:3], None, s[4]) for s in settings}):
        for mode in modes:
            channels_last = layout == "channels_last"
            model = _build(name, frames, args, device, channels_last).eval()
            clip = _clips(1, frames, args, device, channels_last)
            net = torch.compile(model) if mode == "compile" else model
            amp = "bf16" if precision == "bf16" else "none"

            def infer():
                with torch.no_grad(), autocast_context(amp, torch.device(device)):
                    return net(clip)

            if mode == "cuda-graph":
                for _ in range(3):  # lazy initialisation must happen before capture
                    infer()
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    infer()
                fn = graph.replay
            else:
                fn = infer
            ms = timer(fn)
            times[(name, frames, precision, mode, layout)] = ms
            rows.append([name, frames, precision, mode, layout, fmt(ms, 2)])
            del net, model
            torch._dynamo.reset()
    print(f"\nsingle-clip inference, 1 clip of {args.size}x{args.size}: {environment(device)}")
    print_table(["model", "frames", "precision", "mode", "memory format", "latency ms"], rows)
    return times


def profile_training(args, device, settings):
    """The operators that take a training step's time, per model (its first setting)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    seen = set()
    for setting in settings:
        if setting[0] in seen:
            continue
        seen.add(setting[0])
        step = _training_step(args, device, setting)
        for _ in range(3):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
        key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
        name, frames, precision, mode, layout = setting
        print(f"\nprofile, 3 training steps of {name} ({frames} frames, {precision}, {mode}, {layout}):")
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70))
        del step
        torch._dynamo.reset()


def print_ratios(title, times):
    rows = []
    for (name, *rest), ms in sorted(times.items(), key=lambda kv: [str(v) for v in kv[0]]):
        if not name.startswith("msnet"):
            continue
        base = times.get((name.replace("msnet", "tsm", 1), *rest))
        if base:
            rows.append([name, *rest, fmt(ms / base, 3)])
    if rows:
        print(f"\n{title}: MSNet time / TSM time in the same setting")
        print_table(["model", "frames", "precision", "mode", "memory format", "ratio"], rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    import itertools

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = device == "cpu"
    timer = Timer(device, args.warmup if args.warmup is not None else (1 if cpu else 5),
                  args.repeat if args.repeat is not None else (3 if cpu else 20))
    settings = list(itertools.product(
        args.models.split(","), [int(f) for f in args.frames.split(",")], args.precisions.split(","),
        args.modes.split(","), args.memory_formats.split(",")))
    train = {} if args.no_train else bench_training(args, device, timer, settings)
    infer = {} if args.no_inference else bench_inference(args, device, timer, settings)
    print_ratios("training step", train)
    print_ratios("inference", infer)
    if args.profile:
        profile_training(args, device, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
