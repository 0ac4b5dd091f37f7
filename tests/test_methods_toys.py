"""Toy networks shared by the method tests (this module holds no tests). Each is small enough to
run every method in milliseconds and has the structure a test needs: in-place ReLUs and an
``nn.Flatten`` module, no biases, batch norm, or torchvision residual blocks."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def relu_chain(channels: int = 3, classes: int = 3, *, bias: bool = True, batchnorm: bool = False,
               seed: int = 0) -> nn.Sequential:
    """conv(-bn)-ReLU(in place)-maxpool-conv-ReLU-avgpool-Flatten-Dropout-Linear: a plain chain
    (the `lrp` tag's promise), written the torchvision way."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1, bias=bias), *([nn.BatchNorm2d(8)] if batchnorm else []),
        nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1, bias=bias), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(inplace=True), nn.Linear(32, classes, bias=bias),
    ).eval()


def tiny_resnet(channels: int = 3, classes: int = 3, *, bias_free: bool = False, seed: int = 0) -> nn.Sequential:
    """A stem and two torchvision ``BasicBlock``s (each calls its one in-place ``relu`` twice)."""
    torch.manual_seed(seed)
    down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    net = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        BasicBlock(8, 8), BasicBlock(8, 16, stride=2, downsample=down),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, or none at all when bias-free
                m.running_mean.uniform_(-0.2, 0.2) if not bias_free else m.running_mean.zero_()
                m.running_var.uniform_(0.5, 2.0) if not bias_free else m.running_var.fill_(1.0 - m.eps)
                m.bias.uniform_(-0.1, 0.1) if not bias_free else m.bias.zero_()
        if bias_free:
            net[-1].bias.zero_()
    return net.eval()
