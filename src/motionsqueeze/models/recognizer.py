"""Video recogniser: TSN, TSM and MSNet are one network with two switches.

``(N, T, 3, H, W)`` clips are folded to ``(N*T, 3, H, W)`` frames, run through a ResNet
(temporal shift in every residual block when ``temporal_shift``; MotionSqueeze after each
stage listed in ``motion_stages``), pooled, passed through dropout and a linear classifier
per frame, and the T frame logits are averaged ("avg consensus").

* TSN: no shift, no MotionSqueeze.
* TSM: shift, no MotionSqueeze.
* MSNet: shift and MotionSqueeze after res3 (the paper's model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from torch import Tensor, nn

from ..layers import CausalTemporalShift, MotionSqueeze, TemporalShift
from .resnet import RESNET_DEPTHS, STAGE_NAMES, resnet

__all__ = ["ModelConfig", "VideoRecognizer", "build_model"]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a recogniser (stored in checkpoints).

    Backbone:
        depth: ResNet depth (10, 18, 34, 50, 101).
        widths: base widths of res2..res5; ``None`` for the standard (64, 128, 256, 512).
        layers: residual blocks per stage; ``None`` for the depth's standard counts.
        stem_width: channels of the stem; ``None`` for ``widths[0]``.
    Video:
        num_classes: classifier outputs.
        num_segments: T, frames per clip (every input must have exactly T frames).
        temporal_shift: TSM's residual shift before conv1 of every block.
        shift_div: 1/shift_div of the channels move each way.
        dropout: dropout probability before the classifier.
        causal: ``False`` (default) or ``True``: frame t sees only frames <= t, for streaming
            (docs/streaming.md): the shift moves 1/shift_div of the channels from t-1 only,
            and MotionSqueeze matches frame t-1 to t (zero motion at the first frame).
    MotionSqueeze (ignored when ``motion_stages`` is empty):
        motion_stages: stages after which a MotionSqueeze module sits (``"res2".."res5"``).
        reduced_channels: C', width at which frames are matched.
        patch_size: P, odd; the matching window is P x P cells of the stage's map.
        sigma: Gaussian width of the kernel-soft-argmax, in cells.
        temperature: softmax multiplier.
        last_frame: ``"repeat"`` or ``"zero"`` for the T-th displacement map.
        transform_channels: hidden widths of the feature transformation.
        backend: displacement implementation (``"auto"``, ``"reference"``, ``"triton"``).
    """

    depth: int = 50
    widths: tuple[int, ...] | None = None
    layers: tuple[int, ...] | None = None
    stem_width: int | None = None
    num_classes: int = 174
    num_segments: int = 8
    temporal_shift: bool = True
    shift_div: int = 8
    dropout: float = 0.5
    causal: bool = False
    motion_stages: tuple[str, ...] = ("res3",)
    reduced_channels: int = 64
    patch_size: int = 15
    sigma: float = 5.0
    temperature: float = 100.0
    last_frame: str = "repeat"
    transform_channels: tuple[int, ...] = (16, 32, 64)
    backend: str = "auto"

    def __post_init__(self):
        for name in ("widths", "layers", "motion_stages", "transform_channels"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if value is not None:
                setattr(self, name, tuple(value))
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {self.depth}")
        unknown = [s for s in self.motion_stages if s not in STAGE_NAMES]
        if unknown or len(set(self.motion_stages)) != len(self.motion_stages):
            raise ValueError(
                f"motion_stages must be distinct names among {STAGE_NAMES}, got {self.motion_stages}"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if self.num_segments < 1:
            raise ValueError(f"num_segments must be positive, got {self.num_segments}")
        if not isinstance(self.causal, bool):
            raise ValueError(f"causal must be true or false, got {self.causal!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **overrides) -> "ModelConfig":
        unknown = sorted(set(overrides) - set(self.field_names()))
        if unknown:
            raise ValueError(
                f"unknown model option(s) {unknown}; valid options are {self.field_names()}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class VideoRecognizer(nn.Module):
    """Clip classifier over a 2D ResNet; see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        widths = c.widths or (64, 128, 256, 512)
        kwargs = {"widths": widths, "stem_width": c.stem_width or widths[0]}
        if c.layers is not None:
            kwargs["layers"] = c.layers
        self.backbone = resnet(c.depth, num_classes=0, **kwargs)
        self.num_segments = c.num_segments
        if c.temporal_shift:
            shift = CausalTemporalShift if c.causal else TemporalShift
            for _, stage in self.backbone.stages():
                for block in stage:
                    block.shift = shift(c.num_segments, c.shift_div)
        self.motion = nn.ModuleDict(
            {
                stage: MotionSqueeze(
                    self.backbone.stage_channels[stage],
                    reduced_channels=c.reduced_channels,
                    patch_size=c.patch_size,
                    sigma=c.sigma,
                    temperature=c.temperature,
                    num_segments=c.num_segments,
                    last_frame=c.last_frame,
                    transform_channels=c.transform_channels,
                    backend=c.backend,
                    causal=c.causal,
                )
                for stage in c.motion_stages
            }
        )
        self.num_features = self.backbone.num_features
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(self.num_features, c.num_classes)
        nn.init.normal_(self.fc.weight, 0, 0.001)
        nn.init.zeros_(self.fc.bias)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def _fold(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(
                f"expected clips of shape (N, T, 3, H, W), got a tensor of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_segments:
            raise ValueError(
                f"the model was built for num_segments={self.num_segments} frames per clip, "
                f"got clips of {x.shape[1]} frames; sample {self.num_segments} frames or rebuild "
                f"the model with num_segments={x.shape[1]}"
            )
        return x.flatten(0, 1)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, T, 3, H, W)`` -> last stage map ``(N*T, C, h, w)``."""
        x = self.backbone.forward_stem(self._fold(x))
        for name, stage in self.backbone.stages():
            x = stage(x)
            if name in self.motion:
                x = self.motion[name](x)
        return x

    def motion_fields(self, x: Tensor) -> dict[str, Tensor]:
        """What each MotionSqueeze module computes for clips ``(N, T, 3, H, W)``.

        Returns ``{stage: (N, T-1, 3, h, w)}`` with ``[u, v, confidence]`` from frame t to
        t+1 on that stage's map (u, v in units of ``(patch_size - 1) / 2`` cells). Runs the
        network only as far as the last MotionSqueeze stage.
        """
        fields: dict[str, Tensor] = {}
        x = self.backbone.forward_stem(self._fold(x))
        for name, stage in self.backbone.stages():
            if len(fields) == len(self.motion):
                break
            x = stage(x)
            if name in self.motion:
                x, fields[name] = self.motion[name].forward_with_field(x)
        return fields

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(N*T, C, h, w)`` -> ``(N, classes)`` logits (or ``(N, C)`` pooled features)."""
        x = x.mean(dim=(2, 3))
        x = x.view(-1, self.num_segments, x.shape[-1])
        if pre_logits:
            return x.mean(dim=1)
        return self.fc(self.dropout(x)).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes).to(self.fc.weight.device)
        nn.init.normal_(self.fc.weight, 0, 0.001)
        nn.init.zeros_(self.fc.bias)
        self.config = self.config.replace(num_classes=num_classes)


def build_model(config: ModelConfig) -> VideoRecognizer:
    return VideoRecognizer(config)
