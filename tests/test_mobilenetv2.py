"""MobileNetV2 backbone: torchvision's parameter layout, TSM's shift placement, ImageNet
initialisation, official TSM checkpoint import, ONNX export and torch.compile."""

import math

import pytest
import torch
import torch.nn as nn

from motionsqueeze import create_model, list_models
from motionsqueeze.layers import TemporalShift
from motionsqueeze.models import WeightsFileError, load_official, measure_complexity, model_config
from motionsqueeze.models.mobilenetv2 import MobileNetV2
from official_reference import ShiftedConv, official_checkpoint, random_weights_

# torchvision.models.mobilenet_v2() (width 1.0, 1000 classes): state-dict key and shape,
# written out from torchvision's construction (InvertedResidual / Conv2dNormActivation);
# its documented parameter count, 3,504,872, is checked below. "-" is a scalar.
TORCHVISION_MOBILENET_V2 = """
features.0.0.weight 32,3,3,3
features.0.1.weight 32
features.0.1.bias 32
features.0.1.running_mean 32
features.0.1.running_var 32
features.0.1.num_batches_tracked -
features.1.conv.0.0.weight 32,1,3,3
features.1.conv.0.1.weight 32
features.1.conv.0.1.bias 32
features.1.conv.0.1.running_mean 32
features.1.conv.0.1.running_var 32
features.1.conv.0.1.num_batches_tracked -
features.1.conv.1.weight 16,32,1,1
features.1.conv.2.weight 16
features.1.conv.2.bias 16
features.1.conv.2.running_mean 16
features.1.conv.2.running_var 16
features.1.conv.2.num_batches_tracked -
features.2.conv.0.0.weight 96,16,1,1
features.2.conv.0.1.weight 96
features.2.conv.0.1.bias 96
features.2.conv.0.1.running_mean 96
features.2.conv.0.1.running_var 96
features.2.conv.0.1.num_batches_tracked -
features.2.conv.1.0.weight 96,1,3,3
features.2.conv.1.1.weight 96
features.2.conv.1.1.bias 96
features.2.conv.1.1.running_mean 96
features.2.conv.1.1.running_var 96
features.2.conv.1.1.num_batches_tracked -
features.2.conv.2.weight 24,96,1,1
features.2.conv.3.weight 24
features.2.conv.3.bias 24
features.2.conv.3.running_mean 24
features.2.conv.3.running_var 24
features.2.conv.3.num_batches_tracked -
features.3.conv.0.0.weight 144,24,1,1
features.3.conv.0.1.weight 144
features.3.conv.0.1.bias 144
features.3.conv.0.1.running_mean 144
features.3.conv.0.1.running_var 144
features.3.conv.0.1.num_batches_tracked -
features.3.conv.1.0.weight 144,1,3,3
features.3.conv.1.1.weight 144
features.3.conv.1.1.bias 144
features.3.conv.1.1.running_mean 144
features.3.conv.1.1.running_var 144
features.3.conv.1.1.num_batches_tracked -
features.3.conv.2.weight 24,144,1,1
features.3.conv.3.weight 24
features.3.conv.3.bias 24
features.3.conv.3.running_mean 24
features.3.conv.3.running_var 24
features.3.conv.3.num_batches_tracked -
features.4.conv.0.0.weight 144,24,1,1
features.4.conv.0.1.weight 144
features.4.conv.0.1.bias 144
features.4.conv.0.1.running_mean 144
features.4.conv.0.1.running_var 144
features.4.conv.0.1.num_batches_tracked -
features.4.conv.1.0.weight 144,1,3,3
features.4.conv.1.1.weight 144
features.4.conv.1.1.bias 144
features.4.conv.1.1.running_mean 144
features.4.conv.1.1.running_var 144
features.4.conv.1.1.num_batches_tracked -
features.4.conv.2.weight 32,144,1,1
features.4.conv.3.weight 32
features.4.conv.3.bias 32
features.4.conv.3.running_mean 32
features.4.conv.3.running_var 32
features.4.conv.3.num_batches_tracked -
features.5.conv.0.0.weight 192,32,1,1
features.5.conv.0.1.weight 192
features.5.conv.0.1.bias 192
features.5.conv.0.1.running_mean 192
features.5.conv.0.1.running_var 192
features.5.conv.0.1.num_batches_tracked -
features.5.conv.1.0.weight 192,1,3,3
features.5.conv.1.1.weight 192
features.5.conv.1.1.bias 192
features.5.conv.1.1.running_mean 192
features.5.conv.1.1.running_var 192
features.5.conv.1.1.num_batches_tracked -
features.5.conv.2.weight 32,192,1,1
features.5.conv.3.weight 32
features.5.conv.3.bias 32
features.5.conv.3.running_mean 32
features.5.conv.3.running_var 32
features.5.conv.3.num_batches_tracked -
features.6.conv.0.0.weight 192,32,1,1
features.6.conv.0.1.weight 192
features.6.conv.0.1.bias 192
features.6.conv.0.1.running_mean 192
features.6.conv.0.1.running_var 192
features.6.conv.0.1.num_batches_tracked -
features.6.conv.1.0.weight 192,1,3,3
features.6.conv.1.1.weight 192
features.6.conv.1.1.bias 192
features.6.conv.1.1.running_mean 192
features.6.conv.1.1.running_var 192
features.6.conv.1.1.num_batches_tracked -
features.6.conv.2.weight 32,192,1,1
features.6.conv.3.weight 32
features.6.conv.3.bias 32
features.6.conv.3.running_mean 32
features.6.conv.3.running_var 32
features.6.conv.3.num_batches_tracked -
features.7.conv.0.0.weight 192,32,1,1
features.7.conv.0.1.weight 192
features.7.conv.0.1.bias 192
features.7.conv.0.1.running_mean 192
features.7.conv.0.1.running_var 192
features.7.conv.0.1.num_batches_tracked -
features.7.conv.1.0.weight 192,1,3,3
features.7.conv.1.1.weight 192
features.7.conv.1.1.bias 192
features.7.conv.1.1.running_mean 192
features.7.conv.1.1.running_var 192
features.7.conv.1.1.num_batches_tracked -
features.7.conv.2.weight 64,192,1,1
features.7.conv.3.weight 64
features.7.conv.3.bias 64
features.7.conv.3.running_mean 64
features.7.conv.3.running_var 64
features.7.conv.3.num_batches_tracked -
features.8.conv.0.0.weight 384,64,1,1
features.8.conv.0.1.weight 384
features.8.conv.0.1.bias 384
features.8.conv.0.1.running_mean 384
features.8.conv.0.1.running_var 384
features.8.conv.0.1.num_batches_tracked -
features.8.conv.1.0.weight 384,1,3,3
features.8.conv.1.1.weight 384
features.8.conv.1.1.bias 384
features.8.conv.1.1.running_mean 384
features.8.conv.1.1.running_var 384
features.8.conv.1.1.num_batches_tracked -
features.8.conv.2.weight 64,384,1,1
features.8.conv.3.weight 64
features.8.conv.3.bias 64
features.8.conv.3.running_mean 64
features.8.conv.3.running_var 64
features.8.conv.3.num_batches_tracked -
features.9.conv.0.0.weight 384,64,1,1
features.9.conv.0.1.weight 384
features.9.conv.0.1.bias 384
features.9.conv.0.1.running_mean 384
features.9.conv.0.1.running_var 384
features.9.conv.0.1.num_batches_tracked -
features.9.conv.1.0.weight 384,1,3,3
features.9.conv.1.1.weight 384
features.9.conv.1.1.bias 384
features.9.conv.1.1.running_mean 384
features.9.conv.1.1.running_var 384
features.9.conv.1.1.num_batches_tracked -
features.9.conv.2.weight 64,384,1,1
features.9.conv.3.weight 64
features.9.conv.3.bias 64
features.9.conv.3.running_mean 64
features.9.conv.3.running_var 64
features.9.conv.3.num_batches_tracked -
features.10.conv.0.0.weight 384,64,1,1
features.10.conv.0.1.weight 384
features.10.conv.0.1.bias 384
features.10.conv.0.1.running_mean 384
features.10.conv.0.1.running_var 384
features.10.conv.0.1.num_batches_tracked -
features.10.conv.1.0.weight 384,1,3,3
features.10.conv.1.1.weight 384
features.10.conv.1.1.bias 384
features.10.conv.1.1.running_mean 384
features.10.conv.1.1.running_var 384
features.10.conv.1.1.num_batches_tracked -
features.10.conv.2.weight 64,384,1,1
features.10.conv.3.weight 64
features.10.conv.3.bias 64
features.10.conv.3.running_mean 64
features.10.conv.3.running_var 64
features.10.conv.3.num_batches_tracked -
features.11.conv.0.0.weight 384,64,1,1
features.11.conv.0.1.weight 384
features.11.conv.0.1.bias 384
features.11.conv.0.1.running_mean 384
features.11.conv.0.1.running_var 384
features.11.conv.0.1.num_batches_tracked -
features.11.conv.1.0.weight 384,1,3,3
features.11.conv.1.1.weight 384
features.11.conv.1.1.bias 384
features.11.conv.1.1.running_mean 384
features.11.conv.1.1.running_var 384
features.11.conv.1.1.num_batches_tracked -
features.11.conv.2.weight 96,384,1,1
features.11.conv.3.weight 96
features.11.conv.3.bias 96
features.11.conv.3.running_mean 96
features.11.conv.3.running_var 96
features.11.conv.3.num_batches_tracked -
features.12.conv.0.0.weight 576,96,1,1
features.12.conv.0.1.weight 576
features.12.conv.0.1.bias 576
features.12.conv.0.1.running_mean 576
features.12.conv.0.1.running_var 576
features.12.conv.0.1.num_batches_tracked -
features.12.conv.1.0.weight 576,1,3,3
features.12.conv.1.1.weight 576
features.12.conv.1.1.bias 576
features.12.conv.1.1.running_mean 576
features.12.conv.1.1.running_var 576
features.12.conv.1.1.num_batches_tracked -
features.12.conv.2.weight 96,576,1,1
features.12.conv.3.weight 96
features.12.conv.3.bias 96
features.12.conv.3.running_mean 96
features.12.conv.3.running_var 96
features.12.conv.3.num_batches_tracked -
features.13.conv.0.0.weight 576,96,1,1
features.13.conv.0.1.weight 576
features.13.conv.0.1.bias 576
features.13.conv.0.1.running_mean 576
features.13.conv.0.1.running_var 576
features.13.conv.0.1.num_batches_tracked -
features.13.conv.1.0.weight 576,1,3,3
features.13.conv.1.1.weight 576
features.13.conv.1.1.bias 576
features.13.conv.1.1.running_mean 576
features.13.conv.1.1.running_var 576
features.13.conv.1.1.num_batches_tracked -
features.13.conv.2.weight 96,576,1,1
features.13.conv.3.weight 96
features.13.conv.3.bias 96
features.13.conv.3.running_mean 96
features.13.conv.3.running_var 96
features.13.conv.3.num_batches_tracked -
features.14.conv.0.0.weight 576,96,1,1
features.14.conv.0.1.weight 576
features.14.conv.0.1.bias 576
features.14.conv.0.1.running_mean 576
features.14.conv.0.1.running_var 576
features.14.conv.0.1.num_batches_tracked -
features.14.conv.1.0.weight 576,1,3,3
features.14.conv.1.1.weight 576
features.14.conv.1.1.bias 576
features.14.conv.1.1.running_mean 576
features.14.conv.1.1.running_var 576
features.14.conv.1.1.num_batches_tracked -
features.14.conv.2.weight 160,576,1,1
features.14.conv.3.weight 160
features.14.conv.3.bias 160
features.14.conv.3.running_mean 160
features.14.conv.3.running_var 160
features.14.conv.3.num_batches_tracked -
features.15.conv.0.0.weight 960,160,1,1
features.15.conv.0.1.weight 960
features.15.conv.0.1.bias 960
features.15.conv.0.1.running_mean 960
features.15.conv.0.1.running_var 960
features.15.conv.0.1.num_batches_tracked -
features.15.conv.1.0.weight 960,1,3,3
features.15.conv.1.1.weight 960
features.15.conv.1.1.bias 960
features.15.conv.1.1.running_mean 960
features.15.conv.1.1.running_var 960
features.15.conv.1.1.num_batches_tracked -
features.15.conv.2.weight 160,960,1,1
features.15.conv.3.weight 160
features.15.conv.3.bias 160
features.15.conv.3.running_mean 160
features.15.conv.3.running_var 160
features.15.conv.3.num_batches_tracked -
features.16.conv.0.0.weight 960,160,1,1
features.16.conv.0.1.weight 960
features.16.conv.0.1.bias 960
features.16.conv.0.1.running_mean 960
features.16.conv.0.1.running_var 960
features.16.conv.0.1.num_batches_tracked -
features.16.conv.1.0.weight 960,1,3,3
features.16.conv.1.1.weight 960
features.16.conv.1.1.bias 960
features.16.conv.1.1.running_mean 960
features.16.conv.1.1.running_var 960
features.16.conv.1.1.num_batches_tracked -
features.16.conv.2.weight 160,960,1,1
features.16.conv.3.weight 160
features.16.conv.3.bias 160
features.16.conv.3.running_mean 160
features.16.conv.3.running_var 160
features.16.conv.3.num_batches_tracked -
features.17.conv.0.0.weight 960,160,1,1
features.17.conv.0.1.weight 960
features.17.conv.0.1.bias 960
features.17.conv.0.1.running_mean 960
features.17.conv.0.1.running_var 960
features.17.conv.0.1.num_batches_tracked -
features.17.conv.1.0.weight 960,1,3,3
features.17.conv.1.1.weight 960
features.17.conv.1.1.bias 960
features.17.conv.1.1.running_mean 960
features.17.conv.1.1.running_var 960
features.17.conv.1.1.num_batches_tracked -
features.17.conv.2.weight 320,960,1,1
features.17.conv.3.weight 320
features.17.conv.3.bias 320
features.17.conv.3.running_mean 320
features.17.conv.3.running_var 320
features.17.conv.3.num_batches_tracked -
features.18.0.weight 1280,320,1,1
features.18.1.weight 1280
features.18.1.bias 1280
features.18.1.running_mean 1280
features.18.1.running_var 1280
features.18.1.num_batches_tracked -
classifier.1.weight 1000,1280
classifier.1.bias 1000
"""

