"""The MotionSqueeze module (Kwon, Kim, Kwak, Cho; ECCV 2020), docs/method.md §1-§8.

``F' = F + M(F)`` where, for the frames of each clip,

1. ``chnl_reduction``: 1x1 conv C -> C' (no bias), BatchNorm, ReLU;
2-5. :func:`motionsqueeze.ops.displacement` between frame t and t+1 gives ``[u, v, conf]``;
6. the T-1 displacement maps of a clip are padded to T by repeating the last one
   (``last_frame="repeat"``, the authors' current code) or with zeros (``"zero"``, their
   early release);
7. ``flow_refinement`` ("feature transformation" in the paper): depthwise-separable blocks
   ``dw 7x7 -> pw 3->16``, ``dw 3x3 -> pw 16->32``, ``dw 3x3 -> pw 32->64``,
   ``dw 3x3 -> pw 64->C``, every conv without bias and followed by BatchNorm + ReLU;
8. the motion feature is added to the input, no activation after the sum.

Causal mode (``causal=True``, for streaming, docs/streaming.md): the same T-1 displacement
maps (earlier frame matched to the later one), but map (t-1 -> t) goes to frame t, and frame 0,
which has no past, gets an all-zero map (u = v = 0, confidence 0); ``last_frame`` is then
unused. Frame t then depends on frames t-1 and t only, and :meth:`MotionSqueeze.step` computes
it from frame t and the cached reduced features of frame t-1 (in eager CPU inference through
:func:`motionsqueeze.ops.displacement_step.displacement_prepared` and BatchNorm folded into the
convolutions, the same function with fewer operators).

Whole clips in eager CPU inference (evaluation mode, autograd off) take the same shortcut:
BatchNorm folded into ``chnl_reduction`` and the feature transformation, the latter run
channels-last; the values match the modules' to float rounding (tests/test_layers.py).

Sub-module names follow the authors' code (``chnl_reduction``, ``flow_refinement.conv1..4``
with the convolutions at Sequential indices 0 and 3) so their checkpoints map one to one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..ops import displacement
from ..ops.correlation import check_patch_size
from ..ops.displacement_step import displacement_prepared, pair_features, pair_path_applies
from .temporal_shift import check_segments, is_channels_last

__all__ = ["MotionSqueeze", "FeatureTransform"]

LAST_FRAME_MODES = ("repeat", "zero")


def _fold_batchnorm(layers: Sequence[nn.Module]) -> list[tuple[Tensor, Tensor, nn.Conv2d]]:
    """``(weight, bias, conv)`` per Conv2d -> BatchNorm2d -> ReLU triple of ``layers``, the
    BatchNorm's running statistics and affine folded into the convolution's weight and bias
    (valid in evaluation mode only)."""
    folded = []
    for conv, bn in zip(layers[0::3], layers[1::3]):
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        # Channels-last weights: PyTorch's CPU depthwise convolutions run ~1.5x faster so.
        folded.append((w.detach().contiguous(memory_format=torch.channels_last), b.detach(), conv))
    return folded


def _run_folded(x: Tensor, folded: list[tuple[Tensor, Tensor, nn.Conv2d]]) -> Tensor:
    for w, b, conv in folded:
        x = F.relu_(F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups))
    return x


def _neighbours(f: Tensor, n: int, t: int) -> tuple[Tensor, Tensor]:
    """Frames ``0..T-2`` and ``1..T-1`` of every clip of ``f`` ``(N*T, C, H, W)``, each
    ``(N*(T-1), C, H, W)`` in the layout of ``f``: a channels-last ``f`` is cut in its
    ``(N, T, H, W, C)`` view, so that the copies, and the gradients they send back, stay
    channels-last (a gradient in the other layout makes every BatchNorm and ReLU backward of
    a channels-last model up to 15x slower on a CPU)."""
    _, c, h, w = f.shape
    if is_channels_last(f):
        v = f.permute(0, 2, 3, 1).view(n, t, h, w, c)
        return tuple(s.reshape(-1, h, w, c).permute(0, 3, 1, 2) for s in (v[:, :-1], v[:, 1:]))
    v = f.view(n, t, c, h, w)
    return v[:, :-1].reshape(-1, c, h, w), v[:, 1:].reshape(-1, c, h, w)


def _separable_block(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, kernel_size, padding=kernel_size // 2, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FeatureTransform(nn.Module):
    """Displacement tensor ``(N*T, 3, H, W)`` -> motion feature ``(N*T, C, H, W)`` (step 7)."""

    def __init__(self, out_channels: int, channels: Sequence[int] = (16, 32, 64), in_channels: int = 3):
        super().__init__()
        widths = [in_channels, *channels, out_channels]
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            self.add_module(f"conv{i + 1}", _separable_block(c_in, c_out, 7 if i == 0 else 3))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.children():
            x = block(x)
        return x


class MotionSqueeze(nn.Module):
    """Motion feature from neighbouring frames, added to the input features.

    Args:
        in_channels: C, width of the stage it follows (512 after res3 of ResNet-50).
        reduced_channels: C', width at which frames are matched.
        patch_size: P, odd; displacements of up to (P-1)/2 cells each way.
        sigma: Gaussian width of the kernel-soft-argmax, in cells.
        temperature: softmax multiplier tau.
        num_segments: T, frames per clip; inputs are ``(N*T, C, H, W)``.
        last_frame: ``"repeat"`` or ``"zero"``, how the T-th displacement map is filled.
        transform_channels: hidden widths of the feature transformation.
        backend: displacement implementation (see :func:`motionsqueeze.ops.displacement`).
        causal: match frame t-1 to t and give frame 0 a zero map (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        reduced_channels: int = 64,
        patch_size: int = 15,
        sigma: float = 5.0,
        temperature: float = 100.0,
        num_segments: int = 8,
        last_frame: str = "repeat",
        transform_channels: Sequence[int] = (16, 32, 64),
        backend: str = "auto",
        causal: bool = False,
    ):
        super().__init__()
        check_patch_size(patch_size)
        if last_frame not in LAST_FRAME_MODES:
            raise ValueError(f"last_frame must be one of {LAST_FRAME_MODES}, got {last_frame!r}")
        if num_segments < 2:
            raise ValueError(
                f"MotionSqueeze matches neighbouring frames and needs num_segments >= 2, "
                f"got {num_segments}"
            )
        self.in_channels = in_channels
        self.reduced_channels = reduced_channels
        self.patch_size = patch_size
        self.sigma = sigma
        self.temperature = temperature
        self.num_segments = num_segments
        self.last_frame = last_frame
        self.backend = backend
        self.causal = causal
        self.chnl_reduction = nn.Sequential(
            nn.Conv2d(in_channels, reduced_channels, 1, bias=False),
            nn.BatchNorm2d(reduced_channels),
            nn.ReLU(inplace=True),
        )
        self.flow_refinement = FeatureTransform(in_channels, transform_channels)

    def motion_field(self, x: Tensor) -> Tensor:
        """Displacement and confidence between neighbouring frames.

        Args:
            x: ``(N*T, C, H, W)`` stage output, frames of a clip contiguous.

        Returns:
            ``(N, T-1, 3, H, W)``: ``[u, v, conf]`` from frame t to t+1, u and v in units
            of the half-window ``(P-1)/2`` cells (multiply by that and by the stage stride
            for input pixels).
        """
        n = check_segments(x, self.num_segments, min_segments=2)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"MotionSqueeze was built for {self.in_channels} channels, got {x.shape[1]}"
            )
        f = _run_folded(x, self._folded()[0]) if self._folded_path_applies(x) else self.chnl_reduction(x)
        f1, f2 = _neighbours(f, n, self.num_segments)
        _, c, h, w = f.shape
        d = displacement(
            f1, f2, self.patch_size, self.sigma, self.temperature, backend=self.backend
        )
        return d.view(n, self.num_segments - 1, 3, h, w)

    def _folded_path_applies(self, x: Tensor) -> bool:
        """Eager CPU inference (evaluation mode, autograd off, no tracing or export), where the
        convolutions run with BatchNorm folded in and the feature transformation channels-last:
        the same function with fewer, faster operators. Training, autograd, export and
        compilers take the modules as they are."""
        return self.backend == "auto" and not self.training and pair_path_applies(x)

    def forward_with_field(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(output, motion_field(x))`` from one computation of the field."""
        d = self.motion_field(x)  # through the public method, which tools may wrap
        folded = self._folded_path_applies(x)
        if self.causal:
            padded = torch.cat([torch.zeros_like(d[:, :1]), d], dim=1).flatten(0, 1)
        else:
            last = d[:, -1:] if self.last_frame == "repeat" else torch.zeros_like(d[:, -1:])
            padded = torch.cat([d, last], dim=1).flatten(0, 1)  # (N*T, 3, H, W)
        if folded:
            motion = _run_folded(padded.contiguous(memory_format=torch.channels_last), self._folded()[1])
            return x + (motion.contiguous() if x.is_contiguous() else motion), d
        if is_channels_last(x):
            padded = padded.contiguous(memory_format=torch.channels_last)  # one layout, see _neighbours
        return x + self.flow_refinement(padded), d

    def step(
        self, x: Tensor, prev: Tensor | None, has_prev: Tensor | None = None, memo: dict | None = None
    ) -> tuple[Tensor, Tensor]:
        """Causal output for one frame per clip.

        Args:
            x: ``(N, C, H, W)``, the stage output of frame t.
            prev: ``(N, C', H, W)``, the reduced features of frame t-1 (what the previous
                call returned); ``None`` before the first frame.
            has_prev: ``(N,)`` or a scalar, 1 where ``prev`` holds a real frame and 0 where
                not (the zero map of the first frame); taken as 1 when ``prev`` is given and
                this is ``None``.
            memo: a dict the caller keeps for this stream and stage from one call to the next
                (or ``None``): the eager CPU path leaves in it the normalised form of the
                features it returns, and uses it at the next call if ``prev`` is that same
                tensor, unchanged, instead of normalising ``prev`` again; and the working
                buffers of the displacement, reused from frame to frame.

        Returns:
            ``(output (N, C, H, W), reduced features of frame t (N, C', H, W))``.
        """
        if not self.causal:
            raise ValueError("MotionSqueeze.step needs a causal module (built with causal=True)")
        # Eager CPU inference (a stream's usual case) takes a path with fewer operators:
        # BatchNorm folded into the convolutions, channels-last feature transformation, and
        # the one-pair displacement (the whole clip's rule, _folded_path_applies).
        if self._folded_path_applies(x):
            return self._fast_step(x, prev, has_prev, memo)
        f = self.chnl_reduction(x)
        if prev is None:
            prev, has_prev = torch.zeros_like(f), torch.zeros((), dtype=f.dtype, device=f.device)
        d = displacement(prev, f, self.patch_size, self.sigma, self.temperature, backend=self.backend)
        if has_prev is not None:
            d = d * has_prev.to(d.dtype).reshape(-1, 1, 1, 1)
        return x + self.flow_refinement(d), f

    def _fast_step(self, x: Tensor, prev: Tensor | None, has_prev: Tensor | None, memo: dict | None) -> tuple[Tensor, Tensor]:
        """:meth:`step` in eager CPU inference: folded BatchNorm, prepared features
        (:func:`~motionsqueeze.ops.displacement_step.pair_features`, kept in ``memo``), the
        displacement in channels-last memory straight into the channels-last transformation."""
        reduction, transform = self._folded()
        f = _run_folded(x, reduction)
        pb = pair_features(f, self.patch_size)
        if prev is None:  # first frame: a zero map, nothing to match
            n, _, h, w = f.shape
            d = pb.new_zeros(n, h, w, 3).permute(0, 3, 1, 2)
        else:
            seen = memo is not None and memo.get("features") is prev and memo.get("version") == prev._version
            pa = memo["prepared"] if seen else pair_features(prev, self.patch_size)
            scratch = memo.setdefault("scratch", {}) if memo is not None else None
            d = displacement_prepared(pa, pb, self.patch_size, self.sigma, self.temperature, scratch)  # channels-last
            if has_prev is not None:
                d.mul_(has_prev.to(d.dtype).reshape(-1, 1, 1, 1))
        if memo is not None:
            memo.update(features=f, version=f._version, prepared=pb)
        motion = _run_folded(d.to(x.dtype), transform)
        return x + motion, f  # laid out as x

    def _folded(self) -> tuple[list, list]:
        """``chnl_reduction`` and ``flow_refinement`` with BatchNorm folded in, for
        :meth:`step` and whole clips in evaluation mode. Cached on the module (not in its state dict) until a
        parameter or buffer is replaced or changed in place (loading, training, ``.to()``)."""
        holders = self.__dict__.get("_folded_holders")  # the sub-modules with tensors
        if holders is None:
            holders = self.__dict__["_folded_holders"] = [m for m in self.modules() if m._parameters or m._buffers]
        key = tuple((t.data_ptr(), t._version) for m in holders
                    for t in (*m._parameters.values(), *m._buffers.values()) if t is not None)
        cache = self.__dict__.get("_folded_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                layers = [m for block in self.flow_refinement.children() for m in block]
                cache = (key, _fold_batchnorm(list(self.chnl_reduction)), _fold_batchnorm(layers))
            self.__dict__["_folded_cache"] = cache
        return cache[1], cache[2]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_field(x)[0]

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, reduced_channels={self.reduced_channels}, "
            f"patch_size={self.patch_size}, sigma={self.sigma}, temperature={self.temperature}, "
            f"num_segments={self.num_segments}, last_frame={self.last_frame!r}"
            + (", causal=True" if self.causal else "")
        )
