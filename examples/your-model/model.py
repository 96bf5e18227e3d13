"""A stand-in for *your* PyTorch model: a small CNN for 3 x 32 x 32 RGB photos, 3 classes.

What `hapi-onnx export` / `build --factory examples/your-model/model.py:build_model` needs from
your own file: a function that takes no arguments and returns the ``torch.nn.Module`` whose
``state_dict`` you saved (``torch.save(model.state_dict(), "weights.pt")``), and whose forward
maps one float32 batch ``N x C x H x W`` to ``N x classes`` scores (logits or probabilities).
"""

import torch
from torch import nn


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU: each block ends in one tensor, so each is a candidate exit."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            block(3, 16, 1), block(16, 16, 1), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2), block(64, 64, 1)
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def build_model() -> nn.Module:
    return SmallCNN(num_classes=3)
