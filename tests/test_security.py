"""Hostile and unlucky inputs: model files, checkpoints, recipes, frames and output paths
(see docs/security.md). Every case must end in a clear error before anything large is
allocated, never in a hang, a traceback or a silently wrong result."""

import errno
import io
import json
import os
import re
import struct
import zipfile

import pytest
import torch

from motionsqueeze import create_model, load_model, save_model
from motionsqueeze.cli import main
from motionsqueeze.data.errors import DataError
from motionsqueeze.data.readers import FrameFolderReader, VideoReader
from motionsqueeze.engine.checkpoint import load_checkpoint, save_checkpoint
from motionsqueeze.engine.config import RANGES, ConfigError, OptimConfig, RunConfig, ScheduleConfig, EvalConfig, load_config
from motionsqueeze.models.weights import load_trained_model, model_file
from motionsqueeze.models.weights import WeightsFileError, load_checkpoint_file

TINY_RECIPE = (
    "model: {arch: tsm_tiny}\n"
    "data: {dataset: synthetic, train_clips: 8, val_clips: 4, num_segments: 2, size: 32}\n"
    "optim: {lr: 0.01, reference_batch_size: 0}\n"
    "schedule: {epochs: 1}\n"
    "train: {batch_size: 4, workers: 0, device: cpu, progress: false, tensorboard: false, log_every: 0}\n"
)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("tsm_tiny", num_classes=3, num_segments=2)


def _header_length(path) -> int:
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8), "little")


def _safetensors_with_header_length(path, n: int) -> None:
    """A valid safetensors file holding ``w = [0, 1, 2, 3]`` whose JSON header is exactly
    ``n`` bytes long (padded inside the metadata)."""
    def header(pad):
        return json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                           "__metadata__": {"pad": pad}}, separators=(",", ":"))

    text = header("x" * (n - len(header(""))))
    assert len(text) == n
    path.write_bytes(n.to_bytes(8, "little") + text.encode() + torch.arange(4.0).numpy().tobytes())


# ------------------------------------------------------------------ 1. file-type detection


def test_safetensors_is_told_by_structure_for_every_header_length(tmp_path):
    # The first byte is the low byte of the header length: sweep all 256 values, and every
    # length whose first byte is 0x80 (a pickle's first byte) up to 4 KiB.
    lengths = list(range(100, 356)) + [0x80 + 256 * k for k in range(16)]
    assert {n % 256 for n in lengths} == set(range(256))
    refused = []
    for n in lengths:
        path = tmp_path / f"h{n}.safetensors"
        _safetensors_with_header_length(path, n)
        try:
            assert torch.equal(load_checkpoint_file(path)["w"], torch.arange(4.0))
        except WeightsFileError:
            refused.append(n)
        path.unlink()
    assert refused == []


def test_model_files_whose_header_length_starts_with_0x80_load(tmp_path, tiny_model):
    # save_model pads headers to a multiple of 8 bytes: k more metadata characters (k a
    # multiple of 8) make the header exactly k bytes longer.
    path = save_model(tiny_model, tmp_path / "m.safetensors", extra={"pad": ""}, input_size=32)
    pad = (0x80 - _header_length(path)) % 256 + 256
    path = save_model(tiny_model, path, extra={"pad": "x" * pad}, input_size=32)
    assert _header_length(path) % 256 == 0x80
    loaded = load_model(path)  # the path of predict, eval and export
    assert torch.equal(loaded.state_dict()["fc.weight"], tiny_model.state_dict()["fc.weight"])
    assert load_trained_model(path).num_classes == 3


# ------------------------------------------------------------------ 2. checksums


def _flip(path, offset: int, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_model_file_are_found(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    assert load_model(path) is not None
    _flip(path, 8 + _header_length(path) + 100)  # inside the tensor data
    with pytest.raises(WeightsFileError, match="m.safetensors fails its checksum"):
        load_model(path)


def test_flipped_bytes_in_a_training_checkpoint_are_found(tmp_path):
    path = tmp_path / "last.pt"
    pattern = torch.full((64,), 1.2345)
    save_checkpoint(path, {"model": {"w": pattern}, "step": 7, "epoch": 1})
    state = load_checkpoint(path)
    assert state["step"] == 7 and "sha256" not in state
    _flip(path, path.read_bytes().index(pattern.numpy().tobytes()) + 40)
    with pytest.raises(ValueError, match="last.pt fails its checksum"):
        load_checkpoint(path)
    with pytest.raises(WeightsFileError, match="fails its checksum"):
        load_checkpoint_file(path)  # the reader of predict / eval / convert checks it too


def test_files_from_before_checksums_still_load(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(2)}, "step": 1}, path)
    assert load_checkpoint(path)["step"] == 1


