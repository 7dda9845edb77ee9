import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motionsqueeze.engine import NonFiniteLossError, fit
from motionsqueeze.engine.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from motionsqueeze.engine.config import ConfigError, config_from_dict, load_config
from motionsqueeze.engine.metrics import classification_report, fuse_views, topk_accuracy
from motionsqueeze.engine.optim import lr_factor, parameter_groups
from motionsqueeze.engine.config import OptimConfig, ScheduleConfig
from motionsqueeze.engine.sampling import ResumableSampler


TINY_DDP_RECIPE = (
    "model: {arch: tsm_tiny}\n"
    "data: {dataset: synthetic, train_clips: 16, val_clips: 6, num_segments: 2, size: 32}\n"
    "optim: {lr: 0.01, reference_batch_size: 0}\n"
    "schedule: {epochs: 1}\n"
    "train: {batch_size: 2, workers: 0, device: cpu, progress: false, tensorboard: false, log_every: 0}\n"
)


def tiny_config(**train):
    raw = {
        "model": {"arch": "msnet_tiny", "dropout": 0.2, "patch_size": 5},
        "data": {"dataset": "synthetic", "train_clips": 24, "val_clips": 8, "num_segments": 3, "size": 32, "seed": 3},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01, "reference_batch_size": 0, "clip_grad_norm": 20},
        "schedule": {"epochs": 2, "kind": "cosine", "warmup_epochs": 0.5},
        "train": {"batch_size": 4, "workers": 0, "seed": 1, "log_every": 0, "progress": False, "tensorboard": False, **train},
        "eval": {"batch_size": 8},
    }
    return config_from_dict(raw)


def test_short_training_run_lowers_the_loss(tmp_path):
    cfg = tiny_config()
    cfg.schedule.epochs = 4
    result = fit(cfg, run_dir=tmp_path / "run", quiet=True)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.9, losses
    run = tmp_path / "run"
    for name in ["config.yaml", "metrics.csv", "metrics.jsonl", "train.log", "checkpoints/last.pt", "best.safetensors", "final.safetensors"]:
        assert (run / name).is_file(), name
    assert "val_top1" in result.history[-1]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss") and len(rows) == 5


def _final_weights(run_dir):
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")["model"]


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    fit(tiny_config(save_every_steps=2), run_dir=straight, quiet=True)

    # Interrupt during step 5 of 12 (after the step-4 checkpoint), then resume.
    from motionsqueeze.engine import optim as optim_mod

    original = optim_mod.LRSchedule.step

    def crash(self):
        if self.step_count == 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self)

    broken = tmp_path / "broken"
    monkeypatch.setattr(optim_mod.LRSchedule, "step", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(save_every_steps=2), run_dir=broken, quiet=True)
    monkeypatch.setattr(optim_mod.LRSchedule, "step", original)
    assert load_checkpoint(broken / "checkpoints" / "last.pt")["step"] == 4
    fit(tiny_config(save_every_steps=2), run_dir=broken, resume="auto", quiet=True)

    a, b = _final_weights(straight), _final_weights(broken)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_run_folder_with_a_checkpoint_is_not_overwritten(tmp_path):
    cfg = tiny_config()
    cfg.schedule.epochs = 1
    fit(cfg, run_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="already holds a checkpoint.*--resume auto"):
        fit(cfg, run_dir=tmp_path, quiet=True)


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})

    def torn_write(f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed during save")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, torn_write)
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=f"cannot read training checkpoint {bad}"):
        load_checkpoint(bad)
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_checkpoint(bad)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_config(save_every_steps=2)
    cfg.optim.lr = 1e12
    cfg.optim.clip_grad_norm = None
    with pytest.raises(NonFiniteLossError, match="the loss became .* Last good checkpoint"):
        fit(cfg, run_dir=tmp_path, quiet=True)
    # Whatever was saved before the blow-up is loadable.
    last = tmp_path / "checkpoints" / "last.pt"
    if last.exists():
        load_checkpoint(last)


