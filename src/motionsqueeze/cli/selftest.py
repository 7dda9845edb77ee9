"""``motionsqueeze selftest``: check MotionSqueeze on this device and dtype, print a verdict."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser(
        "selftest",
        help="check every displacement backend and the motion path on this device and dtype",
        description="Compare every displacement backend that can run here with the PyTorch reference "
        "(values and gradients), check that the motion field of an MSNet varies and that it changes the "
        "logits, and print a verdict. Exit status 1 when a check fails.",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "float64"), default="float32",
                   help="dtype of the features and the model (default float32)")
    p.add_argument("--checkpoint", default=None,
                   help="also check the motion path of this model file (.safetensors) or checkpoint (.pt)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    import torch

    from ..engine.config import check_device
    from ..selftest import run_selftest

    check_device(args.device, "--device")
    model = None
    if args.checkpoint is not None:
        from ..models.weights.model_file import load_trained_model

        model = load_trained_model(args.checkpoint)
    report = run_selftest(args.device, getattr(torch, args.dtype), model=model)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"motionsqueeze selftest on {report.device}, {report.dtype}")
        for c in report.checks:
            print(f"  [{c.status:>7s}] {c.name}: {c.detail}")
        print(report.verdict())
    return 0 if report.passed else 1