NEW = ["tsn_mbv2", "tsm_mbv2", "msnet_mbv2", "tsn_mbv2_050", "tsm_mbv2_050", "msnet_mbv2_050"]
T = 3


def _torchvision_keys() -> dict[str, tuple[int, ...]]:
    rows = [line.split(" ") for line in TORCHVISION_MOBILENET_V2.strip().splitlines()]
    return {k: () if shape == "-" else tuple(int(d) for d in shape.split(",")) for k, shape in rows}


def test_key_list_is_torchvisions_mobilenet_v2():
    keys = _torchvision_keys()
    assert len(keys) == 314
    learned = [s for k, s in keys.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert sum(math.prod(s) for s in learned) == 3_504_872  # torchvision's documented count


def test_backbone_parameter_names_and_shapes_equal_torchvisions():
    with torch.device("meta"):
        image_model = MobileNetV2(width_mult=1.0, num_classes=1000)
        video_model = create_model("msnet_mbv2")
    ours = {k: tuple(v.shape) for k, v in image_model.state_dict().items()}
    assert ours == _torchvision_keys()
    backbone = {k: tuple(v.shape) for k, v in video_model.backbone.state_dict().items()}
    assert backbone == {k: s for k, s in _torchvision_keys().items() if not k.startswith("classifier.")}


def test_half_width_follows_torchvisions_rounding():
    with torch.device("meta"):
        sd = create_model("tsm_mbv2_050").backbone.state_dict()
    assert sd["features.0.0.weight"].shape == (16, 3, 3, 3)
    assert sd["features.1.conv.1.weight"].shape == (8, 16, 1, 1)  # 16 * 0.5
    assert sd["features.2.conv.0.0.weight"].shape == (48, 8, 1, 1)  # expansion 6
    assert sd["features.2.conv.2.weight"].shape == (16, 48, 1, 1)  # 24 * 0.5 = 12 rounds up to 16
    assert sd["features.18.0.weight"].shape == (1280, 160, 1, 1)  # last_channel stays 1280


def test_registry_has_the_mobilenet_variants():
    assert set(NEW) <= set(list_models("*mbv2*"))


def test_shift_sits_in_the_residual_blocks_like_the_official_tsm():
    model = create_model("tsm_mbv2", num_segments=T)
    shifted = [i for i, m in enumerate(model.backbone.features) if isinstance(getattr(m, "shift", None), TemporalShift)]
    # blocks with stride 1 and equal widths: the 2nd.. of each group of Table 2
    assert shifted == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    tsn = create_model("tsn_mbv2", num_segments=T)
    assert not any(isinstance(m, TemporalShift) for m in tsn.modules())


def test_motion_squeeze_after_any_stage_of_mobilenet():
    model = create_model("msnet_mbv2_050", num_segments=2, num_classes=3, motion_stages=("res2", "res4"), patch_size=5)
    assert model.motion["res2"].in_channels == 16 and model.motion["res4"].in_channels == 48
    assert model(torch.randn(1, 2, 3, 64, 64)).shape == (1, 3)
    default = create_model("msnet_mbv2", num_segments=2)
    assert list(default.motion) == ["res3"] and default.motion["res3"].in_channels == 32


def test_cost_of_the_mobilenet_variants():
    with torch.device("meta"):
        tsm = measure_complexity(create_model("tsm_mbv2"), frames=8, size=224)
        ms = measure_complexity(create_model("msnet_mbv2"), frames=8, size=224)
    # ~300M multiply-adds per 224x224 frame (the MobileNetV2 paper), 8 frames
    assert 2.35 < tsm.gflops < 2.45
    assert tsm.params == 2_223_872 + 1280 * 174 + 174
    assert ms.params - tsm.params == ms.ms_params > 0
    assert 0 < ms.ms_gflops < 0.1 and abs(ms.gflops - tsm.gflops - ms.ms_gflops) < 1e-9


# --- ImageNet initialisation from a torchvision file ---------------------------------


def _torchvision_state(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randint(0, 9, s, generator=gen) if k.endswith("num_batches_tracked") else torch.randn(s, generator=gen))
            for k, s in _torchvision_keys().items()}


