"""A small CNN classifier: three conv blocks and a linear head, trained with Adam in seconds.

It is the quick preset's reference model, and the smallest network on which every attribution
method (gradients, LRP, CAMs) is meaningful: plain ``Conv2d``/``ReLU``/``MaxPool2d`` layers,
non-inplace ReLUs, and ``torch.flatten`` in ``forward`` instead of an ``nn.Flatten`` module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, ModelSpec, Param, hookimpl

from ._training import fit_classifier

PARAMS = {
    "width": Param(16, "channels of the first block (the next two have 2× and 4×)", ge=1),
    "epochs": Param(6, "most training epochs", ge=1),
    "lr": Param(1e-3, "Adam's learning rate", gt=0),
    "batch_size": Param(32, "training batch size", ge=1),
    "patience": Param(3, "epochs without a better validation loss before stopping", ge=1),
}


class SmallCNN(nn.Module):
    def __init__(self, channels: int, classes: int, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build(info: DatasetInfo, params: Mapping[str, Any]) -> nn.Module:
    return SmallCNN(info.channels, info.num_classes, int(params["width"]))


def fit(module: nn.Module, data: Dataset, params: Mapping[str, Any], ctx: FitContext):
    optimizer = torch.optim.Adam(module.parameters(), lr=float(params["lr"]))
    return fit_classifier(module, data.train, data.val, ctx, epochs=int(params["epochs"]), optimizer=optimizer,
                          batch_size=int(params["batch_size"]), patience=int(params["patience"]), name="small-cnn")


@hookimpl
def xbench_models():
    yield ModelSpec(
        name="small-cnn",
        build=build,
        fit=fit,
        version="1",
        description="Three-block CNN (conv-ReLU-pool), Adam, early stopping on validation loss.",
        params=PARAMS,
        provides=frozenset({"conv_layer", "gradients", "lrp"}),
        architecture=("width",),
    )
