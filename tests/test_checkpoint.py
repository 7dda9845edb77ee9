"""Training checkpoints: atomic writes and clear errors for unreadable files."""

import pytest
import torch

from motionsqueeze.engine.checkpoint import atomic_write, load_checkpoint, save_checkpoint


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
