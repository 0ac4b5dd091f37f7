"""The in-model explainer (Rio-Torto et al. 2020; seed-algorithms.md §1.2–1.5, §5.2 M1, §5.4.9).

An explainer (a U-Net-like network: three ConvMod levels, transposed-conv decoder with *additive*
skips, a 1×1 conv, BatchNorm2d(1) whose bias starts at ``init_bias``, tanh, ReLU) produces a map
in [0, 1); the classifier (a small VGG or ResNet-18) multiplies it, average-pooled to each
resolution, into its feature maps. The initial explanation is ≈ tanh(init_bias) ≈ 1 everywhere,
so the classifier starts unmasked.

Training runs three phases: (1) the classifier alone, the explainer frozen and in eval mode;
(2) the explainer alone, the classifier frozen; (3) both. Each phase has its own α, learning rates,
epochs and early-stopping patience on the validation global loss (Δ 1e-4), and the best checkpoint
by validation loss is reloaded before the next phase. Loss: α·CE + (1−α)·L_expl with
L_expl = β·mean|ẑ| + (1−β)·TV(ẑ) (``unsupervised``), plus γ·(mean of ẑ outside the ground-truth
mask) (``hybrid``). SGD with momentum 0.9 and weight decay 1e-4, one parameter group per module;
ReduceLROnPlateau(0.2, 10, 1e-5) for the ResNet classifier.

Deviations, on purpose: inputs whose sides are not multiples of 8 are zero-padded for the
explainer and its map cropped back; explanations are pooled to each feature map's exact size
(adaptive average pooling, which equals the source's AvgPool(2)/(4) wherever sizes divide); in
phase 2 the frozen classifier is in eval mode, so its batch-norm statistics stay frozen too (the
source left it in train mode: ``legacy_phase2_train_mode``); no augmentation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, FitReport, ModelSpec, hookimpl
from xbench.errors import XbenchError

from .cifar_resnet import init_resnet, make_stages
from ._training import fit_classifier, trainable_parameters

CLASSIFIERS = ("vgg", "resnet18")
LOSSES = ("unsupervised", "hybrid")
PHASES = ("classifier", "explainer", "both")
WEAK_EPSILON = 1e-6

PARAMS = {
    "classifier": "resnet18",
    "width": 1.0,
    "loss": "hybrid",
    "region": "mask",
    "init_bias": 3.0,
    "alpha": [1.0, 0.25, 0.9],
    "beta": 0.9,
    "gamma": 1.0,
    "epochs": [10, 10, 100],
    "lr_clf": [0.01, 0.0, 0.01],
    "lr_expl": [0.0, 0.01, 0.01],
    "patience": [100, 100, 10],
    "min_delta": 1e-4,
    "batch_size": 8,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "plateau_factor": 0.2,
    "plateau_patience": 10,
    "plateau_min_lr": 1e-5,
    "legacy_phase2_train_mode": False,
}


def _c(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class ConvMod(nn.Module):
    """conv3×3 → ReLU → conv3×3 → ReLU, zero padding, no batch norm."""

    def __init__(self, inplanes: int, filters: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, filters, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(filters, filters, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(x))))


class Explainer(nn.Module):
    """The U-Net-like explainer: ``(N, C, H, W)`` → ``(N, 1, H, W)`` in [0, 1)."""

    def __init__(self, channels: int, width: float = 1.0, init_bias: float = 3.0):
        super().__init__()
        f0, f1, f2 = _c(32, width), _c(64, width), _c(128, width)
        self.enc0, self.enc1, self.enc2 = ConvMod(channels, f0), ConvMod(f0, f1), ConvMod(f1, f2)
        self.pool = nn.MaxPool2d(2)
        self.up0, self.dec0 = nn.ConvTranspose2d(f2, f2, 2, stride=2), ConvMod(f2, f2)
        self.up1, self.dec1 = nn.ConvTranspose2d(f2, f1, 2, stride=2), ConvMod(f1, f1)
        self.up2, self.dec2 = nn.ConvTranspose2d(f1, f0, 2, stride=2), ConvMod(f0, f0)
        self.head = nn.Conv2d(f0, 1, 1)
        self.norm = nn.BatchNorm2d(1)
        nn.init.constant_(self.norm.bias, init_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 8, 0, -h % 8))
        s0 = self.enc0(x)
        s1 = self.enc1(self.pool(s0))
        s2 = self.enc2(self.pool(s1))
        y = self.dec0(self.up0(self.pool(s2)) + s2)
        y = self.dec1(self.up1(y) + s1)
        y = self.dec2(self.up2(y) + s0)
        y = F.relu(torch.tanh(self.norm(self.head(y))))
        return y[..., :h, :w]


def _pooled(e: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return e if e.shape[-2:] == like.shape[-2:] else F.adaptive_avg_pool2d(e, like.shape[-2:])


class VGGClassifier(nn.Module):
    """The small VGG-like classifier: four ConvMods, each output multiplied by the explanation."""

    def __init__(self, channels: int, classes: int, width: float = 1.0):
        super().__init__()
        sizes = [channels] + [_c(n, width) for n in (32, 64, 128, 256)]
        self.stages = nn.ModuleList(ConvMod(a, b) for a, b in zip(sizes, sizes[1:]))
        self.pool = nn.MaxPool2d(2)
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(nn.Linear(sizes[-1], 128), nn.Sigmoid(), nn.Dropout(0.3),
                                nn.Linear(128, 128), nn.Sigmoid(), nn.Dropout(0.3), nn.Linear(128, classes))
        for m in self.fc:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
            e = _pooled(e, x)
            x = self.pool(x * e)
        return self.fc(torch.flatten(self.global_pool(x), 1))


class ResNetClassifier(nn.Module):
    """ResNet-18 (torchvision layout: 7×7/2 stem, max-pool, four stages of two BasicBlocks) with the
    explanation multiplied into the stem output and every block's output."""

    def __init__(self, channels: int, classes: int, width: float = 1.0):
        super().__init__()
        widths = tuple(_c(n, width) for n in (64, 128, 256, 512))
        self.conv1 = nn.Conv2d(channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stages = make_stages(widths[0], widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], classes)
        init_resnet(self)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        e = _pooled(e, x)
        x = x * e
        for stage in self.stages:
            for block in stage:
                x = block(x)
                e = _pooled(e, x)
                x = x * e
        return self.fc(torch.flatten(self.avgpool(x), 1))


