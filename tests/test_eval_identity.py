"""Evaluation scores do not depend on how the work is cut: batch size, loader workers, processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from video_factory import synthetic_frames, write_frame_folder

from motionsqueeze.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from motionsqueeze.models import create_model
    from motionsqueeze.models.weights import save_model

    root = tmp_path_factory.mktemp("identity")
    lines = []
    for i in range(7):  # 7 items: a remainder for batches of 3 and 8 and for 2 processes
        write_frame_folder(root / f"v{i}", synthetic_frames(5 + i, 24, 32)[i % 3:])
        lines.append(f"v{i} {5 + i - i % 3} {i % 3}")
    lines.insert(3, "gone 8 1")  # an item that cannot be read (on_error: skip)
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("a\nb\nc\n")
    torch.manual_seed(0)
    model = create_model("msnet_tiny", num_classes=3, num_segments=3, patch_size=5)
    with torch.no_grad():  # non-trivial normalisation statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    save_model(model, root / "model.safetensors", class_names=["a", "b", "c"], input_size=24,
               extra={"resize": 28, "sampling": "segment"})
    recipe = root / "recipe.yaml"
    recipe.write_text(json.dumps({
        "model": {"arch": "msnet_tiny", "patch_size": 5},
        "data": {"root": str(root), "train_list": str(root / "val.txt"), "val_list": str(root / "val.txt"),
                 "class_names": str(root / "classes.txt"), "num_segments": 3, "resize": 28, "crop_size": 24,
                 "test_num_clips": 2, "test_num_crops": 3, "on_error": "skip"},
        "train": {"device": "cpu", "progress": False},
    }))
    return root, recipe


def _scores(out):
    with np.load(out / "scores.npz") as f:
        return f["scores"], f["indices"], f["labels"]


def test_scores_identical_for_batch_sizes_workers_and_processes(setup, tmp_path):
    root, recipe = setup
    runs = {}
    for batch, workers in ((1, 0), (3, 0), (8, 0), (3, 2)):
        out = tmp_path / f"b{batch}w{workers}"
        assert main(["eval", str(recipe), "--checkpoint", str(root / "model.safetensors"), "--batch-size", str(batch),
                     "--workers", str(workers), "--out", str(out)]) == 0
        runs[out.name] = out
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = tmp_path / "two_processes"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "motionsqueeze",
           "eval", str(recipe), "--checkpoint", str(root / "model.safetensors"), "--batch-size", "3", "--workers", "0",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs[out.name] = out
    reference, indices, labels = _scores(runs["b1w0"])
    assert reference.shape == (7, 3) and indices.tolist() == [0, 1, 2, 4, 5, 6, 7]  # line 4 skipped
    assert np.unique(reference.round(4), axis=0).shape[0] == 7  # scores differ per video
    for name, out in runs.items():
        scores, idx, lab = _scores(out)
        assert idx.tolist() == indices.tolist() and lab.tolist() == labels.tolist(), name
        np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-5, err_msg=name)
        metrics = json.loads((out / "metrics.json").read_text())
        assert (metrics["listed"], metrics["scored"], metrics["skipped"]) == (8, 7, 1), name
        assert metrics["skipped_items"] == [f"{root / 'val.txt'}:4: {root / 'gone'}: frame folder not found"], name
