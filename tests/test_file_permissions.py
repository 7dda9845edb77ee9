"""Files we write (through motionsqueeze.files.atomic_output) get the usual permissions (0o666 less the umask), so that colleagues on a
shared cluster can read a run's checkpoints and model files."""

import os
import stat
import sys

import pytest
import torch

from motionsqueeze.data import VideoRecord, write_list
from motionsqueeze.files import atomic_write

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_write_respects_the_umask(tmp_path, umask, mask):
    os.umask(mask)
    atomic_write(tmp_path / "last.pt", lambda f: torch.save({"a": torch.zeros(2)}, f))
    assert _mode(tmp_path / "last.pt") == 0o666 & ~mask
    assert torch.load(tmp_path / "last.pt")["a"].shape == (2,)
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left


def test_model_files_and_lists_are_readable_by_the_group(tmp_path, umask):
    from motionsqueeze.models import create_model
    from motionsqueeze.models.weights import save_model

    os.umask(0o022)
    model = create_model("tsn_r18", num_classes=3, num_segments=2)
    save_model(model, tmp_path / "best.safetensors", class_names=["a", "b", "c"], input_size=32)
    write_list(tmp_path / "train.txt", [VideoRecord("a.mp4", 0)], "video")
    for name in ("best.safetensors", "train.txt"):
        assert _mode(tmp_path / name) == 0o644, name