def test_imagenet_weights_saved_by_torchvision_load(tmp_path, caplog):
    state = _torchvision_state()
    path = tmp_path / "mobilenet_v2-imagenet.pth"
    torch.save(state, path)
    with caplog.at_level("INFO", logger="motionsqueeze"):
        model = create_model("msnet_mbv2", num_classes=5, num_segments=2, pretrained=path)
    assert torch.equal(model.backbone.features[7].conv[1][0].weight, state["features.7.conv.1.0.weight"])
    assert torch.equal(model.backbone.features[18][1].running_var, state["features.18.1.running_var"])
    printed = caplog.text
    assert "MobileNetV2 (stem width 32" in printed and "classifier.1.bias, classifier.1.weight" in printed


def test_imagenet_file_of_another_width_is_refused_with_both_named(tmp_path):
    path = tmp_path / "mobilenet_v2-imagenet.pth"
    torch.save(_torchvision_state(), path)
    with pytest.raises(WeightsFileError, match=r"MobileNetV2 \(stem width 32, width multiplier 1\).*"
                       r"MobileNetV2 \(stem width 16, width multiplier 0.5\)"):
        create_model("tsm_mbv2_050", pretrained=path)


# --- official TSM MobileNetV2 checkpoints ----------------------------------------------


class OfficialTSMMobileNetV2(nn.Module):
    """Re-statement of the official TSM code's MobileNetV2 TSN (archs/mobilenet_v2.py and
    ops/models.py): flat branch Sequentials, conv[0] of residual 8-layer branches wrapped
    by the slice-assignment shift, base_model.classifier replaced by Dropout, Linear
    new_fc, per-frame logits averaged. Imports nothing from motionsqueeze.models."""

    def __init__(self, num_segments, num_classes):
        super().__init__()
        self.num_segments = num_segments
        base = nn.Module()
        layers = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())]
        self.residual = []
        c_in = 32
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
            for i in range(n):
                stride, h = (s if i == 0 else 1), c_in * t
                branch = [] if t == 1 else [nn.Conv2d(c_in, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6()]
                branch += [nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                           nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c)]
                block = nn.Module()
                block.conv = nn.Sequential(*branch)
                residual = stride == 1 and c_in == c
                if residual and len(block.conv) == 8:
                    block.conv[0] = ShiftedConv(block.conv[0], num_segments)
                self.residual.append(residual)
                layers.append(block)
                c_in = c
        layers.append(nn.Sequential(nn.Conv2d(c_in, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()))
        base.features = nn.Sequential(*layers)
        base.classifier = nn.Dropout(0.8)
        self.base_model = base
        self.new_fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = x.view((-1, 3) + x.shape[-2:])
        x = self.base_model.features[0](x)
        for block, residual in zip(self.base_model.features[1:-1], self.residual):
            x = x + block.conv(x) if residual else block.conv(x)
        x = self.base_model.features[-1](x).mean(3).mean(2)
        x = self.new_fc(self.base_model.classifier(x))
        return x.view(-1, self.num_segments, x.shape[-1]).mean(dim=1)


def test_official_tsm_mobilenet_v2_converted_gives_the_same_logits():
    # float32: depthwise convolutions in float64 take minutes on the CPU
    net = random_weights_(OfficialTSMMobileNetV2(T, num_classes=6), seed=9).eval()
    ckpt = official_checkpoint(net, "mobilenetv2")
    sd = ckpt["state_dict"]
    assert "module.base_model.features.3.conv.0.net.weight" in sd  # shifted residual block
    assert "module.base_model.features.2.conv.0.weight" in sd  # first of a group: no shift
    assert "module.base_model.features.1.conv.3.weight" in sd  # expansion-1 block, flat
    model = load_official(ckpt, "official-tsm", arch="tsm_mbv2", num_segments=T)
    clips = torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = net(clips), model(clips)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    # sensitive to the shift: TSN weights in the same layout give other logits
    tsn = load_official(ckpt, "official-tsm", arch="tsn_mbv2", num_segments=T)
    with torch.no_grad():
        assert (tsn(clips) - expected).abs().max() > 1e-3


def test_official_tsm_mobilenet_checkpoint_into_the_wrong_arch_is_explained():
    net = random_weights_(OfficialTSMMobileNetV2(T, num_classes=6), seed=9)
    with pytest.raises(ValueError, match="MobileNetV2 .* tsm_r18 is a ResNet-18"):
        load_official(official_checkpoint(net, "mobilenetv2"), "official-tsm", arch="tsm_r18", num_segments=T)
    with pytest.raises(ValueError, match="no place in the official-ms layout"):
        load_official(official_checkpoint(net, "mobilenetv2"), "official-ms", arch="tsm_mbv2", num_segments=T)


# --- export and compile ---------------------------------------------------------------
# Every registered MobileNetV2 model, found through the registry so that a new one (another
# width, a causal variant) is exported and compiled without editing this file. 2 frames of
# 32x32, the smallest input whose last stage (stride 32) is not empty: the cost of an export
# or a compile is the tracing of a 150-layer graph, not the arithmetic. The torchscript
# exporter because the dynamo one (`motionsqueeze export`'s default) takes minutes here on
# MobileNetV2; test_export.py runs the dynamo exporter on ResNets.
MOBILENETS = [n for n in list_models() if model_config(n).backbone == "mobilenet_v2"]
SIZE = 32


def test_every_registered_mobilenet_is_exported_and_compiled():
    # the widths, the three families, and nothing that is not a MobileNetV2
    assert set(NEW) <= set(MOBILENETS)
    assert all("mbv2" in n for n in MOBILENETS) and not any("mbv2" in n for n in set(list_models()) - set(MOBILENETS))


@pytest.mark.parametrize("name", MOBILENETS)
def test_onnx_export_matches_onnxruntime(tmp_path, name):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from motionsqueeze.models.export import example_clips, export_onnx, onnx_max_abs_diff

    torch.manual_seed(0)
    model = random_weights_(create_model(name, num_classes=5, num_segments=2), seed=0)
    path = tmp_path / f"{name}.onnx"
    assert export_onnx(model, path, size=SIZE, exporter="torchscript") == "torchscript"
    clips = example_clips(model, size=SIZE, batch=3, seed=7)  # not the traced example
    with torch.no_grad():
        assert model.eval()(clips).abs().max() > 0.1
    assert onnx_max_abs_diff(path, model, clips) <= 1e-4


@pytest.mark.parametrize("name", MOBILENETS)
def test_torch_compile_has_no_graph_breaks(name):
    torch._dynamo.reset()
    model = create_model(name, num_classes=5, num_segments=2, backend="reference").eval()
    clips = torch.randn(1, 2, 3, SIZE, SIZE)
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: a break is an error
    with torch.no_grad():
        torch.testing.assert_close(compiled(clips), model(clips))


def test_model_file_rebuilds_the_mobilenet_variant(tmp_path):
    from motionsqueeze import load_model, save_model

    model = random_weights_(create_model("msnet_mbv2_050", num_classes=4, num_segments=2), seed=4).eval()
    path = save_model(model, tmp_path / "m.safetensors", input_size=64)
    loaded = load_model(path)
    assert loaded.config.backbone == "mobilenet_v2" and loaded.config.width_mult == 0.5
    clips = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), model(clips))