def test_malformed_config_names_the_bad_key_and_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model:\n  arch: msnet_tiny\noptim:\n  lr: 0.1\n  lr_decay: 0.5\ndata:\n  dataset: synthetic\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:5: optim.lr_decay: unknown key; .*valid keys are name, lr, "):
        load_config(path)
    path.write_text("model:\n  arch: msnet_tiny\n  patchsize: 5\ndata:\n  dataset: synthetic\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:3: model.patchsize: unknown key; did you mean 'patch_size'"):
        load_config(path)
    path.write_text("trainer:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="recipe.yaml:1: trainer: unknown section"):
        load_config(path)
    path.write_text("data:\n  dataset: synthetic\n  size: big\n")
    with pytest.raises(ConfigError, match="recipe.yaml:3: data.size: must be an integer, got 'big'"):
        load_config(path)
    path.write_text("data:\n  dataset: synthetic\ntrain:\n  amp: fp8\n")
    with pytest.raises(ConfigError, match="recipe.yaml:4: train.amp: must be one of none, bf16, fp16; got 'fp8'"):
        load_config(path)


def test_overrides_apply_and_are_typed(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  dataset: synthetic\noptim:\n  lr: 0.1\n")
    cfg = load_config(path, ["optim.lr=0.02", "schedule.milestones=[3, 6]", "model.patch_size=7", "train.amp=bf16"])
    assert cfg.optim.lr == 0.02 and cfg.schedule.milestones == (3, 6)
    assert cfg.model.options == {"patch_size": 7} and cfg.train.amp == "bf16"
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["optim.lr"])


def test_every_bundled_recipe_loads_by_name():
    from motionsqueeze.engine.config import bundled_recipes

    names = bundled_recipes()
    assert "synthetic" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.source.endswith(f"{name}.yaml")
    with pytest.raises(FileNotFoundError, match="not a bundled recipe"):
        load_config("no_such_recipe")


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


def test_parameter_groups_follow_the_recipe():
    from motionsqueeze import create_model

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


def test_sampler_is_resumable_and_splits_across_ranks():
    s = ResumableSampler(10, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == 6
    shares = []
    for rank in range(3):
        r = ResumableSampler(10, seed=5, rank=rank, world_size=3)
        r.set_epoch(2)
        shares.append([i for _, i in r])
    assert sorted(set(sum(shares, []))) == list(range(10)) and all(len(x) == 4 for x in shares)


def test_a_failing_worker_ends_the_torchrun_job_instead_of_hanging(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_DDP_RECIPE)
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import os, sys\n"
        "from motionsqueeze.engine import fit, load_config\n"
        "from motionsqueeze.engine import optim\n"
        "original = optim.LRSchedule.step\n"
        "def step(self):\n"
        "    if os.environ['RANK'] == '1' and self.step_count == 1:\n"
        "        raise RuntimeError('worker 1 failed on purpose')\n"
        "    return original(self)\n"
        "optim.LRSchedule.step = step\n"
        "fit(load_config(sys.argv[1]), run_dir=sys.argv[2])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), str(recipe), str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "worker 1 failed on purpose" in proc.stderr


def test_recipe_pretrained_key_loads_imagenet_backbone_weights(tmp_path, capsys):
    from motionsqueeze.models import resnet

    torch.manual_seed(5)
    imagenet = resnet(10, widths=(16, 32, 64, 128), stem_width=16, num_classes=1000)
    path = tmp_path / "resnet10_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    cfg = tiny_config()
    cfg.model.pretrained = str(path)
    cfg.schedule.epochs = 1
    cfg.optim.lr = 1e-12  # leave the loaded weights where they are
    result = fit(cfg, run_dir=tmp_path / "run", quiet=True)
    torch.testing.assert_close(result.model.backbone.conv1.weight, imagenet.conv1.weight, rtol=0, atol=1e-6)
    assert "loaded" in capsys.readouterr().out.lower()
