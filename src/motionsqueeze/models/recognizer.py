"""Video recogniser: TSN, TSM and MSNet are one network with two switches.

``(N, T, 3, H, W)`` clips are folded to ``(N*T, 3, H, W)`` frames, run through a 2D
backbone (ResNet or MobileNetV2; temporal shift in its residual blocks when
``temporal_shift``; MotionSqueeze after each stage listed in ``motion_stages``), pooled, passed through dropout and a linear classifier
per frame, and the T frame logits are averaged ("avg consensus").

* TSN: no shift, no MotionSqueeze.
* TSM: shift, no MotionSqueeze.
* MSNet: shift and MotionSqueeze after res3 (the paper's model).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor, nn

from ..layers import CausalTemporalShift, MotionSqueeze, TemporalShift
from ..layers.motion_squeeze import LAST_FRAME_MODES
from ..ops import available_backends
from ..ops.correlation import check_patch_size
from ..typed_config import Range, fail, from_mapping, problem_of, setting, validate
from .mobilenetv2 import mobilenet_v2
from .resnet import RESNET_DEPTHS, STAGE_NAMES, resnet

__all__ = ["ModelConfig", "VideoRecognizer", "CustomRecognizer", "build_model", "BACKBONES"]

# Backbone families a ModelConfig can name; both name their stages res2..res5.
BACKBONES = ("resnet", "mobilenet_v2")


def _stages_problem(stages: tuple[str, ...]) -> str | None:
    if any(s not in STAGE_NAMES for s in stages) or len(set(stages)) != len(stages):
        return f"must be distinct names among {', '.join(STAGE_NAMES)}, got {list(stages)}"
    return None


def _per_stage_problem(values: tuple[int, ...]) -> str | None:
    if len(values) != len(STAGE_NAMES):
        return f"must hold one value per stage ({', '.join(STAGE_NAMES)}), got {list(values)}"
    return None


def _backend_problem(name: str) -> str | None:
    names = available_backends()  # read at each check: backends may be registered at run time
    return None if name in names else f"must be a displacement backend, one of {', '.join(names)}; got {name!r}"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a recogniser (stored in checkpoints).

    Backbone:
        backbone: ``"resnet"`` (default) or ``"mobilenet_v2"``.
        depth: ResNet depth (10, 18, 34, 50, 101); ignored for MobileNetV2.
        widths: base widths of res2..res5 in channels, four values, each in range [1, inf);
            ``None`` (default) for the standard (64, 128, 256, 512); ignored for MobileNetV2.
        layers: residual blocks of res2..res5, four values, each in range [1, inf); ``None``
            (default) for the depth's standard counts; ignored for MobileNetV2.
        stem_width: channels of the stem; range [1, inf); ``None`` (default) for
            ``widths[0]``; ignored for MobileNetV2.
        width_mult: MobileNetV2 width multiplier (1.0 default; 0.5 for the ``*_050``
            variants); range (0, inf); ignored for ResNets.
    Video:
        num_classes: classifier outputs; 0 for none (the model returns pooled features);
            default 174; range [0, inf).
        num_segments: T, frames per clip (every input must have exactly T frames); default
            8; range [1, inf).
        temporal_shift: TSM's residual shift before conv1 of every block.
        shift_div: 1/shift_div of the channels move each way (from t-1 only when
            ``causal``); default 8; range [2, inf): two such folds must fit in the channels.
        dropout: dropout probability before the classifier; default 0.5; range [0, 1).
        causal: ``False`` (default) or ``True``: frame t sees only frames <= t, for streaming
            (docs/streaming.md): the shift moves 1/shift_div of the channels from t-1 only,
            and MotionSqueeze matches frame t-1 to t (zero motion at the first frame).
    MotionSqueeze (ignored when ``motion_stages`` is empty):
        motion_stages: stages after which a MotionSqueeze module sits (``"res2".."res5"``,
            distinct; default ``["res3"]``). A model with one needs ``num_segments`` >= 2:
            it matches neighbouring frames.
        reduced_channels: C', channels at which frames are matched; default 64; range
            [1, inf).
        patch_size: P, the matching window is P x P cells of the stage's map; an odd
            integer >= 1 (the window is centred on the cell); default 15.
        sigma: Gaussian width of the kernel-soft-argmax, in cells; default 5; range
            (0, inf).
        temperature: tau, the softmax multiplier on the logits ``g * S``; default 100;
            range (-inf, inf), i.e. any finite number. Every displacement backend computes
            0 (equal weights over the window) and negative values (weights that favour the
            lowest scores) exactly, so they are allowed though not the paper's; an infinite
            tau turns ``0 * inf`` logits into NaN.
        last_frame: ``"repeat"`` (default) or ``"zero"`` for the T-th displacement map.
        transform_channels: hidden widths of the feature transformation, in channels, any
            number of values (default ``[16, 32, 64]``, the paper's), each in range [1, inf).
        backend: displacement implementation: ``"auto"`` (default), ``"reference"``,
            ``"cpu"``, ``"triton"`` or any name added with
            :func:`motionsqueeze.ops.register_backend` (``motionsqueeze.ops.available_backends()``).
    """

    config_key = "model"

    backbone: str = setting("resnet", choices=BACKBONES)
    depth: int = setting(50, choices=tuple(sorted(RESNET_DEPTHS)))
    widths: tuple[int, ...] | None = setting(None, range=Range(1), check=_per_stage_problem)
    layers: tuple[int, ...] | None = setting(None, range=Range(1), check=_per_stage_problem)
    stem_width: int | None = setting(None, range=Range(1))
    width_mult: float = setting(1.0, range=Range(0, lo_open=True))
    num_classes: int = setting(174, range=Range(0))
    num_segments: int = setting(8, range=Range(1))
    temporal_shift: bool = True
    shift_div: int = setting(8, range=Range(2))
    dropout: float = setting(0.5, range=Range(0, 1, hi_open=True))
    causal: bool = False
    motion_stages: tuple[str, ...] = setting(("res3",), check=_stages_problem)
    reduced_channels: int = setting(64, range=Range(1))
    patch_size: int = setting(15, check=problem_of(check_patch_size))
    sigma: float = setting(5.0, range=Range(0, lo_open=True))
    temperature: float = setting(100.0, range=Range(-math.inf, lo_open=True))
    last_frame: str = setting("repeat", choices=LAST_FRAME_MODES)
    transform_channels: tuple[int, ...] = setting((16, 32, 64), range=Range(1))
    backend: str = setting("auto", check=_backend_problem)

    def __post_init__(self):
        if isinstance(self.motion_stages, str):
            self.motion_stages = (self.motion_stages,)
        validate(self)
        if self.motion_stages and self.num_segments < 2:
            fail(self, "model.num_segments",
                 f"MotionSqueeze matches neighbouring frames and needs at least 2 frames (num_segments >= 2), "
                 f"got {self.num_segments}; sample more frames, or use a model without motion_stages")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with ``overrides``; an unknown option or a bad value is an error naming it."""
        if isinstance(overrides.get("motion_stages"), str):
            overrides["motion_stages"] = (overrides["motion_stages"],)
        return from_mapping(type(self), {**self.to_dict(), **overrides})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _motion_squeeze(channels: int, c: ModelConfig) -> MotionSqueeze:
    """The MotionSqueeze module a config asks for, on a map of ``channels`` channels."""
    return MotionSqueeze(
        channels,
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


class VideoRecognizer(nn.Module):
    """Clip classifier over a 2D backbone; see the module docstring.

    The backbone provides ``forward_stem(x)``, ``stages()`` (``[(name, module)]`` in
    order), ``stage_channels`` (``{name: C}``), ``num_features`` and ``shift_blocks()``
    (the blocks whose ``shift`` slot TSM fills).
    """

    # save_model / load_model can rebuild it from its config alone.
    rebuildable = True
    # The model card (motionsqueeze.models.card.ModelCard): set by create_model, load_model
    # and training; None for a model built from a config alone.
    card = None

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        if c.backbone == "mobilenet_v2":
            self.backbone = mobilenet_v2(c.width_mult, num_classes=0)
        else:
            widths = c.widths or (64, 128, 256, 512)
            kwargs = {"widths": widths, "stem_width": c.stem_width or widths[0]}
            if c.layers is not None:
                kwargs["layers"] = c.layers
            self.backbone = resnet(c.depth, num_classes=0, **kwargs)
        self.num_segments = c.num_segments
        if c.temporal_shift:
            shift = CausalTemporalShift if c.causal else TemporalShift
            for block in self.backbone.shift_blocks():
                block.shift = shift(c.num_segments, c.shift_div)
        self.motion = nn.ModuleDict(
            {stage: _motion_squeeze(self.backbone.stage_channels[stage], c) for stage in c.motion_stages}
        )
        self._init_head(self.backbone.num_features)

    def _init_head(self, num_features: int) -> None:
        self.num_features = num_features
        self._new_classifier(self.config.num_classes)

    def _new_classifier(self, num_classes: int) -> None:
        """Dropout and a fresh ``fc`` for ``num_classes`` outputs; 0 makes both identities,
        so the head returns the pooled features."""
        if num_classes == 0:
            self.dropout, self.fc = nn.Identity(), nn.Identity()
            return
        self.dropout = nn.Dropout(self.config.dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(self.fc.weight, 0, 0.001)
        nn.init.zeros_(self.fc.bias)

    @property
    def num_classes(self) -> int:
        """Classifier outputs; 0 after ``reset_classifier(0)`` (no classifier)."""
        return self.fc.out_features if isinstance(self.fc, nn.Linear) else 0

    def get_classifier(self) -> nn.Module:
        """The per-frame classifier ``fc`` (``nn.Linear``, or ``nn.Identity`` with no classes)."""
        return self.fc

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
        return self.forward_intermediates(x)[0]

    def forward_intermediates(self, x: Tensor, intermediates_only: bool = False):
        """Per-stage feature maps of clips ``(N, T, 3, H, W)`` (timm's API).

        Returns ``(features, intermediates)``: ``features`` is :meth:`forward_features`'
        last map ``(N*T, C, h, w)`` and ``intermediates`` the list of stage outputs res2..res5,
        each ``(N*T, C_s, h_s, w_s)`` (frames folded into the batch, frame ``t`` of clip ``n``
        at ``n*T + t``), taken after MotionSqueeze where one follows the stage. With
        ``intermediates_only`` just the list.
        """
        maps = []
        x = self.backbone.forward_stem(self._fold(x))
        for name, stage in self.backbone.stages():
            x = stage(x)
            if name in self.motion:
                x = self.motion[name](x)
            maps.append(x)
        return maps if intermediates_only else (x, maps)

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

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """Per-frame outputs of every stage for clips ``(N, T, 3, H, W)``.

        Returns ``{stage: (N, T, C, h, w)}`` (after MotionSqueeze where one follows the
        stage), ``{"motion_<stage>": (N, T-1, 3, h, w)}`` (``[u, v, confidence]`` as
        :meth:`motion_fields`) and ``"pre_logits"``: ``(N, T, C)`` pooled last-stage features.
        """
        out: dict[str, Tensor] = {}
        x = self.backbone.forward_stem(self._fold(x))
        for name, stage in self.backbone.stages():
            x = stage(x)
            if name in self.motion:
                x, out[f"motion_{name}"] = self.motion[name].forward_with_field(x)
            out[name] = x.view(-1, self.num_segments, *x.shape[1:])
        out["pre_logits"] = x.mean(dim=(2, 3)).view(-1, self.num_segments, x.shape[1])
        return out

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(N*T, C, h, w)`` -> ``(N, classes)`` logits (or ``(N, C)`` pooled features)."""
        x = x.mean(dim=(2, 3))
        x = x.view(-1, self.num_segments, x.shape[-1])
        if pre_logits:
            return x.mean(dim=1)
        return self.fc(self.dropout(x)).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def set_num_segments(self, num_segments: int) -> "VideoRecognizer":
        """Run at another frame count T than the model was built with (TSM's ``test_segments``).

        No weight depends on T: the temporal shift and MotionSqueeze only regroup the frames,
        and the classifier averages over them. Updates the config and the model card, so
        that clips are sampled with T frames. Returns the model.
        """
        config = self.config.replace(num_segments=num_segments)  # checks T >= 1, and >= 2 with MotionSqueeze
        for module in self.modules():
            if isinstance(module, (TemporalShift, MotionSqueeze)):
                module.num_segments = num_segments
        self.num_segments = num_segments
        self.config = config
        if self.card is not None:
            self.card = self.card.with_num_segments(num_segments)
        return self

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes`` outputs (fine-tuning on
        another label set). ``0`` removes it: the model then returns the pooled features
        averaged over T, ``(N, num_features)``."""
        self.config = self.config.replace(num_classes=num_classes)  # checks the number
        param = next(self.parameters())
        self._new_classifier(num_classes)
        self.fc.to(param.device)


def build_model(config: ModelConfig) -> VideoRecognizer:
    return VideoRecognizer(config)


class CustomRecognizer(VideoRecognizer):
    """A user's own 2D CNN as a TSN / TSM / MSNet video recogniser.

    ``backbone`` maps frames ``(B, 3, H, W)`` to feature maps ``(B, C, h, w)`` (drop its
    image classifier first). The recogniser folds clips ``(N, T, 3, H, W)`` into
    ``N*T`` frames, runs the backbone, and adds the same head as the built-in models
    (average pool, dropout, linear per frame, average over T). Two lists of module paths
    (names from ``backbone.named_modules()``, e.g. ``"layer2"`` or ``"blocks.3.conv1"``)
    say where time enters:

    * ``motion_after``: a MotionSqueeze module is added to the output of each of these
      modules (``F + M``, as after res3 of the paper's ResNet); its width is found by
      running one probe clip of ``probe_size`` pixels through the backbone;
    * ``shift_before``: the input of each of these modules is temporally shifted. Name
      the first layer of a residual *branch* (TSM's residual shift keeps the identity
      path unshifted), e.g. ``conv1`` of each block.

    Both act through forward hooks, so the backbone's own code and parameter names are
    untouched (ImageNet weights load into ``model.backbone`` as they are) and
    ``torch.compile`` traces them. MotionSqueeze modules live in ``model.motion`` under
    the path with ``.`` replaced by ``_``. Other :class:`ModelConfig` fields
    (``patch_size``, ``reduced_channels``, ``shift_div``, ``dropout``, ...) are keywords.

    ``save_model`` cannot rebuild user code from a file: save ``model.state_dict()`` and
    rebuild with the same code.
    """

    rebuildable = False

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int,
        num_segments: int,
        motion_after: Sequence[str] = (),
        shift_before: Sequence[str] = (),
        probe_size: int = 64,
        **options,
    ):
        nn.Module.__init__(self)
        motion_after, shift_before = tuple(motion_after), tuple(shift_before)
        self.config = ModelConfig().replace(
            num_classes=num_classes, num_segments=num_segments, temporal_shift=bool(shift_before),
            motion_stages=(), **options,
        )
        self.backbone = backbone
        self.num_segments = num_segments
        self.motion_after, self.shift_before = motion_after, shift_before
        modules = dict(backbone.named_modules())
        for kind, paths in (("motion_after", motion_after), ("shift_before", shift_before)):
            unknown = [p for p in paths if p not in modules or p == ""]
            if unknown or len(set(paths)) != len(paths):
                examples = [n for n in modules if n][:6]
                raise ValueError(
                    f"{kind} must name distinct sub-modules of the backbone by their path in "
                    f"backbone.named_modules(); {unknown or list(paths)} are not, e.g. {examples}"
                )
        channels, num_features = self._probe(motion_after, probe_size)
        self.motion = nn.ModuleDict({_key(p): _motion_squeeze(channels[p], self.config) for p in motion_after})
        self.shift = (CausalTemporalShift if self.config.causal else TemporalShift)(num_segments, self.config.shift_div)
        self._fields: dict[str, Tensor] | None = None
        for p in shift_before:
            modules[p].register_forward_pre_hook(self._shift_input)
        for p in motion_after:
            modules[p].register_forward_hook(self._motion_hook(_key(p)))
        self._init_head(num_features)

    def _probe(self, paths: tuple[str, ...], size: int) -> tuple[dict[str, int], int]:
        """Channels at ``paths`` and of the backbone output, from one probe clip."""
        seen: dict[str, int] = {}
        modules = dict(self.backbone.named_modules())

        def record(path):
            def hook(module, inputs, out):
                if not isinstance(out, Tensor) or out.dim() != 4:
                    raise ValueError(f"motion_after: {path!r} returns {type(out).__name__} "
                                     f"{tuple(getattr(out, 'shape', ()))}, not (B, C, h, w) feature maps")
                seen[path] = out.shape[1]
            return hook

        handles = [modules[p].register_forward_hook(record(p)) for p in paths]
        modes = [(m, m.training) for m in self.backbone.modules()]
        param = next(self.backbone.parameters(), None)
        try:
            self.backbone.eval()  # BatchNorm statistics stay untouched
            clip = torch.zeros(self.num_segments, 3, size, size,
                               device=None if param is None else param.device,
                               dtype=None if param is None else param.dtype)
            with torch.no_grad():
                out = self.backbone(clip)
        finally:
            for h in handles:
                h.remove()
            for m, training in modes:
                m.training = training
        if not isinstance(out, Tensor) or out.dim() != 4:
            raise ValueError(f"the backbone must return feature maps (B, C, h, w); it returned "
                             f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))} (remove its classifier)")
        return seen, out.shape[1]

    def _shift_input(self, module: nn.Module, args: tuple) -> tuple:
        return (self.shift(args[0]),) + tuple(args[1:])

    def _motion_hook(self, key: str):
        def hook(module: nn.Module, inputs: tuple, out: Tensor) -> Tensor:
            if self._fields is not None:
                out, self._fields[key] = self.motion[key].forward_with_field(out)
                return out
            return self.motion[key](out)
        return hook

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone(self._fold(x))

    def forward_intermediates(self, x: Tensor, intermediates_only: bool = False,
                              modules: Sequence[str] | None = None):
        """As :meth:`VideoRecognizer.forward_intermediates`, for the outputs of ``modules``
        (paths in ``backbone.named_modules()``, in the order given); by default the
        backbone's top-level children whose output is a 4-D feature map. A map is taken
        after the MotionSqueeze module that follows it, if any. Layout ``(N*T, C, h, w)``."""
        named = dict(self.backbone.named_modules())
        paths = list(modules) if modules is not None else [n for n, _ in self.backbone.named_children()]
        unknown = [p for p in paths if p not in named or p == ""]
        if unknown:
            raise ValueError(f"modules must be paths in backbone.named_modules(); {unknown} are not")
        seen: dict[str, Tensor] = {}

        def record(path):
            def hook(module, inputs, out):
                if isinstance(out, Tensor) and out.dim() == 4:
                    seen[path] = out
            return hook

        # Registered after the MotionSqueeze hooks, so these see their output.
        handles = [named[p].register_forward_hook(record(p)) for p in paths]
        try:
            x = self.forward_features(x)
        finally:
            for h in handles:
                h.remove()
        maps = [seen[p] for p in paths if p in seen]
        return maps if intermediates_only else (x, maps)

    def motion_fields(self, x: Tensor) -> dict[str, Tensor]:
        """As :meth:`VideoRecognizer.motion_fields`, keyed like ``model.motion``; runs the
        whole backbone."""
        self._fields = {}
        try:
            self.forward_features(x)
            return self._fields
        finally:
            self._fields = None


def _key(path: str) -> str:
    return path.replace(".", "_")
