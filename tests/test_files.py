"""No finished work lost to a half-written file: every result file a command writes replaces
the earlier one only when complete (``motionsqueeze.files.atomic_output``).

Each test writes a good file, then runs the writer again on a disk that fills up in the middle
of that one file, and checks that the earlier file is intact, that the error names the file,
and that no temporary file is left behind."""

import shutil
from pathlib import Path

import pytest
import torch
from full_disk import FULL, disk_full_while_writing

from motionsqueeze.cli import main
from motionsqueeze.engine.metrics import classification_report, write_report
from motionsqueeze.files import OutputError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*") if p.name.endswith(".tmp") or ".tmp." in p.name)


def _report(seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(6) % 3
    scores = torch.randn(6, 3, generator=g)
    return classification_report(scores, labels, 3), scores.numpy(), labels.numpy()


def _write_report(out, seed):
    report, scores, labels = _report(seed)
    write_report(out, report, ["push", "pull", "spin"], {"seed": seed}, scores, labels, list(range(6)))


@pytest.mark.parametrize("name", ["metrics.json", "per_class.csv", "confusion.png", "scores.npz"])
def test_an_evaluation_on_a_full_disk_keeps_the_earlier_results(tmp_path, monkeypatch, name):
    _write_report(tmp_path, seed=0)
    before = (tmp_path / name).read_bytes()
    disk_full_while_writing(monkeypatch, name)
    with pytest.raises(OutputError, match=FULL) as info:
        _write_report(tmp_path, seed=1)
    assert name in str(info.value)
    assert (tmp_path / name).read_bytes() == before
    assert _leftovers(tmp_path) == []


TINY_RECIPE = (
    "model: {arch: tsn_tiny}\n"
    "data: {dataset: synthetic, train_clips: 4, val_clips: 2, num_segments: 2, size: 32}\n"
    "optim: {lr: 0.01, reference_batch_size: 0}\n"
    "schedule: {epochs: 1}\n"
    "train: {batch_size: 2, workers: 0, device: cpu, progress: false, tensorboard: false, log_every: 0}\n"
)


def test_a_resume_on_a_full_disk_keeps_the_runs_config_yaml(tmp_path, monkeypatch, capsys):
    recipe, run = tmp_path / "tiny.yaml", tmp_path / "run"
    recipe.write_text(TINY_RECIPE)
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    before = (run / "config.yaml").read_text()
    assert "epochs: 1" in before
    disk_full_while_writing(monkeypatch, "config.yaml")
    # An allowed change rewrites config.yaml, the recipe copy that a refused resume points to.
    assert main(["train", str(recipe), "--out", str(run), "--resume", "auto", "--set", "schedule.epochs=2",
                 "--allow-change", "schedule.epochs"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{run / 'config.yaml'}" in err and FULL in err, err
    assert (run / "config.yaml").read_text() == before
    assert _leftovers(run) == []


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory):
    """Two classes of two tiny clips, and a file that is not a video (so rejected.txt is written)."""
    from video_factory import encode_video, synthetic_frames

    root = tmp_path_factory.mktemp("tree")
    clip = encode_video(root / "clip.mp4", synthetic_frames(6, 16, 16))
    for cls in ("jump", "sit"):
        (root / "videos" / cls).mkdir(parents=True)
        for k in range(2):
            shutil.copy(clip, root / "videos" / cls / f"{cls}{k}.mp4")
    (root / "videos" / "sit" / "broken.mp4").write_bytes(b"not a video")
    return root / "videos"


@pytest.mark.parametrize("name", ["data.yaml", "recipe.yaml", "rejected.txt"])
def test_prepare_on_a_full_disk_keeps_the_earlier_files(tmp_path, video_tree, monkeypatch, capsys, name):
    out = tmp_path / "lists"
    argv = ["prepare", "folder", "--root", str(video_tree), "--out", str(out), "--workers", "1"]
    assert main(argv) == 0
    (out / name).write_text("# the earlier file\n")
    disk_full_while_writing(monkeypatch, name)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{out / name}" in err and FULL in err, err
    assert (out / name).read_text() == "# the earlier file\n"
    assert _leftovers(out) == []


def test_a_demo_report_on_a_full_disk_keeps_the_earlier_results(tmp_path, monkeypatch):
    from motionsqueeze.demo import run_demo

    overrides = ["data.train_clips=4", "data.val_clips=4", "data.num_segments=2", "data.size=32",
                 "schedule.epochs=1", "train.batch_size=2"]
    run_demo(tmp_path, models=("tsn_tiny",), overrides=overrides)
    for name in ("results.md", "results.json"):
        before = (tmp_path / name).read_bytes()
        with monkeypatch.context() as m:
            disk_full_while_writing(m, name)
            with pytest.raises(OutputError, match=FULL):
                run_demo(tmp_path, models=("tsn_tiny",), overrides=overrides)  # reuses the finished run
        assert (tmp_path / name).read_bytes() == before
    assert _leftovers(tmp_path) == []
