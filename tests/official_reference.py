"""A re-statement of the authors' MotionSqueeze forward pass and of the official TSM one.

The authors' code needs CUDA (``spatial_correlation_sampler`` and ``.to('cuda')`` calls),
so the logit-equivalence tests run against this file instead: an independent, readable
re-statement of their model as docs/method.md and docs/weights.md describe it, written their way and with their
module names, so that a state dict of THIS module has exactly the keys and shapes of
their checkpoints (``module.base_model.*``, ``module.new_fc.*``):

* ``base_model``: their ResNet. ``conv1``, ``bn1``, an unused ``bn2 = BatchNorm2d(128)``,
  ``layer1..4``, and for MSNet ``chnl_reduction`` (1x1 conv, BN, ReLU) and
  ``flow_refinement.conv1..4`` (dw conv, BN, ReLU, pw conv, BN, ReLU); its last layer
  ``fc1`` is a Conv1d (classes, C, 1) when dropout is 0 and a Dropout otherwise;
* ``new_fc``: the Conv1d classifier (dropout > 0); per-frame logits averaged over T;
* the shift: a zero tensor filled by slice assignments (the TSM code's way);
* MotionSqueeze: reduce channels, view (N, T, C, H, W), permute to (N, C, T, H, W), split
  into frames 0..T-2 and 1..T-1 with permute/view pairs; L2-normalise; correlation over a
  15x15 window (here a loop over the displacements of a zero-padded map, where theirs is a
  CUDA sampler) viewed as (B, P*P, H*W) and rectified; confidence by ``topk(k=1)``; a
  separate ``apply_gaussian_kernel`` (sigma 5) around ``max(dim=1)``; softmax of
  ``temperature * kernel * corr`` (temperature 100 at test time); expected offsets divided
  by (P-1)/2; the last of the T-1 displacement maps repeated; ``x + flow_refinement(...)``.

``OfficialTSMNet`` re-states the official TSM code's model: a torchvision ResNet whose
blocks' ``conv1`` is wrapped by the shift (``conv1.net``), a Dropout in place of ``fc`` and
a Linear ``new_fc``.

Nothing here imports motionsqueeze: it is the yardstick, not the thing measured.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}


def slice_assign_shift(x, n_segment, fold_div=8):
    """TSM's shift: frame t takes channels [0, C/8) from t+1 and [C/8, C/4) from t-1."""
    nt, c, h, w = x.size()
    x = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class ShiftedConv(nn.Module):
    """The official TSM code's wrapper: shift, then the wrapped conv (``conv1.net``)."""

    def __init__(self, net, n_segment):
        super().__init__()
        self.net = net
        self.n_segment = n_segment

    def forward(self, x):
        return self.net(slice_assign_shift(x, self.n_segment))


class Block(nn.Module):
    """Residual block; the authors shift inside ``forward``, TSM wraps ``conv1``."""

    def __init__(self, kind, inplanes, planes, n_segment, stride, downsample, wrap_conv1):
        super().__init__()
        self.kind, self.n_segment, self.wrap = kind, n_segment, wrap_conv1
        self.expansion = 4 if kind == "bottleneck" else 1
        if kind == "bottleneck":
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
        else:
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
        if wrap_conv1:
            self.conv1 = ShiftedConv(self.conv1, n_segment)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = x if self.wrap else slice_assign_shift(x, self.n_segment)
        out = self.relu(self.bn1(self.conv1(out)))
        if self.kind == "bottleneck":
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
        else:
            out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def _separable(c_in, c_out, k):
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, k, 1, k // 2, groups=c_in, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class FlowRefinement(nn.Module):
    def __init__(self, num_segments, out_channel):
        super().__init__()
        self.num_segments = num_segments
        self.conv1 = _separable(3, 16, 7)
        self.conv2 = _separable(16, 32, 3)
        self.conv3 = _separable(32, 64, 3)
        self.conv4 = _separable(64, out_channel, 3)

    def forward(self, x, res, match_v):
        x = torch.cat([x, match_v], dim=1)
        _, c, h, w = x.size()
        x = x.view(-1, self.num_segments - 1, c, h, w)
        x = torch.cat([x, x[:, -1:, :, :, :]], dim=1)  # repeat the last displacement
        x = x.view(-1, c, h, w)
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return x + res


