"""VGG16 fine-tuned to different depths from different pre-training (Oliveira et al. 2024,
seed-algorithms.md §2.4–2.5, §5.2 M2).

The architecture is torchvision's VGG16 (same module names, so torchvision's ImageNet checkpoint
loads as is) with a two-class head, non-inplace ReLUs and ``torch.flatten`` in ``forward`` for LRP.
``width`` scales every layer's channels (1.0 = the real VGG16; 1/8 keeps the same five blocks at a
fraction of the cost, for the quick preset and tests).

Fine-tune degree k = the last k conv blocks plus the classifier train, the rest stays frozen
("all" = everything). The source's slices started one index late, leaving the first conv of the
deepest unfrozen block frozen: ``legacy_offbyone``. Training: SGD (momentum 0.5, no weight decay),
StepLR(7, 0.1), batch 32, ≤ 40 epochs; the kept model is the first epoch's, replaced whenever
validation accuracy improves while |val acc − train acc| ≤ ``acc_dif`` (the source read a global
here); training stops once the last three changes of validation accuracy are all below
``stop_value`` and validation accuracy was below training accuracy for the last three epochs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, FitReport, ModelSpec, hookimpl
from xbench.errors import XbenchError

from . import _pretraining as pretraining
from ._training import fit_classifier, trainable_parameters

CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
DEGREES = ("1", "2", "3", "4", "all")

# The source's learning rates per pre-training and degree (1, 2, 3, 4, all): its "best" set (highest
# accuracy) and its "same" set (matched accuracy ≈ 0.88–0.91).
LEARNING_RATES = {
    "best": {"imagenet": (0.02, 0.008, 0.008, 0.008, 0.004), "mri": (0.038, 0.03, 0.015, 0.03, 0.01)},
    "same": {"imagenet": (0.02, 0.0018, 0.0008, 0.0006, 0.0006), "mri": (0.038, 0.01, 0.005, 0.005, 0.005)},
}

PARAMS = {
    "width": 1.0,
    "degree": "all",
    "pretrain": "imagenet",
    "lr": 0.0,
    "lr_set": "best",
    "momentum": 0.5,
    "weight_decay": 0.0,
    "step_size": 7,
    "gamma": 0.1,
    "batch_size": 32,
    "epochs": 40,
    "acc_dif": 0.05,
    "stop_value": 0.005,
    "dropout": 0.5,
    "legacy_offbyone": False,
    **pretraining.PARAMS,
}


def _channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class VGG16(nn.Module):
    """torchvision's VGG16 layout (``features``, ``avgpool``, ``classifier``), scaled by ``width``."""

    def __init__(self, channels: int, classes: int, width: float = 1.0, dropout: float = 0.5,
                 batch_norm: bool = False):
        super().__init__()
        self.features = vgg16_features(channels, width, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        last, hidden = _channels(512, width), _channels(4096, width)
        self.classifier = nn.Sequential(
            nn.Linear(last * 7 * 7, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )
        init_vgg(self)
        self.classifier[6].reset_parameters()  # a new task head: nn.Linear's default init, as in the source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_features(channels: int, width: float = 1.0, batch_norm: bool = False) -> nn.Sequential:
    """VGG16's 13 convolutions in five blocks (conv3×3 + ReLU, max-pool after each block); with
    ``batch_norm`` a BatchNorm2d follows each conv (only for pre-training, folded away afterwards)."""
    layers: list[nn.Module] = []
    inplanes = channels
    for v in CONFIG_D:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out = _channels(v, width)
            layers += [nn.Conv2d(inplanes, out, 3, padding=1), *([nn.BatchNorm2d(out)] if batch_norm else []), nn.ReLU()]
            inplanes = out
    return nn.Sequential(*layers)


def init_vgg(module: nn.Module) -> None:
    """torchvision's VGG initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def block_starts(features: nn.Sequential) -> list[int]:
    """Index in ``features`` of the first layer of each conv block, shallow to deep ([0, 5, 10, 17, 24])."""
    starts = [0]
    for i, m in enumerate(features):
        if isinstance(m, nn.MaxPool2d) and i + 1 < len(features):
            starts.append(i + 1)
    return starts


def block_last_convs(features: nn.Sequential, prefix: str = "features") -> dict[str, nn.Module]:
    """The last conv of each block, shallow to deep (CAM target layers)."""
    out, last = {}, None
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            last = (f"{prefix}.{i}", m)
        elif isinstance(m, nn.MaxPool2d) and last is not None:
            out[last[0]] = last[1]
    return out


def check_degree(degree: Any) -> str:
    text = str(degree)
    if text not in DEGREES:
        raise XbenchError(
            f"vgg16-finetune: degree {degree!r} is not a fine-tune degree. Use \"1\", \"2\", \"3\" or \"4\" "
            "(the last k conv blocks plus the classifier train) or \"all\", as strings in the config "
            "(e.g. sweep = { degree = [\"1\", \"4\", \"all\"] })."
        )
    return text


def set_degree(module: VGG16, degree: Any, legacy_offbyone: bool = False) -> None:
    """Freeze everything, then unfreeze the classifier and the last ``degree`` conv blocks."""
    degree = check_degree(degree)
    for p in module.parameters():
        p.requires_grad_(degree == "all")
    if degree == "all":
        return
    for p in module.classifier.parameters():
        p.requires_grad_(True)
    start = block_starts(module.features)[-int(degree)] + (1 if legacy_offbyone else 0)
    for layer in list(module.features)[start:]:
        for p in layer.parameters():
            p.requires_grad_(True)


def learning_rate(params: Mapping[str, Any]) -> float:
    """``lr`` when positive, else the source's rate for this pre-training and degree."""
    if float(params["lr"]) > 0:
        return float(params["lr"])
    table = LEARNING_RATES.get(str(params["lr_set"]))
    if table is None:
        raise XbenchError(f"vgg16-finetune: lr_set {params['lr_set']!r} is unknown; use one of {sorted(LEARNING_RATES)} "
                          "or set lr to a positive learning rate.")
    rates = table["mri" if params["pretrain"] == "mri" else "imagenet"]
    return rates[DEGREES.index(check_degree(params["degree"]))]


def keep_if_generalising(acc_dif: float):
    """Oliveira's selection rule: the first epoch is kept; later epochs replace it when validation
    accuracy improves and is within ``acc_dif`` of the (running) training accuracy."""

    def select(record: Mapping[str, float], best: Mapping[str, float] | None) -> bool:
        if best is None:
            return True
        gap = abs(record["val_accuracy"] - record.get("train_accuracy", math.nan))
        return record["val_accuracy"] > best["val_accuracy"] and gap <= acc_dif

    return select


def plateau_stop(stop_value: float, window: int = 3):
    """Oliveira's early stop: the last ``window`` changes of validation accuracy are all below
    ``stop_value`` and validation accuracy was below training accuracy in the last ``window`` epochs."""

    def stop(history: list[Mapping[str, float]]) -> bool:
        if len(history) < window + 1:
            return False
        acc = [h["val_accuracy"] for h in history[-(window + 1):]]
        flat = all(abs(b - a) < stop_value for a, b in zip(acc, acc[1:]))
        behind = all(h["val_accuracy"] < h.get("train_accuracy", -math.inf) for h in history[-window:])
        return flat and behind

    return stop


def build(info: DatasetInfo, params: Mapping[str, Any]) -> nn.Module:
    check_degree(params["degree"])
    return VGG16(info.channels, info.num_classes, float(params["width"]), float(params["dropout"]))


def layers(module: nn.Module) -> dict[str, nn.Module]:
    return block_last_convs(module.features)


def fit(module: nn.Module, data: Dataset, params: Mapping[str, Any], ctx: FitContext) -> FitReport:
    info = data.describe()
    facts = pretraining.initialise(
        module, info, params, ctx, head="classifier.6",
        build_pretext=lambda k: VGG16(info.channels, k, float(params["width"]), float(params["dropout"]), batch_norm=True))
    set_degree(module, params["degree"], bool(params["legacy_offbyone"]))
    lr = learning_rate(params)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=float(params["momentum"]),
                                weight_decay=float(params["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(params["step_size"]), gamma=float(params["gamma"]))
    counts = {"trainable_parameters": float(trainable_parameters(module)),
              "total_parameters": float(sum(p.numel() for p in module.parameters()))}
    report = fit_classifier(module, data.train, data.val, ctx, epochs=int(params["epochs"]), optimizer=optimizer,
                            batch_size=int(params["batch_size"]), scheduler=scheduler,
                            select=keep_if_generalising(float(params["acc_dif"])),
                            stop=plateau_stop(float(params["stop_value"])), name="vgg16-finetune")
    for p in module.parameters():
        p.requires_grad_(True)
    report.metrics.update(lr=lr, **counts, **facts)
    return report


@hookimpl
def xbench_models():
    yield ModelSpec(
        name="vgg16-finetune",
        build=build,
        fit=fit,
        version="1",
        description="torchvision VGG16 fine-tuned to depth 1–4 blocks or all, from ImageNet, in-domain MRI, "
                    "synthetic out-of-domain or no pre-training (Oliveira et al.).",
        params=PARAMS,
        provides=frozenset({"conv_layer", "gradients", "lrp"}),
        layers=layers,
    )
