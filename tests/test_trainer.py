"""fit(): short runs learn, resume bit-identically, refuse to overwrite, stop on NaN without saving it, log what they learn."""

import json
import math
from pathlib import Path

import pytest
import torch

from motionsqueeze.engine import NonFiniteLossError, fit
from motionsqueeze.engine.checkpoint import load_checkpoint
from motionsqueeze.engine.config import config_from_dict
from motionsqueeze.engine.data import build_split
from motionsqueeze.engine.distributed import DistInfo
from motionsqueeze.engine.evaluate import score_dataset
from motionsqueeze.engine.metrics import classification_report


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
    # The last validation comes back with the result (the demo reports it instead of scoring
    # the test clips again): the same numbers as scoring the returned model.
    scores = score_dataset(result.model, build_split(cfg.data, "val"), DistInfo(), tuple(cfg.data.mean),
                           tuple(cfg.data.std), batch_size=cfg.eval.batch_size, workers=0)
    again = classification_report(scores.scores, scores.labels, len(result.class_names))
    assert result.report.top1 == again.top1 == result.history[-1]["val_top1"]
    assert torch.equal(result.report.confusion, again.confusion)


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


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from motionsqueeze.engine import trainer

    original, calls = trainer.training_loss, []

    def nan_at_step_3(*args, **kwargs):
        calls.append(1)
        loss = original(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(trainer, "training_loss", nan_at_step_3)
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan at epoch 1, step 3; .*Last good checkpoint: "
                                                 r".*last\.pt"):
        fit(tiny_config(save_every_steps=2), run_dir=tmp_path, quiet=True)
    # The checkpoint of step 2 was written and is good; the one due at step 4 (after the NaN
    # step) was not, and no model file was written.
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state["step_in_epoch"] == 2
    for key, value in state["model"].items():
        assert not value.is_floating_point() or torch.isfinite(value).all(), key
    assert not (tmp_path / "best.safetensors").exists() and not (tmp_path / "final.safetensors").exists()
    assert "stopped: NonFiniteLossError: the loss became nan" in (tmp_path / "train.log").read_text()


def _jsonl(run, kind):
    return [row for row in map(json.loads, (Path(run) / "metrics.jsonl").read_text().splitlines()) if row["kind"] == kind]


def test_step_logs_and_epoch_summaries_agree_and_do_not_change_the_run(tmp_path):
    # The step losses are read from the device only at log steps and the epoch sums at the
    # epoch's end: logging every step or never must give the same run and the same numbers.
    every = fit(tiny_config(log_every=1), run_dir=tmp_path / "every")
    never = fit(tiny_config(log_every=0), run_dir=tmp_path / "never", quiet=True)
    steps = _jsonl(tmp_path / "every", "step")
    assert [r["step"] for r in steps] == list(range(1, 13))  # 24 clips / batch 4 = 6 steps x 2 epochs
    for epoch, row in enumerate(every.history, start=1):
        losses = [r["loss"] for r in steps if r["epoch"] == epoch]
        assert len(losses) == 6 and row["train_loss"] == pytest.approx(sum(losses) / 6, rel=1e-5)
        assert all(math.isfinite(v) for v in losses)
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in every.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in never.history]
    a, b = _final_weights(tmp_path / "every"), _final_weights(tmp_path / "never")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_loader_serves_every_epoch_with_the_same_batches(tmp_path, monkeypatch):
    # With workers the loader is built once and its processes persist across epochs; the
    # batches (and so the weights) are those of a run that reads in the main process.
    from motionsqueeze.engine import trainer

    built = []
    original = trainer.build_loader

    def counting(*args, **kwargs):
        built.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "build_loader", counting)
    runs = {}
    for workers in (1, 0):
        cfg = tiny_config(workers=workers)
        cfg.data.train_clips, cfg.data.val_clips = 8, 4  # 2 steps per epoch
        runs[workers] = fit(cfg, run_dir=tmp_path / f"workers{workers}", quiet=True)
    assert len(built) == 2 and built[0]["persistent"] is True  # one loader per run
    assert [r["train_loss"] for r in runs[1].history] == [r["train_loss"] for r in runs[0].history]
    a, b = _final_weights(tmp_path / "workers1"), _final_weights(tmp_path / "workers0")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_pretrained_key_loads_imagenet_backbone_weights(tmp_path):
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
    # said in the run's log (the console shows it only where the CLI installed its handler, so a
    # check of captured stdout passed or failed with the order of the tests)
    assert "loaded" in (tmp_path / "run" / "train.log").read_text().lower()


def test_the_command_line_shows_the_log_lines_that_train_log_keeps(tmp_path, capsys, caplog, monkeypatch):
    import yaml

    from motionsqueeze.cli import main
    from motionsqueeze.engine.config import config_to_dict

    cfg = tiny_config(log_every=3)
    cfg.schedule.epochs = 1
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    assert main(["train", str(recipe), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out.splitlines()
    logged = (tmp_path / "cli" / "train.log").read_text().splitlines()
    assert any(line.startswith("epoch 1 step 3/6  loss ") for line in logged)
    assert logged[-1].startswith("epoch 1/1  loss ") and all(line in out for line in logged)
    # Called as a library, the trainer prints nothing itself: its lines go to logging.
    import logging

    monkeypatch.setattr(logging.getLogger("motionsqueeze"), "handlers", [])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="motionsqueeze"):
        fit(cfg, run_dir=tmp_path / "lib")
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records if r.name == "motionsqueeze.engine.trainer"] == \
        (tmp_path / "lib" / "train.log").read_text().splitlines()


def test_a_training_step_does_not_wait_for_the_device(tmp_path, monkeypatch):
    # Host reads of device values (.item(), .tolist(), bool(), float()) made by the trainer
    # happen per epoch and per log step, never per step: an epoch of 2 steps and one of 6
    # make the same number.
    import sys

    reads = []
    for name in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith("trainer.py"):
                reads.append(sys._getframe(1).f_lineno)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for clips in (8, 24):
        cfg = tiny_config(log_every=0)
        cfg.schedule.epochs = 1
        cfg.data.train_clips, cfg.data.val_clips = clips, 4
        reads.clear()
        fit(cfg, run_dir=tmp_path / str(clips), quiet=True)
        counts.append(len(reads))
    assert counts[0] == counts[1] > 0, counts


def test_how_often_the_run_validates_does_not_change_what_it_learns(tmp_path):
    # Validation used to start its loader from the global random generator, so each one
    # moved the dropout masks of the training after it: eval_every changed the weights.
    runs = {}
    for every in (1, 2):
        cfg = tiny_config(eval_every=every)
        runs[every] = fit(cfg, run_dir=tmp_path / f"every{every}", quiet=True)
    assert [r["train_loss"] for r in runs[1].history] == [r["train_loss"] for r in runs[2].history]
    assert "val_top1" in runs[1].history[0] and "val_top1" not in runs[2].history[0]
    a, b = _final_weights(tmp_path / "every1"), _final_weights(tmp_path / "every2")
    assert all(torch.equal(a[k], b[k]) for k in a)
