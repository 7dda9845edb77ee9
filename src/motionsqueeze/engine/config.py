"""Training configuration: dataclasses loaded from YAML, overridable with ``key=value``.

A recipe (``configs/*.yaml``) has the sections ``model``, ``data``, ``optim``, ``schedule``,
``train`` and ``eval`` and an optional ``out`` folder. Every field is documented on its
dataclass below with its unit and default. An unknown key is an error that names the key,
the file and line, and the valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..data.augment import AugmentConfig
from ..data.config import DataConfig
from ..data.synthetic import SyntheticDataConfig
from ..models.recognizer import ModelConfig
from ..models.registry import model_config
from ..typed_config import (ConfigError, Range, Where, apply_overrides, check_value, fail, from_mapping,
                            numeric_ranges, parse_yaml, range_table as _range_table, read_yaml, setting,
                            unknown_key, validate)

__all__ = [
    "ConfigError",
    "Range",
    "RANGES",
    "check_device",
    "ModelSection",
    "OptimConfig",
    "ScheduleConfig",
    "RunConfig",
    "EvalConfig",
    "AugmentConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "config_to_dict",
    "range_table",
]

# A recipe is a small text file; these bound what parsing it may cost.
MAX_RECIPE_BYTES = 1_000_000
MAX_RECIPE_NODES = 100_000  # YAML nodes once aliases are expanded

DEVICE_RULE = "must be auto, cpu, cuda or cuda:N (or another torch device such as mps)"


def _device_problem(spec: str) -> str | None:
    import torch

    if spec == "auto":
        return None
    try:
        torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        return f"{DEVICE_RULE}, got {spec!r}"
    return None


def check_device(spec: str, key: str = "train.device") -> str:
    """Refuse a device name torch does not know (``auto`` is accepted)."""
    problem = _device_problem(spec)
    if problem:
        raise ConfigError(f"{key} {problem}")
    return spec


@dataclass
class ModelSection:
    """``model:`` section.

    Attributes:
        arch: registered model name (``motionsqueeze flops --list``), e.g. ``msnet_r50``.
        pretrained: local ImageNet weights in torchvision's layout (``.pth`` or
            ``.safetensors``) for the backbone; ``null`` trains from scratch.
        init_from: a trained model of the same architecture (model file or training
            checkpoint) to start from, all but a classifier of another size (fine-tuning,
            e.g. HMDB-51 from Kinetics); ``null`` for none.
        freeze_bn: BatchNorm during training: ``none`` (train every layer, the paper's
            recipes), ``partial`` (TSN's partial BN: every BatchNorm but the first keeps its
            running statistics and affine parameters, in training mode too) or ``all``.
            Default ``none``.
        options: any other :class:`motionsqueeze.models.ModelConfig` field (``dropout``,
            ``patch_size``, ``motion_stages``, ...), written directly under ``model:``.
            ``num_classes`` and ``num_segments`` come from the data section.
    """

    config_key = "model"

    arch: str = "msnet_r50"
    pretrained: str | None = None
    init_from: str | None = None
    freeze_bn: str = setting("none", choices=("none", "partial", "all"))
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self)


@dataclass
class OptimConfig:
    """``optim:`` section.

    Attributes:
        name: ``sgd`` (momentum, optionally Nesterov) or ``adamw``.
        lr: learning rate for a total batch of ``reference_batch_size`` clips; range (0, 10].
        reference_batch_size: the lr is scaled by ``total batch / reference_batch_size``
            (linear scaling); 0 disables scaling; range [0, 1000000] clips.
        momentum: SGD momentum; range [0, 1).
        nesterov: Nesterov momentum for SGD.
        betas: AdamW betas, two values, each in range [0, 1).
        weight_decay: L2 penalty for weights that decay; range [0, 1].
        bias_lr_mult: lr multiplier for biases (the recipes use 2); range [0, 100].
        bias_decay: apply weight decay to biases.
        norm_decay: apply weight decay to BatchNorm weights and biases.
        classifier_lr_mult: lr multiplier for the classifier ``fc`` (5 when fine-tuning);
            range [0, 100].
        clip_grad_norm: clip the global gradient norm to this value; ``null`` for no
            clipping; range (0, 1000000].
    """

    config_key = "optim"

    name: str = setting("sgd", choices=("sgd", "adamw"))
    lr: float = setting(0.01, range=Range(0, 10, lo_open=True))
    reference_batch_size: int = setting(48, range=Range(0, 1_000_000))
    momentum: float = setting(0.9, range=Range(0, 1, hi_open=True))
    nesterov: bool = True
    betas: tuple[float, float] = setting((0.9, 0.999), range=Range(0, 1, hi_open=True))
    weight_decay: float = setting(5e-4, range=Range(0, 1))
    bias_lr_mult: float = setting(2.0, range=Range(0, 100))
    bias_decay: bool = False
    norm_decay: bool = False
    classifier_lr_mult: float = setting(1.0, range=Range(0, 100))
    clip_grad_norm: float | None = setting(200.0, range=Range(0, 1_000_000, lo_open=True))

    def __post_init__(self):
        validate(self)


@dataclass
class ScheduleConfig:
    """``schedule:`` section (the learning rate is updated every step).

    Attributes:
        epochs: training epochs; range [1, 100000].
        kind: ``step`` (multiply by ``gamma`` at each milestone), ``cosine`` (to
            ``min_lr_factor`` at the end) or ``constant``.
        milestones: epochs at which ``step`` multiplies the lr by ``gamma``; each in range
            [0, 100000].
        gamma: factor of ``step``; range (0, 1].
        min_lr_factor: final lr of ``cosine`` as a fraction of the peak; range [0, 1].
        warmup_epochs: linear warm-up length in epochs (may be fractional); 0 for none;
            range [0, 100000].
        warmup_start_factor: lr at the first step of warm-up as a fraction of the peak;
            range [0, 1].
    """

    config_key = "schedule"

    epochs: int = setting(40, range=Range(1, 100_000))
    kind: str = setting("step", choices=("step", "cosine", "constant"))
    milestones: tuple[int, ...] = setting((20, 30), range=Range(0, 100_000))
    gamma: float = setting(0.1, range=Range(0, 1, lo_open=True))
    min_lr_factor: float = setting(0.0, range=Range(0, 1))
    warmup_epochs: float = setting(0.0, range=Range(0, 100_000))
    warmup_start_factor: float = setting(0.1, range=Range(0, 1))

    def __post_init__(self):
        validate(self)


@dataclass
class RunConfig:
    """``train:`` section: how the loop runs.

    Attributes:
        batch_size: clips per process per step (total batch = batch_size x processes);
            range [1, 65536].
        workers: DataLoader worker processes per process; range [0, 256].
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on CUDA: ``none``, ``bf16`` or ``fp16`` (with a gradient scaler).
        channels_last: use the channels-last memory format (faster convolutions on GPUs, and
            ~25% faster training of the small demo models on a CPU).
        compile: wrap the model in ``torch.compile``.
        sync_bn: synchronise BatchNorm statistics across processes.
        seed: seed of weights, data order, augmentation and dropout; range [0, 4294967295].
        log_every: steps between progress log lines; range [0, 1000000000].
        save_every_steps: also write a resumable checkpoint every N steps; 0 for epochs only;
            range [0, 1000000000].
        eval_every: epochs between validations; 0 for none until the end; range [0, 100000].
        best_metric: validation metric that decides the best checkpoint (``top1``,
            ``top5`` or ``mean_class_acc``).
        progress: show progress bars on an interactive terminal.
        tensorboard: also log to TensorBoard when it is installed.
        max_steps_per_epoch: cap on steps per epoch (for smoke tests); 0 for no cap; range
            [0, 1000000000].
        stop_signals: signal names that make the run save a resumable checkpoint at the next
            step boundary and exit with code 75 (preemption); default ``[SIGTERM, SIGUSR1]``;
            ``[]`` keeps the signals' default action.
        accumulate: gradient accumulation, K batches of ``batch_size`` clips per optimiser
            update (default 1: update every batch); range [1, 1000000]. The total batch, and
            with it the linearly scaled lr, is ``batch_size x processes x accumulate``;
            BatchNorm still sees ``batch_size`` clips at a time. Steps (``save_every_steps``,
            ``log_every``, ``max_steps_per_epoch``) count batches, the schedule counts updates.
        label_smoothing: epsilon of label smoothing; default 0 (off); range [0, 1).
        class_balance: for imbalanced training lists: ``none`` (default), ``loss``
            (cross-entropy weighted by inverse class frequency) or ``sampler`` (draw items
            with replacement so that every class is equally likely).
        ema_decay: exponential moving average of the weights, decay per update (e.g.
            0.999); default 0 (off); range [0, 1). The average is validated and saved as
            ``ema.safetensors``.
    """

    config_key = "train"

    batch_size: int = setting(8, range=Range(1, 65536))
    workers: int = setting(4, range=Range(0, 256))
    device: str = setting("auto", check=_device_problem)
    amp: str = setting("none", choices=("none", "bf16", "fp16"))
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    seed: int = setting(0, range=Range(0, 2**32 - 1))
    log_every: int = setting(20, range=Range(0, 1_000_000_000))
    save_every_steps: int = setting(0, range=Range(0, 1_000_000_000))
    eval_every: int = setting(1, range=Range(0, 100_000))
    best_metric: str = setting("top1", choices=("top1", "top5", "mean_class_acc"))
    progress: bool = True
    tensorboard: bool = True
    max_steps_per_epoch: int = setting(0, range=Range(0, 1_000_000_000))
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    accumulate: int = setting(1, range=Range(1, 1_000_000))
    label_smoothing: float = setting(0.0, range=Range(0, 1, hi_open=True))
    class_balance: str = setting("none", choices=("none", "loss", "sampler"))
    ema_decay: float = setting(0.0, range=Range(0, 1, hi_open=True))

    def __post_init__(self):
        validate(self)


@dataclass
class EvalConfig:
    """``eval:`` section: how view scores are fused. The views themselves (clips per video,
    crops per clip) are data settings: ``data.test_num_clips`` and ``data.test_num_crops``.

    Attributes:
        fusion: ``logits`` (mean of the views' logits, as the TSM and MotionSqueeze test
            scripts do) or ``softmax`` (mean of the views' probabilities).
        batch_size: videos per evaluation batch; range [1, 65536].
    """

    config_key = "eval"

    fusion: str = setting("logits", choices=("logits", "softmax"))
    batch_size: int = setting(8, range=Range(1, 65536))

    def __post_init__(self):
        validate(self)


@dataclass
class TrainConfig:
    """A whole recipe. ``data`` is a :class:`motionsqueeze.data.config.DataConfig` for list
    files, or a :class:`motionsqueeze.data.synthetic.SyntheticDataConfig` when
    ``data.dataset`` is ``synthetic``. ``out`` is the run folder (checkpoints, metrics)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    out: str | None = None
    source: str | None = None  # the YAML file this came from (set by load_config)

    def validate(self) -> None:
        """Check every section again (after changing fields in code) and that there is data."""
        for f in fields(self):
            section = getattr(self, f.name)
            if is_dataclass(section):
                validate(section)
        if self.data is None:
            raise ConfigError(f"{self.source or 'config'}: data: the section is missing; add a 'data:' "
                              f"section (list files, or dataset: synthetic)")


# The range of every numeric field of the sections below, from the fields' metadata (each is
# also in the field's docs and in docs/security.md).
SECTIONS = {"optim": OptimConfig, "schedule": ScheduleConfig, "train": RunConfig, "eval": EvalConfig}
RANGES: dict[str, Range] = {k: v for cls in SECTIONS.values() for k, v in numeric_ranges(cls).items()}

# --------------------------------------------------------------------------- loading

# ModelConfig fields that come from the data section, not from ``model:``.
_FROM_DATA = ("num_classes", "num_segments")


def _model_section(raw: Any, where: Where) -> ModelSection:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        fail(TrainConfig, "model", f"must be a mapping (arch: ..., and model options), got {raw!r}", where)
    own = [f.name for f in fields(ModelSection) if f.name != "options"]
    valid = [n for n in ModelConfig.field_names() if n not in _FROM_DATA]
    options = {}
    for key, value in raw.items():
        if key in own:
            continue
        if key in _FROM_DATA:
            fail(ModelSection, f"model.{key}", f"is set from the data section (data.{key}); remove it here", where)
        if key not in valid:
            unknown_key(ModelSection, f"model.{key}", own + valid, where)
        options[key] = check_value(ModelConfig, key, value, f"model.{key}", where)
    section = from_mapping(ModelSection, {k: v for k, v in raw.items() if k in own}, where)
    section.options = options
    return section


def _data_section(raw: Any, where: Where):
    if isinstance(raw, dict) and raw.get("dataset") == "synthetic":
        return from_mapping(SyntheticDataConfig, raw, where, "data")
    return from_mapping(DataConfig, raw, where, "data")


def _check_model(cfg: TrainConfig, where: Where) -> None:
    """The recipe's model must be registered and fit the data: its options are checked with
    the data's frame count now, not when training builds the model (a model with
    MotionSqueeze needs ``data.num_segments`` >= 2)."""
    try:
        model_config(cfg.model.arch, num_segments=cfg.data.num_segments, **cfg.model.options)
    except ConfigError as exc:
        key = exc.key if exc.key != "model.num_segments" else "data.num_segments"  # set from there
        fail(TrainConfig, key, exc.problem, where)
    except ValueError as exc:  # an arch that is not registered
        fail(ModelSection, "model.arch", str(exc), where)


def config_from_dict(raw: dict, source: str | None = None, text: str | None = None,
                     where: Where | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a parsed YAML mapping. Errors name
    ``where``'s file and line (or ``source``, with lines from ``text``)."""
    if where is None:
        where = parse_yaml(text, source)[1] if text else Where(source)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.source or 'config'}: expected a mapping of sections at the top level, "
                          f"got {type(raw).__name__}")
    sections = [f.name for f in fields(TrainConfig) if f.name != "source"]
    for key in raw:
        if key not in sections:
            unknown_key(TrainConfig, str(key), sections, where, noun="section")
    model = _model_section(raw.get("model"), where)
    data = _data_section(raw["data"], where) if raw.get("data") is not None else None
    cfg = from_mapping(TrainConfig, {k: v for k, v in raw.items() if k not in ("model", "data")}, where)
    cfg.model, cfg.data, cfg.source = model, data, where.source
    cfg.validate()
    _check_model(cfg, where)
    return cfg