class OfficialResNet(nn.Module):
    """``base_model`` of the authors' TSN (``wrap_conv1=False``) or of TSM's (``True``)."""

    def __init__(self, depth, num_segments, num_classes, motion, authors_layout=True, dropout=0.5):
        super().__init__()
        kind, layers = DEPTHS[depth]
        self.num_segments, self.motion, self.patch = num_segments, motion, 15
        expansion = 4 if kind == "bottleneck" else 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        if authors_layout:
            self.bn2 = nn.BatchNorm2d(128)  # created, never used
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        if motion:
            self.chnl_reduction = nn.Sequential(
                nn.Conv2d(128 * expansion, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
            )
            self.flow_refinement = FlowRefinement(num_segments, 128 * expansion)
        inplanes = 64
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes * expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes * expansion))
            blocks = [Block(kind, inplanes, planes, num_segments, stride, down, not authors_layout)]
            inplanes = planes * expansion
            blocks += [Block(kind, inplanes, planes, num_segments, 1, None, not authors_layout) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.feature_dim = inplanes
        last_name = "fc1" if authors_layout else "fc"
        if dropout > 0:
            setattr(self, last_name, nn.Dropout(dropout))
        elif authors_layout:
            self.fc1 = nn.Conv1d(inplanes, num_classes, 1, bias=True)
        else:
            self.fc = nn.Linear(inplanes, num_classes)
        self.last_name, self.authors_layout = last_name, authors_layout

    # --- MotionSqueeze, the authors' way -----------------------------------------------
    @staticmethod
    def L2normalize(x, d=1):
        return x / (((x**2).sum(dim=d, keepdim=True) + 1e-6) ** 0.5)

    def matching_layer(self, f1, f2):
        f1, f2 = self.L2normalize(f1), self.L2normalize(f2)
        b, c, h, w = f1.size()
        r = (self.patch - 1) // 2
        f2p = F.pad(f2, (r, r, r, r))
        corr = f1.new_zeros(b, self.patch, self.patch, h, w)
        for i in range(self.patch):  # dy = i - r
            for j in range(self.patch):  # dx = j - r
                corr[:, i, j] = (f1 * f2p[:, :, i : i + h, j : j + w]).sum(1)
        return F.relu(corr.view(b, self.patch * self.patch, h * w))

    def apply_gaussian_kernel(self, corr, h, w, p, sigma=5):
        b, c, s = corr.size()
        x = torch.arange(p, dtype=corr.dtype).view(1, 1, p, 1, 1).expand(1, 1, p, h, w)
        y = torch.arange(p, dtype=corr.dtype).view(1, p, 1, 1, 1).expand(1, p, 1, h, w)
        idx = corr.max(dim=1)[1]
        idx_y = (idx // p).view(b, 1, 1, h, w).to(corr.dtype)
        idx_x = (idx % p).view(b, 1, 1, h, w).to(corr.dtype)
        gauss_kernel = torch.exp(-((x - idx_x) ** 2 + (y - idx_y) ** 2) / (2 * sigma**2))
        return gauss_kernel.view(b, p * p, h * w) * corr

    def match_to_flow_soft(self, match, k, h, w, temperature):
        b, c, s = match.size()
        displacement = (self.patch - 1) / 2
        topk_value, _ = torch.topk(match, k, dim=1)
        topk_value = topk_value.view(-1, k, h, w)
        match = self.apply_gaussian_kernel(match, h, w, self.patch, sigma=5)
        smax = F.softmax(match * temperature, dim=1).view(b, self.patch, self.patch, h, w)
        kernel = torch.arange(-displacement, displacement + 1, dtype=match.dtype)
        x_mult = kernel.expand(b, self.patch).view(b, self.patch, 1, 1)
        y_mult = kernel.expand(b, self.patch).view(b, self.patch, 1, 1)
        flow_x = (smax.sum(dim=1) * x_mult).sum(dim=1, keepdim=True).view(-1, 1, h * w)
        flow_y = (smax.sum(dim=2) * y_mult).sum(dim=1, keepdim=True).view(-1, 1, h * w)
        return flow_x / displacement, flow_y / displacement, topk_value

    def flow_computation(self, x, temperature):
        x = self.chnl_reduction(x)
        size = x.size()
        x = x.view((-1, self.num_segments) + size[1:]).permute(0, 2, 1, 3, 4).contiguous()
        b, c, t, h, w = x.size()
        x_pre = x[:, :, :-1].permute(0, 2, 1, 3, 4).contiguous().view(-1, c, h, w)
        x_post = x[:, :, 1:].permute(0, 2, 1, 3, 4).contiguous().view(-1, c, h, w)
        match = self.matching_layer(x_pre, x_post)
        u, v, confidence = self.match_to_flow_soft(match, 1, h, w, temperature)
        return torch.cat([u, v], dim=1).view(-1, 2, h, w), confidence

    def forward(self, x, temperature=100):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        if self.motion:
            flow, match_v = self.flow_computation(x, temperature)
            x = self.flow_refinement(flow, x, match_v)
        x = self.layer4(self.layer3(x))
        x = F.adaptive_avg_pool2d(x, 1)
        if self.authors_layout:
            return getattr(self, self.last_name)(x.view(x.size(0), -1, 1))
        return getattr(self, self.last_name)(torch.flatten(x, 1))


class OfficialMSNet(nn.Module):
    """The authors' ``TSN`` wrapper: input ``(N, T*3, H, W)``, output ``(N, classes)``."""

    def __init__(self, depth=18, num_segments=8, num_classes=174, motion=True, dropout=0.5):
        super().__init__()
        self.num_segments, self.dropout = num_segments, dropout
        self.base_model = OfficialResNet(depth, num_segments, num_classes, motion, True, dropout)
        if dropout > 0:
            self.new_fc = nn.Conv1d(self.base_model.feature_dim, num_classes, 1, bias=True)

    def forward(self, input, temperature=100):
        base_out = self.base_model(input.view((-1, 3) + input.size()[-2:]), temperature)
        if self.dropout > 0:
            base_out = self.new_fc(base_out)  # (N*T, classes, 1)
        base_out = base_out.view((-1, self.num_segments) + base_out.size()[1:])
        return base_out.mean(dim=1, keepdim=True).squeeze(1).squeeze(-1)


class OfficialTSMNet(nn.Module):
    """The official TSM code's ``TSN`` with a residual-shift ResNet ("blockres")."""

    def __init__(self, depth=18, num_segments=8, num_classes=174, dropout=0.5):
        super().__init__()
        self.num_segments, self.dropout = num_segments, dropout
        self.base_model = OfficialResNet(depth, num_segments, num_classes, False, False, dropout)
        if dropout > 0:
            self.new_fc = nn.Linear(self.base_model.feature_dim, num_classes)

    def forward(self, input):
        base_out = self.base_model(input.view((-1, 3) + input.size()[-2:]))
        if self.dropout > 0:
            base_out = self.new_fc(base_out)
        base_out = base_out.view((-1, self.num_segments) + base_out.size()[1:])
        return base_out.mean(dim=1, keepdim=True).squeeze(1)


def random_weights_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and BatchNorm statistic with random values of a trained-looking
    scale (outputs of order 1), so that comparisons are not dominated by zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
                if name == "num_batches_tracked":
                    p.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
                elif name == "running_var":
                    p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
                elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                    # weight around 1, bias and mean around 0
                    base = 1.0 if name == "weight" else 0.0
                    p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    fan_in = p[0].numel() if p.dim() > 1 else 1
                    p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
    return module


def official_checkpoint(net: nn.Module, arch: str, data_parallel: bool = True) -> dict:
    """What their ``main.py`` saves: ``{'epoch', 'arch', 'state_dict', 'best_prec1'}``."""
    prefix = "module." if data_parallel else ""
    state = {prefix + k: v.clone() for k, v in net.state_dict().items()}
    return {"epoch": 40, "arch": arch, "state_dict": state, "best_prec1": torch.tensor(45.5)}
