"""Frame-by-frame inference of a causal recogniser (docs/streaming.md).

A causal model (``ModelConfig.causal``) computes frame t from frames <= t only: every
shift slot holds a :class:`~motionsqueeze.layers.CausalTemporalShift` (channels from t-1) and
every MotionSqueeze module matches frame t-1 to t. So one frame can be pushed through the
network at a time if, between frames, we keep

* per shift slot, the ``C/shift_div`` channels of the previous frame's block input;
* per MotionSqueeze stage, the previous frame's reduced features ``(C', h, w)``;
* the logits of the last ``window`` frames, whose mean is the current class score (the
  whole-clip model averages its T frame logits the same way).

That is :class:`StreamState`. :func:`stream_step` is the pure function
``(frame, state) -> (scores, frame logits, state)``; :class:`StreamingRecognizer` holds the
state and has ``step`` and ``reset``. The step walks the recogniser's generic structure
(``backbone.forward_stem``, ``backbone.stages()``, ``motion``, ``fc``) and finds the shift
slots by type, so it works for any registered backbone.

Starting from a reset, the per-frame logits equal those of the whole-clip forward of the same
causal model (:func:`clip_frame_logits`), and after T frames the scores equal its clip
output. :func:`export_step_onnx` writes the step as an ONNX graph
``(frame, *state) -> (scores, logits, *state)``.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..files import atomic_output
from ..layers import CausalTemporalShift, MotionSqueeze, TemporalShift
from ..layers.causal_shift import _StepIO
from .card import card_of
from .export import DEFAULT_OPSET, _hw, _quiet_exporters, export_mode

__all__ = [
    "StreamState",
    "StreamingRecognizer",
    "stream_step",
    "initial_state",
    "clip_frame_logits",
    "check_causal",
    "export_step_onnx",
    "step_onnx_max_abs_diff",
]


@dataclass
class StreamState:
    """What a causal model carries from one frame to the next (N parallel streams).

    Attributes:
        shift: per causal shift slot (in ``model.modules()`` order), ``(N, C/shift_div, H, W)``
            channels of the previous frame's block input; zeros before the first frame.
        motion: per MotionSqueeze stage (in stage order), ``(N, C', h, w)`` reduced features
            of the previous frame; zeros before the first frame.
        logits: ``(N, W, classes)`` logits of the last W frames, oldest first.
        seen: ``(N, W)``, 1 where ``logits`` holds a frame, 0 where not; its last column says
            whether a previous frame exists (0 after a reset: zero motion, zero shift).
        cache: what the next step would otherwise find or compute again: the model's shift
            slots (found by walking its modules) and, per MotionSqueeze stage, the normalised
            form of ``motion`` that the fast step matches and its working buffers (see
            :meth:`MotionSqueeze.step`'s ``memo``). Not a tensor of the state (not
            exported, not compared); each entry is checked before use (the same model, the
            same unchanged ``motion`` tensor), so a state without it gives the same outputs.
    """

    shift: list[Tensor]
    motion: list[Tensor]
    logits: Tensor
    seen: Tensor
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def tensors(self) -> list[Tensor]:
        """Flat list ``[*shift, *motion, logits, seen]`` (the ONNX graph's state inputs)."""
        return [*self.shift, *self.motion, self.logits, self.seen]

    @classmethod
    def from_tensors(cls, tensors: Sequence[Tensor], num_shift: int, num_motion: int) -> "StreamState":
        t = list(tensors)
        if len(t) != num_shift + num_motion + 2:
            raise ValueError(f"expected {num_shift + num_motion + 2} state tensors, got {len(t)}")
        return cls(t[:num_shift], t[num_shift : num_shift + num_motion], t[-2], t[-1])

    def names(self) -> list[str]:
        return ([f"shift_{i}" for i in range(len(self.shift))] + [f"motion_{i}" for i in range(len(self.motion))]
                + ["window_logits", "window_seen"])


def _shift_slots(model: nn.Module) -> list[CausalTemporalShift]:
    return [m for m in model.modules() if isinstance(m, CausalTemporalShift)]


def _motion_stages(model: nn.Module) -> list[str]:
    return [name for name, _ in model.backbone.stages() if name in model.motion]


def check_causal(model: nn.Module) -> None:
    """``ValueError`` unless every frame's output depends on past and present frames only."""
    future = [type(m).__name__ for m in model.modules()
              if (isinstance(m, TemporalShift) and not isinstance(m, CausalTemporalShift))
              or (isinstance(m, MotionSqueeze) and not m.causal)]
    if future:
        arch = card_of(model).arch or "the model"
        raise ValueError(
            f"{arch} is not causal: its {future[0]} layers look at the next frame, which a live "
            f"stream does not have yet. Streaming needs a model built with causal: true (e.g. "
            f"create_model(..., causal=True), or causal: true under model: in the recipe) and trained that way"
        )


def stream_step(
    model: nn.Module, frame: Tensor, state: StreamState | None, window: int | None = None
) -> tuple[Tensor, Tensor, StreamState]:
    """Push one frame per stream through a causal model (eval mode; see the module docstring).

    Args:
        model: causal recogniser (:func:`check_causal` is not repeated here).
        frame: ``(N, 3, H, W)`` normalised float frames, one per stream.
        state: what the previous call returned, or ``None`` at the start of a stream.
        window: W, frames averaged into the scores when ``state`` is ``None``
            (default ``model.num_segments``); later calls keep the state's W.

    Returns:
        ``(scores (N, classes), frame logits (N, classes), new state)``; scores are the mean
        logits of the last W frames (fewer right after a reset).
    """
    if frame.dim() != 4 or frame.shape[1] != 3:
        raise ValueError(f"expected frames of shape (N, 3, H, W), got a tensor of shape {tuple(frame.shape)}")
    cache = state.cache if state is not None else {}
    if cache.get("model") is None or cache["model"]() is not model:  # walking the modules costs 0.1-0.3 ms
        cache = {"model": weakref.ref(model), "slots": _shift_slots(model), "motion": [{} for _ in model.motion]}
    slots = cache["slots"]
    if state is not None and len(state.shift) != len(slots):
        raise ValueError(f"the state holds {len(state.shift)} shift buffers, the model has {len(slots)} shift slots")
    ios = [_StepIO(prev) for prev in (state.shift if state is not None else [None] * len(slots))]
    has_prev = None if state is None else state.seen[:, -1]
    motion: list[Tensor] = []
    for slot, io in zip(slots, ios):
        slot.step_io = io
    try:
        x = model.backbone.forward_stem(frame)
        for name, stage in model.backbone.stages():
            x = stage(x)
            if name in model.motion:
                prev = None if state is None else state.motion[len(motion)]
                x, reduced = model.motion[name].step(x, prev, has_prev, cache["motion"][len(motion)])
                motion.append(reduced)
    finally:
        for slot in slots:
            slot.step_io = None
    logits = model.fc(x.mean(dim=(2, 3)))  # (N, classes); dropout is the identity in eval
    if state is None:
        w = window or model.num_segments
        past = torch.zeros(logits.shape[0], w, logits.shape[1], dtype=logits.dtype, device=logits.device)
        past_seen = torch.zeros(logits.shape[0], w, dtype=logits.dtype, device=logits.device)
    else:
        past, past_seen = state.logits, state.seen
    window_logits = torch.cat((past[:, 1:], logits.unsqueeze(1)), dim=1)
    seen = torch.cat((past_seen[:, 1:], torch.ones_like(past_seen[:, :1])), dim=1)
    scores = (window_logits * seen.unsqueeze(-1)).sum(dim=1) / seen.sum(dim=1, keepdim=True)
    new_state = StreamState([io.next for io in ios], motion, window_logits, seen, cache)
    return scores, logits, new_state


@torch.no_grad()
def initial_state(model: nn.Module, height: int, width: int, *, batch: int = 1, window: int | None = None) -> StreamState:
    """The all-zero state of ``batch`` streams of ``height`` x ``width`` frames (what a reset
    means); shapes are found by one step on a zero frame."""
    device = next(model.parameters()).device
    frame = torch.zeros(batch, 3, height, width, device=device)
    _, _, state = stream_step(model, frame, None, window)
    return StreamState.from_tensors([torch.zeros_like(t) for t in state.tensors()], len(state.shift), len(state.motion))


def clip_frame_logits(model: nn.Module, clips: Tensor) -> Tensor:
    """Whole-clip forward, before the average over frames: ``(N, T, 3, H, W)`` -> ``(N, T, classes)``."""
    x = model.forward_features(clips).mean(dim=(2, 3))
    return model.fc(model.dropout(x)).view(clips.shape[0], clips.shape[1], -1)


class StreamingRecognizer:
    """A causal model with its stream state: ``step(frame) -> scores`` and ``reset()``.

    Args:
        model: causal recogniser (put in eval mode here).
        window: frames whose logits are averaged into the scores (default: the model's
            ``num_segments``, the window it was trained on).

    ``step`` takes one normalised frame ``(3, H, W)`` (or ``(N, 3, H, W)`` for N streams) and
    returns the scores ``(classes,)`` (or ``(N, classes)``); ``last_logits`` holds the frame's
    own logits. Call ``reset()`` at a cut, when the source changes, or after frames were lost
    for long: the next frame then starts a new clip (no motion, no shifted channels).
    """

    def __init__(self, model: nn.Module, window: int | None = None):
        check_causal(model)
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1 frame, got {window}")
        self.model = model.eval()
        self.window = window or model.num_segments
        self.state: StreamState | None = None
        self.frames = 0
        self.last_logits: Tensor | None = None

    def reset(self) -> None:
        self.state = None
        self.frames = 0
        self.last_logits = None

    @torch.no_grad()
    def step(self, frame: Tensor) -> Tensor:
        single = frame.dim() == 3
        x = frame.unsqueeze(0) if single else frame
        if self.state is not None and x.shape[0] != self.state.logits.shape[0]:
            raise ValueError(f"this stream holds {self.state.logits.shape[0]} streams, got a batch of {x.shape[0]} frames; reset() first")
        scores, logits, self.state = stream_step(self.model, x, self.state, self.window)
        self.frames += 1
        self.last_logits = logits[0] if single else logits
        return scores[0] if single else scores


class _StepGraph(nn.Module):
    """``forward(frame, *state) -> (scores, logits, *state)`` for exporters."""

    def __init__(self, model: nn.Module, num_shift: int, num_motion: int):
        super().__init__()
        self.model = model
        self.num_shift, self.num_motion = num_shift, num_motion

    def forward(self, frame: Tensor, *state: Tensor):
        scores, logits, new = stream_step(
            self.model, frame, StreamState.from_tensors(state, self.num_shift, self.num_motion)
        )
        return (scores, logits, *new.tensors())


def export_step_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    size: int | Sequence[int] = 224,
    window: int | None = None,
    opset: int | None = None,
) -> list[str]:
    """Write the step of a causal model as ONNX: inputs ``frame`` ``(1, 3, H, W)`` and the
    state tensors (:meth:`StreamState.names`), outputs ``scores``, ``logits`` and the next
    state as ``next_<name>``. H, W and the window are fixed in the graph.

    Uses the TorchScript exporter (the graph is a plain trace of one step; the state tensors
    flow through it). Start a stream with :func:`initial_state` (all zeros) and feed each
    ``next_*`` output back as the next call's input. Returns the state input names.
    """
    check_causal(model)
    h, w = _hw(size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with export_mode(model):
        state = initial_state(model, h, w, window=window)
        names = state.names()
        graph = _StepGraph(model, len(state.shift), len(state.motion))
        frame = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(state.logits.device)
        with atomic_output(path) as tmp, _quiet_exporters():
            torch.onnx.export(
                graph, (frame, *state.tensors()), str(tmp), dynamo=False,
                opset_version=opset or DEFAULT_OPSET,
                input_names=["frame", *names], output_names=["scores", "logits", *[f"next_{n}" for n in names]],
            )
    return names


def step_onnx_max_abs_diff(path: str | os.PathLike, model: nn.Module, frames: Tensor, window: int | None = None) -> float:
    """Run ``frames`` ``(T, 3, H, W)`` through the ONNX step (ONNX Runtime) and through
    :func:`stream_step`, carrying each one's state; largest |difference| over the scores,
    logits and state of every frame (needs onnxruntime)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    worst = 0.0
    with export_mode(model):
        state = initial_state(model, frames.shape[-2], frames.shape[-1], window=window)
        onnx_state = [t.cpu().numpy() for t in state.tensors()]
        for frame in frames:
            x = frame.unsqueeze(0)
            out = session.run(None, dict(zip(inputs, [x.cpu().numpy(), *onnx_state])))
            scores, logits, state = stream_step(model, x, state)
            for got, want in zip(out, [scores, logits, *state.tensors()]):
                worst = max(worst, float((torch.from_numpy(got) - want.cpu()).abs().max()))
            onnx_state = out[2:]
    return worst
