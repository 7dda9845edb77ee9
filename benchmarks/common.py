"""Helpers shared by the benchmark scripts: timing, peak memory, tables, environment."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time


class Timer:
    """Median time of a callable in ms: CUDA events on a GPU, the wall clock on the CPU."""

    def __init__(self, device: str, warmup: int, repeat: int):
        self.device, self.warmup, self.repeat = device, warmup, repeat

    def __call__(self, fn) -> float:
        import torch

        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeat):
            if self.device == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def peak_extra_mib(device: str, fn) -> float | None:
    """Peak memory allocated while ``fn`` runs beyond what was allocated before, in MiB."""
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def environment(device: str) -> str:
    """Device, library versions and date, to print above every table."""
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else os.uname().machine + " CPU"
    try:
        import triton

        version = triton.__version__
    except ImportError:
        version = "absent"
    interp = " (Triton interpreter)" if os.environ.get("TRITON_INTERPRET") == "1" else ""
    return (f"{name}{interp}, torch {torch.__version__}, triton {version}, "
            f"{datetime.date.today().isoformat()}")


def interleaved(fns: dict, rounds: int, warmup: int = 1, clock=time.perf_counter) -> dict:
    """Wall-clock times in ms of several callables, run in turn within each round.

    Returns ``{name: [ms per round]}``. Interleaving exposes every callable to the same load,
    so ratios of one round's times stay meaningful on a busy machine. ``clock`` may be
    ``time.thread_time`` (CPU time of this thread: with one torch thread, what the work cost
    without the waits for a core).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append((clock() - t0) * 1e3)
    return times


def median_ratio(num: list, den: list) -> float:
    """Median over rounds of the per-round ratio ``num / den``."""
    return statistics.median(a / b for a, b in zip(num, den))


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def without_matching(run):
    """``run`` with MotionSqueeze's matching replaced, during each call only, by a zero
    displacement map, so that the rest of an interleaved round keeps the real one.

    What is left of MotionSqueeze is its own layers (the 1x1 channel reduction, the four
    depthwise-separable blocks of the feature transformation with their BatchNorms and ReLUs,
    the residual addition): the floor below which no faster matching can bring MSNet. On
    the whole-clip path the zero map is ``(f1[:, :3] + f2[:, :3]) * 0``, still on the autograd
    graph, so that a training step's backward runs through the reduction as well; on the
    streaming step the features are passed on unnormalised and the map is zeros.
    """
    from motionsqueeze.layers import motion_squeeze as ms

    def clip_map(f1, f2, *args, **kwargs):
        return (f1[:, :3] + f2[:, :3]).mul_(0).contiguous()

    def step_map(pa, pb, *args, **kwargs):
        n, _, h, w = pb.shape
        return pb.new_zeros(n, h, w, 3).permute(0, 3, 1, 2)  # channels-last, as the real one

    stand_ins = {"displacement": clip_map, "pair_features": lambda f, p: f, "displacement_prepared": step_map}

    def call(*args, **kwargs):
        real = {name: getattr(ms, name) for name in stand_ins}
        for name, fn in stand_ins.items():
            setattr(ms, name, fn)
        try:
            return run(*args, **kwargs)
        finally:
            for name, fn in real.items():
                setattr(ms, name, fn)

    return call
