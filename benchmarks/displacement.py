"""Benchmark of ``motionsqueeze.ops.displacement``: correlation + kernel-soft-argmax.

Prints one table: forward and forward + backward time (median over repeats; CUDA events on
a GPU, wall clock on the CPU), the extra peak memory of forward + backward (CUDA only;
everything allocated beyond the inputs, including the two input gradients) and the largest
deviation of the output and of the gradients from the first backend (the reference), for

* ``reference``: the PyTorch implementation (band matmuls, saves only its inputs);
* ``compiled``: the same under ``torch.compile``;
* ``triton``: the fused Triton kernel.

Usage (shapes are ``NxCxHxW`` of each feature map, N frame pairs; nothing is asserted)::

    python benchmarks/displacement.py                 # CUDA: 56x64x28x28, 56x64x56x56; fp32, bf16
    python benchmarks/displacement.py --device cpu    # smoke run, kernel in Triton's interpreter
    python benchmarks/displacement.py --model msnet_r50,tsm_r50 --amp bf16  # training steps
    python benchmarks/displacement.py --resources     # kernels built for sm_90: registers, spills
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    p.add_argument("--shapes", default=None, help="comma-separated NxCxHxW "
                   "(default: 56x64x28x28,56x64x56x56 on CUDA, 2x8x10x10 on CPU)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, fp16, bf16")
    p.add_argument("--backends", default="reference,compiled,triton",
                   help="comma-separated: reference, compiled, triton")
    p.add_argument("--patch-size", type=int, default=15, help="P, the window is P x P cells")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs after the first, checking run (default 10 CUDA, 0 CPU)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed runs, the median is printed (default 50 CUDA, 1 CPU)")
    p.add_argument("--fp32-dot", default=None, choices=["ieee", "tf32x3", "tf32"],
                   help="tl.dot precision for float32 features (default: tf32x3 on sm_80+)")
    p.add_argument("--num-warps", type=int, default=None, help="kernel launch setting to try")
    p.add_argument("--num-stages", type=int, default=None, help="kernel launch setting to try")
    p.add_argument("--model", default=None, help="comma-separated registered models: time "
                   "training steps instead, eager and compiled")
    p.add_argument("--batch", type=int, default=8, help="clips per training step (--model)")
    p.add_argument("--size", type=int, default=224, help="frame size (--model)")
    p.add_argument("--amp", default=None, choices=["bf16", "fp16"],
                   help="autocast dtype of the training step (--model)")
    p.add_argument("--resources", action="store_true", help="build the kernels for a GPU "
                   "(--arch) and print registers, spills and shared memory; no GPU needed")
    p.add_argument("--arch", type=int, default=90, help="compute capability (90 = H100)")
    return p.parse_args(argv)


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


def _peak_extra_mib(device: str, fn) -> float | None:
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


def _fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def _print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def _environment(device: str) -> str:
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


def _kernel_settings(args):
    """The kernel module with the launch settings of the command line applied."""
    from motionsqueeze.ops import triton_displacement as kernels

    if args.fp32_dot:
        kernels.FP32_DOT_PRECISION = args.fp32_dot
    if args.num_warps:
        kernels.NUM_WARPS = args.num_warps
    if args.num_stages:
        kernels.NUM_STAGES = args.num_stages
    return kernels


def bench_ops(args, device: str) -> None:
    import torch

    from motionsqueeze.ops import displacement

    if "triton" in args.backends:
        _kernel_settings(args)
    cpu = device == "cpu"
    # On the CPU this is a smoke test: the kernel runs in Triton's interpreter, seconds a call.
    shapes = args.shapes or ("2x8x10x10" if cpu else "56x64x28x28,56x64x56x56")
    warmup = args.warmup if args.warmup is not None else (0 if cpu else 10)
    timer = Timer(device, warmup, args.repeat if args.repeat is not None else (1 if cpu else 50))
    p = args.patch_size
    rows = []
    for shape in shapes.split(","):
        n, c, h, w = (int(v) for v in shape.lower().split("x"))
        for dname in args.dtypes.split(","):
            dtype = getattr(torch, DTYPES[dname])
            g = torch.Generator().manual_seed(0)
            f1 = torch.randn(n, c, h, w, generator=g).to(device, dtype).requires_grad_()
            f2 = torch.randn(n, c, h, w, generator=g).to(device, dtype).requires_grad_()
            grad = torch.randn(n, 3, h, w, generator=g).to(device, dtype)
            input_mib = 2 * f1.numel() * f1.element_size() / 2**20
            ref = None
            for backend in args.backends.split(","):
                if backend == "compiled":
                    torch._dynamo.reset()
                    fn = torch.compile(lambda a, b: displacement(a, b, p, backend="reference"))
                else:
                    def fn(a, b, name=backend):
                        return displacement(a, b, p, backend=name)

                def forward():
                    return fn(f1, f2)

                def forward_backward():
                    f1.grad = f2.grad = None
                    out = fn(f1, f2)
                    out.backward(grad)
                    return out

                out = forward_backward().detach().float()  # also compiles "compiled"
                got = (out, f1.grad.float(), f2.grad.float())
                if ref is None:
                    ref, dev = got, "(baseline)"
                else:
                    dev_out = (got[0] - ref[0]).abs().max().item()
                    dev_grad = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
                                   for a, b in zip(got[1:], ref[1:]))
                    dev = f"{dev_out:.1e} / {dev_grad:.1e}"
                t_fwd, t_fb = timer(forward), timer(forward_backward)
                extra = _peak_extra_mib(device, forward_backward)
                f1.grad = f2.grad = None
                ratio = None if extra is None else extra / input_mib
                rows.append([shape, dname, backend, _fmt(t_fwd), _fmt(t_fb), _fmt(extra, 1),
                             _fmt(ratio, 2), dev])
    print(f"displacement, P = {p}: {_environment(device)}")
    _print_table(["shape NxCxHxW", "dtype", "backend", "fwd ms", "fwd+bwd ms", "extra MiB",
                  "extra / inputs", "max dev out / grad"], rows)


def bench_models(args, device: str) -> None:
    import torch
    import torch.nn.functional as F

    from motionsqueeze import create_model

    if "triton" in args.backends:
        _kernel_settings(args)
    warmup = args.warmup if args.warmup is not None else 3
    timer = Timer(device, warmup, args.repeat if args.repeat is not None else 10)
    amp = getattr(torch, DTYPES[args.amp]) if args.amp else None
    backends = [b for b in args.backends.split(",") if b != "compiled"]
    rows = []
    for name in args.model.split(","):
        for backend in backends if name.startswith("msnet") else ["-"]:
            overrides = {} if backend == "-" else {"backend": backend}
            for compiled in (False, True):
                torch.manual_seed(0)
                model = create_model(name, **overrides).to(device).train()
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                t = model.config.num_segments
                clips = torch.randn(args.batch, t, 3, args.size, args.size, device=device)
                labels = torch.randint(0, model.config.num_classes, (args.batch,), device=device)
                breaks = "-"
                if compiled:  # count the graph breaks of the whole model, then compile it
                    torch._dynamo.reset()
                    with torch.autocast(device, dtype=amp, enabled=amp is not None):
                        breaks = str(torch._dynamo.explain(model)(clips).graph_break_count)
                    torch._dynamo.reset()
                net = torch.compile(model) if compiled else model

                def step():
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(device, dtype=amp, enabled=amp is not None):
                        loss = F.cross_entropy(net(clips), labels)
                    loss.backward()
                    opt.step()

                mode = "compiled" if compiled else "eager"
                rows.append([name, backend, mode, _fmt(timer(step), 1), breaks])
    print(f"training step, {args.batch} clips of {args.size}x{args.size}, amp {args.amp}: "
          f"{_environment(device)}")
    _print_table(["model", "backend", "mode", "step ms", "graph breaks"], rows)


def print_resources(args) -> None:
    import torch
    import triton

    kernels = _kernel_settings(args)
    rows = []
    for dname in args.dtypes.split(","):
        dtype = getattr(torch, DTYPES[dname])
        built = kernels.compile_for_gpu(dtype, args.patch_size, 64, args.arch,
                                        args.fp32_dot or "tf32x3")
        for name, k in built.items():
            use = kernels.resource_usage(k)
            rows.append([dname, name, use["registers"], use["stack"], use["shared"]])
    print(f"kernels for sm_{args.arch}, P = {args.patch_size}, C = 64, "
          f"{kernels.launch_config(args.patch_size, 64)}, num_warps {kernels.NUM_WARPS}, "
          f"num_stages {kernels.NUM_STAGES}, triton {triton.__version__}")
    _print_table(["dtype", "kernel", "registers / thread", "stack bytes (spills)",
                  "shared bytes"], rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resources:
        os.environ["TRITON_INTERPRET"] = "0"  # build the real kernels, not the interpreter's
        print_resources(args)
        return 0
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and "triton" in args.backends:
        # Before the kernels are defined: the CPU runs them in Triton's interpreter.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if args.model:
        bench_models(args, args.device)
    else:
        bench_ops(args, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
