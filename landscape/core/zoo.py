"""CIFAR-10 models (3×32×32 inputs, 10 classes): the reference tool's zoo.

The architectures, module names and parameter order follow the CIFAR-10 models of the
reference implementation (github: tomgoldstein/loss-landscape, cifar10/models), so its
checkpoints load by name and its direction files map by position:

- ResNet-20/56/110 (He et al. 2016, CIFAR variant): a 3×3 conv with 16 filters, three stages
  of n = (depth - 2) / 6 basic blocks with 16, 32, 64 filters (stages 2 and 3 start with
  stride 2), global average pooling, a linear layer. Where a block changes the shape, its
  shortcut is a 1×1 conv + BN projection (the reference's choice; He et al.'s option A
  pads with zeros and has 2.8k fewer parameters); elsewhere it is the identity.
  `_noshort`: the same blocks with no shortcut at all (the paper's "no skip connections").
- Wide ResNet (`wide_resnet(depth, k)`): the same network with k times the filters, as the
  reference's WRN56_k (post-activation blocks, not Zagoruyko & Komodakis' pre-activation).
- VGG-9: seven 3×3 conv + BN + ReLU layers (64, 64, M, 128, 128, M, 256, 256, 256, M),
  a 4096→256 linear + BN + ReLU, and a 256→10 classifier.
- DenseNet-121 (CIFAR variant): a 3×3 stem conv with 2·growth filters, dense blocks of
  6, 12, 24, 16 bottleneck layers (BN-ReLU-1×1 conv to 4·growth, BN-ReLU-3×3 conv to
  growth), transitions halving channels and resolution, BN-ReLU, global pooling, linear.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut (if any), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.has_shortcut = shortcut
        if shortcut:
            projection = stride != 1 or cin != cout
            self.shortcut = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                if projection
                else nn.Sequential()
            )

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.has_shortcut:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """ResNet for 32×32 inputs: depth 6n + 2, widths (16, 32, 64)·width."""

    def __init__(self, depth: int = 56, width: int = 1, shortcut: bool = True, num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for stage, (cout, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1, shortcut))
                cin = cout
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet(depth: int, shortcut: bool = True, num_classes: int = 10) -> CifarResNet:
    return CifarResNet(depth, 1, shortcut, num_classes)


def wide_resnet(depth: int = 56, k: int = 2, shortcut: bool = True, num_classes: int = 10) -> CifarResNet:
    """WRN-depth-k: the CIFAR ResNet with k times the filters (reference: WRN56_2, _4, _8)."""
    return CifarResNet(depth, k, shortcut, num_classes)


class VGG9(nn.Module):
    """The reference's VGG-9 for 32×32 inputs (conv layers with bias, BN, max-pooling)."""

    LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin, size = [], 3, 32
        for v in self.LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                size = (size + 1) // 2
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(cin * size * size, cin), nn.BatchNorm1d(cin), nn.ReLU())
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.fc(self.features(x).flatten(1)))


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (4·growth) - BN-ReLU-conv3x3 (growth); output: [new features, input]."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1, then 2×2 average pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-BC for 32×32 inputs: four dense blocks, compression 0.5 between them."""

    def __init__(self, blocks=(6, 12, 24, 16), growth: int = 32, reduction: float = 0.5, num_classes: int = 10):
        super().__init__()
        channels = 2 * growth
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        for i, n in enumerate(blocks, start=1):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            setattr(self, f"dense{i}", nn.Sequential(*layers))
            if i < len(blocks):
                out = int(channels * reduction)
                setattr(self, f"trans{i}", Transition(channels, out))
                channels = out
        self.n_blocks = len(blocks)
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for i in range(1, self.n_blocks + 1):
            out = getattr(self, f"dense{i}")(out)
            if i < self.n_blocks:
                out = getattr(self, f"trans{i}")(out)
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.linear(out.flatten(1))


#: name -> factory with no arguments, as registered in landscape.models.MODELS
MODELS = {
    "resnet20": partial(resnet, 20),
    "resnet56": partial(resnet, 56),
    "resnet110": partial(resnet, 110),
    "resnet20_noshort": partial(resnet, 20, shortcut=False),
    "resnet56_noshort": partial(resnet, 56, shortcut=False),
    "resnet110_noshort": partial(resnet, 110, shortcut=False),
    "wrn56_2": partial(wide_resnet, 56, 2),
    "vgg9": VGG9,
    "densenet121": partial(DenseNet, (6, 12, 24, 16), 32),
}
