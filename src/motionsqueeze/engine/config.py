"""Training configuration: dataclasses loaded from YAML, overridable with ``key=value``.

A recipe (``configs/*.yaml``) has the sections ``model``, ``data``, ``optim``, ``schedule``,
``train`` and ``eval`` and an optional ``out`` folder. Every field is documented on its
dataclass below with its unit and default. An unknown key is an error that names the key,
the file and line, and the valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..data.augment import AugmentConfig

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
]


class ConfigError(ValueError):
    """A configuration problem; the message names the file, line and key."""


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field: ``lo``..``hi``, each end closed unless ``*_open``.
    Infinite and NaN values are outside every range. ``str()`` is the interval as written in
    the field docs, e.g. ``(0, 10]``."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        def num(v):
            return str(int(v)) if float(v).is_integer() else str(v)

        return f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"


# The range of every numeric field, checked at load (each is also in the field's docs).
# Tuples are checked item by item; ``None`` (where a field allows it) is always accepted.
RANGES: dict[str, Range] = {
    "optim.lr": Range(0, 10, lo_open=True),
    "optim.reference_batch_size": Range(0, 1_000_000),
    "optim.momentum": Range(0, 1, hi_open=True),
    "optim.betas": Range(0, 1, hi_open=True),
    "optim.weight_decay": Range(0, 1),
    "optim.bias_lr_mult": Range(0, 100),
    "optim.classifier_lr_mult": Range(0, 100),
    "optim.clip_grad_norm": Range(0, 1_000_000, lo_open=True),
    "schedule.epochs": Range(1, 100_000),
    "schedule.milestones": Range(0, 100_000),
    "schedule.gamma": Range(0, 1, lo_open=True),
    "schedule.min_lr_factor": Range(0, 1),
    "schedule.warmup_epochs": Range(0, 100_000),
    "schedule.warmup_start_factor": Range(0, 1),
    "train.batch_size": Range(1, 65536),
    "train.workers": Range(0, 256),
    "train.seed": Range(0, 2**32 - 1),
    "train.log_every": Range(0, 1_000_000_000),
    "train.save_every_steps": Range(0, 1_000_000_000),
    "train.eval_every": Range(0, 100_000),
    "train.max_steps_per_epoch": Range(0, 1_000_000_000),
    "train.accumulate": Range(1, 1_000_000),
    "train.label_smoothing": Range(0, 1, hi_open=True),
    "train.ema_decay": Range(0, 1, hi_open=True),
    "eval.batch_size": Range(1, 65536),
}

# A recipe is a small text file; these bound what parsing it may cost.
MAX_RECIPE_BYTES = 1_000_000
MAX_RECIPE_NODES = 100_000  # YAML nodes once aliases are expanded


def check_device(spec: str, key: str = "train.device") -> str:
    """Refuse a device name torch does not know (``auto`` is accepted)."""
    import torch

    if spec == "auto":
        return spec
    try:
        torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N (or another torch device such as "
                          f"mps), got {spec!r}") from None
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

    arch: str = "msnet_r50"
    pretrained: str | None = None
    init_from: str | None = None
    freeze_bn: str = "none"
    options: dict = field(default_factory=dict)


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

    name: str = "sgd"
    lr: float = 0.01
    reference_batch_size: int = 48
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0
    bias_decay: bool = False
    norm_decay: bool = False
    classifier_lr_mult: float = 1.0
    clip_grad_norm: float | None = 200.0


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

    epochs: int = 40
    kind: str = "step"
    milestones: tuple[int, ...] = (20, 30)
    gamma: float = 0.1
    min_lr_factor: float = 0.0
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1


@dataclass
class RunConfig:
    """``train:`` section: how the loop runs.

    Attributes:
        batch_size: clips per process per step (total batch = batch_size x processes);
            range [1, 65536].
        workers: DataLoader worker processes per process; range [0, 256].
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on CUDA: ``none``, ``bf16`` or ``fp16`` (with a gradient scaler).
        channels_last: use the channels-last memory format (faster convolutions on GPUs).
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

    batch_size: int = 8
    workers: int = 4
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    seed: int = 0
    log_every: int = 20
    save_every_steps: int = 0
    eval_every: int = 1
    best_metric: str = "top1"
    progress: bool = True
    tensorboard: bool = True
    max_steps_per_epoch: int = 0
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    accumulate: int = 1
    label_smoothing: float = 0.0
    class_balance: str = "none"
    ema_decay: float = 0.0