# ------------------------------------------------------------------ 3. recipe values


@pytest.mark.parametrize("override, key", [
    ("optim.clip_grad_norm=-1", "optim.clip_grad_norm"),
    ("schedule.gamma=-0.1", "schedule.gamma"),
    ("optim.bias_lr_mult=-2", "optim.bias_lr_mult"),
    ("optim.weight_decay=-0.0005", "optim.weight_decay"),
    ("optim.lr=.inf", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("train.max_steps_per_epoch=-1", "train.max_steps_per_epoch"),
    ("optim.betas=[0.9, 1.5]", "optim.betas"),
    ("schedule.milestones=[10, -2]", "schedule.milestones"),
])
def test_values_outside_their_range_are_refused_at_load(override, key):
    with pytest.raises(ConfigError, match=rf"--set {key}: (each value )?must be in the range [\[(]"):
        load_config("synthetic", [override])


def test_every_numeric_field_has_a_documented_range():
    sections = {"optim": OptimConfig, "schedule": ScheduleConfig, "train": RunConfig, "eval": EvalConfig}
    numeric = {f"{s}.{f}" for s, cls in sections.items() for f, v in vars(cls()).items()
               if not isinstance(v, (bool, str)) and isinstance(v, (int, float, tuple))}
    assert numeric == set(RANGES)
    for key, rng in RANGES.items():
        section, name = key.split(".")
        cls = sections[section]
        doc = " ".join(cls.__doc__.split())
        start = doc.index(f" {name}: ")
        ends = [doc.find(f" {other}: ", start + 1) for other in vars(cls()) if other != name]
        entry = doc[start:min([e for e in ends if e > start], default=len(doc))]
        assert f"range {rng}" in entry, (key, entry)


@pytest.mark.parametrize("override, message", [
    ("model=[1, 2]", r"--set model: must be a mapping"),
    ("optim.betas=[0.9]", r"--set optim.betas: must hold 2 values"),
    ("train.device=gpu0", r"--set train.device: must be auto, cpu, cuda or cuda:N.*'gpu0'"),
])
def test_malformed_recipe_values_get_messages_not_tracebacks(override, message, capsys):
    assert main(["train", "synthetic", "--set", override]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_a_recipe_of_nested_aliases_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]  # 10**10 values
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(path)


# ------------------------------------------------------------------ 4. resource limits


def _rewrite_metadata(path, edit) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(metadata["motionsqueeze"])
    edit(info)
    metadata["motionsqueeze"] = json.dumps(info)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("edit, message", [
    (lambda i: i["config"].update(layers=[100000, 1, 1, 1]), "stored layers"),
    (lambda i: i["config"].update(widths=[1 << 20, 1 << 21, 1 << 22, 1 << 23]), "do not match the stored configuration"),
    (lambda i: i["config"].update(num_segments=10 ** 6), "stored num_segments"),
    (lambda i: i["preprocess"].update(input_size=60000), "stored input_size"),
    (lambda i: i["preprocess"].update(resize=[60000, 80000]), "stored resize"),
    (lambda i: i["preprocess"].update(std=[0, 1, 1]), "preprocess std"),
])
def test_model_metadata_is_checked_against_the_file_before_allocation(tmp_path, tiny_model, monkeypatch, edit, message):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    _rewrite_metadata(path, edit)
    real_build = model_file.build_model

    def build_on_meta_only(config):
        assert torch.empty(0).device.type == "meta", "a model was allocated before the checks"
        return real_build(config)

    monkeypatch.setattr(model_file, "build_model", build_on_meta_only)
    with pytest.raises(WeightsFileError, match=message):
        load_model(path)


def test_a_compressed_archive_is_refused_before_it_inflates(tmp_path):
    plain, bomb = tmp_path / "plain.pth", tmp_path / "bomb.pth"
    torch.save({"w": torch.zeros(1 << 18)}, plain)  # 1 MiB of zeros, deflates to ~1 KiB
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry))
    assert bomb.stat().st_size < plain.stat().st_size // 50
    with pytest.raises(WeightsFileError, match="bomb.pth: entry .* is compressed"):
        load_checkpoint_file(bomb)
    with pytest.raises(WeightsFileError, match="is compressed"):
        load_checkpoint(bomb)


def _jpeg_declaring(path, width: int, height: int) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("side", [60000, 9000])
def test_a_jpeg_declaring_huge_dimensions_is_a_data_error(tmp_path, side):
    _jpeg_declaring(tmp_path / "00001.jpg", side, side)
    with pytest.raises(DataError, match=r"00001.jpg: the image declares .*re-extract"):
        FrameFolderReader(str(tmp_path), num_frames=1).read([0])