RECIPES = Path(__file__).resolve().parents[1] / "configs"


def bundled_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``motionsqueeze/configs/*.yaml``)."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path, else a bundled recipe name such as ``sthv1_msnet_r50_8f``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = RECIPES / f"{path.stem}.yaml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    raise FileNotFoundError(
        f"config file {path} does not exist, and it is not a bundled recipe ({', '.join(bundled_recipes())})"
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML recipe (a path or a bundled recipe name), apply ``--set`` overrides, validate."""
    path = resolve_recipe(path)
    raw, where = read_yaml(path, MAX_RECIPE_BYTES, MAX_RECIPE_NODES)
    raw = {} if raw is None else raw
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides or [], where)
    return config_from_dict(raw, where=where)


def range_table() -> str:
    """Markdown table of the allowed range of every numeric field of a recipe, from the
    fields' metadata (docs/security.md holds it; a test keeps the two equal)."""
    return _range_table({"model": ModelConfig, "data": DataConfig, **SECTIONS, "augment": AugmentConfig})


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain-data form of a config (for checkpoints and the run folder's config.yaml)."""

    def plain(v):
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    out = plain(cfg)
    model = out.pop("model")
    out["model"] = {"arch": model["arch"], "pretrained": model["pretrained"], "init_from": model["init_from"], **model["options"]}
    if model["freeze_bn"] != "none":  # written only when used: older readers of config.yaml know no such key
        out["model"]["freeze_bn"] = model["freeze_bn"]
    out.pop("source", None)
    return out
