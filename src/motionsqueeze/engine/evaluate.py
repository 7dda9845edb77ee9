"""Evaluation: scores for every video of a split, fused over views, and the metrics.

Evaluation items carry clips as ``(V, T, 3, H, W)`` with V = clips x crops views. The model
scores every view; the V logits of a video are fused (``eval.fusion``: mean of logits, or
mean of softmax probabilities) into one score vector per video, from which top-1, top-5,
mean class accuracy and the confusion matrix are computed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.progress import progress as progress_bar
from ..models.card import card_of
from ..models.weights.model_file import load_trained_model
from .data import build_split, class_names_of, is_synthetic, with_views
from .data_order import ResumableSampler
from .distributed import DistInfo, all_gather_cat, all_gather_objects, cleanup_distributed, init_distributed
from .metrics import ClassificationReport, classification_report, fuse_views, write_report
from .step import autocast_context, build_loader, prepare_clips

__all__ = ["Scores", "score_dataset", "run_evaluation", "load_trained_model"]

_log = logging.getLogger(__name__)


@dataclass
class Scores:
    """Fused scores ``(N, K)``, labels ``(N,)`` and dataset indices ``(N,)``, in index order.

    ``listed`` is the number of items of the dataset; the ``listed - N`` items that could not
    be read (``data.on_error: skip``) have no score, and ``skipped`` holds one message per
    such item (``list:line: problem``).
    """

    scores: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    listed: int = 0
    skipped: list = field(default_factory=list)


@torch.no_grad()
def score_dataset(
    model: nn.Module,
    dataset,
    info: DistInfo,
    mean,
    std,
    *,
    batch_size: int = 8,
    workers: int = 2,
    fusion: str = "logits",
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
) -> Scores:
    """Run ``model`` over every item of an evaluation dataset (all ranks share the work)."""
    device = info.device
    was_training = model.training
    model.eval()
    sampler = ResumableSampler(len(dataset), shuffle=False, rank=info.rank, world_size=info.world_size)
    # Its own generator: a loader without one draws its seed from the global generator, and
    # a validation in the middle of training would move the dropout masks that come after it.
    loader = build_loader(dataset, sampler, batch_size, workers, device, generator_seed=0)
    bar = progress_bar(len(loader), "evaluating", "batch", enabled=progress and info.is_main)
    scores, labels, indices, problems = [], [], [], []
    for batch in loader:
        if bar is not None:
            bar.update()
        problems += batch.get("skipped", [])
        clip = batch["clip"]
        if clip.dim() != 6:
            raise ValueError(f"evaluation items must be (V, T, 3, H, W) clips; got a batch of shape {tuple(clip.shape)}")
        n, v = clip.shape[:2]
        x = prepare_clips(clip.flatten(0, 1), device, mean, std, channels_last)
        with autocast_context(amp, device):
            logits = model(x).float()
        scores.append(fuse_views(logits.view(n, v, -1), fusion))
        labels.append(batch["label"].to(device))
        indices.append(batch["index"].to(device))
    if bar is not None:
        bar.close()
    model.train(was_training)
    k = scores[0].shape[1] if scores else 0
    s = all_gather_cat(torch.cat(scores) if scores else torch.zeros(0, k, device=device), info)
    lab = all_gather_cat(torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device), info)
    idx = all_gather_cat(torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long, device=device), info)
    # Ranks padded their shares by repeating items: keep one score per dataset index.
    order = torch.argsort(idx, stable=True)
    s, lab, idx = s[order], lab[order], idx[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    # A bad item is replaced by the next one of the list, which is then scored twice and kept
    # once above: the bad item has no score. Name each such item with its problem.
    problems = list(dict.fromkeys(all_gather_objects(problems, info)))
    scored = set(idx[keep].tolist())
    skipped = [_problem_of(dataset, i, problems) for i in range(len(dataset)) if i not in scored]
    return Scores(s[keep].cpu(), lab[keep].cpu(), idx[keep].cpu(), listed=len(dataset), skipped=skipped)


def _problem_of(dataset, index: int, problems: list[str]) -> str:
    """The skip message of item ``index`` (messages start with the item's ``list:line``)."""
    where = dataset._where(index) if hasattr(dataset, "_where") else f"item {index}"
    return next((p for p in problems if p.startswith(where + ":")), f"{where}: not scored")


def report_of(res: Scores, num_classes: int, source: str | None) -> ClassificationReport:
    """Metrics over the labelled scored items, stating the list, its size and what was skipped."""
    labelled = res.labels >= 0
    report = classification_report(res.scores[labelled], res.labels[labelled], num_classes)
    report.source, report.listed, report.skipped = source, res.listed, res.skipped
    return report


def run_evaluation(model, dataset, info: DistInfo, cfg, class_names, amp="none", channels_last=False) -> ClassificationReport:
    """Validation inside training: fused scores -> metrics over the labelled items."""
    res = score_dataset(model, dataset, info, tuple(cfg.data.mean), tuple(cfg.data.std), batch_size=cfg.eval.batch_size,
                        workers=cfg.train.workers, fusion=cfg.eval.fusion, amp=amp, channels_last=channels_last)
    return report_of(res, len(class_names), getattr(dataset, "source", None))


# Data fields a model card decides for evaluation (Preprocess.data_settings).
MODEL_DATA_FIELDS = ("num_segments", "crop_size", "resize", "sampling", "dense_stride", "dense_window", "mean", "std")


def model_data_settings(model) -> dict:
    """The data settings ``model`` was trained with, as ``DataConfig`` fields, from its card
    (the same translation ``predict`` uses)."""
    return card_of(model).preprocess.data_settings()


def with_model_settings(data_cfg, model, keep=()) -> tuple:
    """``(data_cfg with the model's sampling and preprocessing, notes)``.

    A model is scored as it was trained: where the recipe differs, the model's setting wins
    and a note says so, unless the field is in ``keep`` (set on the command line), which wins
    with a note instead.
    """
    if is_synthetic(data_cfg):
        return data_cfg, []
    changes, notes = {}, []
    for key, value in model_data_settings(model).items():
        current = getattr(data_cfg, key)
        current = list(current) if isinstance(current, tuple) else current
        if current == value:
            continue
        if key in keep:
            notes.append(f"data.{key} is {current} as set on the command line; the model was trained with {value}")
        else:
            changes[key] = value
            notes.append(f"data.{key}: using the model's {value} (the recipe says {current})")
    return (data_cfg.replace(**changes) if changes else data_cfg), notes


def evaluate_checkpoint(cfg, checkpoint, split: str = "val", out_dir=None, clips: int | None = None,
                        crops: int | None = None, keep=(), test_segments: int | None = None) -> ClassificationReport:
    """``motionsqueeze eval``: score a split with the test-time views and write the results.

    ``clips`` / ``crops`` replace the recipe's ``data.test_num_clips`` / ``test_num_crops``.
    Sampling and preprocessing are the model's (:func:`with_model_settings`; ``keep``: data
    fields set on the command line, which win); each difference from the recipe is printed. ``test_segments``: frames per clip of both
    the model and the data (TSM's test_segments).

    Files in ``out_dir``: ``metrics.json`` (top-1, top-5, mean class accuracy, views, fusion),
    ``per_class.csv`` (class, videos, accuracy), ``confusion.png`` and ``scores.npz``
    (``scores`` (N, K) fused, ``labels``, ``indices`` into the list, ``class_names``).
    """
    if test_segments is not None:
        cfg.data = dataclasses.replace(cfg.data, num_segments=test_segments)
    if split == "test" and not is_synthetic(cfg.data) and not cfg.data.test_list:
        # The test split would fall back to the validation list: a result labelled "test"
        # that was computed on the validation set.
        raise ValueError("--split test: the recipe has no data.test_list (prepare writes test.txt where the "
                         "dataset has test labels); set it with --set data.test_list=PATH, or evaluate --split val")
    info = init_distributed(cfg.train.device)
    finished = False
    try:
        class_names = class_names_of(cfg.data)
        model = load_trained_model(checkpoint, test_segments=test_segments)
        model_names = model.card.class_names
        if model_names is not None and list(model_names) != list(class_names):
            raise ValueError(
                f"{checkpoint} was trained on {len(model_names)} classes that differ from the {len(class_names)} "
                f"in the recipe's class file; evaluate with the recipe it was trained with"
            )
        model.to(info.device)
        data_cfg, notes = with_model_settings(cfg.data, model, keep)
        if info.is_main:
            for note in notes:
                _log.info(f"eval: {note}")
        # Both lists are scored through the "test" split, which carries the test-time views.
        data_cfg = with_views(data_cfg, clips, crops, test_list=None if split == "test" else getattr(cfg.data, "val_list", None))
        dataset = build_split(data_cfg, "val" if is_synthetic(cfg.data) else "test")
        views = (1, 1) if is_synthetic(cfg.data) else (data_cfg.test_num_clips, data_cfg.test_num_crops)
        res = score_dataset(model, dataset, info, tuple(data_cfg.mean), tuple(data_cfg.std),
                            batch_size=cfg.eval.batch_size, workers=cfg.train.workers, fusion=cfg.eval.fusion,
                            amp=cfg.train.amp, progress=cfg.train.progress)
        if not (res.labels >= 0).any():
            raise ValueError(f"the {split} list has no labels; use `motionsqueeze predict` for unlabelled videos")
        report = report_of(res, len(class_names), getattr(dataset, "source", None))
        if info.is_main and out_dir is not None:
            write_report(out_dir, report, class_names,
                         {"clips": views[0], "crops": views[1], "fusion": cfg.eval.fusion, "split": split,
                          "num_segments": model.num_segments, "checkpoint": str(checkpoint),
                          "skipped_items": report.skipped,
                          "data": {k: getattr(data_cfg, k) for k in MODEL_DATA_FIELDS if hasattr(data_cfg, k)},
                          "notes": notes}, res.scores.numpy(), res.labels.numpy(), res.indices.numpy(),
                         title=f"{Path(checkpoint).name} on {split}")
        finished = True
        return report
    finally:
        cleanup_distributed(finished)
