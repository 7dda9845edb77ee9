"""ONNX and torch.export: exported models agree with PyTorch on clips they were not traced with."""

import json

import pytest
import torch

from motionsqueeze import create_model, list_models, save_model
from motionsqueeze.cli import main
from motionsqueeze.models.export import (
    example_clips,
    export_onnx,
    export_program,
    onnx_max_abs_diff,
    program_max_abs_diff,
)
from motionsqueeze.models import model_config
from official_reference import random_weights_
from test_mobilenetv2 import MOBILENETS  # exported and compiled there, each by name

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _model(name, seed=0, **kwargs):
    # 2 frames of 64x64 keep R18 fast; random BatchNorm statistics give logits of order 1.
    torch.manual_seed(seed)
    return random_weights_(create_model(name, num_classes=5, num_segments=2, **kwargs), seed=seed)


DYNAMO_ONNX = ["tsm_r18", "msnet_r18"]


@pytest.mark.parametrize("name", DYNAMO_ONNX)
def test_onnx_export_matches_pytorch_in_onnxruntime(tmp_path, name):
    model = _model(name).train()  # export must switch to eval by itself ...
    path = tmp_path / f"{name}.onnx"
    assert export_onnx(model, path, size=64) == "dynamo"
    assert model.training  # ... and restore the mode afterwards
    # Another clip and another batch size than the traced example (batch 2, seed 0): a
    # shift frozen into constants by tracing, or a fixed batch, would show here.
    clips = example_clips(model, size=64, batch=3, seed=7)
    with torch.no_grad():
        scale = model.eval()(clips).abs().max()
    assert scale > 0.1
    assert onnx_max_abs_diff(path, model, clips) <= 1e-4


# The small ResNet of each family, and the causal ones (the whole-clip graph; test_streaming.py
# exports the frame step).
TORCHSCRIPT_ONNX = ["msnet_tiny", "tsn_tiny", "tsm_tiny_causal", "msnet_tiny_causal"]


@pytest.mark.parametrize("name", TORCHSCRIPT_ONNX)
def test_torchscript_exporter_also_gives_correct_graphs(tmp_path, name):
    model = _model(name, seed=1)
    path = tmp_path / "tiny.onnx"
    assert export_onnx(model, path, size=64, exporter="torchscript") == "torchscript"
    assert onnx_max_abs_diff(path, model, example_clips(model, size=64, batch=3, seed=3)) <= 1e-4


def test_torch_export_program_matches_and_backends_are_restored():
    model = _model("msnet_tiny", seed=2, backend="auto")
    model.motion["res3"].backend = "triton"  # a GPU backend; export must not use it
    program = export_program(model, size=64)
    assert model.motion["res3"].backend == "triton"
    model.motion["res3"].backend = "reference"
    clips = example_clips(model, size=64, batch=4, seed=5)
    assert program_max_abs_diff(program, model, clips) <= 1e-5


def test_use_backend_overrides_what_the_call_asks_for_and_nests(monkeypatch):
    import sys

    from motionsqueeze.ops import displacement, use_backend

    module = sys.modules["motionsqueeze.ops.displacement"]
    f1, f2 = torch.randn(1, 4, 5, 6, dtype=torch.float64), torch.randn(1, 4, 5, 6, dtype=torch.float64)
    want = displacement(f1, f2, 3, backend="reference")
    calls = []
    fn, available = module._BACKENDS["reference"]
    monkeypatch.setitem(module._BACKENDS, "reference", (lambda *a: calls.append(1) or fn(*a), available))
    with use_backend("reference"):
        # "triton" cannot run on CPU tensors here; inside the block the reference runs instead.
        torch.testing.assert_close(displacement(f1, f2, 3, backend="triton"), want)
        with use_backend("cpu"):
            displacement(f1.float(), f2.float(), 3, backend="reference")
            assert len(calls) == 1  # the inner block's cpu backend ran, not the reference asked for
        displacement(f1, f2, 3, backend="cpu")
        assert len(calls) == 2  # the outer block's reference again
    displacement(f1.float(), f2.float(), 3, backend="cpu")
    assert len(calls) == 2  # outside any block, the call's own backend
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        with use_backend("fast"):
            pass


def test_export_refuses_another_number_of_frames(tmp_path):
    with pytest.raises(ValueError, match="built for num_segments=2 frames per clip, not 8"):
        export_onnx(_model("tsm_tiny"), tmp_path / "x.onnx", frames=8, size=64)


def test_cli_export_writes_onnx_with_metadata_and_checks_it(tmp_path, capsys):
    model = _model("msnet_tiny", seed=4)
    ckpt = save_model(model, tmp_path / "tiny.safetensors", class_names=list("abcde"), input_size=64)
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "clips (N, 2, 3, 64, 64) -> logits (N, 5)" in printed
    assert "(ok)" in printed
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    info = json.loads(props["motionsqueeze"])
    assert info["class_names"] == list("abcde") and info["preprocess"]["input_size"] == 64
    assert info["arch"] == "msnet_tiny"


COMPILED = ["tsn_tiny", "tsm_tiny", "msnet_tiny", "tsm_tiny_causal", "msnet_tiny_causal"]


@pytest.mark.parametrize("name", COMPILED)
def test_torch_compile_of_the_whole_model_has_no_graph_breaks(name):
    torch._dynamo.reset()
    model = create_model(name, num_classes=5, num_segments=2, backend="reference").eval()
    clips = torch.randn(1, 2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: a break is an error
    with torch.no_grad():
        torch.testing.assert_close(compiled(clips), model(clips))


def _kind(name):
    # What changes the traced graph's operators; depth and width change only its size.
    c = model_config(name)
    return c.backbone, c.temporal_shift, bool(c.motion_stages), c.causal


def test_every_registered_kind_of_model_is_exported_and_compiled():
    # A model registered with a new backbone or switch fails here until a test above (or
    # test_mobilenetv2.py, which takes every MobileNetV2 by name) exports and compiles one.
    exported = {_kind(n) for n in DYNAMO_ONNX + TORCHSCRIPT_ONNX + MOBILENETS}
    compiled = {_kind(n) for n in COMPILED + MOBILENETS}
    assert [n for n in list_models() if _kind(n) not in exported] == [], "no ONNX test exports a model of their kind"
    assert [n for n in list_models() if _kind(n) not in compiled] == [], "no torch.compile test compiles their kind"