@dataclass
class EvalConfig:
    """``eval:`` section: how view scores are fused. The views themselves (clips per video,
    crops per clip) are data settings: ``data.test_num_clips`` and ``data.test_num_crops``.

    Attributes:
        fusion: ``logits`` (mean of the views' logits, as the TSM and MotionSqueeze test
            scripts do) or ``softmax`` (mean of the views' probabilities).
        batch_size: videos per evaluation batch; range [1, 65536].
    """

    fusion: str = "logits"
    batch_size: int = 8


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
        checks = [
            (self.optim.name in ("sgd", "adamw"), "optim.name", "sgd or adamw", self.optim.name),
            (self.schedule.kind in ("step", "cosine", "constant"), "schedule.kind", "step, cosine or constant", self.schedule.kind),
            (self.train.amp in ("none", "bf16", "fp16"), "train.amp", "none, bf16 or fp16", self.train.amp),
            (self.eval.fusion in ("logits", "softmax"), "eval.fusion", "logits or softmax", self.eval.fusion),
            (self.train.best_metric in ("top1", "top5", "mean_class_acc"), "train.best_metric", "top1, top5 or mean_class_acc", self.train.best_metric),
        ]
        checks += self._training_feature_checks()
        for ok, key, expected, got in checks:
            if not ok:
                raise ConfigError(f"{self.source or 'config'}: {key} must be {expected}, got {got!r}")
        for key, value in _numeric_fields(self):
            values = value if isinstance(value, tuple) else (value,)
            bad = [v for v in values if v is not None and v not in RANGES[key]]
            if bad:
                what = "each value" if isinstance(value, tuple) else "it"
                raise ConfigError(f"{self.source or 'config'}: {key} is {value!r}; {what} must be in the range "
                                  f"{RANGES[key]} (see the field's documentation)")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"{self.source or 'config'}: optim.betas must hold 2 values, got {list(self.optim.betas)}")
        try:
            check_device(self.train.device)
        except ConfigError as exc:
            raise ConfigError(f"{self.source or 'config'}: {exc}") from None
        if self.data is None:
            raise ConfigError(f"{self.source or 'config'}: the 'data' section is missing")


    def _training_feature_checks(self) -> list[tuple[bool, str, str, Any]]:
        t = self.train
        checks = [
            (self.model.freeze_bn in ("none", "partial", "all"), "model.freeze_bn", "none, partial or all", self.model.freeze_bn),
            (t.accumulate >= 1, "train.accumulate", "a positive number of batches per update", t.accumulate),
            (0.0 <= t.label_smoothing < 1.0, "train.label_smoothing", "in [0, 1)", t.label_smoothing),
            (t.class_balance in ("none", "loss", "sampler"), "train.class_balance", "none, loss or sampler", t.class_balance),
            (t.ema_decay == 0.0 or 0.0 < t.ema_decay < 1.0, "train.ema_decay", "0 (off) or in (0, 1)", t.ema_decay),
        ]
        return checks + [(False, key, expected, got) for key, expected, got in self.augment.problems()]


def _numeric_fields(cfg: "TrainConfig"):
    """``(dotted key, value)`` of every int/float (or tuple of them) field of the sections
    that :data:`RANGES` covers."""
    for section in ("optim", "schedule", "train", "eval"):
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        for f in fields(obj):
            numeric = {int, float} & _leaf_types(hints[f.name])
            if numeric:
                yield f"{section}.{f.name}", getattr(obj, f.name)


def _leaf_types(tp) -> set:
    args = typing.get_args(tp)
    if not args:
        return {tp}
    return set().union(*(_leaf_types(a) for a in args if a is not Ellipsis))


