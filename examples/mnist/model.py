"""The demo backbone: a ResNet-20-style CNN for 1 x 28 x 28 digits (about 0.27 M parameters).

Stem (3x3 conv, 16 channels, BN, ReLU), then three stages of three basic residual blocks with
16/32/64 channels (stride 2 at the first block of stages 2 and 3, 1x1 projection shortcuts),
global average pooling and a linear classifier. Every block ends in a single tensor, which is
what makes it a candidate early exit once exported to ONNX.
"""

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetMnist(nn.Module):
    """ResNet-20-style classifier: ``N x 1 x 28 x 28`` images -> ``N x 10`` logits."""

    def __init__(
        self, widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 3, num_classes: int = 10
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers, in_channels = [], widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_channels, width, stride))
                in_channels = width
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def build_model() -> ResNetMnist:
    """The demo model with its default shape (the factory ``hapi-onnx export --factory`` names)."""
    return ResNetMnist()


def build_narrow() -> ResNetMnist:
    """A narrower ResNet-20 (8/16/32 channels, about a quarter of the MACs): a cheaper backbone for a
    joint build (``bench/bench_backbones.py``); trained by ``train.py --factory model.py:build_narrow``."""
    return ResNetMnist(widths=(8, 16, 32))
