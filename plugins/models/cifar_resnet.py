"""CIFAR-style ResNet-18 (Treyer's MedMNIST robustness study, seed-algorithms.md §4.2–4.3).

A 3×3 stride-1 stem without max-pooling keeps small (28–224 px) medical images at full resolution
in ``layer1``; four stages of two torchvision ``BasicBlock``s (64·w, 128·w, 256·w, 512·w channels,
strides 1, 2, 2, 2), global average pooling and one linear layer. Trained from scratch with SGD
(lr 1e-3, momentum 0.9), batch 64, 10 epochs, early stopping with patience 7 on the *validation*
loss (the source monitored the training set by mistake: ``legacy_train_as_val``).

The blocks subclass torchvision's ``BasicBlock`` (so Zennit's ``ResNetCanonizer`` applies) but use
two separate, non-inplace ReLU modules and an out-of-place residual add: Captum's DeepLift and
Guided Backprop hook every ReLU module once, which a module reused twice per block breaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from xbench import Dataset, DatasetInfo, FitContext, ModelSpec, Param, hookimpl

from ._training import fit_classifier

PARAMS = {
    "width": Param(64, "channels of the stem and the first stage (the source's 64; 2×, 4×, 8× after)", ge=1),
    "epochs": Param(10, "most training epochs (the source's 10)", ge=1),
    "lr": Param(1e-3, "SGD learning rate (the source's 1e-3)", gt=0),
    "momentum": Param(0.9, "SGD momentum", ge=0, le=1),
    "batch_size": Param(64, "training batch size", ge=1),
    "patience": Param(7, "epochs without a better validation loss before stopping (the source's 7)", ge=1),
    "legacy_train_as_val": Param(False, "early-stop on the training set, as the source did by mistake"),
}


class Block(BasicBlock):
    """torchvision's BasicBlock with one ReLU module per use and no in-place operations."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        super().__init__(inplanes, planes, stride=stride, downsample=downsample)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


def make_stages(inplanes: int, widths: tuple[int, ...], strides: tuple[int, ...] = (1, 2, 2, 2),
                blocks: int = 2) -> nn.ModuleList:
    """ResNet-18's four stages of ``blocks`` BasicBlocks each."""
    stages = []
    for planes, stride in zip(widths, strides):
        stage = [Block(inplanes, planes, stride)] + [Block(planes, planes) for _ in range(blocks - 1)]
        stages.append(nn.Sequential(*stage))
        inplanes = planes
    return nn.ModuleList(stages)


def init_resnet(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convs, BN weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet18(nn.Module):
    def __init__(self, channels: int, classes: int, width: int = 64):
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages = make_stages(width, widths)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], classes)
        init_resnet(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(info: DatasetInfo, params: Mapping[str, Any]) -> nn.Module:
    return CifarResNet18(info.channels, info.num_classes, int(params["width"]))


def layers(module: nn.Module) -> dict[str, nn.Module]:
    """The ``conv2`` of all eight blocks, shallow to deep (Treyer's per-layer saliency analysis;
    his labels Layer1_1, Layer1_2 are ``layer1.1.conv2`` and ``layer1.0.conv2``)."""
    return {name: m for name, m in module.named_modules() if name.endswith(".conv2") and name.startswith("layer")}


def fit(module: nn.Module, data: Dataset, params: Mapping[str, Any], ctx: FitContext):
    optimizer = torch.optim.SGD(module.parameters(), lr=float(params["lr"]), momentum=float(params["momentum"]))
    val = data.train if params["legacy_train_as_val"] else data.val
    return fit_classifier(module, data.train, val, ctx, epochs=int(params["epochs"]), optimizer=optimizer,
                          batch_size=int(params["batch_size"]), patience=int(params["patience"]),
                          name="cifar-resnet18")


@hookimpl
def xbench_models():
    yield ModelSpec(
        name="cifar-resnet18",
        build=build,
        fit=fit,
        version="1",
        description="CIFAR-style ResNet-18 (3×3 stem, no max-pool), trained from scratch with SGD (Treyer).",
        params=PARAMS,
        provides=frozenset({"conv_layer", "gradients", "resnet"}),
        layers=layers,
        architecture=("width",),
    )
