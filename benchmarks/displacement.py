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
    python benchmarks/displacement.py --resources     # kernels built for sm_90: registers, spills

Whole-model training and inference times: ``benchmarks/throughput.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from common import Timer, environment, fmt, peak_extra_mib, print_table

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
    p.add_argument("--resources", action="store_true", help="build the kernels for a GPU "
                   "(--arch) and print registers, spills and shared memory; no GPU needed")
    p.add_argument("--arch", type=int, default=90, help="compute capability (90 = H100)")
    return p.parse_args(argv)


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
                extra = peak_extra_mib(device, forward_backward)
                f1.grad = f2.grad = None
                ratio = None if extra is None else extra / input_mib
                rows.append([shape, dname, backend, fmt(t_fwd), fmt(t_fb), fmt(extra, 1),
                             fmt(ratio, 2), dev])
    print(f"displacement, P = {p}: {environment(device)}")
    print_table(["shape NxCxHxW", "dtype", "backend", "fwd ms", "fwd+bwd ms", "extra MiB",
                  "extra / inputs", "max dev out / grad"], rows)


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
    print_table(["dtype", "kernel", "registers / thread", "stack bytes (spills)",
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
    bench_ops(args, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
