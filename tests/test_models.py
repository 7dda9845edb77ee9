import json
import os
import subprocess
import sys

import pytest
import torch

from motionsqueeze import create_model, list_models
from motionsqueeze.cli import main
from motionsqueeze.models import measure_complexity, model_config

REQUIRED = ["tsn_r18", "tsn_r50", "tsm_r18", "tsm_r50", "tsm_r101", "msnet_r18", "msnet_r34", "msnet_r50", "msnet_r101"]


def test_registry_has_the_required_variants():
    names = list_models()
    assert set(REQUIRED) <= set(names)
    assert list_models("msnet_r*") == ["msnet_r101", "msnet_r18", "msnet_r34", "msnet_r50"]


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    # 2 frames of 64x64: res3 is 8x8 for the standard stem, enough for MotionSqueeze.
    model = create_model(name, num_classes=5, num_segments=2, dropout=0.0)
    clips = torch.randn(2, 2, 3, 64, 64)
    logits = model(clips)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "name,params",
    [("tsm_r50", 23_864_558), ("msnet_r50", 23_935_463), ("tsm_r18", 11_265_774), ("msnet_r18", 11_286_759)],
)
def test_parameter_counts_match_the_authors_models(name, params):
    with torch.device("meta"):
        model = create_model(name, num_classes=174, num_segments=8)
    assert sum(p.numel() for p in model.parameters()) == params


def test_backbone_keeps_torchvision_parameter_names():
    with torch.device("meta"):
        keys = set(create_model("msnet_r50").state_dict())
    for key in ["backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer1.0.conv3.weight",
                "backbone.layer4.2.bn3.bias", "backbone.layer2.0.downsample.0.weight",
                "backbone.layer2.0.downsample.1.weight", "motion.res3.chnl_reduction.0.weight",
                "motion.res3.flow_refinement.conv1.0.weight", "fc.weight"]:
        assert key in keys, key


def test_tsn_tsm_msnet_differ_only_in_their_switches():
    torch.manual_seed(0)
    tsn = create_model("tsn_r18", num_segments=3, num_classes=4).eval()
    tsm = create_model("tsm_r18", num_segments=3, num_classes=4).eval()
    tsm.load_state_dict(tsn.state_dict())
    clips = torch.randn(1, 3, 3, 64, 64)
    # TSN treats frames independently: permuting frames leaves its clip logits unchanged.
    torch.testing.assert_close(tsn(clips), tsn(clips[:, [2, 0, 1]]), rtol=1e-4, atol=1e-5)
    # TSM mixes frames: the same weights give different logits, and frame order matters.
    assert not torch.allclose(tsm(clips), tsn(clips), atol=1e-4)
    assert not torch.allclose(tsm(clips), tsm(clips[:, [2, 0, 1]]), atol=1e-4)


def test_motion_can_sit_after_any_stages():
    model = create_model("msnet_r18", num_segments=2, num_classes=3, motion_stages=("res2", "res4"), patch_size=5)
    assert list(model.motion) == ["res2", "res4"]
    assert model.motion["res2"].in_channels == 64 and model.motion["res4"].in_channels == 256
    assert model(torch.randn(1, 2, 3, 64, 64)).shape == (1, 3)


def test_flops_match_the_published_costs():
    with torch.device("meta"):
        tsm = measure_complexity(create_model("tsm_r50"), frames=8, size=224)
        ms = measure_complexity(create_model("msnet_r50"), frames=8, size=224)
    assert abs(tsm.gflops - 32.9) / 32.9 < 0.01
    assert 0.4 <= ms.gflops - tsm.gflops <= 0.8
    assert ms.ms_params == 70_905 and tsm.ms_gflops == 0


