"""The training loop, readable top to bottom.

``fit(cfg)`` builds the model, data, optimiser and schedule from a :class:`TrainConfig`,
optionally resumes, and then for each epoch: trains (mixed precision, gradient clipping,
resumable data order), validates, logs metrics, and writes checkpoints atomically. Files of
a run folder:

* ``config.yaml`` - the resolved recipe;
* ``checkpoints/last.pt`` - training checkpoint (model, optimiser, schedule, scaler, RNG,
  data position), rewritten every epoch and every ``train.save_every_steps`` steps;
* ``best.safetensors`` / ``final.safetensors`` - model files (``motionsqueeze.load_model``);
* ``metrics.csv`` (one row per epoch), ``metrics.jsonl`` (epochs and step logs),
  ``train.log``, ``skipped.log`` (items replaced under ``data.on_error: skip``);
* ``.lock`` - held by the one process that writes the folder (``run_lock``);
* ``config_changes.log`` - recipe changes allowed at a resume (``resume``).

A stop signal (``train.stop_signals``) saves a resumable checkpoint at the next step
boundary and raises :class:`~motionsqueeze.engine.preemption.Preempted` (``preemption``).
* ``ema.safetensors`` - the weights' moving average, with ``train.ema_decay``.

Training features, all off by default (the paper's protocol): frozen / partial BatchNorm
(``model.freeze_bn``), gradient accumulation (``train.accumulate``), label smoothing,
class balancing, EMA (``train.*``) and batch augmentation (``augment.*``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm import tqdm

from ..data import summarize_skipped
from ..data.augment import BatchAugment
from ..data.progress import format_eta
from ..files import atomic_write_text
from ..models import create_model
from ..models.batchnorm import freeze_batchnorm
from ..models.card import Preprocess, Provenance, card_of, unwrap_model as _unwrap
from ..models.weights.safe_load import compare_keys
from ..models.weights.imagenet import load_backbone_weights
from ..models.weights.model_file import load_finetune_weights
from ..models.weights.model_file import save_model
from .accumulate import gradient_state, group_bounds, load_gradient_state, loss_share
from .checkpoint import capture_rng, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from .config import TrainConfig, config_to_dict
from .data import build_split, class_names_of, input_size_of, labels_of
from .data_order import ResumableSampler, batch_generator
from .distributed import DistInfo, all_reduce_sum, cleanup_distributed, init_distributed
from .ema import ModelEMA
from .evaluate import run_evaluation
from .losses import balanced_item_weights, class_weights, training_loss
from .metrics import ClassificationReport
from .optim import LRSchedule, build_optimizer, scaled_lr
from .preemption import Preempted, StopSignals, stop_requested
from .resume import check_resume_config, log_allowed_changes, remove_stale_temp_files, rewind_metrics
from .run_lock import RunFolderBusyError, RunLock
from .step import autocast_context, build_loader, prepare_clips

__all__ = ["fit", "TrainResult", "NonFiniteLossError", "build_model_from_config"]

_log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss, the gradients, the learning rate or the weights became NaN or infinite; the
    run stopped without saving that state."""


@dataclass
class TrainResult:
    run_dir: Path
    model: nn.Module
    class_names: list[str]
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    train_seconds: float = 0.0
    is_main: bool = True  # False on ranks other than 0 of a torchrun job
    report: ClassificationReport | None = None  # the last validation of this call (None if it ran none)


def build_model_from_config(cfg: TrainConfig, num_classes: int, log=_log.info) -> nn.Module:
    model = create_model(cfg.model.arch, num_classes=num_classes, num_segments=cfg.data.num_segments, **cfg.model.options)
    if cfg.model.pretrained:  # loaded here, so that what was loaded goes to the run's log
        load_backbone_weights(model, cfg.model.pretrained, log=log)
    if cfg.model.init_from:
        load_finetune_weights(model, cfg.model.init_from, log=log)
    return model


