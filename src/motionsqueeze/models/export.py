"""Export a recogniser to ONNX or to a ``torch.export`` program.

Export runs the model in eval mode, without autograd, and through the PyTorch reference of
the displacement (``backend="reference"`` on every MotionSqueeze module, restored
afterwards): a fused GPU kernel is opaque to exporters, and without autograd
``local_correlation`` is plain tensor code (matrix products, pads, reshapes).

The temporal shift is a known trap: the official TSM code writes the shift as slice
assignments into a zero tensor, which tracing exporters froze into constants, so its
exported models gave wrong outputs. Our shift is pads and concatenations
(:mod:`motionsqueeze.layers.temporal_shift`); the tests check exported models against
PyTorch on clips other than the one used for tracing, with another batch size.

The exported graph takes ``clips`` of shape ``(N, T, 3, H, W)`` (float32, normalised RGB,
T and H, W fixed at export, N free unless ``dynamic_batch=False``) and returns ``logits``
``(N, classes)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..layers import MotionSqueeze
from .recognizer import VideoRecognizer
from ..files import atomic_output
from .weights import _first_line

__all__ = [
    "export_mode",
    "example_clips",
    "export_program",
    "export_onnx",
    "onnx_max_abs_diff",
    "program_max_abs_diff",
    "EXPORTERS",
    "OPSETS",
    "ORT_CACHE_NOTE",
]

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18
# ONNX opsets each exporter writes with PyTorch 2.13 (the dynamo exporter builds opset 18 and
# converts upwards; the TorchScript exporter writes 7..20 directly).
OPSETS = {"dynamo": (18, 23), "torchscript": (7, 20)}


@contextlib.contextmanager
def export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, reference displacement backend, no autograd; all restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    backends = [(m, m.backend) for m in model.modules() if isinstance(m, MotionSqueeze)]
    try:
        model.eval()
        for m, _ in backends:
            m.backend = "reference"
        with torch.no_grad():
            yield model
    finally:
        for m, backend in backends:
            m.backend = backend
        for m, training in modes:
            m.training = training


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 8 or w < 8:
        raise ValueError(f"input size must be at least 8x8 pixels, got {h}x{w}")
    return int(h), int(w)


def example_clips(
    model: VideoRecognizer,
    *,
    frames: int | None = None,
    size: int | Sequence[int] = 224,
    batch: int = 2,
    seed: int = 0,
) -> Tensor:
    """A random ``(batch, T, 3, H, W)`` float32 clip on the model's device.

    ``frames`` must equal the model's ``num_segments`` (the graph is built for that T).
    """
    t = model.num_segments
    if frames is not None and frames != t:
        raise ValueError(
            f"the model was built for num_segments={t} frames per clip, not {frames}; export "
            f"with frames={t} or rebuild the model with num_segments={frames}"
        )
    h, w = _hw(size)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, t, 3, h, w, generator=gen).to(device)


def _batch_dim(dynamic_batch: bool):
    return ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None


def export_program(
    model: VideoRecognizer,
    *,
    frames: int | None = None,
    size: int | Sequence[int] = 224,
    batch: int = 2,
    dynamic_batch: bool = True,
) -> torch.export.ExportedProgram:
    """``torch.export`` the model (eval, reference backend, no grad).

    Args:
        model: the recogniser.
        frames: T; must equal ``model.num_segments`` (default).
        size: input side (or ``(H, W)``) in pixels, fixed in the program.
        batch: batch size of the example clip (2 or more keeps N symbolic).
        dynamic_batch: leave N free.

    Returns:
        The ``ExportedProgram``; ``program.module()(clips)`` runs it, and
        ``torch.export.save(program, "model.pt2")`` stores it.
    """
    clips = example_clips(model, frames=frames, size=size, batch=batch)
    with export_mode(model):
        return torch.export.export(model, (clips,), dynamic_shapes=_batch_dim(dynamic_batch), strict=False)


@contextlib.contextmanager
def _quiet_exporters():
    """Keep exporter chatter (progress lines, tracer warnings) out of the user's terminal."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export_dynamo(model, clips, path: Path, opset: int, dynamic_batch: bool) -> None:
    torch.onnx.export(
        model, (clips,), str(path), dynamo=True, external_data=False, opset_version=opset,
        input_names=["clips"], output_names=["logits"], dynamic_shapes=_batch_dim(dynamic_batch),
        verbose=False,
    )


def _export_torchscript(model, clips, path: Path, opset: int, dynamic_batch: bool) -> None:
    axes = {"clips": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        model, (clips,), str(path), dynamo=False, opset_version=opset,
        input_names=["clips"], output_names=["logits"], dynamic_axes=axes,
    )


_EXPORT_FNS = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}


def _model_info(model: nn.Module, exporter: str) -> dict:
    config = getattr(model, "config", None)
    return {
        "arch": getattr(model, "arch", None),
        "config": config.to_dict() if config is not None else None,
        "class_names": getattr(model, "class_names", None),
        "preprocess": getattr(model, "preprocess", None),
        "exporter": exporter,
    }