def test_flops_command_json(capsys):
    assert main(["flops", "msnet_r18", "--frames", "8", "--size", "224", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"model", "gflops", "params", "ms_gflops", "ms_params"}
    assert report["model"] == "msnet_r18" and report["params"] == 11_286_759 and report["ms_params"] == 20_985
    assert 14.5 < report["gflops"] < 15.0 and 0.1 < report["ms_gflops"] < 0.4


def test_flops_command_table_and_bad_name(capsys):
    assert main(["flops", "tsm_r50"]) == 0
    out = capsys.readouterr().out
    assert "GFLOPs      32.7" in out and "23,864,558" in out
    assert main(["flops", "resnet_r50"]) == 2
    assert "unknown model 'resnet_r50'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: create_model("msnet_r51"), "unknown model 'msnet_r51'"),
        (lambda: create_model("msnet_r18", patchsize=5), r"model.patchsize: unknown key; did you mean 'patch_size'"),
        (lambda: create_model("msnet_r18", motion_stages=("res6",)), "motion_stages"),
        (lambda: create_model("msnet_r18", num_segments=4)(torch.zeros(1, 3, 3, 32, 32)), "num_segments=4"),
        (lambda: create_model("msnet_r18", num_segments=1), "num_segments >= 2"),
        (lambda: create_model("tsm_r18", num_segments=2)(torch.zeros(2, 3, 32, 32)), r"\(N, T, 3, H, W\)"),
    ],
)
def test_bad_model_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_model_config_round_trips_through_a_dict():
    cfg = model_config("msnet_r34", num_classes=10, patch_size=9)
    assert type(cfg)(**cfg.to_dict()) == cfg


def test_cpu_forward_needs_no_extension_and_no_network(tmp_path):
    # A fresh interpreter with sockets disabled: import, build msnet_r50, run one 8-frame clip.
    script = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise RuntimeError('network used')\n"
        "socket.socket.connect = refuse\n"
        "import torch, motionsqueeze\n"
        "m = motionsqueeze.create_model('msnet_r50').eval()\n"
        "with torch.no_grad(): out = m(torch.randn(1, 8, 3, 112, 112))\n"
        "assert out.shape == (1, 174) and torch.isfinite(out).all()\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('triton', 'torchvision', 'spatial_correlation_sampler')]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)


def test_timm_classifier_api_and_per_stage_maps(tmp_path):
    torch.manual_seed(0)
    model = create_model("msnet_tiny", num_classes=4, num_segments=2, patch_size=3, motion_stages=("res3",)).eval()
    x = torch.randn(3, 2, 3, 32, 32)
    assert model.get_classifier() is model.fc and model.get_classifier().out_features == 4
    with torch.no_grad():
        last, maps = model.forward_intermediates(x)
        stages = model.forward_stages(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    # res2..res5, frames folded into the batch, res3 taken after MotionSqueeze.
    assert [m.shape[0] for m in maps] == [6] * 4 and [m.shape[-1] for m in maps] == [8, 4, 2, 1]
    for m, name in zip(maps, ("res2", "res3", "res4", "res5")):
        assert torch.equal(m, stages[name].flatten(0, 1))
    assert torch.equal(last, maps[-1])
    with torch.no_grad():  # as above: eager CPU inference folds MotionSqueeze's BatchNorm (rounding differs)
        assert torch.equal(model.forward_intermediates(x, intermediates_only=True)[1], maps[1])

    model.reset_classifier(0)
    assert model.num_classes == 0 and model.config.num_classes == 0
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    with torch.no_grad():
        features = model(x)
    assert features.shape == (3, model.num_features)
    assert torch.allclose(features, pooled) and torch.allclose(features, stages["pre_logits"].mean(1))
    assert isinstance(model.dropout, torch.nn.Identity)  # no dropout on the features in training either
    from motionsqueeze import load_model, save_model

    save_model(model, tmp_path / "features.safetensors")  # a feature extractor rebuilds as one
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "features.safetensors").eval()(x), features)
    model.reset_classifier(7)
    assert model(x).shape == (3, 7) and model.get_classifier().out_features == 7
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)
