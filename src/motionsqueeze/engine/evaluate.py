"""Evaluation: scores for every video of a split, fused over views, and the metrics.

Evaluation items carry clips as ``(V, T, 3, H, W)`` with V = clips x crops views. The model
scores every view; the V logits of a video are fused (``eval.fusion``: mean of logits, or
mean of softmax probabilities) into one score vector per video, from which top-1, top-5,
mean class accuracy and the confusion matrix are computed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from .distributed import DistInfo, all_gather_cat
from .metrics import ClassificationReport, classification_report, fuse_views
from .sampling import ResumableSampler, SeededDataset

__all__ = ["Scores", "score_dataset", "run_evaluation"]


@dataclass
class Scores:
    """Fused scores ``(N, K)``, labels ``(N,)`` and dataset indices ``(N,)``, in index order."""

    scores: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


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
    from ..data import collate_clips
    from .trainer import autocast_context, prepare_clips

    device = info.device
    was_training = model.training
    model.eval()
    sampler = ResumableSampler(len(dataset), shuffle=False, rank=info.rank, world_size=info.world_size)
    loader = DataLoader(SeededDataset(dataset, 0), batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate_clips, pin_memory=device.type == "cuda")
    iterator = loader
    if progress and info.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        iterator = tqdm(loader, desc="evaluating", leave=False)
    scores, labels, indices = [], [], []
    for batch in iterator:
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
    return Scores(s[keep].cpu(), lab[keep].cpu(), idx[keep].cpu())


def run_evaluation(model, dataset, info: DistInfo, cfg, class_names, amp="none", channels_last=False) -> ClassificationReport:
    """Validation inside training: fused scores -> metrics over the labelled items."""
    res = score_dataset(model, dataset, info, tuple(cfg.data.mean), tuple(cfg.data.std), batch_size=cfg.eval.batch_size,
                        workers=cfg.train.workers, fusion=cfg.eval.fusion, amp=amp, channels_last=channels_last)
    labelled = res.labels >= 0
    return classification_report(res.scores[labelled], res.labels[labelled], len(class_names))


def load_trained_model(path, map_location="cpu") -> tuple[nn.Module, list[str] | None]:
    """A model from a model file (``.safetensors``, see ``motionsqueeze.load_model``) or from
    a training checkpoint (``.pt``, rebuilt from the config stored in it). Either way the
    model carries ``class_names``, ``preprocess`` and ``extra`` as ``load_model`` sets them."""
    from pathlib import Path

    from .checkpoint import load_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix != ".pt":
        from ..models.weights import load_model

        model = load_model(path, map_location=map_location)
        return model, getattr(model, "class_names", None)
    from ..models import create_model

    state = load_checkpoint(path, map_location=map_location)
    m = dict(state["config"]["model"])
    arch = m.pop("arch")
    m.pop("pretrained", None)
    m.pop("init_from", None)
    m.pop("freeze_bn", None)  # a training setting, not part of the architecture
    names = state.get("class_names")
    data = state["config"]["data"]
    model = create_model(arch, num_classes=len(names), num_segments=data["num_segments"], **m)
    model.load_state_dict(state["model"])
    from types import SimpleNamespace

    from .trainer import inference_settings

    model.class_names = names
    model.preprocess = {"input_size": data.get("crop_size", data.get("size")), "mean": data["mean"],
                        "std": data["std"], "num_segments": data["num_segments"]}
    model.extra = inference_settings(SimpleNamespace(**data))
    return model.eval(), names


def evaluate_checkpoint(cfg, checkpoint, split: str = "val", out_dir=None, clips: int | None = None,
                        crops: int | None = None) -> ClassificationReport:
    """``motionsqueeze eval``: score a split with the test-time views and write the results.

    ``clips`` / ``crops`` replace the recipe's ``data.test_num_clips`` / ``test_num_crops``.

    Files in ``out_dir``: ``metrics.json`` (top-1, top-5, mean class accuracy, views, fusion),
    ``per_class.csv`` (class, videos, accuracy), ``confusion.png`` and ``scores.npz``
    (``scores`` (N, K) fused, ``labels``, ``indices`` into the list).
    """
    import csv
    import json
    from pathlib import Path

    import numpy as np

    from .data import build_split, class_names_of, is_synthetic, with_views
    from .distributed import cleanup_distributed, init_distributed
    from .metrics import plot_confusion

    info = init_distributed(cfg.train.device)
    finished = False
    try:
        class_names = class_names_of(cfg.data)
        model, model_names = load_trained_model(checkpoint)
        if model_names is not None and list(model_names) != list(class_names):
            raise ValueError(
                f"{checkpoint} was trained on {len(model_names)} classes that differ from the {len(class_names)} "
                f"in the recipe's class file; evaluate with the recipe it was trained with"
            )
        model.to(info.device)
        # Both lists are scored through the "test" split, which carries the test-time views.
        data_cfg = with_views(cfg.data, clips, crops, test_list=None if split == "test" else getattr(cfg.data, "val_list", None))
        dataset = build_split(data_cfg, "val" if is_synthetic(cfg.data) else "test")
        views = (1, 1) if is_synthetic(cfg.data) else (data_cfg.test_num_clips, data_cfg.test_num_crops)
        res = score_dataset(model, dataset, info, tuple(cfg.data.mean), tuple(cfg.data.std),
                            batch_size=cfg.eval.batch_size, workers=cfg.train.workers, fusion=cfg.eval.fusion,
                            amp=cfg.train.amp, progress=cfg.train.progress)
        labelled = res.labels >= 0
        if not labelled.any():
            raise ValueError(f"the {split} list has no labels; use `motionsqueeze predict` for unlabelled videos")
        report = classification_report(res.scores[labelled], res.labels[labelled], len(class_names))
        if info.is_main and out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps(
                {**report.summary(), "clips": views[0], "crops": views[1], "fusion": cfg.eval.fusion,
                 "split": split, "checkpoint": str(checkpoint)}, indent=2))
            with open(out / "per_class.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["class_index", "class_name", "videos", "accuracy"])
                totals = report.confusion.sum(1)
                for i, name in enumerate(class_names):
                    acc = report.per_class_acc[i]
                    w.writerow([i, name, int(totals[i]), "" if acc is None else f"{acc:.2f}"])
            plot_confusion(report.confusion, class_names, out / "confusion.png", title=f"{Path(checkpoint).name} on {split}")
            np.savez_compressed(out / "scores.npz", scores=res.scores.numpy(), labels=res.labels.numpy(),
                                indices=res.indices.numpy())
        finished = True
        return report
    finally:
        cleanup_distributed(finished)
