"""Score fusion of several evaluations (``motionsqueeze fuse``): ensembles of models.

The paper's ensemble rows (MSNet 8 + 16 frames) and two models of different backbones are
fused the way ``eval`` fuses views (:func:`~motionsqueeze.engine.metrics.fuse_views`), with a
weight per model: the weighted mean of probabilities (``softmax``, the default, because the
logits of different models have different scales) or of logits.

An input is an ``eval`` output folder or its ``scores.npz``. Scores that ``eval`` already
fused as probabilities (``metrics.json`` says ``"fusion": "softmax"``) enter ``softmax``
fusion as log-probabilities, whose softmax gives them back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .metrics import fuse_views

__all__ = ["EvalScores", "load_eval_scores", "fuse_evaluations"]


@dataclass
class EvalScores:
    """One evaluation: ``scores`` (N, K), ``labels`` (N,), ``indices`` (N,) and their meaning."""

    path: Path
    scores: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    probabilities: bool  # whether eval fused views as softmax probabilities
    class_names: list[str] | None
    meta: dict


def load_eval_scores(path: str | Path) -> EvalScores:
    """Read an ``eval`` output folder (or its ``scores.npz``) with its ``metrics.json``."""
    path = Path(path)
    npz = path / "scores.npz" if path.is_dir() else path
    if not npz.is_file():
        raise FileNotFoundError(f"{npz} does not exist; pass an eval output folder or its scores.npz")
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{npz} is not a readable scores.npz ({err}); rerun motionsqueeze eval") from None
    missing = [k for k in ("scores", "labels", "indices") if k not in arrays]
    if missing or arrays.get("scores", np.zeros(0)).ndim != 2:
        raise ValueError(f"{npz} lacks {missing or 'a 2-D scores array'}; it was not written by motionsqueeze eval")
    meta_file = npz.parent / "metrics.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    scores = torch.from_numpy(arrays["scores"]).double()
    if "fusion" in meta:
        probabilities = meta["fusion"] == "softmax"
    else:  # no metrics.json: rows that are distributions are probabilities
        probabilities = bool((scores >= 0).all() and torch.allclose(scores.sum(1), torch.ones(len(scores)), atol=1e-4))
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    return EvalScores(npz, scores, torch.from_numpy(arrays["labels"]).long(),
                      torch.from_numpy(arrays["indices"]).long(), probabilities, names, meta)


def fuse_evaluations(evals: list[EvalScores], weights=None, fusion: str = "softmax") -> torch.Tensor:
    """Weighted fusion of the models' ``(N, K)`` scores -> ``(N, K)`` (see the module docstring).

    All evaluations must cover the same items of the same list with the same classes.
    """
    if len(evals) < 2:
        raise ValueError(f"fuse needs at least two evaluations, got {len(evals)}")
    first = evals[0]
    for e in evals[1:]:
        if e.scores.shape[1] != first.scores.shape[1]:
            raise ValueError(f"{e.path} scores {e.scores.shape[1]} classes but {first.path} scores "
                             f"{first.scores.shape[1]}; fuse evaluations of the same classes")
        if not (torch.equal(e.indices, first.indices) and torch.equal(e.labels, first.labels)):
            raise ValueError(f"{e.path} and {first.path} cover different items or labels; evaluate every "
                             f"model on the same list (and --split) before fusing")
        if e.class_names and first.class_names and e.class_names != first.class_names:
            raise ValueError(f"{e.path} and {first.path} name the classes differently; fuse models of one label set")
    if fusion == "logits":
        probs = [str(e.path) for e in evals if e.probabilities]
        if probs:
            raise ValueError(f"{', '.join(probs)} hold probabilities (eval --fusion softmax); fuse with "
                             f"--fusion softmax or re-evaluate with --fusion logits")
        stacked = torch.stack([e.scores for e in evals], dim=1)
    else:
        stacked = torch.stack([e.scores.clamp_min(1e-30).log() if e.probabilities else e.scores for e in evals], dim=1)
    return fuse_views(stacked, fusion, weights)