class _Logger:
    """``train.log``, ``metrics.jsonl`` and TensorBoard of a run. Every ``train.log`` line also
    goes to the ``motionsqueeze.engine.trainer`` logger (the command line shows it).

    A run that starts from scratch in a folder whose ``train.log`` an earlier attempt left
    (one that failed before saving a checkpoint) moves that log to ``train.attempt-N.log`` and
    says so in its first line, so the new log holds one run and the old one is kept.
    """

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, fresh: bool = False):
        self.enabled = enabled
        self.run_dir = run_dir
        self.tb = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            earlier = None
            if fresh and (run_dir / "train.log").exists():
                n = 1
                while (run_dir / f"train.attempt-{n}.log").exists():
                    n += 1
                earlier = run_dir / f"train.attempt-{n}.log"
                os.replace(run_dir / "train.log", earlier)
            self.log_file = open(run_dir / "train.log", "a")
            if earlier is not None:
                self(f"note: an earlier attempt in this folder saved no checkpoint; its log is {earlier.name}")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(run_dir / "tensorboard"))
                except Exception:  # tensorboard not installed: CSV/JSONL only
                    self.tb = None

    def __call__(self, message: str) -> None:
        if self.enabled:
            _log.info(message)
            self.log_file.write(message + "\n")
            self.log_file.flush()

    def record(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            step = row.get("step", 0)
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row.get('kind', 'train')}/{k}", v, step)

    CSV_KEYS = ["epoch", "step", "lr", "train_loss", "train_top1", "val_top1", "val_top5", "val_mean_class_acc", "skipped", "seconds"]

    def epoch_row(self, row: dict) -> None:
        if not self.enabled:
            return
        path = self.run_dir / "metrics.csv"
        keys = self.CSV_KEYS
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in keys})

    def close(self) -> None:
        if self.enabled:
            self.log_file.close()
            if self.tb is not None:
                self.tb.close()




# --------------------------------------------------------------------------- resume


def _restore_training_state(state, path, model, optimizer, schedule, scaler, optimizer_changed: bool, log) -> None:
    """Load a checkpoint into the run's objects; a checkpoint of another model is an error
    naming the file, not a raw ``load_state_dict`` traceback."""
    mismatch = compare_keys(model.state_dict(), state["model"])
    if mismatch:
        raise ValueError(
            f"checkpoint {path} holds another model than this recipe builds ({mismatch.describe()}): it comes "
            f"from another architecture or class count. Resume it with its own recipe (config.yaml in its run "
            f"folder), or start a new run folder with model.init_from={path} to fine-tune from it"
        )
    model.load_state_dict(state["model"])
    if optimizer_changed:
        log(f"optim.name changed: the optimiser starts with fresh state; the weights come from {path}")
    else:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"checkpoint {path}: its optimiser state does not fit this recipe's optimiser ({exc}); "
                             f"resume with the recipe it was written with") from None
    schedule.load_state_dict(state["schedule"])
    scaler.load_state_dict(state["scaler"])


def _gather_objects(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (collective under torchrun)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _rng_of_rank(state: dict | None, info: DistInfo) -> dict | None:
    """This rank's saved RNG state when the checkpoint has one for it (same process count)."""
    if state is None or state.get("world_size", 1) != info.world_size:
        return None
    per_rank = state.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == info.world_size:
        return per_rank[info.rank]
    return state["rng"] if info.world_size == 1 else None


def _epoch_progress_of(state: dict, info: DistInfo) -> tuple:
    """Partial sums (loss, correct, seen), skipped items and seconds of the epoch a
    checkpoint interrupted, for this rank. With another process count, rank 0 carries the
    totals of all the saved ranks."""
    progress = state.get("epoch_progress") or {}
    sums = progress.get("sums")
    if not sums:
        return None, [], 0.0
    if len(sums) == info.world_size:
        mine = sums[info.rank]
    else:
        mine = torch.stack(list(sums)).sum(0) if info.is_main else torch.zeros_like(sums[0])
    skipped = list(progress.get("skipped", [])) if info.is_main else []
    return tuple(mine.float().unbind()), skipped, float(progress.get("seconds", 0.0))


# --------------------------------------------------------------------------- guards


def _last_good(run: Path) -> str:
    last = latest_checkpoint(run)
    return str(last) if last else "none yet"


def _check_learning_rates(optimizer, run: Path) -> None:
    """Before an optimiser step: learning rates representable in the weights' dtype (plain
    Python numbers: no device sync)."""
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        dtype = group["params"][0].dtype if group["params"] else torch.float32
        if not math.isfinite(lr) or abs(lr) > torch.finfo(dtype).max:
            raise NonFiniteLossError(
                f"the learning rate of parameter group {group.get('name', '?')} is {lr:g}, beyond what "
                f"{dtype} holds; nothing was saved. Lower optim.lr (last good checkpoint: {_last_good(run)})."
            )


def _grad_norm(model: nn.Module) -> torch.Tensor | None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))