class JointModel(nn.Module):
    """Explainer and classifier; ``forward`` gives the classifier's logits on the explained input."""

    def __init__(self, channels: int, classes: int, classifier: str = "resnet18", width: float = 1.0,
                 init_bias: float = 3.0):
        super().__init__()
        if classifier not in CLASSIFIERS:
            raise XbenchError(f"joint-explainer: classifier {classifier!r} is unknown; use one of {', '.join(CLASSIFIERS)}.")
        self.explainer = Explainer(channels, width, init_bias)
        make = VGGClassifier if classifier == "vgg" else ResNetClassifier
        self.classifier = make(channels, classes, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x, self.explainer(x))

    def explain(self, x: torch.Tensor) -> torch.Tensor:
        """The in-model explanation ``(N, H, W)`` in [0, 1)."""
        return self.explainer(x)[:, 0]

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, explanation ``(N, H, W)``) from one explainer pass."""
        e = self.explainer(x)
        return self.classifier(x, e), e[:, 0]


# ---- losses (per instance; §1.4) -------------------------------------------------------------

def sparsity(z: torch.Tensor) -> torch.Tensor:
    return z.abs().flatten(1).mean(1)


def total_variation(z: torch.Tensor) -> torch.Tensor:
    """Mean absolute vertical difference plus mean absolute horizontal difference, per map."""
    return (z[:, 1:, :] - z[:, :-1, :]).abs().flatten(1).mean(1) + (z[:, :, 1:] - z[:, :, :-1]).abs().flatten(1).mean(1)


def weak(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean explanation outside the mask: |Σ(1−z)ẑ / (Σ(1−z) + 1e-6)|."""
    out = (~mask.bool()).to(z.dtype)
    return ((out * z).flatten(1).sum(1) / (out.flatten(1).sum(1) + WEAK_EPSILON)).abs()