# --------------------------------------------------------------------------- loading


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line number in a YAML document (for error messages)."""
    import yaml

    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                lines[key] = k.start_mark.line + 1
                walk(v, key + ".")

    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
    return lines


def _where(source: str | None, lines: dict[str, int], key: str) -> str:
    if source is None:
        return "config"
    line = lines.get(key)
    return f"{source}, line {line}" if line else source


def _convert(value: Any, tp: Any, key: str, where) -> Any:
    """Coerce a YAML value to a field type (tuples from lists, ints to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where(key)}: '{key}' must be a list, got {value!r}")
        item = args[0] if args else Any
        if args and Ellipsis not in args and len(value) != len(args):
            raise ConfigError(f"{where(key)}: '{key}' must hold {len(args)} values, got {list(value)!r}")
        return tuple(_convert(v, item, key, where) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 5e-4 (no dot) as a string
        except ValueError:
            pass
    if tp in (int, float, bool, str) and not isinstance(value, tp):
        if not (tp is float and isinstance(value, int)):
            raise ConfigError(f"{where(key)}: '{key}' must be {tp.__name__}, got {value!r}")
    return value


def dataclass_from_dict(cls, data: dict, prefix: str = "", where=lambda k: "config"):
    """Build dataclass ``cls`` from a dict, refusing unknown keys (named with their path)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where(prefix.rstrip('.'))}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = prefix + str(unknown[0])
        raise ConfigError(
            f"{where(key)}: unknown key '{key}'; valid keys{' in ' + repr(prefix.rstrip('.')) if prefix else ''} are {names}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if is_dataclass(tp) and isinstance(tp, type):
            kwargs[name] = dataclass_from_dict(tp, value or {}, f"{prefix}{name}.", where)
        else:
            kwargs[name] = _convert(value, tp, prefix + name, where)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where(prefix.rstrip('.'))}: {exc}") from exc


def _data_config(data: dict, where):
    if not isinstance(data, dict):
        raise ConfigError(f"{where('data')}: 'data' must be a mapping")
    if data.get("dataset") == "synthetic":
        from ..data.synthetic import SyntheticDataConfig

        return dataclass_from_dict(SyntheticDataConfig, data, "data.", where)
    from ..data.config import DataConfig

    try:
        return DataConfig.from_dict(data)
    except ValueError as exc:
        # DataConfig names the key; add the file and line where we know them.
        message = str(exc)
        for key in data:
            if f"'{key}'" in message:
                raise ConfigError(f"{where('data.' + key)}: data.{message}") from exc
        raise ConfigError(f"{where('data')}: {message}") from exc


def config_from_dict(raw: dict, source: str | None = None, text: str | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a parsed YAML mapping."""
    lines = _key_lines(text) if text else {}
    where = lambda key: _where(source, lines, key)  # noqa: E731
    if not isinstance(raw, dict):
        raise ConfigError(f"{source or 'config'}: expected a mapping of sections at the top level")
    raw = dict(raw)
    sections = [f.name for f in fields(TrainConfig) if f.name != "source"]
    unknown = [k for k in raw if k not in sections]
    if unknown:
        raise ConfigError(f"{where(unknown[0])}: unknown section '{unknown[0]}'; valid sections are {sections}")
    if not isinstance(raw.get("model") or {}, dict):
        raise ConfigError(f"{where('model')}: 'model' must be a mapping (arch: ..., options), got {raw['model']!r}")
    model_raw = dict(raw.pop("model", None) or {})
    model = ModelSection(arch=model_raw.pop("arch", ModelSection.arch), pretrained=model_raw.pop("pretrained", None),
                         init_from=model_raw.pop("init_from", None), freeze_bn=model_raw.pop("freeze_bn", ModelSection.freeze_bn))
    from ..models import ModelConfig

    valid = [n for n in ModelConfig.field_names() if n not in ("num_classes", "num_segments")]
    for key in model_raw:
        if key not in valid:
            hint = " (it is set from the data section)" if key in ("num_classes", "num_segments") else ""
            raise ConfigError(f"{where('model.' + key)}: unknown key 'model.{key}'{hint}; valid keys are {['arch', 'pretrained', 'init_from', 'freeze_bn', *valid]}")
    model.options = model_raw
    data = _data_config(raw.pop("data"), where) if raw.get("data") is not None else None
    raw.pop("data", None)
    cfg = dataclass_from_dict(TrainConfig, raw, "", where)
    cfg.model, cfg.data, cfg.source = model, data, source
    cfg.validate()
    return cfg


def _parse_override(item: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. optim.lr=0.02), got {item!r}")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {value!r}: {exc}") from exc
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a raw config mapping."""
    raw = dict(raw)
    for item in overrides or []:
        path, value = _parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[path[-1]] = value
    return raw


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
    import yaml

    path = resolve_recipe(path)
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a recipe (at most "
                          f"{MAX_RECIPE_BYTES:,}); is it the right file?")
    text = path.read_text()
    try:
        _check_expanded_size(yaml.compose(text), path)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, source=str(path), text=text)


def _check_expanded_size(root, path) -> None:
    """Refuse YAML whose aliases expand to more than :data:`MAX_RECIPE_NODES` nodes (nested
    aliases grow exponentially: a few lines can stand for billions of values)."""
    import yaml

    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a cycle counts once
        n = 1
        if isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n += sum(size(v) for v in node.value)
        sizes[id(node)] = min(n, MAX_RECIPE_NODES + 1)
        return sizes[id(node)]

    if root is not None and size(root) > MAX_RECIPE_NODES:
        raise ConfigError(f"{path}: the YAML expands to more than {MAX_RECIPE_NODES:,} values (nested "
                          f"aliases); write the recipe out plainly")


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
