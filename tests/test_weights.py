"""ImageNet initialisation, safe loading of weight files, our model file format."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from motionsqueeze import create_model, load_model, save_model
from motionsqueeze.models import resnet
from motionsqueeze.models.weights import (
    WeightsFileError,
    load_checkpoint_file,
    load_pretrained_backbone,
    load_state_dict_file,
    read_model_card,
    read_model_metadata,
)
from motionsqueeze.models.card import Preprocess, Provenance
from official_reference import random_weights_


def _imagenet_state(depth, seed=0):
    """A state dict laid out like torchvision's resnet<depth> (same names), random values."""
    torch.manual_seed(seed)
    return random_weights_(resnet(depth, num_classes=1000), seed=seed).state_dict()


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("imagenet") / "resnet18.pth"
    torch.save(_imagenet_state(18), path)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_imagenet_resnet50_initialises_the_backbone_only(tmp_path, caplog, suffix):
    state = _imagenet_state(50)
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(1)
    plain = create_model("msnet_r50", num_classes=10, num_segments=2)
    torch.manual_seed(1)
    with caplog.at_level("INFO", logger="motionsqueeze"):
        model = create_model("msnet_r50", num_classes=10, num_segments=2, pretrained=str(path))
    ours = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(ours[f"backbone.{key}"], value), key
    # MotionSqueeze and the classifier keep their initialisation.
    for key, value in plain.state_dict().items():
        if not key.startswith("backbone."):
            assert torch.equal(ours[key], value), key
    printed = caplog.text  # the summary goes to the package's logger (the CLI shows it)
    assert "ResNet-50" in printed and "23,508,032 parameters" in printed
    assert "ignored      fc.bias, fc.weight (the ImageNet classifier)" in printed
    assert "motion.res3 (70,905 parameters), fc (20,490 parameters): left at their initialisation" in printed


def test_old_torchvision_files_and_dataparallel_prefixes_load(tmp_path):
    # Files saved before PyTorch 0.4.1 have no num_batches_tracked; DataParallel adds module.
    state = {f"module.{k}": v for k, v in _imagenet_state(18).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    model = create_model("tsm_r18", num_classes=3, num_segments=2)
    report = load_pretrained_backbone(model, path, log=None)
    assert len(report.loaded) == len(state) - 2  # all but fc.weight, fc.bias
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["module.layer4.1.conv2.weight"])


