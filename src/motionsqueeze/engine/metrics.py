"""Classification metrics on score matrices, and the confusion-matrix picture."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_output, atomic_write, atomic_write_text

__all__ = ["fuse_views", "write_report", "topk_accuracy", "confusion_matrix", "ClassificationReport", "classification_report", "plot_confusion",
           "save_figure"]


def fuse_views(logits: torch.Tensor, fusion: str = "logits", weights=None) -> torch.Tensor:
    """``(N, V, K)`` view scores -> ``(N, K)``.

    ``logits``: mean of the views' logits (the TSM / MotionSqueeze test scripts);
    ``softmax``: mean of the views' probabilities. Both rank classes by the returned scores.
    ``weights``: V non-negative weights of a weighted mean (``None``: equal weights); views
    may also be the outputs of different models (``motionsqueeze fuse``).
    """
    if logits.dim() != 3:
        raise ValueError(f"expected view scores of shape (N, V, K), got {tuple(logits.shape)}")
    if fusion not in ("logits", "softmax"):
        raise ValueError(f"fusion must be 'logits' or 'softmax', got {fusion!r}")
    scores = logits.softmax(dim=-1) if fusion == "softmax" else logits
    if weights is None:
        return scores.mean(dim=1)
    w = torch.as_tensor(weights, dtype=scores.dtype, device=scores.device)
    if w.shape != (logits.shape[1],) or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be {logits.shape[1]} non-negative numbers, not all zero; got {list(weights)}")
    return (scores * (w / w.sum())[None, :, None]).sum(dim=1)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Percentage of rows whose label is among the k highest scores (k capped at K)."""
    out = {}
    for k in ks:
        kk = min(k, scores.shape[1])
        top = scores.topk(kk, dim=1).indices
        out[k] = (top == labels[:, None]).any(dim=1).float().mean().item() * 100 if len(labels) else 0.0
    return out


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` counts, rows = true class, columns = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class ClassificationReport:
    """Metrics of one evaluation (percentages)."""

    top1: float
    top5: float
    mean_class_acc: float
    per_class_acc: list[float | None]  # None for classes absent from the labels
    confusion: torch.Tensor
    count: int  # labelled videos scored
    source: str | None = None  # the list scored
    listed: int | None = None  # items in that list
    skipped: list[str] = field(default_factory=list)  # "list:line: problem" of each item not scored

    def summary(self) -> dict:
        out = {"top1": self.top1, "top5": self.top5, "mean_class_acc": self.mean_class_acc, "count": self.count}
        if self.listed is not None:
            out.update(list=self.source, listed=self.listed, scored=self.listed - len(self.skipped),
                       skipped=len(self.skipped))
        return out

    def coverage(self) -> str:
        """One line: which list, how many items it lists, how many were scored."""
        if self.listed is None:
            return f"{self.count} videos"
        line = f"{self.listed - len(self.skipped)} of the {self.listed} items of {self.source} scored"
        if self.skipped:
            line += f", {len(self.skipped)} skipped (data.on_error: skip)"
        return line


def classification_report(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> ClassificationReport:
    """Top-1, top-5, mean class accuracy (mean over classes present) and per-class accuracy."""
    scores, labels = scores.float().cpu(), labels.long().cpu()
    acc = topk_accuracy(scores, labels, (1, 5))
    cm = confusion_matrix(scores.argmax(1), labels, num_classes)
    totals = cm.sum(1)
    per_class = [(cm[i, i].item() / totals[i].item() * 100) if totals[i] > 0 else None for i in range(num_classes)]
    present = [a for a in per_class if a is not None]
    return ClassificationReport(
        top1=acc[1], top5=acc[5], mean_class_acc=float(np.mean(present)) if present else 0.0,
        per_class_acc=per_class, confusion=cm, count=len(labels),
    )


def write_report(out: str | Path, report: ClassificationReport, class_names: list[str], meta: dict,
                 scores, labels, indices, title: str = "") -> None:
    """The files of an evaluation in folder ``out``: ``metrics.json`` (the summary and ``meta``),
    ``per_class.csv`` (class_index, class_name, videos, accuracy), ``confusion.png`` and
    ``scores.npz`` (``scores`` (N, K), ``labels``, ``indices`` into the list, ``class_names``)."""
    import csv
    import io
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps({**report.summary(), **meta}, indent=2))
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["class_index", "class_name", "videos", "accuracy"])
    totals = report.confusion.sum(1)
    for i, name in enumerate(class_names):
        acc = report.per_class_acc[i]
        w.writerow([i, name, int(totals[i]), "" if acc is None else f"{acc:.2f}"])
    atomic_write_text(out / "per_class.csv", table.getvalue())
    plot_confusion(report.confusion, class_names, out / "confusion.png", title=title)
    atomic_write(out / "scores.npz", lambda f: np.savez_compressed(
        f, scores=np.asarray(scores), labels=np.asarray(labels), indices=np.asarray(indices),
        class_names=np.asarray(class_names, dtype=str)))


def plot_confusion(cm: torch.Tensor, class_names: list[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (class names on the axes up to 60 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = cm.shape[0]
    norm = cm.float() / cm.sum(1, keepdim=True).clamp(min=1)
    side = min(max(4.0, 0.35 * k + 2), 24.0)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 60:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), class_names, fontsize=8)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if cm[i, j] > 0:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as a PNG at ``path`` atomically, then close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