def _finish_onnx(path: Path, info: dict, opset: int) -> None:
    """Check the opset the exporter wrote and add our metadata entry (needs ``onnx``; without
    it the file is left as the exporter wrote it)."""
    try:
        import onnx
    except ImportError:  # the TorchScript exporter does not need onnx; metadata is optional
        return
    proto = onnx.load(str(path))
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise RuntimeError(f"it wrote opset {written}, not the requested {opset}")
    entry = proto.metadata_props.add()
    entry.key, entry.value = "motionsqueeze", json.dumps(info)
    onnx.save(proto, str(path))


def export_onnx(
    model: VideoRecognizer,
    path: str | os.PathLike,
    *,
    frames: int | None = None,
    size: int | Sequence[int] = 224,
    opset: int = DEFAULT_OPSET,
    batch: int = 2,
    dynamic_batch: bool = True,
    exporter: str = "auto",
    log: Callable[[str], None] | None = None,
) -> str:
    """Write the model as an ONNX file (one file, weights inside).

    Args:
        model: the recogniser (its mode and backends are restored afterwards).
        path: destination ``.onnx`` file; written next to it and renamed into place.
        frames: T; must equal ``model.num_segments`` (default).
        size: input side (or ``(H, W)``) in pixels, fixed in the graph.
        opset: ONNX opset version; the dynamo exporter writes 18..23, the TorchScript
            exporter 7..20 (:data:`OPSETS`); the file's opset is checked after export.
        batch: batch size of the tracing example (2 or more keeps N symbolic).
        dynamic_batch: leave N free in the graph.
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, needs ``onnxscript``),
            ``"torchscript"`` (the older tracing exporter), or ``"auto"``: dynamo, and the
            TorchScript exporter if that fails.
        log: receives one line per fallback.

    Returns:
        The exporter that produced the file (``"dynamo"`` or ``"torchscript"``). The file's
        metadata entry ``motionsqueeze`` holds JSON with arch, config, class names and
        preprocessing when the model carries them (models from ``load_model`` do).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; expected one of {list(EXPORTERS)}")
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    order = [name for name in order if OPSETS[name][0] <= opset <= OPSETS[name][1]]
    if not order:
        ranges = ", ".join(f"{name} {lo}..{hi}" for name, (lo, hi) in OPSETS.items())
        raise ValueError(f"ONNX opset {opset} cannot be written by the {exporter} exporter; the exporters "
                         f"write opsets {ranges} (default {DEFAULT_OPSET})")
    clips = example_clips(model, frames=frames, size=size, batch=batch)
    failures = []
    with atomic_output(path) as tmp:
        for name in order:
            try:
                with export_mode(model), _quiet_exporters():
                    _EXPORT_FNS[name](model, clips, tmp, opset, dynamic_batch)
                _finish_onnx(tmp, _model_info(model, name), opset)
            except Exception as exc:  # noqa: BLE001 - any exporter failure leads to the fallback
                failures.append(f"{name}: {type(exc).__name__}: {_first_line(exc)}")
                if log is not None and name != order[-1]:
                    log(f"ONNX export with the {name} exporter failed ({failures[-1]}); trying the next one")
                continue
            return name
        hint = ""
        if any("onnxscript" in f or "No module named" in f for f in failures):
            hint = " Install the exporter's packages: pip install onnx onnxscript"
        raise RuntimeError(f"ONNX export failed: {'; '.join(failures)}.{hint}")


def _max_abs_diff(run: Callable[[Tensor], Tensor], model: nn.Module, clips: Tensor) -> float:
    with export_mode(model):
        expected = model(clips)
    got = torch.as_tensor(run(clips)).to(expected.device)
    if got.shape != expected.shape:
        raise RuntimeError(f"exported output has shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}")
    return float((got - expected).abs().max())


ORT_CACHE_NOTE = ("onnxruntime keeps its own files (a device id) under $XDG_CACHE_HOME/Microsoft, by "
                  "default ~/.cache/Microsoft; set XDG_CACHE_HOME to move them, or pass --no-check")


def onnx_max_abs_diff(path: str | os.PathLike, model: nn.Module, clips: Tensor) -> float:
    """Largest |ONNX Runtime - PyTorch| over the logits of ``clips`` (needs onnxruntime).

    Importing onnxruntime writes its own files outside the output folder (see
    :data:`ORT_CACHE_NOTE`)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _max_abs_diff(
        lambda x: torch.from_numpy(session.run(None, {"clips": x.detach().cpu().numpy()})[0]), model, clips
    )


def program_max_abs_diff(program: torch.export.ExportedProgram, model: nn.Module, clips: Tensor) -> float:
    """Largest |exported program - PyTorch| over the logits of ``clips``."""
    module = program.module()
    with torch.no_grad():
        return _max_abs_diff(module, model, clips)