def test_wrong_depth_is_refused_and_the_model_untouched(r18_file):
    model = create_model("msnet_r50", num_classes=10, num_segments=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsFileError, match=r"resnet18.pth.*holds ResNet-18 weights.*ResNet-50 backbone"):
        load_pretrained_backbone(model, r18_file, log=None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_wrong_shapes_and_unknown_tensors_are_refused(tmp_path):
    state = _imagenet_state(18)
    bad = dict(state, **{"conv1.weight": torch.zeros(64, 4, 7, 7)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(WeightsFileError, match=r"shape mismatch.*conv1.weight: file \(64, 4, 7, 7\), model \(64, 3, 7, 7\)"):
        create_model("tsm_r18", pretrained=tmp_path / "shape.pth")
    torch.save(dict(state, **{"layer5.0.conv1.weight": torch.zeros(1)}), tmp_path / "extra.pth")
    with pytest.raises(WeightsFileError, match=r"unexpected tensor.*layer5.0.conv1.weight"):
        create_model("tsm_r18", pretrained=tmp_path / "extra.pth")


def test_a_model_file_given_as_imagenet_weights_gets_a_hint(tmp_path):
    path = save_model(create_model("tsm_tiny", num_classes=2, num_segments=2), tmp_path / "m.safetensors")
    with pytest.raises(WeightsFileError, match="load_model"):
        create_model("tsm_tiny", pretrained=path)


def _corrupt_files(tmp_path):
    state = {"conv1.weight": torch.randn(64, 3, 7, 7)}
    torch.save(state, tmp_path / "good.pth")
    save_file(state, str(tmp_path / "good.safetensors"))
    files = {}
    for name in ("good.pth", "good.safetensors"):
        data = (tmp_path / name).read_bytes()
        files[f"truncated-{name}"] = data[: len(data) // 2]
    files["empty.pth"] = b""
    files["junk.pth"] = b"<html>404 Not Found</html>"
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return files


@pytest.mark.parametrize(
    "name,message",
    [
        ("truncated-good.pth", "truncated or corrupt"),
        ("truncated-good.safetensors", "truncated or corrupt"),
        ("empty.pth", r"is empty \(0 bytes\)"),
        ("junk.pth", "neither a PyTorch checkpoint"),
    ],
)
def test_corrupt_files_give_errors_naming_the_file(tmp_path, name, message):
    _corrupt_files(tmp_path)
    with pytest.raises(WeightsFileError, match=message) as info:
        load_state_dict_file(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)
    with pytest.raises(WeightsFileError, match=message):
        create_model("tsm_r18", pretrained=tmp_path / name)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_state_dict_file(tmp_path / "nowhere.pth")


class _Payload:
    """Unpickling this would create a directory: a stand-in for any code execution."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pickle_that_runs_code_is_refused(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": _Payload(str(marker))}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsFileError, match=r"evil.pth was refused.*mkdir.*execute code"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_legacy_format_and_numpy_scalars_load(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "legacy.pth.tar"
    ckpt = {"epoch": 3, "best_prec1": np.float64(45.5), "state_dict": {"w": torch.arange(3.0)}}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint_file(path)
    assert float(loaded["best_prec1"]) == 45.5
    assert torch.equal(load_state_dict_file(path)["w"], torch.arange(3.0))


def test_saved_model_reloads_alone_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_model("msnet_tiny", num_classes=4, num_segments=3, patch_size=5, reduced_channels=16)
    random_weights_(model, seed=2).eval()
    names = ["push", "pull", "lift", "drop"]
    # A DataParallel wrapper (as in training scripts) is unwrapped.
    path = save_model(torch.nn.DataParallel(model), tmp_path / "out" / "tiny.safetensors", class_names=names,
                      input_size=(112, 128), extra={"top1": 12.5})
    assert sorted(os.listdir(path.parent)) == ["tiny.safetensors"]  # no temporary left behind
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    card = loaded.card
    assert card.arch == "msnet_tiny" and card.class_names == tuple(names) and card.config == model.config
    # Giving input_size sets the standard test resize, 256/224 of it (of the height).
    assert card.preprocess == Preprocess(input_size=(112, 128), resize=128, num_segments=3)
    assert card.preprocess.mean == (0.485, 0.456, 0.406) and card.preprocess.std == (0.229, 0.224, 0.225)
    assert card.provenance.source == "created" and dict(card.extra) == {"top1": 12.5}
    clips = torch.randn(2, 3, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(clips), model(clips))
    assert read_model_metadata(path)["class_names"] == names
    assert read_model_card(path) == card


def test_unwrap_model_finds_the_recogniser_in_any_nesting_of_wrappers():
    from motionsqueeze.engine.ema import ModelEMA
    from motionsqueeze.models import unwrap_model

    model = create_model("tsm_tiny", num_classes=2, num_segments=2)
    assert unwrap_model(model) is model
    assert unwrap_model(torch.nn.DataParallel(torch.compile(model))) is model
    assert unwrap_model(torch.compile(torch.nn.DataParallel(model))) is model
    ema = ModelEMA(model, 0.9)
    assert unwrap_model(ema) is ema.module


def test_the_saved_card_has_no_displacement_backend_and_loads_with_auto(tmp_path):
    model = create_model("msnet_tiny", num_classes=2, num_segments=2, patch_size=5, backend="reference")
    path = save_model(model, tmp_path / "m.safetensors")
    assert "backend" not in read_model_metadata(path)["config"]
    assert load_model(path).motion["res3"].backend == "auto"  # the machine's choice, not the file's


def _legacy_file(path, state, info):
    """A model file as format 1 wrote it (metadata built by hand, as that version did)."""
    from motionsqueeze.files import tensor_digest

    save_file(state, str(path), metadata={"format": "motionsqueeze.model", "format_version": "1",
                                          "motionsqueeze": json.dumps(info), "sha256": tensor_digest(state)})
    return path


def test_model_files_of_format_1_still_load_with_their_metadata_on_the_card(tmp_path):
    model = create_model("msnet_tiny", num_classes=2, num_segments=3, patch_size=5).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    config = {**model.config.to_dict(), "backend": "triton"}  # format 1 stored the backend
    trained = _legacy_file(tmp_path / "trained.safetensors", state, {
        "arch": "msnet_tiny", "config": config, "class_names": ["push", "pull"],
        "preprocess": {"input_size": 96, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "num_segments": 3},
        "extra": {"recipe": "sthv1_msnet_r50_8f", "resize": [110, 140], "sampling": "dense", "dense_stride": 2,
                  "dense_window": 64, "template": "img_{:05d}.jpg", "start_index": 0, "top1": 40.5},
        "library_version": "0.1.0"})
    card = load_model(trained).card
    assert card.arch == "msnet_tiny" and card.class_names == ("push", "pull")
    assert card.preprocess == Preprocess(input_size=96, resize=(110, 140), mean=(0.5,) * 3, std=(0.25,) * 3,
                                         num_segments=3, sampling="dense", dense_stride=2, dense_window=64,
                                         template="img_{:05d}.jpg", start_index=0)
    assert card.provenance == Provenance("trained", recipe="sthv1_msnet_r50_8f", library_version="0.1.0")
    assert dict(card.extra) == {"top1": 40.5} and card.config == model.config
    # A converted file of format 1: the provenance was in extra, resize absent (256/224 of 96).
    converted = _legacy_file(tmp_path / "converted.safetensors", state, {
        "arch": "msnet_tiny", "config": config, "class_names": None,
        "preprocess": {"input_size": 96, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "num_segments": 3},
        "extra": {"converted_from": {"source": "official-ms", "file": "ms.pth.tar", "epoch": 40}}})
    card = load_model(converted).card
    assert card.provenance.source == "converted" and card.provenance.converted_from["epoch"] == 40
    assert card.preprocess.resize == 110 and card.preprocess.sampling == "segment" and not card.extra
    # Saved again, the file is of the current format and keeps every field.
    again = save_model(load_model(trained), tmp_path / "again.safetensors")
    assert read_model_metadata(again)["provenance"]["recipe"] == "sthv1_msnet_r50_8f"
    assert load_model(again).card.replace(provenance=None) == load_model(trained).card.replace(provenance=None)


def test_load_model_explains_files_it_cannot_use(tmp_path):
    state = create_model("tsm_tiny", num_classes=2, num_segments=2).state_dict()
    save_file(state, str(tmp_path / "bare.safetensors"))
    with pytest.raises(WeightsFileError, match=r"bare.safetensors has no motionsqueeze metadata.*architecture"):
        load_model(tmp_path / "bare.safetensors")
    torch.save(state, tmp_path / "pickled.pth")
    with pytest.raises(WeightsFileError, match=r"pickled.pth is a pickled PyTorch checkpoint.*convert"):
        load_model(tmp_path / "pickled.pth")
    meta = {"format": "motionsqueeze.model", "format_version": "9", "motionsqueeze": "{}"}
    save_file(state, str(tmp_path / "future.safetensors"), metadata=meta)
    with pytest.raises(WeightsFileError, match="format version 9.*upgrade"):
        load_model(tmp_path / "future.safetensors")
    info = {"arch": None, "config": {"depth": 10, "flux": 3}, "preprocess": {}}
    save_file(state, str(tmp_path / "odd.safetensors"), metadata=dict(meta, format_version="1", motionsqueeze=json.dumps(info)))
    with pytest.raises(WeightsFileError, match=r"odd.safetensors.*configuration.*flux"):
        load_model(tmp_path / "odd.safetensors")
    path = save_model(create_model("tsm_tiny", num_classes=2, num_segments=2), tmp_path / "ok.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightsFileError, match="ok.safetensors is truncated or corrupt"):
        load_model(path)


def test_save_model_checks_what_it_stores(tmp_path):
    model = create_model("tsm_tiny", num_classes=3, num_segments=2)
    with pytest.raises(ValueError, match="2 class names for a model with 3 outputs"):
        save_model(model, tmp_path / "m.safetensors", class_names=["a", "b"])
    with pytest.raises(ValueError, match="mean must hold 3 values"):
        save_model(model, tmp_path / "m.safetensors", mean=(0.5,))
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_model(model, tmp_path / "m.safetensors", extra={"optimizer": torch.optim.SGD(model.parameters(), 0.1)})
    assert not (tmp_path / "m.safetensors").exists()
