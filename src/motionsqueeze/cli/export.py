"""``motionsqueeze export CHECKPOINT --format onnx --out FILE``."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "export",
        help="export a saved model to ONNX or a torch.export program",
        description="Export a model file written by save_model / convert to ONNX (or a "
        "torch.export .pt2 program), through the PyTorch reference path, then compare the "
        "export with PyTorch on a random clip. Input: clips (N, T, 3, H, W) float32, "
        "normalised RGB; output: logits (N, classes).",
    )
    p.add_argument("checkpoint", help="model file (.safetensors written by save_model or convert)")
    p.add_argument("--out", required=True, help="file to write (.onnx or .pt2)")
    p.add_argument("--format", choices=["onnx", "pt2"], default="onnx", help="default onnx")
    p.add_argument("--size", type=int, default=None,
                   help="input side in pixels (default: the model's input size)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 18; dynamo writes 18..23, torchscript 7..20)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto",
                   help="ONNX exporter; auto tries dynamo, then TorchScript (default auto)")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="ONNX input: uint8 frames (N, T, H, W, 3) RGB at the input size, normalised inside the graph")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1")
    p.add_argument("--no-check", action="store_true",
                   help="skip the comparison with PyTorch (it runs onnxruntime, which keeps a device id "
                   "under $XDG_CACHE_HOME/Microsoft, by default ~/.cache/Microsoft)")
    return p


def run(args) -> int:
    import sys

    import torch

    from ..files import atomic_write
    from ..models.export import (
        DEFAULT_OPSET,
        ORT_CACHE_NOTE,
        example_clips,
        export_mode,
        export_onnx,
        export_program,
        onnx_max_abs_diff,
        program_max_abs_diff,
    )
    from ..models.weights.model_file import load_model

    if args.with_preprocessing and args.format != "onnx":
        raise ValueError("--with-preprocessing is for --format onnx")
    model = load_model(args.checkpoint)
    size = args.size or model.card.preprocess.input_size
    batch = 1 if args.static_batch else 2
    if args.format == "onnx":
        try:
            opset = DEFAULT_OPSET if args.opset is None else args.opset
            used = export_onnx(model, args.out, size=size, opset=opset, batch=batch,
                               dynamic_batch=not args.static_batch, exporter=args.exporter,
                               log=lambda line: print(line, file=sys.stderr),
                               preprocessing=args.with_preprocessing)
        except RuntimeError as exc:
            print(f"motionsqueeze export: error: {exc}", file=sys.stderr)
            return 1
        how = f"ONNX, {used} exporter"
    else:
        program = export_program(model, size=size, batch=batch, dynamic_batch=not args.static_batch)
        atomic_write(args.out, lambda f: torch.export.save(program, f))
        how = "torch.export program"
    n = "1" if args.static_batch else "N"
    given = (f"uint8 frames ({n}, {model.num_segments}, {size}, {size}, 3)" if args.with_preprocessing
             else f"clips ({n}, {model.num_segments}, 3, {size}, {size})")
    print(f"wrote    {args.out} ({how}); {given} -> logits ({n}, {model.num_classes})")
    if args.no_check:
        return 0
    clips = example_clips(model, size=size, batch=1 if args.static_batch else 3, seed=1)
    if args.with_preprocessing and args.format == "onnx":
        gen = torch.Generator().manual_seed(1)
        clips = torch.randint(0, 256, (clips.shape[0], clips.shape[1], *clips.shape[3:], 3), generator=gen,
                              dtype=torch.uint8)
    if args.format == "onnx":
        try:
            diff = onnx_max_abs_diff(args.out, model, clips)
        except ImportError:
            print("check    skipped: onnxruntime is not installed (pip install onnxruntime)")
            return 0
        print(f"note     {ORT_CACHE_NOTE}", file=sys.stderr)
    else:
        diff = program_max_abs_diff(torch.export.load(args.out), model, clips)
    with export_mode(model):
        if clips.dtype == torch.uint8:
            from ..data.transforms import normalize_clip

            pre = model.card.preprocess
            clips = normalize_clip(clips.permute(0, 1, 4, 2, 3), pre.mean, pre.std)
        scale = max(1.0, float(model(clips).abs().max()))
    ok = diff <= 1e-4 * scale
    print(f"check    max |export - PyTorch| on a random clip: {diff:.2e} ({'ok' if ok else 'TOO LARGE'})")
    return 0 if ok else 1
