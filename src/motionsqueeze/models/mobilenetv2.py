"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's parameter names, so that
ImageNet weights saved by torchvision load without renaming.

Layout of the state dict (torchvision's): ``features.0.{0,1}`` (3x3 stem conv, BatchNorm),
``features.1..17`` inverted residual blocks whose branch is ``conv``:

* expansion 1 (``features.1``): ``conv.0.{0,1}`` depthwise conv + BN, ``conv.1`` pointwise
  conv, ``conv.2`` BN;
* expansion 6: ``conv.0.{0,1}`` pointwise expansion, ``conv.1.{0,1}`` depthwise,
  ``conv.2`` pointwise projection, ``conv.3`` BN;

``features.18.{0,1}`` the 1x1 conv to ``last_channel`` (1280), ``classifier.1`` the ImageNet
classifier (left out with ``num_classes=0``).

Temporal shift goes where the official TSM code puts it for MobileNetV2: in every block
with a residual connection, on the input of the branch (before the pointwise expansion);
the identity path keeps the unshifted input. Each block has a parameter-free ``shift`` slot
for it (``nn.Identity`` by default).

For the video recogniser the 19 ``features`` are grouped by output stride into the paper's
stage names: stem = features 0-1 (stride 2), ``res2`` = 2-3 (stride 4), ``res3`` = 4-6
(stride 8, where MotionSqueeze sits by default as after ResNet's res3), ``res4`` = 7-13
(stride 16), ``res5`` = 14-18 (stride 32).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2", "make_divisible", "MOBILENETV2_SETTING"]

# (expansion t, channels c, blocks n, stride s) per group, from the paper's Table 2.
MOBILENETV2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# features[a:b] of each stage (see the module docstring).
_STAGE_SLICES = (("res2", 2, 4), ("res3", 4, 7), ("res4", 7, 14), ("res5", 14, 19))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a width to the nearest multiple of ``divisor`` without losing more than 10%
    (torchvision's rule for width multipliers)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn_relu6(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); identity added when the shape allows."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(c_in * expand_ratio))
        self.use_res_connect = stride == 1 and c_in == c_out
        self.shift: nn.Module = nn.Identity()
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(c_in, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = c_out

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(self.shift(x))
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Image MobileNetV2; ``num_classes=0`` leaves out the classifier.

    Args:
        width_mult: width multiplier (1.0, 0.5, ...); widths are rounded to multiples of 8,
            ``last_channel`` never drops below 1280.
        num_classes: classes of ``classifier.1``; 0 for none.
        dropout: dropout before ``classifier.1`` (ImageNet training used 0.2).
    """

    def __init__(self, width_mult: float = 1.0, num_classes: int = 0, dropout: float = 0.2):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c_in = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(3, c_in, stride=2)]
        for t, c, n, s in MOBILENETV2_SETTING:
            c_out = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(_conv_bn_relu6(c_in, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes)) if num_classes > 0 else None
        )
        # Stage views share the blocks of `features`; a tuple is not registered, so the
        # state dict keeps torchvision's names only.
        self._stages = tuple(
            (name, nn.Sequential(*[self.features[i] for i in range(a, b)])) for name, a, b in _STAGE_SLICES
        )
        self.stage_channels = {
            name: (self.last_channel if b == len(self.features) else self.features[b - 1].out_channels)
            for name, a, b in _STAGE_SLICES
        }
        self.num_features = self.last_channel

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[tuple[str, nn.Sequential]]:
        """``[("res2", features 2-3), ..., ("res5", features 14-18)]``."""
        return list(self._stages)

    def shift_blocks(self) -> list[InvertedResidual]:
        """Blocks whose ``shift`` slot TSM fills: those with a residual connection."""
        return [m for m in self.features if isinstance(m, InvertedResidual) and m.use_res_connect]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.features[1](self.features[0](x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        if self.classifier is None:
            return x
        return self.classifier(x.mean(dim=(2, 3)))


def mobilenet_v2(width_mult: float = 1.0, **kwargs) -> MobileNetV2:
    """MobileNetV2 at a width multiplier; ``kwargs`` go to :class:`MobileNetV2`."""
    return MobileNetV2(width_mult=width_mult, **kwargs)
