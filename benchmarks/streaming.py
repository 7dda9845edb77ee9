"""Streaming inference on the CPU: per-frame latency of the causal step vs whole-clip cost.

For tsm and msnet of each backbone (default: every registered one except ResNet-34/101),
built with ``causal=True``, in interleaved rounds so that load from other processes hits all models
alike:

* step: one frame through :class:`motionsqueeze.models.streaming.StreamingRecognizer`
  (the state carried from the previous frame), timed per frame over ``--frames-per-round``
  frames of a continuing stream;
* whole clip: one T-frame clip through the model's forward, divided by T (what re-running
  the window for every new frame would cost per frame is T times this).

Reported are medians over all timed frames / clips, frames per second = 1000 / median step
ms, and MSNet's step time over TSM's for the same backbone (medians, and the fastest frames,
which load from other processes inflates least). ``--module-path`` adds, for each MSNet, the
step as it ran before the streaming fast path (MotionSqueeze's modules and the clip
backend ``"cpu"``, ``MotionSqueeze.backend = "cpu"``), to compare the two in one run. ``--floor``
adds, for each MSNet, the step and the whole clip with no matching (``common.without_matching``:
the features are not normalised and the displacement is a zero map), so that what is left of MotionSqueeze is its own layers (the 1x1
reduction, the four depthwise-separable blocks, the residual addition); its ratio to TSM is
the lowest MSNet / TSM that any faster matching can reach. Next to the wall-clock times,
the process CPU time per frame: on a machine shared with other jobs the wall clock measures
the other jobs too (and with 2 threads, every operator waits until both of its threads get a
core), while the CPU time of a 1-thread run stays close to what the frame costs on an idle
core. Nothing is asserted.

``--profile K`` then runs one more stretch of ``--frames-per-round`` frames per model under
torch.profiler and prints, per model, the K operators with the most self CPU time per frame
and where a frame's time goes: operators inside ``MotionSqueeze.step``, the other operators
(backbone, classifier, the window of logits), and what is left of the step's wall time, the
Python of the step and its state handling. The profiler adds a few microseconds per
operator, so these times are above the timed ones; read them as shares.

Usage::

    python benchmarks/streaming.py                                   # 224x224, 2 threads
    python benchmarks/streaming.py --models tsm_tiny,msnet_tiny --size 64 --rounds 1   # smoke run
    python benchmarks/streaming.py --models tsm_tiny,msnet_tiny --threads 1 --profile 12  # where the time goes
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import cpu_name, environment, print_table, without_matching


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None,
                   help="comma-separated registered models, built causal (default: tsm_*/msnet_* but r34/r101)")
    p.add_argument("--size", type=int, default=224, help="frame height and width (default 224)")
    p.add_argument("--frames", type=int, default=8, help="T, frames per clip and score window (default 8)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--frames-per-round", type=int, default=8, help="timed stream frames per model and round")
    p.add_argument("--classes", type=int, default=174, help="classifier outputs (default 174)")
    p.add_argument("--module-path", action="store_true",
                   help="also time each MSNet's step through its modules and the clip displacement backend")
    p.add_argument("--floor", action="store_true",
                   help="also time each MSNet's step with no matching (a zero displacement): the floor of MSNet / TSM")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="also profile the step of each model and print its K costliest operators (default 0: off)")
    return p.parse_args(argv)


def step_arithmetic(streams: dict, frame) -> None:
    """Per model, what one step computes: FLOPs of the matrix products and convolutions
    (``torch.utils.flop_counter``, 2 per multiply-add), operator calls (views excluded) and
    bytes written by them, in all and inside ``MotionSqueeze.step``; then MSNet / TSM for each."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode

    from motionsqueeze.layers import MotionSqueeze

    class Writes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                self.calls += 1
                self.bytes += sum(t.numel() * t.element_size() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
            return out

    real_step = MotionSqueeze.step
    inside = {}

    def counted_step(self, *args, **kwargs):
        with FlopCounterMode(display=False) as flops, Writes() as writes:
            out = real_step(self, *args, **kwargs)
        inside["flops"] = inside.get("flops", 0) + flops.get_total_flops()
        inside["calls"] = inside.get("calls", 0) + writes.calls
        inside["bytes"] = inside.get("bytes", 0) + writes.bytes
        return out

    rows, totals = [], {}
    MotionSqueeze.step = counted_step
    try:
        for name, stream in streams.items():
            inside.clear()
            with torch.no_grad(), FlopCounterMode(display=False) as flops, Writes() as writes:
                stream.step(frame)
            t = (flops.get_total_flops(), writes.calls, writes.bytes)
            ms = (inside.get("flops", 0), inside.get("calls", 0), inside.get("bytes", 0))
            totals[name] = t
            rows.append([f"{name} causal", f"{t[0] / 1e9:.3f}", f"{ms[0] / 1e9:.3f}", f"{t[1]}", f"{ms[1]}",
                         f"{t[2] / 2**20:.1f}", f"{ms[2] / 2**20:.1f}"])
    finally:
        MotionSqueeze.step = real_step
    print("\nArithmetic of one step (FLOPs of convolutions and matrix products; operator calls and bytes written, views excluded)")
    print_table(["model", "GFLOP", "GFLOP in MotionSqueeze.step", "operators", "operators in MotionSqueeze.step",
                 "MiB written", "MiB written in MotionSqueeze.step"], rows)
    ratios = []
    for name in totals:
        tsm = name.split(" ")[0].replace("msnet_", "tsm_", 1)
        if name.startswith("msnet_") and tsm in totals:
            ratios.append([name.removeprefix("msnet_")] + [f"{m / t:.2f}" for m, t in zip(totals[name], totals[tsm])])
    if ratios:
        print("\nMSNet / TSM per step, if time followed each quantity alone")
        print_table(["backbone", "FLOPs", "operators", "bytes written"], ratios)


def profile_steps(streams: dict, frames, top: int) -> None:
    """Profile ``len(frames)`` steps of each stream; print the costliest operators per frame
    and the split of a frame's time (see the module docstring)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from motionsqueeze.layers import MotionSqueeze

    real_step = MotionSqueeze.step

    def marked_step(self, *args, **kwargs):
        with record_function("MotionSqueeze.step"):
            return real_step(self, *args, **kwargs)

    split = []
    MotionSqueeze.step = marked_step
    try:
        for name, stream in streams.items():
            n = len(frames)
            with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                for f in frames:
                    stream.step(f)
                wall = (time.perf_counter() - t0) * 1e3 / n
            events = prof.key_averages()
            ops = [e for e in events if e.key.startswith("aten::")]
            ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in ops) / 1e3 / n
            print(f"\n{name} causal: costliest operators (self CPU time per frame, profiled)")
            print_table(["operator", "calls / frame", "self ms / frame", "share of operators"],
                        [[e.key, f"{e.count / n:.0f}", f"{e.self_cpu_time_total / 1e3 / n:.3f}",
                          f"{100 * e.self_cpu_time_total / 1e3 / n / total:.1f}%"] for e in ops[:top]])
            ms = sum(e.cpu_time_total for e in events if e.key == "MotionSqueeze.step") / 1e3 / n
            ms_own = sum(e.self_cpu_time_total for e in events if e.key == "MotionSqueeze.step") / 1e3 / n
            calls = sum(e.count for e in ops) / n
            split.append([f"{name} causal", f"{wall:.2f}", f"{calls:.0f}", f"{total - (ms - ms_own):.2f}",
                          f"{ms - ms_own:.2f}", f"{wall - total - ms_own:.2f}", f"{ms_own:.2f}"])
    finally:
        MotionSqueeze.step = real_step
    print("\nWhere a profiled frame's time goes (ms per frame; the profiler's own cost is in every column)")
    print_table(["model", "step (wall)", "operators / frame", "operators outside MotionSqueeze",
                 "operators in MotionSqueeze.step", "Python and state handling outside MotionSqueeze",
                 "Python in MotionSqueeze.step"], split)



def _default_models():
    from motionsqueeze.models import list_models

    skip = ("_r34", "_r101", "_causal")
    return [n for n in list_models("tsm_*") + list_models("msnet_*") if not n.endswith(skip)]


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from motionsqueeze.layers import MotionSqueeze
    from motionsqueeze.models import create_model
    from motionsqueeze.models.streaming import StreamingRecognizer

    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else _default_models()
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(args.frames_per_round + 1, 3, args.size, args.size, generator=gen)
    clip = torch.randn(1, args.frames, 3, args.size, args.size, generator=gen)
    models, streams = {}, {}
    for name in list(names):
        torch.manual_seed(0)
        models[name] = create_model(name, num_classes=args.classes, num_segments=args.frames, causal=True).eval()
        streams[name] = StreamingRecognizer(models[name])
        if args.module_path and name.startswith("msnet_"):
            label = f"{name} (module path)"
            torch.manual_seed(0)
            models[label] = create_model(name, num_classes=args.classes, num_segments=args.frames, causal=True).eval()
            for m in models[label].modules():
                if isinstance(m, MotionSqueeze):
                    m.backend = "cpu"
            streams[label] = StreamingRecognizer(models[label])
            names.insert(names.index(name) + 1, label)
        if args.floor and name.startswith("msnet_"):
            label = f"{name} (no matching)"
            models[label] = models[name]  # same weights; only the step below differs
            streams[label] = StreamingRecognizer(models[label])
            names.insert(names.index(name) + 1, label)
    floor = {n for n in names if n.endswith("(no matching)")}
    steps = {n: without_matching(streams[n].step) if n in floor else streams[n].step for n in names}
    clips = {n: without_matching(models[n]) if n in floor else models[n] for n in names}
    step_ms = {n: [] for n in names}
    clip_ms = {n: [] for n in names}
    step_cpu = {n: [] for n in names}
    clip_cpu = {n: [] for n in names}
    load = []
    with torch.no_grad():
        for name in names:  # warm-up: first calls allocate
            steps[name](frames[0])
            clips[name](clip)
        for _ in range(args.rounds):
            load.append(os.getloadavg()[0])
            for name in names:
                for f in frames[1:]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    steps[name](f)
                    step_ms[name].append((time.perf_counter() - t0) * 1e3)
                    step_cpu[name].append((time.process_time() - c0) * 1e3)
                t0, c0 = time.perf_counter(), time.process_time()
                clips[name](clip)
                clip_ms[name].append((time.perf_counter() - t0) * 1e3 / args.frames)
                clip_cpu[name].append((time.process_time() - c0) * 1e3 / args.frames)

    print(f"# streaming inference, 1 stream of {args.size}x{args.size} frames, fp32, batch 1, "
          f"window/clip T={args.frames}, {args.threads} torch threads")
    print(f"# {cpu_name()}, {os.cpu_count()} cores; {environment('cpu')}")
    print(f"# load average (1 min) during the rounds: {min(load):.1f} to {max(load):.1f} "
          f"(other processes share the cores)\n")
    rows = []
    for name in names:
        s, c = statistics.median(step_ms[name]), statistics.median(clip_ms[name])
        sc, cc = statistics.median(step_cpu[name]), statistics.median(clip_cpu[name])
        label = f"{name} causal".replace(" (module path) causal", " causal (module path)")
        label = label.replace(" (no matching) causal", " causal (no matching)")
        rows.append([label, f"{s:.1f}", f"{1000 / s:.1f}", f"{c:.1f}", f"{c * args.frames:.0f}",
                     f"{sc:.1f}", f"{cc:.1f}"])
    print_table(["model", "step ms/frame", "stream fps", "whole clip ms/frame",
                 f"re-run window ms/frame (T={args.frames})", "step CPU ms/frame", "whole clip CPU ms/frame"], rows)
    pairs = []
    for name in names:
        tsm = name.split(" ")[0].replace("msnet_", "tsm_", 1)
        if name.startswith("msnet_") and tsm in step_ms:
            pairs.append([name.removeprefix("msnet_"),
                          f"{statistics.median(step_ms[name]) / statistics.median(step_ms[tsm]):.2f}",
                          f"{statistics.median(clip_ms[name]) / statistics.median(clip_ms[tsm]):.2f}",
                          f"{statistics.median(step_cpu[name]) / statistics.median(step_cpu[tsm]):.2f}",
                          f"{min(step_ms[name]) / min(step_ms[tsm]):.2f}",
                          f"{min(step_cpu[name]) / min(step_cpu[tsm]):.2f}"])
    if pairs:
        print("\nMSNet time / TSM time (same backbone)")
        print_table(["backbone", "step (wall)", "whole clip (wall)", "step (CPU)",
                     "step (wall, fastest frame)", "step (CPU, fastest frame)"], pairs)
    if args.profile:
        measured = {n: stream for n, stream in streams.items() if n not in floor}  # the real steps only
        profile_steps(measured, frames[1:], args.profile)
        step_arithmetic(measured, frames[1])


if __name__ == "__main__":
    main()
