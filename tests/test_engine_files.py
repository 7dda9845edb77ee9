"""The engine on real files: JPEG frame folders and a video, through list files."""

import json
import shutil

import numpy as np
import pytest
import torch

from motionsqueeze.cli import main
from motionsqueeze.data.synthetic import SYNTHETIC_CLASSES, SyntheticMotionConfig, render_clip
from motionsqueeze.engine import fit, load_config
from video_factory import encode_video, write_frame_folder

FRAMES = 6


def _clip(label, seed):
    cfg = SyntheticMotionConfig(frames=FRAMES, size=32)
    return render_clip(label, torch.Generator().manual_seed(seed), cfg).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    lines = {"train": [], "val": []}
    for split, count, seed0 in (("train", 16, 0), ("val", 8, 100)):
        for i in range(count):
            label = i % 8
            name = f"{split} clip {i}"  # a space in the path on purpose
            write_frame_folder(root / name, _clip(label, seed0 + i))
            lines[split].append(f"{name} {FRAMES} {label}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
    encode_video(root / "right.mp4", _clip(0, 7))
    return root


def _recipe(root, tmp_path, **data):
    d = {"root": str(root), "train_list": str(root / "train.txt"), "val_list": str(root / "val.txt"),
         "class_names": str(root / "classes.txt"), "num_segments": 4, "resize": None, "crop_size": 32,
         "scales": [1.0, 0.875], "flip": "none", **data}
    text = json.dumps({
        "model": {"arch": "msnet_tiny", "patch_size": 5},
        "data": d,
        "optim": {"name": "adamw", "lr": 0.003, "reference_batch_size": 0},
        "schedule": {"epochs": 1},
        "train": {"batch_size": 4, "workers": 0, "progress": False, "tensorboard": False, "log_every": 0},
    })
    path = tmp_path / "recipe.yaml"
    path.write_text(text)  # JSON is YAML
    return path


def test_train_eval_predict_on_frame_folders_and_a_video(dataset, tmp_path, capsys):
    recipe = _recipe(dataset, tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    best = run / "best.safetensors"
    assert best.is_file()

    out = tmp_path / "eval"
    assert main(["eval", str(recipe), "--checkpoint", str(best), "--clips", "2", "--crops", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 8 and metrics["clips"] == 2 and metrics["crops"] == 3 and metrics["fusion"] == "logits"
    scores = np.load(out / "scores.npz")
    assert scores["scores"].shape == (8, 8) and scores["indices"].tolist() == list(range(8))
    assert (out / "confusion.png").stat().st_size > 1000
    rows = (out / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class_index,class_name,videos,accuracy" and len(rows) == 9

    # The training checkpoint evaluates to the same numbers as the model file written at the same epoch.
    out_pt = tmp_path / "eval_pt"
    assert main(["eval", str(recipe), "--checkpoint", str(run / "checkpoints" / "last.pt"), "--clips", "2",
                 "--crops", "3", "--out", str(out_pt)]) == 0
    np.testing.assert_allclose(np.load(out_pt / "scores.npz")["scores"], scores["scores"], rtol=1e-5, atol=1e-5)

    capsys.readouterr()
    assert main(["predict", str(best), str(dataset / "right.mp4"), str(dataset / "val clip 3"), "--topk", "3", "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["input"] for a in answers] == [str(dataset / "right.mp4"), str(dataset / "val clip 3")]
    for a in answers:
        probs = [p["probability"] for p in a["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(p["class"] in SYNTHETIC_CLASSES for p in a["predictions"])
    assert main(["predict", str(best), str(dataset / "nowhere.mp4")]) == 2
    assert "nowhere.mp4" in capsys.readouterr().err


def test_fine_tuning_starts_from_a_trained_model_with_another_classifier(dataset, tmp_path):
    recipe = _recipe(dataset, tmp_path)
    run = tmp_path / "base"
    cfg = load_config(recipe)
    base = fit(cfg, run_dir=run, quiet=True)
    four = tmp_path / "four.txt"
    four.write_text("\n".join(SYNTHETIC_CLASSES[:4]) + "\n")
    lists = {}
    for split in ("train", "val"):
        rows = [r for r in (dataset / f"{split}.txt").read_text().splitlines() if int(r.split()[-1]) < 4]
        lists[split] = tmp_path / f"{split}4.txt"
        lists[split].write_text("\n".join(rows) + "\n")
    cfg2 = load_config(recipe, [f"data.class_names={four}", f"data.train_list={lists['train']}",
                                f"data.val_list={lists['val']}", f"model.init_from={run / 'final.safetensors'}",
                                "optim.lr=1e-12"])
    tuned = fit(cfg2, run_dir=tmp_path / "tuned", quiet=True)
    assert "classifier (8, 128) -> (4, 128) left at its initialisation" in (tmp_path / "tuned" / "train.log").read_text()
    a, b = base.model.state_dict(), tuned.model.state_dict()
    # With a vanishing lr the convolution weights are still the base model's.
    torch.testing.assert_close(b["backbone.conv1.weight"], a["backbone.conv1.weight"], rtol=0, atol=1e-6)
    assert b["fc.weight"].shape == (4, 128)
    bad = load_config(recipe, [f"model.init_from={run / 'final.safetensors'}", "model.arch=tsm_tiny"])
    with pytest.raises(ValueError, match="init_from needs a model of the same architecture"):
        fit(bad, run_dir=tmp_path / "bad", quiet=True)


def test_bad_items_are_skipped_and_reported_per_epoch(dataset, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    shutil.rmtree(broken / "train clip 2")  # a video that is gone
    shutil.rmtree(broken / "val clip 7")  # the last item of the list: its replacement wraps round
    shutil.rmtree(broken / "val clip 3")
    recipe = _recipe(broken, tmp_path, on_error="skip")
    result = fit(load_config(recipe), run_dir=tmp_path / "run", quiet=True)
    assert result.history[-1]["skipped"] >= 1
    assert "train clip 2" in (tmp_path / "run" / "skipped.log").read_text()
    out = capsys.readouterr().out
    assert "bad item" in out
    # Validation says which items it could not score, instead of scoring 6 and calling it the list.
    assert f"validation: 6 of the 8 items of {broken / 'val.txt'} scored, 2 skipped" in out
    assert f"{broken / 'val.txt'}:4: {broken / 'val clip 3'}: frame folder not found" in out
    assert main(["eval", str(recipe), "--checkpoint", str(tmp_path / "run" / "best.safetensors"),
                 "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert f"val: 6 of the 8 items of {broken / 'val.txt'} scored, 2 skipped" in printed
    assert f"skipped {broken / 'val.txt'}:8: {broken / 'val clip 7'}: frame folder not found" in printed
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (metrics["list"], metrics["listed"], metrics["scored"], metrics["skipped"], metrics["count"]) == (
        str(broken / "val.txt"), 8, 6, 2, 6)
    assert [m.split(": ")[0] for m in metrics["skipped_items"]] == [f"{broken / 'val.txt'}:4", f"{broken / 'val.txt'}:8"]
    strict = _recipe(broken, tmp_path, on_error="raise")
    with pytest.raises(ValueError, match="train clip 2"):
        fit(load_config(strict), run_dir=tmp_path / "strict", quiet=True)
    # the reason is in the run's log too, one line
    last = (tmp_path / "strict" / "train.log").read_text().splitlines()[-1]
    assert last.startswith("stopped: DataError: ") and "train clip 2: frame folder not found" in last
    # The next attempt in that folder (no checkpoint was saved) starts its own log; the failed
    # attempt's log is kept beside it, not mixed into the new one.
    (tmp_path / "again").mkdir()
    fit(load_config(_recipe(broken, tmp_path / "again", on_error="skip")), run_dir=tmp_path / "strict", quiet=True)
    fresh = (tmp_path / "strict" / "train.log").read_text()
    assert "stopped:" not in fresh and fresh.count(" parameters, ") == 1
    assert "train.attempt-1.log" in fresh.splitlines()[0]
    kept = (tmp_path / "strict" / "train.attempt-1.log").read_text()
    assert kept.splitlines()[-1] == last


def test_eval_of_the_test_split_without_a_test_list_is_refused(dataset, tmp_path, capsys):
    # It used to score the validation list and write "split": "test".
    recipe = _recipe(dataset, tmp_path)
    assert main(["eval", str(recipe), "--checkpoint", str(tmp_path / "m.safetensors"), "--split", "test"]) == 2
    assert "--split test: the recipe has no data.test_list" in capsys.readouterr().err


def test_eval_workers_default_to_at_most_the_cores(dataset, tmp_path, monkeypatch):
    import os

    import motionsqueeze.engine.evaluate as evaluate

    seen = {}

    def fake(cfg, checkpoint, **kwargs):
        seen["workers"] = cfg.train.workers
        raise ValueError("stop here")

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fake)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(_recipe(dataset, tmp_path).read_text().replace('"workers": 0', '"workers": 8'))
    assert main(["eval", str(recipe), "--checkpoint", "m.safetensors"]) == 2
    assert seen["workers"] == 2  # the recipe's 8 on a 2-core machine
    assert main(["eval", str(recipe), "--checkpoint", "m.safetensors", "--workers", "5"]) == 2
    assert seen["workers"] == 5
