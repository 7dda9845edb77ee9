"""Parameter groups and learning-rate schedules."""

import pytest
import torch

from motionsqueeze import create_model
from motionsqueeze.engine.config import OptimConfig, ScheduleConfig
from motionsqueeze.engine.optim import lr_factor, parameter_groups


def test_parameter_groups_follow_the_recipe():
    model = create_model("msnet_tiny", num_classes=4, num_segments=2)
    model.extra = torch.nn.Conv2d(3, 3, 1, bias=True)  # our ResNets have no conv biases; add one
    groups = {g["name"]: g for g in parameter_groups(model, OptimConfig(weight_decay=5e-4, classifier_lr_mult=5))}
    assert groups["biases"]["lr_mult"] == 2.0 and groups["biases"]["weight_decay"] == 0
    assert groups["biases"]["params"] == [model.extra.bias]
    assert groups["norms"]["weight_decay"] == 0 and groups["weights"]["weight_decay"] == 5e-4
    assert groups["classifier_weight"]["lr_mult"] == 5 and groups["classifier_bias"]["lr_mult"] == 10
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_schedules():
    step = ScheduleConfig(epochs=40, kind="step", milestones=(20, 30), gamma=0.1)
    assert [lr_factor(e, step) for e in (0, 19.9, 20, 30)] == pytest.approx([1, 1, 0.1, 0.01])
    cos = ScheduleConfig(epochs=10, kind="cosine", warmup_epochs=2, warmup_start_factor=0.0)
    assert lr_factor(0, cos) == 0 and lr_factor(1, cos) == pytest.approx(0.5)
    assert lr_factor(2, cos) == pytest.approx(1.0) and lr_factor(10, cos) == pytest.approx(0.0, abs=1e-9)