def explanation_loss(z: torch.Tensor, beta: float, gamma: float = 0.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """β·sparsity + (1−β)·TV, plus γ·weak when a mask is given (the hybrid loss)."""
    loss = beta * sparsity(z) + (1 - beta) * total_variation(z)
    return loss + gamma * weak(z, mask) if mask is not None else loss


def global_loss(module: JointModel, batch: Mapping[str, Any], params: Mapping[str, Any], alpha: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample α·CE + (1−α)·L_expl, and the logits."""
    logits, z = module.outputs(batch["x"])
    mask = region_of(batch, str(params["region"])) if params["loss"] == "hybrid" else None
    expl = explanation_loss(z, float(params["beta"]), float(params["gamma"]), mask)
    return alpha * F.cross_entropy(logits, batch["y"], reduction="none") + (1 - alpha) * expl, logits


def region_of(batch: Mapping[str, Any], region: str) -> torch.Tensor:
    if region == "mask":
        if "mask" not in batch:
            raise XbenchError("joint-explainer: loss = \"hybrid\" needs the dataset's ground-truth mask, and this "
                              "dataset has none; use loss = \"unsupervised\" or a dataset that provides `mask`.")
        return batch["mask"]
    if region not in batch["regions"]:
        raise XbenchError(f"joint-explainer: region {region!r} is not among the dataset's regions "
                          f"({', '.join(sorted(batch['regions'])) or 'none'}); set region to one of them or \"mask\".")
    return batch["regions"][region]


# ---- phases ----------------------------------------------------------------------------------

def phase_values(params: Mapping[str, Any]) -> list[dict[str, float]]:
    """The per-phase settings, validated: α, epochs, learning rates and patience of each phase."""
    lists = {k: params[k] for k in ("alpha", "epochs", "lr_clf", "lr_expl", "patience")}
    for key, value in lists.items():
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise XbenchError(f"joint-explainer: {key} must list one value per phase (classifier, explainer, "
                              f"both), e.g. {PARAMS[key]!r}; got {value!r}.")
    phases = [{k: float(v[i]) for k, v in lists.items()} for i in range(3)]
    for i, p in enumerate(phases):
        if not 0.0 <= p["alpha"] <= 1.0:
            raise XbenchError(f"joint-explainer: alpha of phase {i + 1} is {p['alpha']}; it weighs CE against the "
                              "explanation loss and must lie in [0, 1].")
    return phases


def configure_phase(module: JointModel, index: int, phase: Mapping[str, float]) -> list[dict[str, Any]]:
    """Set ``requires_grad`` for phase ``index`` (0, 1, 2) and return its optimiser's param groups.

    A part trains when the phase includes it (phase 1: classifier, 2: explainer, 3: both) and its
    learning rate is positive; everything else is frozen.
    """
    role = PHASES[index]
    parts = {"classifier": (module.classifier, phase["lr_clf"]), "explainer": (module.explainer, phase["lr_expl"])}
    groups = []
    for name, (part, lr) in parts.items():
        train = role in (name, "both") and lr > 0
        for p in part.parameters():
            p.requires_grad_(train)
        if train:
            groups.append({"params": list(part.parameters()), "lr": lr, "name": name})
    return groups


def phase_mode(index: int, legacy_phase2_train_mode: bool = False):
    """Train/eval modes per phase: the frozen part is in eval mode (phase 2 in the source: train)."""

    def set_modes(module: JointModel) -> None:
        module.train()
        if index == 0:
            module.explainer.eval()
        elif index == 1 and not legacy_phase2_train_mode:
            module.classifier.eval()

    return set_modes


def check(params: Mapping[str, Any]) -> None:
    if params["loss"] not in LOSSES:
        raise XbenchError(f"joint-explainer: loss {params['loss']!r} is unknown; use \"unsupervised\" "
                          "(sparsity + total variation) or \"hybrid\" (adds the mass outside the mask).")
    phase_values(params)


def build(info: DatasetInfo, params: Mapping[str, Any]) -> nn.Module:
    check(params)
    return JointModel(info.channels, info.num_classes, str(params["classifier"]), float(params["width"]),
                      float(params["init_bias"]))


def fit(module: nn.Module, data: Dataset, params: Mapping[str, Any], ctx: FitContext) -> FitReport:
    check(params)
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    for index, phase in enumerate(phase_values(params)):
        if phase["epochs"] <= 0:
            continue
        groups = configure_phase(module, index, phase)
        if not groups:
            raise XbenchError(f"joint-explainer: phase {index + 1} ({PHASES[index]}) has {int(phase['epochs'])} "
                              "epochs but nothing to train: its learning rates (lr_clf, lr_expl) are all 0. "
                              "Give the phase a positive learning rate or 0 epochs.")
        metrics[f"phase{index + 1}_trainable_parameters"] = float(trainable_parameters(module))
        optimizer = torch.optim.SGD(groups, momentum=float(params["momentum"]), weight_decay=float(params["weight_decay"]))
        scheduler = None
        if params["classifier"] == "resnet18":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=float(params["plateau_factor"]), patience=int(params["plateau_patience"]),
                min_lr=float(params["plateau_min_lr"]))
        alpha = phase["alpha"]

        def step(m, batch, alpha=alpha):
            loss, logits = global_loss(m, batch, params, alpha)
            return loss.mean(), logits

        def eval_loss(m, batch, alpha=alpha):
            loss, logits = global_loss(m, batch, params, alpha)
            return loss.sum(), logits

        progress = ctx.progress
        pctx = dataclasses.replace(ctx, progress=lambda s, t, i=index, **n: progress(s, t, phase=i + 1, **n))
        report = fit_classifier(module, data.train, data.val, pctx, epochs=int(phase["epochs"]), optimizer=optimizer,
                                batch_size=int(params["batch_size"]), step=step, eval_loss=eval_loss,
                                scheduler=scheduler, patience=int(phase["patience"]),
                                min_delta=float(params["min_delta"]), select="val_loss",
                                train_mode=phase_mode(index, bool(params["legacy_phase2_train_mode"])),
                                name=f"joint-explainer phase {index + 1}")
        history += [{"phase": float(index + 1), **h} for h in report.history]
        metrics.update({f"phase{index + 1}_{k}": v for k, v in report.metrics.items()})
        metrics.update(report.metrics)
    for p in module.parameters():
        p.requires_grad_(True)
    module.eval()
    return FitReport(history=history, metrics=metrics)


def layers(module: nn.Module) -> dict[str, nn.Module]:
    """The classifier's CAM target layers, shallow to deep: each ConvMod's second conv (VGG) or
    each BasicBlock's ``conv2`` (ResNet-18)."""
    return {name: m for name, m in module.named_modules() if name.startswith("classifier.") and name.endswith(".conv2")}


def requires(params: Mapping[str, Any]) -> set[str]:
    if params.get("loss") != "hybrid":
        return set()
    return {"mask"} if params.get("region", "mask") == "mask" else {"regions"}


@hookimpl
def xbench_models():
    yield ModelSpec(
        name="joint-explainer",
        build=build,
        fit=fit,
        version="1",
        description="In-model explainer + classifier (small VGG or ResNet-18), three-phase training with an "
                    "unsupervised or hybrid explanation loss (Rio-Torto et al.).",
        params=PARAMS,
        provides=frozenset({"conv_layer", "gradients", "in_model_explainer"}),
        requires=requires,
        layers=layers,
        explainer=lambda module: module.explain,
    )