class _FiniteWatch:
    """The first NaN or infinite loss or gradient norm of the run, noted on the device.

    Noting costs no host sync, so a step waits for nothing; :meth:`check` reads the note
    (one sync, collective under torchrun) and runs at log steps, before every save and at
    the end of every epoch. Steps taken after a bad one are never saved: the last good
    checkpoint stays good.
    """

    KINDS = ("loss", "gradients")

    def __init__(self, device: torch.device):
        self.step = torch.zeros((), dtype=torch.float64, device=device)  # steps noted so far
        self.note = torch.zeros(3, dtype=torch.float64, device=device)  # [kind + 1 (0: none), step, value]
        self.kind = [torch.tensor(float(k + 1), dtype=torch.float64, device=device) for k in range(len(self.KINDS))]

    def see(self, kind: str, value: torch.Tensor | None) -> None:
        """Note ``value`` (a 0-d tensor) of this step if it is the first non-finite one."""
        if value is None:
            return
        value = value.detach().double()
        first = ~torch.isfinite(value) & (self.note[0] == 0)
        self.note = torch.where(first, torch.stack([self.kind[self.KINDS.index(kind)], self.step, value]), self.note)

    def next_step(self) -> None:
        self.step += 1

    def check(self, info: DistInfo, run: Path, epoch: int, step_in_epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` if any rank noted a non-finite value. ``epoch`` and
        ``step_in_epoch`` (steps done in it) place the current step: checks run at least once
        an epoch, so a noted step is in the current epoch."""
        kind, at, value = self.note.tolist()
        bad = kind > 0
        if info.enabled:
            bad = all_reduce_sum(torch.tensor(float(bad), device=info.device), info).item() > 0
        if not bad:
            return
        if kind > 0:
            step = step_in_epoch - (int(self.step.item()) - int(at))  # 0-based step in this epoch
            what = f"the {self.KINDS[int(kind) - 1]} became {value} at epoch {epoch + 1}, step {step + 1}"
        else:
            what = "the loss or the gradients became NaN or infinite on another process"
        raise NonFiniteLossError(
            f"{what}; the run stopped without saving that state. Last good checkpoint: {_last_good(run)}. Lower "
            f"optim.lr, set optim.clip_grad_norm, or check the data, then resume with --resume auto."
        )


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """One fused pass per device: 0 * x is 0 for finite x and NaN for NaN or inf. (Tensors are
    grouped by device: a CUDA model's optimiser keeps its step counts on the CPU.)"""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    return all(
        bool(torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(torch._foreach_mul(group, 0.0))]).sum()))
        for group in by_device.values()
    )


def _check_finite_state(model: nn.Module, optimizer, run: Path, epoch: int, step_in_epoch: int, info: DistInfo) -> None:
    """Refuse to save weights or optimiser state holding NaN or inf: the last good
    checkpoint must stay good. Same answer on every rank (their weights are equal)."""
    named = [(k, v) for k, v in _unwrap(model).state_dict().items() if v.is_floating_point()]
    named += [(f"optimizer.{k}", v) for slot in optimizer.state.values() for k, v in slot.items()
              if torch.is_tensor(v) and v.is_floating_point() and v.numel()]
    if _all_finite([v for _, v in named]):
        return
    bad = [k for k, v in named if not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(
            f"{len(bad)} tensor(s) became NaN or infinite by epoch {epoch}, step {step_in_epoch} (e.g. "
            f"{sorted(set(bad))[:3]}); this state was not saved. Last good checkpoint: {_last_good(run)}. "
            f"Lower optim.lr or set optim.clip_grad_norm, then resume with --resume auto."
        )


# --------------------------------------------------------------------------- stopping


def _stop_agreed(info: DistInfo) -> bool:
    """Whether a stop was requested on any rank (collective under torchrun, so that all
    ranks stop after the same step)."""
    flag = stop_requested() is not None
    if not info.enabled:
        return flag
    return all_reduce_sum(torch.tensor(float(flag), device=info.device), info).item() > 0


def _stop(log, run: Path, reason: str | None, epoch: int, step_in_epoch: int, steps_per_epoch: int):
    log(f"stop requested ({reason or 'by another rank'}): saved a resumable checkpoint at epoch {epoch + 1}, "
        f"step {step_in_epoch} of {steps_per_epoch}; continue with --resume auto")
    log.close()
    raise Preempted(f"stopped on request ({reason or 'by another rank'}) after saving {run / 'checkpoints' / 'last.pt'}; "
                    f"continue with the same command and --resume auto")


def fit(cfg: TrainConfig, run_dir: str | Path | None = None, resume: str | None = None, quiet: bool = False,
        allow_changes: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Train a model as ``cfg`` describes; see the module docstring for the files written.

    Args:
        cfg: the recipe.
        run_dir: output folder (default ``cfg.out`` or ``runs/<recipe name>``).
        resume: ``None`` (fresh run; refuses a folder that already holds a checkpoint),
            ``"auto"`` (continue from the folder's last checkpoint if there is one) or a path.
        quiet: no per-step log lines (the demo trains three models in a row).
        allow_changes: recipe keys (or sections) that may differ from the checkpoint's recipe
            when resuming (see :mod:`motionsqueeze.engine.resume`).

    Raises:
        RunFolderBusyError: another live process writes the run folder.
        Preempted: a stop signal arrived; a resumable checkpoint was saved.
        NonFiniteLossError: the training diverged; the last good checkpoint was kept.
    """
    info = init_distributed(cfg.train.device)
    finished = False
    run = None
    try:
        run = _run_folder(cfg, run_dir)
        with _own_run_folder(run, info), StopSignals(cfg.train.stop_signals, watch_launcher="LOCAL_RANK" in os.environ):
            result = _fit(cfg, info, run, resume, quiet, tuple(allow_changes or ()))
        finished = True
        return result
    except Exception as exc:
        log_file = run / "train.log" if run is not None else None
        if info.is_main and log_file is not None and log_file.exists():
            # The reason a run stopped belongs in its log, not only on a terminal.
            with open(log_file, "a") as f:
                f.write(f"stopped: {type(exc).__name__}: {exc}\n")
        raise
    finally:
        cleanup_distributed(finished)


def _run_folder(cfg: TrainConfig, run_dir) -> Path:
    run = Path(run_dir or cfg.out or Path("runs") / Path(cfg.source or "run").stem)
    if run.exists() and not run.is_dir():
        raise ValueError(f"the run folder (--out): {run} is an existing file where a folder is needed; "
                         f"choose another --out (a folder, created if missing)")
    for parent in run.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"the run folder {run} (--out) cannot be created: {parent} is a file; choose another --out")
    return run


@contextlib.contextmanager
def _own_run_folder(run: Path, info: DistInfo):
    """Rank 0 holds the run folder's lock for the block; every rank learns whether it got it."""
    lock, busy = None, None
    if info.is_main:
        try:
            lock = RunLock(run).acquire()
        except RunFolderBusyError as exc:
            busy = exc
    refused = all_reduce_sum(torch.tensor(float(busy is not None), device=info.device), info).item()
    if refused:
        raise busy or RunFolderBusyError(f"rank 0 could not lock the run folder {run}")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def _fit(cfg: TrainConfig, info: DistInfo, run: Path, resume, quiet, allow_changes=()) -> TrainResult:
    device = info.device
    t = cfg.train

    # --- where to start
    existing = latest_checkpoint(run)
    ckpt_path = None
    if resume == "auto":
        ckpt_path = existing
    elif resume:
        ckpt_path = Path(resume)
    elif existing is not None:
        raise ValueError(
            f"run folder {run} already holds a checkpoint ({existing}); pass --resume auto to "
            f"continue it, or choose another --out so that finished work is not overwritten"
        )
    log = _Logger(run, info.is_main, t.tensorboard, fresh=ckpt_path is None)
    if info.is_main:
        remove_stale_temp_files(run, log)
    state = load_checkpoint(ckpt_path, map_location="cpu") if ckpt_path else None
    allowed = {}
    if state is not None:
        defaults = config_to_dict(TrainConfig(data=type(cfg.data)()))  # for fields newer than the checkpoint
        allowed = check_resume_config(state.get("config"), config_to_dict(cfg), ckpt_path, allow_changes, defaults)

    # --- data
    class_names = class_names_of(cfg.data)
    mean, std = tuple(cfg.data.mean), tuple(cfg.data.std)
    train_set = build_split(cfg.data, "train")
    val_set = build_split(cfg.data, "val") if cfg.train.eval_every >= 0 else None
    train_labels = labels_of(train_set) if t.class_balance != "none" else None
    item_weights = balanced_item_weights(train_labels, len(class_names)) if t.class_balance == "sampler" else None
    sampler = ResumableSampler(len(train_set), seed=t.seed, shuffle=True, rank=info.rank, world_size=info.world_size,
                               weights=item_weights)
    steps_per_epoch = math.ceil(len(sampler) / t.batch_size)
    if t.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)

    # --- model, optimiser, schedule
    torch.manual_seed(t.seed)
    model = build_model_from_config(cfg, len(class_names), log)
    if cfg.train.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    frozen = freeze_batchnorm(model, cfg.model.freeze_bn)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    total_batch = t.batch_size * info.world_size * t.accumulate
    base_lr = scaled_lr(cfg.optim, total_batch)
    optimizer = build_optimizer(model, cfg.optim, base_lr)
    schedule = LRSchedule(optimizer, cfg.schedule, base_lr, math.ceil(steps_per_epoch / t.accumulate))
    loss_weight = class_weights(train_labels, len(class_names)).to(device) if t.class_balance == "loss" else None
    augment = BatchAugment(cfg.augment)
    ema = ModelEMA(model, t.ema_decay) if t.ema_decay > 0 else None
    scaler = torch.amp.GradScaler(device.type, enabled=(t.amp == "fp16"))

    epoch, step_in_epoch, global_step, best, history, report = 0, 0, 0, None, [], None
    epoch_sums, epoch_skipped, epoch_seconds = None, [], 0.0
    if state is not None:
        _restore_training_state(state, ckpt_path, model, optimizer, schedule, scaler, "optim.name" in allowed, log)
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["step"]
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        elif ema is not None:
            ema = ModelEMA(model, t.ema_decay)  # switched on at resume: average from the resumed weights
        if state.get("grads"):
            load_gradient_state(model, state["grads"])  # resumed inside an accumulation group
        best, history = state.get("best"), list(state.get("history", []))
        if step_in_epoch:
            epoch_sums, epoch_skipped, epoch_seconds = _epoch_progress_of(state, info)
        if info.is_main:
            rewind_metrics(run, history, global_step, _Logger.CSV_KEYS)
            log_allowed_changes(run, allowed, ckpt_path, global_step, log)
        log(f"resumed from {ckpt_path} at epoch {epoch + 1}, step {step_in_epoch} of {steps_per_epoch}")
    rng = _rng_of_rank(state, info)
    if rng is not None:
        restore_rng(rng)  # same dropout masks as an uninterrupted run
    else:
        # Weights are equal on every rank (seeded above); dropout streams differ per rank.
        torch.manual_seed(t.seed + 1000 * info.rank + global_step + 1)

    if info.is_main and (state is None or allowed):
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    if info.is_main:
        log(
            f"{cfg.model.arch}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(class_names)} classes, "
            f"{len(train_set)} training clips, {steps_per_epoch} steps/epoch x {cfg.schedule.epochs} epochs, "
            f"batch {t.batch_size} x {info.world_size} process(es)"
            f"{f' x {t.accumulate} accumulated' if t.accumulate > 1 else ''}, lr {base_lr:g}, device {device}"
        )
        if state is None and not cfg.model.pretrained and not cfg.model.init_from:
            log("note: model.pretrained and model.init_from are not set: the model starts from random weights "
                "(the published recipes start from ImageNet or Kinetics weights; --set model.pretrained=FILE)")
        if frozen:
            log(f"model.freeze_bn={cfg.model.freeze_bn}: {len(frozen)} BatchNorm layers keep their statistics and affine parameters")

    step_model: nn.Module = model
    ddp_model = None
    if info.enabled:
        step_model = ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        step_model = torch.compile(step_model)

    def checkpoint_state(ep: int, in_epoch: int, rngs: list[dict], progress: dict) -> dict:
        return {
            "model": _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": ep,
            "step_in_epoch": in_epoch,
            "step": global_step,
            "rng": rngs[0],
            "rng_per_rank": rngs,
            "epoch_progress": progress,
            "best": best,
            "history": history,
            "world_size": info.world_size,
            "config": config_to_dict(cfg),
            "class_names": class_names,
            **({"ema": ema.state_dict()} if ema is not None else {}),
            # Inside an accumulation group: the gradients summed so far.
            **({"grads": gradient_state(_unwrap(model))} if in_epoch % t.accumulate else {}),
            "train_seconds": trained_seconds + time.perf_counter() - started,
        }

    def save(ep: int, in_epoch: int, progress: dict | None = None) -> None:
        # Collective under torchrun (every rank calls it at the same steps): rank 0 stores
        # every rank's RNG and partial epoch sums, so that a resume continues each rank.
        _check_finite_state(model, optimizer, run, ep, in_epoch, info)
        rngs = _gather_objects(capture_rng(), info)
        if progress is not None:
            progress = {**progress, "sums": _gather_objects(progress["sums"].cpu(), info)}
        if info.is_main:
            save_checkpoint(run / "checkpoints" / "last.pt", checkpoint_state(ep, in_epoch, rngs, progress or {}))

    # Training time across interruptions: what earlier runs recorded plus this run's clock.
    started = time.perf_counter()
    trained_seconds = float(state.get("train_seconds", 0.0)) if state else 0.0
    input_size = input_size_of(cfg.data)
    # One loader for the whole run: with workers, the same processes serve every epoch.
    loader = build_loader(train_set, sampler, t.batch_size, t.workers, device, seed=t.seed, generator_seed=t.seed,
                          persistent=True, stop_signals=t.stop_signals)
    watch = _FiniteWatch(device)
    while epoch < cfg.schedule.epochs:
        epoch_start = time.perf_counter() - epoch_seconds
        sampler.set_epoch(epoch, start=step_in_epoch * t.batch_size)
        step_model.train()
        # The epoch's sums stay on the device; they are read at its end (and saved with a
        # mid-epoch checkpoint), so that a step never waits for the device.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = torch.zeros((), device=device)
        skipped: list[str] = list(epoch_skipped)
        if epoch_sums is not None:  # resumed mid-epoch: the epoch's metrics cover all its steps
            loss_sum, correct, seen = (v.to(device) for v in epoch_sums)
        epoch_sums, epoch_skipped, epoch_seconds = None, [], 0.0

        def progress() -> dict:
            return {"sums": torch.stack([loss_sum, correct, seen]), "skipped": list(skipped),
                    "seconds": time.perf_counter() - epoch_start}
        bar = None
        if t.progress and info.is_main and not quiet and sys.stderr.isatty():
            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}", leave=False)
        for batch in loader:
            if step_in_epoch >= steps_per_epoch:
                break
            skipped += batch["skipped"]
            clips, labels = batch["clip"], batch["label"].to(device, non_blocking=True)
            g = batch_generator(t.seed, info.rank, epoch, step_in_epoch) if cfg.augment.enabled else None
            if cfg.augment.jitter or cfg.augment.randaugment_ops:
                clips = augment.pixels(clips.to(device, non_blocking=True), g)
            clips = prepare_clips(clips, device, mean, std, t.channels_last)
            clips, targets = augment.mix(clips, labels, len(class_names), g)
            first, last = group_bounds(step_in_epoch, t.accumulate, steps_per_epoch)
            # Inside an accumulation group DDP need not all-reduce gradients (the last batch does).
            with ddp_model.no_sync() if (ddp_model is not None and not last) else contextlib.nullcontext():
                with autocast_context(t.amp, device):
                    logits = step_model(clips)
                    loss = training_loss(logits, labels, targets, t.label_smoothing, loss_weight)
                watch.see("loss", loss)
                if first:
                    optimizer.zero_grad(set_to_none=True)
                if t.accumulate > 1:
                    loss_share_ = loss_share(step_in_epoch, t.accumulate, steps_per_epoch, t.batch_size, sampler.per_rank)
                    scaler.scale(loss * loss_share_).backward()
                else:
                    scaler.scale(loss).backward()
            if last:
                grad_norm = None
                if cfg.optim.clip_grad_norm:
                    scaler.unscale_(optimizer)
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
                if not scaler.is_enabled():  # fp16's scaler skips steps with inf gradients itself
                    _check_learning_rates(optimizer, run)
                    watch.see("gradients", grad_norm if grad_norm is not None else _grad_norm(model))
                scaler.step(optimizer)
                scaler.update()
                lr = schedule.step()
                if ema is not None:
                    ema.update(_unwrap(model))
            else:
                lr = schedule.lr
            watch.next_step()
            step_in_epoch += 1
            global_step += 1
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            if bar is not None:
                bar.update(1)
            if t.log_every and global_step % t.log_every == 0:
                # A log step: the one place inside an epoch where the host reads the device.
                watch.check(info, run, epoch, step_in_epoch)
                if not quiet and info.is_main:
                    step_loss = loss.item()
                    log.record({"kind": "step", "epoch": epoch + 1, "step": global_step, "loss": step_loss, "lr": lr})
                    if bar is not None:
                        bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}")
                    else:
                        rate = step_in_epoch / max(time.perf_counter() - epoch_start, 1e-9)  # steps/s this epoch
                        log(f"epoch {epoch + 1} step {step_in_epoch}/{steps_per_epoch}  loss {step_loss:.4f}  lr {lr:.3g}  "
                            f"{rate * t.batch_size * info.world_size:.3g} clips/s, epoch ends in about "
                            f"{format_eta((steps_per_epoch - step_in_epoch) / rate)}")
            if _stop_agreed(info) and step_in_epoch < steps_per_epoch:
                watch.check(info, run, epoch, step_in_epoch)
                save(epoch, step_in_epoch, progress())
                _stop(log, run, stop_requested(), epoch, step_in_epoch, steps_per_epoch)
            if t.save_every_steps and global_step % t.save_every_steps == 0 and step_in_epoch < steps_per_epoch:
                watch.check(info, run, epoch, step_in_epoch)
                save(epoch, step_in_epoch, progress())
        if bar is not None:
            bar.close()
        watch.check(info, run, epoch, step_in_epoch)

        totals = all_reduce_sum(torch.stack([loss_sum, correct, seen]).float(), info)
        _check_finite_state(model, optimizer, run, epoch + 1, 0, info)  # before a model file is written
        epoch += 1
        step_in_epoch = 0
        row = {
            "kind": "epoch", "epoch": epoch, "step": global_step, "lr": schedule.lr,
            "train_loss": (totals[0] / totals[2].clamp(min=1)).item(),
            "train_top1": (totals[1] / totals[2].clamp(min=1)).item() * 100,
            "skipped": len(skipped),
        }
        if skipped and info.is_main:
            with open(run / "skipped.log", "a") as f:
                for message in skipped:
                    f.write(f"epoch {epoch}: {message}\n")
            log(f"epoch {epoch}: {summarize_skipped(skipped)}\n(all of them in {run / 'skipped.log'})")
        validate = val_set is not None and (
            (cfg.train.eval_every > 0 and epoch % cfg.train.eval_every == 0) or epoch == cfg.schedule.epochs
        )
        if validate:
            report = run_evaluation(step_model, val_set, info, cfg, class_names, amp=t.amp, channels_last=t.channels_last)
            row.update({"val_top1": report.top1, "val_top5": report.top5, "val_mean_class_acc": report.mean_class_acc})
            if report.skipped and info.is_main:
                log(f"epoch {epoch}: validation: {report.coverage()}:\n" + "\n".join(f"  {m}" for m in report.skipped))
            metric = {"top1": report.top1, "top5": report.top5, "mean_class_acc": report.mean_class_acc}[t.best_metric]
            if best is None or metric > best["value"]:
                best = {"epoch": epoch, "metric": t.best_metric, "value": metric, **report.summary()}
                if info.is_main:
                    _save_model_file(_unwrap(model), run / "best.safetensors", cfg, class_names, input_size, mean, std)
            if ema is not None:
                ema_report = run_evaluation(ema.module, val_set, info, cfg, class_names, amp=t.amp, channels_last=t.channels_last)
                row.update({"val_ema_top1": ema_report.top1, "val_ema_top5": ema_report.top5,
                            "val_ema_mean_class_acc": ema_report.mean_class_acc})
        row["seconds"] = time.perf_counter() - epoch_start
        history.append(row)
        log.record(row)
        log.epoch_row(row)
        if info.is_main:
            val = f"  val top1 {row['val_top1']:.2f} top5 {row['val_top5']:.2f}" if "val_top1" in row else ""
            val += f"  EMA top1 {row['val_ema_top1']:.2f}" if "val_ema_top1" in row else ""
            log(f"epoch {epoch}/{cfg.schedule.epochs}  loss {row['train_loss']:.4f}  train top1 {row['train_top1']:.2f}{val}  ({row['seconds']:.0f}s)")
        save(epoch, 0)
        if epoch < cfg.schedule.epochs and _stop_agreed(info):
            _stop(log, run, stop_requested(), epoch, 0, steps_per_epoch)

    del loader  # its worker processes end here
    if info.is_main:
        _save_model_file(_unwrap(model), run / "final.safetensors", cfg, class_names, input_size, mean, std)
        if ema is not None:
            _save_model_file(ema.module, run / "ema.safetensors", cfg, class_names, input_size, mean, std)
    log.close()
    total_seconds = trained_seconds + time.perf_counter() - started
    return TrainResult(run_dir=run, model=_unwrap(model), class_names=class_names, history=history, best=best, train_seconds=total_seconds, is_main=info.is_main, report=report)


def _save_model_file(model, path, cfg, class_names, input_size, mean, std) -> None:
    """The model with its card: the data section's preprocessing (which holds ``input_size``,
    ``mean`` and ``std``) and the recipe it was trained with."""
    card = card_of(model).replace(class_names=class_names, preprocess=Preprocess.from_data(cfg.data),
                                  provenance=Provenance("trained", recipe=cfg.source or None))
    save_model(model, path, card=card)
