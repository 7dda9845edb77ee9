"""Export a recogniser to ONNX or to a ``torch.export`` program.

Export runs the model in eval mode, without autograd, and through the PyTorch reference of
the displacement (:func:`motionsqueeze.ops.use_backend`, which overrides what the modules
were built with and leaves them untouched): a fused GPU kernel is opaque to exporters, and
without autograd ``local_correlation`` is plain tensor code (matrix products, pads, reshapes).

The temporal shift is a known trap: the official TSM code writes the shift as slice
assignments into a zero tensor, which tracing exporters froze into constants, so its
exported models gave wrong outputs. Our shift is pads and concatenations
(:mod:`motionsqueeze.layers.temporal_shift`); the tests check exported models against
PyTorch on clips other than the one used for tracing, with another batch size.

The exported graph takes ``clips`` of shape ``(N, T, 3, H, W)`` (float32, normalised RGB,
T and H, W fixed at export, N free unless ``dynamic_batch=False``) and returns ``logits``
``(N, classes)``. With ``preprocessing=True`` it takes ``frames`` instead: uint8
``(N, T, H, W, 3)`` RGB as decoders give them (resized and cropped to the input size), and
normalises them inside the graph with the model's mean and std (:class:`WithPreprocessing`),
so a deployment cannot get the normalisation wrong.
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

from ..files import atomic_output
from ..ops import use_backend
from .card import ModelCard, card_of
from .recognizer import VideoRecognizer
from .weights.safe_load import first_line as _first_line
from ..data.transforms import normalize_clip

__all__ = [
    "WithPreprocessing",
    "OnnxRecognizer",
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
    """Eval mode, the reference displacement backend, no autograd; the modes are restored
    on exit."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with use_backend("reference"), torch.no_grad():
            yield model
    finally:
        for m, training in modes:
            m.training = training


class WithPreprocessing(nn.Module):
    """uint8 frames ``(N, T, H, W, 3)`` -> logits: the normalisation of
    :func:`motionsqueeze.data.transforms.normalize_clip` (``(x / 255 - mean) / std``, in that
    order, so the numbers equal the PyTorch path's), then the model."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.num_segments = model.num_segments
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 1, 3, 1, 1), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.permute(0, 1, 4, 2, 3).to(torch.float32) / 255
        return self.model((x - self.mean) / self.std)


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


def _input_name(model: nn.Module) -> str:
    return "frames" if isinstance(model, WithPreprocessing) else "clips"


def _export_dynamo(model, clips, path: Path, opset: int, dynamic_batch: bool) -> None:
    torch.onnx.export(
        model, (clips,), str(path), dynamo=True, external_data=False, opset_version=opset,
        input_names=[_input_name(model)], output_names=["logits"], dynamic_shapes=_batch_dim(dynamic_batch),
        verbose=False,
    )


def _export_torchscript(model, clips, path: Path, opset: int, dynamic_batch: bool) -> None:
    name = _input_name(model)
    axes = {name: {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        model, (clips,), str(path), dynamo=False, opset_version=opset,
        input_names=[name], output_names=["logits"], dynamic_axes=axes,
    )


_EXPORT_FNS = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}


def _model_info(model: nn.Module, exporter: str) -> dict:
    """The model card (with the current config) and the exporter used."""
    return {**card_of(model).to_dict(), "exporter": exporter}


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
    preprocessing: bool = False,
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
        preprocessing: take uint8 ``frames`` ``(N, T, H, W, 3)`` and normalise them in the
            graph with the mean and std of ``model.card.preprocess`` (see the module docstring).

    Returns:
        The exporter that produced the file (``"dynamo"`` or ``"torchscript"``). The file's
        metadata entry ``motionsqueeze`` holds the model card as JSON (as the model file
        stores it) and the exporter.
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
    net = model
    info_extra = {}
    if preprocessing:
        pre = card_of(model).preprocess
        net = WithPreprocessing(model, pre.mean, pre.std).to(clips.device)
        gen = torch.Generator().manual_seed(0)
        clips = torch.randint(0, 256, (clips.shape[0], clips.shape[1], *clips.shape[3:], 3), generator=gen,
                              dtype=torch.uint8).to(clips.device)
        info_extra = {"input": "frames"}
    failures = []
    with atomic_output(path) as tmp:
        for name in order:
            try:
                with export_mode(net), _quiet_exporters():
                    _EXPORT_FNS[name](net, clips, tmp, opset, dynamic_batch)
                _finish_onnx(tmp, {**_model_info(model, name), "input": "clips", **info_extra}, opset)
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

    ``clips`` are float clips for a plain export, uint8 frames ``(N, T, H, W, 3)`` for one
    with preprocessing (compared with the model on ``normalize_clip`` of them).
    Importing onnxruntime writes its own files outside the output folder (see
    :data:`ORT_CACHE_NOTE`)."""
    onnx_model = OnnxRecognizer(path)
    if onnx_model.takes_frames:
        pre = card_of(model).preprocess
        with export_mode(model):
            expected = model(normalize_clip(clips.permute(0, 1, 4, 2, 3), pre.mean, pre.std))
        return float((onnx_model.run(clips) - expected).abs().max())
    return _max_abs_diff(onnx_model.run, model, clips)


class OnnxRecognizer:
    """An exported model run by ONNX Runtime, with what ``predict`` needs of a model: its
    ``card`` and ``num_segments`` (from the file's metadata; ``card`` is ``None`` for a file
    without it) and :meth:`logits_from_frames`."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] = ("CPUExecutionProvider",)):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file {self.path} does not exist")
        try:
            self.session = ort.InferenceSession(str(path), providers=list(providers))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ValueError(f"{path} is not a readable ONNX model ({_first_line(exc)}); export it again "
                             f"with motionsqueeze export") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get("motionsqueeze")
        self.input = self.session.get_inputs()[0]
        self.takes_frames = self.input.name == "frames"
        self.card: ModelCard | None = None
        if meta:
            try:
                info = json.loads(meta)
                self.card = ModelCard.from_dict({k: v for k, v in info.items() if k not in ("exporter", "input")})
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}: its motionsqueeze metadata is not usable ({_first_line(exc)}); export "
                                 f"it again with motionsqueeze export") from None
        self.num_segments = self.card.preprocess.num_segments if self.card is not None else self.input.shape[1]

    def run(self, x: Tensor) -> Tensor:
        """Logits ``(N, classes)`` of the graph's input (float clips or uint8 frames)."""
        return torch.from_numpy(self.session.run(None, {self.input.name: x.detach().cpu().numpy()})[0])

    def logits_from_frames(self, views: Tensor) -> Tensor:
        """Logits of uint8 views ``(V, T, 3, S, S)`` as ``predict`` prepares them."""
        if self.takes_frames:
            return self.run(views.permute(0, 1, 3, 4, 2).contiguous())
        if self.card is None:
            raise ValueError(f"{self.path} holds no preprocessing metadata; export it with motionsqueeze export")

        return self.run(normalize_clip(views, self.card.preprocess.mean, self.card.preprocess.std))


def program_max_abs_diff(program: torch.export.ExportedProgram, model: nn.Module, clips: Tensor) -> float:
    """Largest |exported program - PyTorch| over the logits of ``clips``."""
    module = program.module()
    with torch.no_grad():
        return _max_abs_diff(module, model, clips)
