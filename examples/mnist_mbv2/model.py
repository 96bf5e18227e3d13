"""A MobileNetV2-style CNN for 1 x 28 x 28 digits (about 0.2 M parameters).

MobileNetV2's layout (Sandler et al., 2018) at MNIST's scale: a 3x3 stem, then 17 inverted
residual blocks (1x1 expansion, ReLU6, 3x3 depthwise, ReLU6, linear 1x1 projection; a residual
add when the block keeps its shape) in seven stages of (expansion t, channels c, blocks n,
stride s) as in the paper's table, with channels scaled down and the strides placed for a 28 x 28
input (28 -> 14 -> 7 -> 4), a 1x1 conv to 320 channels, global average pooling and a linear
classifier. Every block ends in a single tensor, and so do the expansion and depthwise outputs of
the blocks without a residual add: the exported graph offers 23+ candidate exits, like the
full-size network, which is what this example is for (a search over every candidate).
"""

import torch
from torch import nn

# (expansion t, output channels c, blocks n, stride s of the first block): MobileNetV2's seven
# stages with the channels scaled by about 1/4 and the first stride moved for 28 x 28 inputs.
STAGES = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 3, 2), (4, 24, 4, 1), (4, 40, 3, 1), (4, 64, 3, 2), (4, 128, 1, 1))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if relu else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expansion (1x1, skipped when t = 1), depthwise 3x3, linear projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = [conv_bn(cin, hidden, 1)] if expansion != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, relu=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2Mnist(nn.Module):
    """``N x 1 x 28 x 28`` images -> ``N x 10`` logits."""

    def __init__(self, stem: int = 16, last: int = 256, num_classes: int = 10):
        super().__init__()
        blocks, cin = [conv_bn(1, stem, 3)], stem
        for t, c, n, s in STAGES:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        blocks.append(conv_bn(cin, last, 1))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build_model() -> MobileNetV2Mnist:
    """The example's model with its default shape (the factory ``hapi-onnx export --factory`` names)."""
    return MobileNetV2Mnist()
