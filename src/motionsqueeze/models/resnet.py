"""ResNet-18/34/50/101 with torchvision's parameter names (``conv1``, ``bn1``,
``layer{1..4}.{i}.conv{1,2,3}``, ``bn{1,2,3}``, ``downsample.{0,1}``, ``fc``), so that
ImageNet weights saved by torchvision load without renaming.

Each residual block carries a ``shift`` slot (``nn.Identity`` by default) applied to the
block input before ``conv1`` only, which is where TSM's residual shift goes; the identity
path keeps the unshifted input. The slot holds no parameters, so the state dict is
torchvision's whatever is put there.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet", "RESNET_DEPTHS", "STAGE_NAMES"]

# Stage names of the paper (res2..res5) for torchvision's layer1..layer4.
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.shift: nn.Module = nn.Identity()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.shift(x))))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """Stride on the 3x3 conv (torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.shift: nn.Module = nn.Identity()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.shift(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """Image ResNet; ``num_classes=0`` leaves out ``fc`` (the video recogniser has its own).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage (res2..res5).
        widths: base width per stage (output = width * block.expansion).
        stem_width: channels of the 7x7 stem.
        num_classes: classes of ``fc``; 0 for none.
        zero_init_residual: start each block's last BatchNorm at zero.
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        num_classes: int = 0,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"a ResNet has 4 stages; got layers={layers} and widths={widths}")
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = stem_width
        self.stage_channels: dict[str, int] = {}
        for i, (name, n_blocks, width) in enumerate(zip(STAGE_NAMES, layers, widths)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != width * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, width * block.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(width * block.expansion),
                )
            blocks = [block(inplanes, width, stride, downsample)]
            inplanes = width * block.expansion
            blocks += [block(inplanes, width) for _ in range(1, n_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_channels[name] = inplanes
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes) if num_classes > 0 else None

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
                if isinstance(m, (BasicBlock, Bottleneck)) and last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def stages(self) -> list[tuple[str, nn.Sequential]]:
        """``[("res2", layer1), ..., ("res5", layer4)]``."""
        return [(name, getattr(self, f"layer{i + 1}")) for i, name in enumerate(STAGE_NAMES)]

    def shift_blocks(self) -> list[nn.Module]:
        """Blocks whose ``shift`` slot TSM fills: every residual block."""
        return [block for _, stage in self.stages() for block in stage]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_stem(x)
        for _, stage in self.stages():
            x = stage(x)
        if self.fc is None:
            return x
        return self.fc(x.mean(dim=(2, 3)))


def resnet(depth: int, **kwargs) -> ResNet:
    """ResNet of a standard depth (10, 18, 34, 50, 101); ``kwargs`` go to :class:`ResNet`."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth}; expected one of {sorted(RESNET_DEPTHS)}")
    block, layers = RESNET_DEPTHS[depth]
    return ResNet(block, kwargs.pop("layers", layers), **kwargs)
