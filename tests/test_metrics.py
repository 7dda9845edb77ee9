"""Evaluation metrics and the fusion of test-time views."""

import pytest
import torch

from motionsqueeze.engine.metrics import classification_report, fuse_views, topk_accuracy


def test_metrics_on_hand_made_scores():
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.3, 0.6]])
    labels = torch.tensor([0, 1, 1, 0])
    report = classification_report(scores, labels, 3)
    assert report.top1 == pytest.approx(50.0)
    # Top-2: the last row ranks classes 2, 1 and misses its label 0.
    assert topk_accuracy(scores, labels, (2,))[2] == pytest.approx(75.0)
    # Class 0: 1 of 2 right; class 1: 1 of 2 right; class 2 absent (not averaged).
    assert report.per_class_acc == [50.0, 50.0, None]
    assert report.mean_class_acc == pytest.approx(50.0)
    assert report.confusion.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]


def test_view_fusion():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # one video, three views
    torch.testing.assert_close(fuse_views(logits, "logits"), torch.tensor([[2 / 3, 2 / 3]]))
    probs = fuse_views(logits, "softmax")
    assert probs.shape == (1, 2) and probs.sum().item() == pytest.approx(1.0) and probs[0, 1] > probs[0, 0]