def test_over_long_paths_are_data_errors(tmp_path):
    long_name = "v" * 300
    with pytest.raises(DataError, match="cannot open"):
        VideoReader(str(tmp_path / f"{long_name}.mp4"))
    (tmp_path / "frames").mkdir()
    with pytest.raises(DataError):
        FrameFolderReader(str(tmp_path / "frames"), template=long_name + "{:05d}.jpg", num_frames=2).read([0])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_named_pipes_are_refused_not_waited_on(tmp_path):
    for i in (1, 2):
        os.mkfifo(tmp_path / f"{i:05d}.jpg")
    with pytest.raises(DataError, match="not a regular file"):
        FrameFolderReader(str(tmp_path)).read([0])
    with pytest.raises(DataError, match="not a regular file"):
        VideoReader(str(tmp_path / "00001.jpg"))
    with pytest.raises(WeightsFileError, match="not a regular file"):
        load_checkpoint_file(tmp_path / "00002.jpg")


# ------------------------------------------------------------------ 5. output paths


def test_train_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    assert main(["train", str(recipe), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{taken} is an existing file where a folder is needed" in err, err
    assert taken.read_text() == "keep me"


@pytest.mark.parametrize("code, message", [
    (errno.ENOSPC, "no space left on the device.*free some space"),
    (errno.EROFS, "the file system is read-only"),
])
def test_disk_full_or_read_only_output_keeps_the_old_file(tmp_path, tiny_model, monkeypatch, capsys, code, message):
    model = save_model(tiny_model, tmp_path / "m.safetensors", input_size=32)
    out = tmp_path / "out" / "m.pt2"
    out.parent.mkdir()
    out.write_bytes(b"an earlier export")

    def fail(program, f):
        f.write(b"half")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch.export, "save", fail)
    assert main(["export", str(model), "--format", "pt2", "--out", str(out), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(message, err), err
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.pt2"]  # no temporary left


def test_export_out_naming_a_folder_is_a_clear_error(tmp_path, tiny_model, capsys):
    model = save_model(tiny_model, tmp_path / "m.safetensors", input_size=32)
    assert main(["export", str(model), "--out", str(tmp_path), "--no-check"]) == 2
    assert "it is a folder; give a file name" in capsys.readouterr().err


# ------------------------------------------------------------------ 8. messages


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_resume_from_a_malicious_pickle_never_suggests_weights_only_false(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "step": 1, "x": _Payload(str(tmp_path / "pwned"))}, evil)
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), "--resume", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "evil.pt was refused" in err and "execute code" in err, err
    assert "weights_only=False" not in err.replace(" ", "") and "likely succeed" not in err
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_that_is_no_pickle_is_corrupt_without_torch_hints(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot read training checkpoint") as info:
        load_checkpoint(bad)
    assert "weights_only" not in str(info.value) and "likely succeed" not in str(info.value)


def test_a_bad_device_is_a_message(tmp_path, tiny_model, capsys):
    model = save_model(tiny_model, tmp_path / "m.safetensors", input_size=32)
    assert main(["predict", str(model), str(tmp_path / "clip.mp4"), "--device", "gpu0"]) == 2
    assert "--device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.parametrize("opset", ["1", "6", "99"])
def test_export_refuses_an_opset_it_cannot_write(tmp_path, tiny_model, capsys, opset):
    model = save_model(tiny_model, tmp_path / "m.safetensors", input_size=32)
    out = tmp_path / "m.onnx"
    assert main(["export", str(model), "--out", str(out), "--opset", opset, "--no-check"]) == 2
    assert f"ONNX opset {opset} cannot be written" in capsys.readouterr().err
    assert not out.exists()


def test_training_on_a_full_disk_stops_cleanly_and_resumes_bit_exact(tmp_path, monkeypatch, capsys):
    import motionsqueeze.files as files

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.replace("log_every: 0}", "log_every: 0, save_every_steps: 1}")
                      .replace("train_clips: 8, val_clips: 4", "train_clips: 4, val_clips: 2")
                      .replace("batch_size: 4", "batch_size: 2"))
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(straight)]) == 0
    real_fsync = files.os.fsync

    def full_after_one(fd):  # the disk fills up once the first checkpoint is written
        if (run / "checkpoints" / "last.pt").exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_after_one)
    assert main(["train", str(recipe), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no space left on the device" in err, err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1  # the written one is intact
    monkeypatch.setattr(files.os, "fsync", real_fsync)  # space freed
    assert main(["train", str(recipe), "--out", str(run), "--resume", "auto"]) == 0
    for name in ("last.pt",):
        a = load_checkpoint(straight / "checkpoints" / name)["model"]
        b = load_checkpoint(run / "checkpoints" / name)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
