"""Whether a compiler or an exporter is recording the current call.

Eager-only fast paths (in-place writes, hand-written autograd functions) step aside while
torch.compile, torch.export, the ONNX exporters or TorchScript record a graph, so that what
they record is the plain, exportable PyTorch formulation.
"""

from __future__ import annotations

import torch

__all__ = ["recording"]


def recording() -> bool:
    """True under torch.compile / torch.export / ONNX export / jit tracing or scripting."""
    return bool(
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )
