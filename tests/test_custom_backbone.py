"""MotionSqueeze and temporal shift in a user's own 2D CNN (CustomRecognizer)."""

import pytest
import torch
from torch import nn

from motionsqueeze import create_model, save_model
from motionsqueeze.models import CustomRecognizer, resnet
from official_reference import random_weights_


class Block(nn.Module):
    """A plain residual block, as a user would write it."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyNet(nn.Module):
    """Frames (B, 3, H, W) -> (B, 48, H/8, W/8); stages named by the user."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.stage1 = Block(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(Block(32), Block(32))
        self.head = nn.Sequential(nn.Conv2d(32, 48, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


def _msnet_tiny_net(T=3, **kwargs):
    return CustomRecognizer(
        TinyNet(), num_classes=5, num_segments=T, motion_after=["stage1"],
        shift_before=["stage1.conv1", "stage2.0.conv1", "stage2.1.conv1"], patch_size=7, reduced_channels=8,
        **kwargs,
    )


def test_custom_network_trains_with_motion_and_shift():
    torch.manual_seed(0)
    model = _msnet_tiny_net(dropout=0.0)
    assert list(model.motion) == ["stage1"] and model.motion["stage1"].in_channels == 16
    assert model.num_features == 48
    clips = torch.randn(2, 3, 3, 32, 32)
    logits = model(clips)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    fields = model.motion_fields(clips)
    assert fields["stage1"].shape == (2, 2, 3, 16, 16)  # (N, T-1, [u, v, conf], h, w)


def test_names_of_the_backbone_are_kept():
    model = _msnet_tiny_net()
    keys = set(model.state_dict())
    assert {"backbone.stage1.conv1.weight", "backbone.stage2.1.bn2.running_var", "fc.weight",
            "motion.stage1.chnl_reduction.0.weight"} <= keys
    assert set(TinyNet().state_dict()) == {k.removeprefix("backbone.") for k in keys if k.startswith("backbone.")}


def test_shift_and_motion_make_frame_order_matter():
    torch.manual_seed(0)
    clips = torch.randn(1, 3, 3, 32, 32)
    tsn = CustomRecognizer(TinyNet(), num_classes=5, num_segments=3).eval()
    random_weights_(tsn, seed=1)
    torch.testing.assert_close(tsn(clips), tsn(clips[:, [2, 0, 1]]), rtol=1e-4, atol=1e-5)
    tsm = CustomRecognizer(TinyNet(), num_classes=5, num_segments=3, shift_before=["stage2.0.conv1"]).eval()
    tsm.load_state_dict(tsn.state_dict())
    assert (tsm(clips) - tsm(clips[:, [2, 0, 1]])).abs().max() > 1e-3


def _tiny_resnet():
    return resnet(10, widths=(16, 32, 64, 128), stem_width=16)  # the backbone of msnet_tiny


def test_same_logits_as_the_built_in_msnet_on_the_same_resnet():
    # The hooks must do exactly what the built-in MSNet does: shift before conv1 of every
    # block (identity path unshifted), MotionSqueeze added after layer2 (res3).
    T = 3
    builtin = random_weights_(create_model("msnet_tiny", num_classes=4, num_segments=T), seed=2).eval()
    blocks = [f"layer{i}.0.conv1" for i in range(1, 5)]
    custom = CustomRecognizer(_tiny_resnet(), num_classes=4, num_segments=T, motion_after=["layer2"],
                              shift_before=blocks, reduced_channels=32).eval()
    state = {k.replace("motion.res3.", "motion.layer2."): v for k, v in builtin.state_dict().items()}
    custom.load_state_dict(state)
    clips = torch.randn(2, T, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = builtin(clips)
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(custom(clips), expected, rtol=1e-5, atol=1e-5)
        # and the shift sits on the branch: shifting the block input instead differs
        wrong = CustomRecognizer(_tiny_resnet(), num_classes=4, num_segments=T, motion_after=["layer2"],
                                 shift_before=["layer1.0"], reduced_channels=32).eval()
        wrong.load_state_dict(state)
        assert (wrong(clips) - expected).abs().max() > 1e-3


def test_probe_leaves_batchnorm_statistics_and_mode_alone():
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = CustomRecognizer(net, num_classes=5, num_segments=3, motion_after=["stage2"])
    assert model.training and net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_module_paths_are_named():
    with pytest.raises(ValueError, match=r"motion_after .*\['stage3'\].*e\.g\. \['stem'"):
        CustomRecognizer(TinyNet(), num_classes=5, num_segments=3, motion_after=["stage3"])
    with pytest.raises(ValueError, match=r"shift_before .*\['stage1.conv9'\]"):
        CustomRecognizer(TinyNet(), num_classes=5, num_segments=3, shift_before=["stage1.conv9"])
    with pytest.raises(ValueError, match="model.patch: unknown key; did you mean .patch_size."):
        CustomRecognizer(TinyNet(), num_classes=5, num_segments=3, patch=3)


def test_a_backbone_that_returns_logits_is_refused():
    net = nn.Sequential(TinyNet(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10))
    with pytest.raises(ValueError, match=r"must return feature maps \(B, C, h, w\).*\(2, 10\)"):
        CustomRecognizer(net, num_classes=5, num_segments=2)


def test_save_model_refuses_custom_code(tmp_path):
    with pytest.raises(ValueError, match="save model.state_dict"):
        save_model(_msnet_tiny_net(), tmp_path / "x.safetensors")


def test_torch_compile_traces_the_hooks_without_graph_breaks():
    torch._dynamo.reset()
    model = _msnet_tiny_net(backend="reference").eval()
    clips = torch.randn(1, 3, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(clips), model(clips))


def test_custom_recognizer_has_the_timm_classifier_api():
    model = _msnet_tiny_net().eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        last, maps = model.forward_intermediates(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        stage1 = model.backbone.stage1
        raw = type(stage1).forward(stage1, maps[0])  # forward() itself skips the module's hooks
        with_motion = model.motion["stage1"](raw)
    # Top-level children: stem, stage1 (after MotionSqueeze), down, stage2, head.
    assert [tuple(m.shape) for m in maps] == [(6, 16, 16, 16), (6, 16, 16, 16), (6, 32, 8, 8), (6, 32, 8, 8), (6, 48, 4, 4)]
    assert torch.equal(last, maps[-1])
    assert torch.equal(maps[1], with_motion) and not torch.allclose(maps[1], raw)  # after MotionSqueeze
    only = model.forward_intermediates(x, intermediates_only=True, modules=["stage2.0"])
    assert len(only) == 1 and only[0].shape == (6, 32, 8, 8)
    with pytest.raises(ValueError, match="nope"):
        model.forward_intermediates(x, modules=["nope"])
    assert model.get_classifier() is model.fc
    model.reset_classifier(0)
    with torch.no_grad():
        assert torch.allclose(model(x), pooled)
    assert model(x).shape == (2, 48)
