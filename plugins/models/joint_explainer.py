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
source left it in train mode: ``legacy_phase2_train_mode``); no augmentation; ``stem = "small"``
(3×3/1, no max-pool) is offered for the ResNet-18 classifier on inputs far below 224 px.

Defaults that differ from the source, on purpose (the ``paper`` preset sets the source's): the
explainer starts at ``init_bias = 1.5`` (≈ 0.905 everywhere) instead of 3 (≈ 0.995), and phase 2
weighs cross-entropy with α₂ = 0.75 instead of 0.25. At CPU scale (a few hundred steps per phase)
the source's settings end in one of two traps, measured on polygons at 64 px: from tanh(3), whose
gradient is ≈ 0.01, the explainer stays white (a higher phase-2 learning rate drives it further
into saturation, since the phase-1 classifier was trained unmasked); from a lower start with
α₂ = 0.25 it collapses to 0, because the all-zero map costs α₂·ln 2 ≈ 0.17 while any map of mean
μ costs at least (1 − α₂)·β·μ = 0.675·μ, and ReLU(tanh) never revives it. With α₂ = 0.75 the
all-zero map costs 0.52, more than a white map on a classifier that has learnt; the explanation
loss still shapes the map (0.25 of the loss).

Two options that are not the source's, off by default (the riotorto CPU preset sets them; its
header has the measurements): ``weak = "share"`` makes the hybrid's outside term the share of the
map's mass outside the region instead of the mean explanation there. The mean falls as much when
the whole map is lowered as when mass moves into the region, so with the sparsity term it rewards a
uniformly lowered map; the share is scale-free and falls only when mass moves inside.
``expl_optimizer = "adam"`` trains the explainer with Adam (the classifier keeps SGD). With the
source's settings at CPU scale the map left its start by about the same amount at every pixel of
every image (the old riotorto preset: mean 0.71–0.87, std of per-map means 0.001–0.009).

Three more, off by default (the riotorto preset sets the first two; measured 2026-12-08 on its
polygons, one thread, loaded machine, seed 3, which ended as one fixed pattern before):
``precise_bn`` recomputes the trained parts' batch-norm statistics over that many training images
before each validation. The running averages trail the weights: in phase 1 validation accuracy
fell to 0.535 at training accuracy 0.986 (seed 0), and in phase 2 the explainer's BatchNorm2d(1)
gave eval-mode maps unlike the training ones (validation accuracy 0.655 at training accuracy 0.998,
seed 3 unsupervised). With it, phase 1 reached 0.995 validation accuracy an epoch earlier and the
hybrid's final map went from one fixed pattern (per-pixel spread across images 0.001) to
image-specific (0.126). ``select = "accurate"`` keeps, in phases 2 and 3, the lowest validation
loss only among epochs within ``accuracy_tolerance`` of the phase's best validation accuracy, the
phase's start included. γ·weak dominates the validation loss, and with the classifier frozen in
phase 2 a map concentrated on the object costs accuracy (training accuracy there falls too, 0.98
to 0.85 in three epochs, so this is a real trade, not only batch-norm lag): the source's rule kept
phase 2 epochs at validation accuracy 0.5 (seed 0) and 0.73 (seed 3). ``sparsity = "peak"``
(sparsity over the map's maximum, blind to the map's level) did not make the unsupervised map
image-specific (seed 3, with phase 3 at α 0.5: per-pixel spread 0.003, focus 1.17); the source's
mean stays the riotorto preset's. With the first two (and the explainer's Adam at 0.001, phase 3
at α 0.8, tolerance 0.05), the whole riotorto preset on seeds 0–5 ends with every joint model at
test accuracy 0.945–1.00 (before: 0.50 on some seeds) and every hybrid map image-specific (per-pixel
spread 0.13–0.23, focus 1.8–2.4, pointing 0.56–0.83); the unsupervised map stays one fixed pattern
on five seeds of six (the preset's header has every number).

After training, the explanations of the validation set are summarised (``val_explanation_*``, see
``explanation_stats``: level, spread within a map, between maps and per pixel across images, and
against the mask the mass inside it, its area share, their ratio ``focus`` and the pointing game),
and the fit report warns when the map is near-constant (both spreads below 0.02: an explainer
still at its saturated all-white start, or collapsed to 0, the phase-2 trap: with α₂ = 0.25, and
more so with the hybrid's γ·L_weak, an all-zero explanation has a lower validation loss than a
white one whenever the phase-1 classifier carries no generalising signal, so best-validation
selection keeps it, and ReLU(tanh) never revives it) or one fixed pattern for every image.

No LRP tag (Zennit): the explanation gates every feature map multiplicatively, ``x · e(x)``, with
``e`` itself computed from the input by the U-Net. Zennit has rules for layers only and passes the
gradient through every other operation, here to both factors of the product, so it would return a
modified gradient that is not LRP, without an error. An LRP of this model needs a rule for the
gate (e.g. treating ``e`` as a constant, the "signal-take-all" rule of LRP for LSTM gates) that
the composites do not have; the ResNet-18 classifier would in addition need the residual
canonizer, which the plan reaches through the ``resnet`` tag and not ``lrp`` (see
``plugins/methods/zennit.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, FitReport, ModelSpec, Param, hookimpl
from xbench.cache import Cache
from xbench.hashing import array_digest, content_hash
from xbench.errors import XbenchError
from xbench.specs import EXPLANATION_STATS, defaults

from .cifar_resnet import init_resnet, make_stages
from ._training import _resident, fit_classifier, iterate, lowest_val_loss_near_best_accuracy, trainable_parameters

CLASSIFIERS = ("vgg", "resnet18")
LOSSES = ("unsupervised", "hybrid")
WEAK_FORMS = ("mean", "share")
SPARSITY_FORMS = ("mean", "peak")
SELECTIONS = ("val_loss", "accurate")
OPTIMIZERS = ("sgd", "adam")
PHASES = ("classifier", "explainer", "both")
STEMS = ("imagenet", "small")
WEAK_EPSILON = 1e-6


def _three(value) -> str | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return "must list one value per phase (classifier, explainer, both)"
    return None


PARAMS = {
    "classifier": Param("resnet18", "the classifier the explanation gates: the source's small 'vgg' or 'resnet18' "
                                    "(what the paper's results use)", choices=CLASSIFIERS),
    "width": Param(1.0, "channel scale of explainer and classifier (1 = the source's)", gt=0),
    "stem": Param("imagenet", "ResNet-18 stem: 'imagenet' (7×7/2 conv + max-pool, the source) or 'small' "
                              "(3×3/1, no max-pool, for inputs far below 224 px)", choices=STEMS),
    "loss": Param("hybrid", "the explanation loss: 'unsupervised' (sparsity + total variation) or 'hybrid' "
                            "(adds the mean explanation outside the ground-truth region)", choices=LOSSES, label=True),
    "region": Param("mask", "the hybrid loss's region of interest: the ground-truth 'mask' or a named region"),
    "init_bias": Param(1.5, "initial bias of the explainer's batch norm: the start explanation is ≈ tanh(init_bias) "
                            "everywhere (1.5: ≈ 0.905, whose gradient lets a few epochs move it; the source's 3: "
                            "≈ 0.995, saturated)"),
    "alpha": Param([1.0, 0.75, 0.9], "α per phase: the weight of cross-entropy against the explanation loss (the "
                                     "source's phase 2: 0.25, where an all-zero map can beat a useful one)",
                   ge=0, le=1, check=_three),
    "beta": Param(0.9, "β: sparsity against total variation inside the explanation loss", ge=0, le=1),
    "gamma": Param(1.0, "γ: weight of the hybrid's outside-the-region term", ge=0),
    "weak": Param("mean", "the hybrid's outside-the-region term: 'mean', the mean explanation outside the region "
                          "(the source's), or 'share', the share of the map's mass outside it (scale-free: a map "
                          "lowered everywhere scores the same, only mass moved into the region lowers it)",
                  choices=WEAK_FORMS),
    "sparsity": Param("mean", "the sparsity term: 'mean', the mean |ẑ| (the source's), or 'peak', the mean of ẑ over "
                              "its per-image maximum (scale-free: a uniform map scores 1 at any level, only a peaked "
                              "one scores low)", choices=SPARSITY_FORMS),
    "select": Param("val_loss", "which epoch of phases 2 and 3 is kept: 'val_loss', the lowest validation global loss "
                                "(the source's), or 'accurate', the lowest among the epochs whose validation accuracy "
                                "is within accuracy_tolerance of the phase's best, the phase's start included (a loss "
                                "dominated by the explanation terms cannot keep a state that lost the task)",
                    choices=SELECTIONS),
    "accuracy_tolerance": Param(0.02, "with select = 'accurate': how far below the phase's best validation accuracy "
                                      "an epoch may be and still be kept", ge=0, le=1),
    "precise_bn": Param(0, "training images over which the trained parts' batch-norm statistics are recomputed "
                           "before each validation (0: the running averages, the source's; they trail the weights, "
                           "so validation can see a different map than training did)", ge=0),
    "epochs": Param([10, 10, 100], "most epochs per phase (classifier, explainer, both); 0 skips a phase",
                    ge=0, check=_three),
    "lr_clf": Param([0.01, 0.0, 0.01], "the classifier's SGD learning rate per phase (0 = frozen)", ge=0,
                    check=_three),
    "lr_expl": Param([0.0, 0.01, 0.01], "the explainer's SGD learning rate per phase (0 = frozen)", ge=0,
                     check=_three),
    "patience": Param([100, 100, 10], "epochs without a better validation loss before a phase stops", ge=1,
                      check=_three),
    "min_delta": Param(1e-4, "the smallest validation-loss improvement that counts", ge=0),
    "batch_size": Param(8, "training batch size (the README's 8)", ge=1),
    "expl_optimizer": Param("sgd", "the explainer's optimiser: 'sgd' (the source's: SGD with momentum and weight "
                                   "decay, as the classifier's) or 'adam' (Adam, β = (0.9, 0.999), no weight decay)",
                            choices=OPTIMIZERS),
    "momentum": Param(0.9, "SGD momentum", ge=0, le=1),
    "weight_decay": Param(1e-4, "SGD weight decay", ge=0),
    "plateau_factor": Param(0.2, "ReduceLROnPlateau factor (ResNet classifier)", gt=0, le=1),
    "plateau_patience": Param(10, "ReduceLROnPlateau patience in epochs (ResNet classifier)", ge=0),
    "plateau_min_lr": Param(1e-5, "ReduceLROnPlateau's smallest learning rate", ge=0),
    "legacy_phase2_train_mode": Param(False, "keep the frozen classifier in train mode in phase 2, as the source "
                                             "did (its batch-norm statistics move)"),
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

    def __init__(self, channels: int, width: float = 1.0, init_bias: float = 1.5):
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

    def __init__(self, channels: int, classes: int, width: float = 1.0, stem: str = "imagenet"):
        super().__init__()
        widths = tuple(_c(n, width) for n in (64, 128, 256, 512))
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:  # "small": 3×3 stride 1, no max-pool (CIFAR-style), for inputs far below 224 px
            self.conv1 = nn.Conv2d(channels, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
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
                 init_bias: float = 1.5, stem: str = "imagenet"):
        super().__init__()
        if classifier not in CLASSIFIERS:
            raise XbenchError(f"joint-explainer: classifier {classifier!r} is unknown; use one of {', '.join(CLASSIFIERS)}.")
        self.explainer = Explainer(channels, width, init_bias)
        self.classifier = (VGGClassifier(channels, classes, width) if classifier == "vgg"
                           else ResNetClassifier(channels, classes, width, stem))

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

def sparsity(z: torch.Tensor, form: str = "mean") -> torch.Tensor:
    """Mean |ẑ| per map (``form = "mean"``, the source), or the mean over the map's maximum (``"peak"``:
    1 for a uniform map at any level, so lowering every pixel alike gains nothing)."""
    flat = z.abs().flatten(1)
    if form == "peak":
        return flat.mean(1) / (flat.amax(1) + WEAK_EPSILON)
    return flat.mean(1)


def total_variation(z: torch.Tensor) -> torch.Tensor:
    """Mean absolute vertical difference plus mean absolute horizontal difference, per map."""
    return (z[:, 1:, :] - z[:, :-1, :]).abs().flatten(1).mean(1) + (z[:, :, 1:] - z[:, :, :-1]).abs().flatten(1).mean(1)


def weak(z: torch.Tensor, mask: torch.Tensor, form: str = "mean") -> torch.Tensor:
    """The explanation outside the mask: its mean |Σ(1−z)ẑ / (Σ(1−z) + 1e-6)| (``form = "mean"``, the
    source), or its share of the map's mass Σ(1−z)ẑ / (Σẑ + 1e-6) (``"share"``; 1 on an empty mask)."""
    out = (~mask.bool()).to(z.dtype)
    outside = (out * z).flatten(1).sum(1)
    if form == "share":
        return outside / (z.flatten(1).sum(1) + WEAK_EPSILON)
    return (outside / (out.flatten(1).sum(1) + WEAK_EPSILON)).abs()


def explanation_loss(z: torch.Tensor, beta: float, gamma: float = 0.0, mask: torch.Tensor | None = None,
                     form: str = "mean", sparsity_form: str = "mean") -> torch.Tensor:
    """β·sparsity + (1−β)·TV, plus γ·weak when a mask is given (the hybrid loss)."""
    loss = beta * sparsity(z, sparsity_form) + (1 - beta) * total_variation(z)
    return loss + gamma * weak(z, mask, form) if mask is not None else loss


def global_loss(module: JointModel, batch: Mapping[str, Any], params: Mapping[str, Any], alpha: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample α·CE + (1−α)·L_expl, and the logits."""
    logits, z = module.outputs(batch["x"])
    mask = region_of(batch, str(params["region"])) if params["loss"] == "hybrid" else None
    expl = explanation_loss(z, float(params["beta"]), float(params["gamma"]), mask, str(params.get("weak", "mean")),
                            str(params.get("sparsity", "mean")))
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
    """The per-phase settings (α, epochs, learning rates and patience) as one dict per phase; their
    lengths and bounds are the Params' checks, applied when the config is read."""
    lists = {k: params[k] for k in ("alpha", "epochs", "lr_clf", "lr_expl", "patience")}
    return [{k: float(v[i]) for k, v in lists.items()} for i in range(3)]


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


def phase_mode(index: int, legacy_phase2_train_mode: bool = False, phase: Mapping[str, float] | None = None):
    """Train/eval modes per phase: the frozen part is in eval mode (phase 2 in the source: train), in
    phase 3 too when its learning rate there is 0."""

    def set_modes(module: JointModel) -> None:
        module.train()
        if index == 0:
            module.explainer.eval()
        elif index == 1 and not legacy_phase2_train_mode:
            module.classifier.eval()
        elif index == 2 and phase is not None:
            for part, lr in ((module.explainer, phase["lr_expl"]), (module.classifier, phase["lr_clf"])):
                if lr <= 0:
                    part.eval()

    return set_modes


def build(info: DatasetInfo, params: Mapping[str, Any]) -> nn.Module:
    return JointModel(info.channels, info.num_classes, str(params["classifier"]), float(params["width"]),
                      float(params["init_bias"]), str(params.get("stem", "imagenet")))


def fit(module: nn.Module, data: Dataset, params: Mapping[str, Any], ctx: FitContext) -> FitReport:
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    for index, phase in enumerate(phase_values(params)):
        if phase["epochs"] <= 0:
            continue
        if index == 0:
            report = shared_phase1(module, data, params, ctx, phase)
        else:
            report = run_phase(module, data, params, ctx, index, phase)
        history += [{"phase": float(index + 1), **h} for h in report.history]
        metrics.update({f"phase{index + 1}_{k}": v for k, v in report.metrics.items()})
        metrics.update({k: v for k, v in report.metrics.items() if k not in PER_PHASE_ONLY})
    for p in module.parameters():
        p.requires_grad_(True)
    module.eval()
    stats = explanation_stats(module, data.val, ctx.device, int(params["batch_size"]))
    metrics.update({f"val_explanation_{k}": v for k, v in stats.items()})
    return FitReport(history=history, metrics=metrics, warnings=degenerate_warnings(stats))


class Optimizers(torch.optim.Optimizer):
    """Several optimisers stepped as one, so a phase can train the classifier with SGD and the
    explainer with Adam under one learning-rate scheduler (it sees every part's param groups)."""

    def __init__(self, parts: list[torch.optim.Optimizer]):
        self.parts = parts
        super().__init__([g for part in parts for g in part.param_groups], {})

    def step(self, closure=None):  # noqa: ARG002 (the training loop passes no closure)
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)


def make_optimizer(groups: list[dict[str, Any]], params: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) for every group, except the explainer's under ``expl_optimizer = "adam"``."""
    adam = [g for g in groups if g["name"] == "explainer" and params.get("expl_optimizer", "sgd") == "adam"]
    sgd = [g for g in groups if all(g is not a for a in adam)]
    parts = ([torch.optim.SGD(sgd, momentum=float(params["momentum"]), weight_decay=float(params["weight_decay"]))]
             if sgd else []) + ([torch.optim.Adam(adam)] if adam else [])
    return parts[0] if len(parts) == 1 else Optimizers(parts)


@torch.no_grad()
def precise_batch_norm(module: JointModel, train, modes, images: int, batch_size: int, device: torch.device) -> None:
    """Recompute the running statistics of the batch norms that train in this phase (those ``modes``
    leaves in train mode) as plain averages over the first ``images`` training images, in batches of
    the training size ("precise BN"). torch.optim.swa_utils.update_bn resets every batch norm of the
    model it is given, the frozen part's too, hence this variant."""
    modes(module)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    subset = {"x": train.images[:images], "y": train.labels[:images], "regions": {}}
    for batch in iterate(subset, batch_size, device):
        module(batch["x"])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


PER_PHASE_ONLY = ("trainable_parameters", "cached")
"""Facts recorded only with their phase's prefix (the unprefixed metrics are the last phase's)."""


def run_phase(module: JointModel, data: Dataset, params: Mapping[str, Any], ctx: FitContext, index: int,
              phase: Mapping[str, float]) -> FitReport:
    """Train phase ``index`` (0, 1, 2) in place; the best checkpoint by validation loss is kept."""
    groups = configure_phase(module, index, phase)
    if not groups:
        raise XbenchError(f"joint-explainer: phase {index + 1} ({PHASES[index]}) has {int(phase['epochs'])} "
                          "epochs but nothing to train: its learning rates (lr_clf, lr_expl) are all 0. "
                          "Give the phase a positive learning rate or 0 epochs.")
    trainable = float(trainable_parameters(module))
    optimizer = make_optimizer(groups, params)
    scheduler = None
    if params["classifier"] == "resnet18":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=float(params["plateau_factor"]), patience=int(params["plateau_patience"]),
            min_lr=float(params["plateau_min_lr"]))
    alpha = phase["alpha"]

    def step(m, batch):
        loss, logits = global_loss(m, batch, params, alpha)
        return loss.mean(), logits

    def eval_loss(m, batch):
        loss, logits = global_loss(m, batch, params, alpha)
        return loss.sum(), logits

    progress = ctx.progress
    pctx = dataclasses.replace(ctx, progress=lambda s, t, **n: progress(s, t, phase=index + 1, **n))
    modes = phase_mode(index, bool(params["legacy_phase2_train_mode"]), phase)
    accurate = index > 0 and params.get("select", "val_loss") == "accurate"
    select = (lowest_val_loss_near_best_accuracy(float(params["accuracy_tolerance"]), float(params["min_delta"]))
              if accurate else "val_loss")
    images = int(params.get("precise_bn", 0))
    recompute = (lambda m: precise_batch_norm(m, data.train, modes, images, int(params["batch_size"]), ctx.device)
                 ) if images > 0 else None
    report = fit_classifier(module, data.train, data.val, pctx, epochs=int(phase["epochs"]), optimizer=optimizer,
                            batch_size=int(params["batch_size"]), step=step, eval_loss=eval_loss,
                            scheduler=scheduler, patience=int(phase["patience"]),
                            min_delta=float(params["min_delta"]), select=select, train_mode=modes,
                            before_validation=recompute, start_candidate=accurate,
                            name=f"joint-explainer phase {index + 1}")
    report.metrics["trainable_parameters"] = trainable
    return report


PHASE1_READS = ("classifier", "width", "stem", "init_bias", "batch_size", "momentum", "weight_decay", "min_delta",
                "plateau_factor", "plateau_patience", "plateau_min_lr", "precise_bn")
"""The params phase 1 reads besides its own per-phase values."""
EXPLANATION_LOSS = ("loss", "region", "beta", "gamma")
"""The explanation loss's params, which phase 1 reads only when its α is below 1."""
PHASE1_CACHE_VERSION = 1


def phase1_identity(module: JointModel, data: Dataset, params: Mapping[str, Any], ctx: FitContext,
                    phase: Mapping[str, float]) -> dict[str, Any]:
    """Everything that decides the outcome of phase 1: the initial weights, the data, the RNG
    states, the shuffling seed and the params phase 1 reads (not the later phases' settings)."""
    explains = phase["alpha"] < 1
    train, val = data.train, data.val
    uses_masks = explains and params["loss"] == "hybrid"
    return {
        "version": PHASE1_CACHE_VERSION, "device": ctx.device.type, "seed": ctx.seed, "phase": dict(phase),
        "params": {k: params[k] for k in PHASE1_READS + (EXPLANATION_LOSS if explains else ())},
        "weights": array_digest(*module.state_dict().values()),
        "rng": array_digest(*_rng_states(ctx.device)),
        "data": array_digest(train.images, train.labels, val.images, val.labels,
                             *((train.masks, val.masks) if uses_masks else ()),
                             *((*train.regions.values(), *val.regions.values()) if uses_masks else ())),
    }


def shared_phase1(module: JointModel, data: Dataset, params: Mapping[str, Any], ctx: FitContext,
                  phase: Mapping[str, float]) -> FitReport:
    """Phase 1 (the classifier alone, cross-entropy only at α = 1) does not depend on the explanation
    loss: with paired seeding the unsupervised and the hybrid model of a seed start from the same
    weights and see the same batches, so they share one phase 1 through the plugin's cache. Its
    weights and the RNG states after it are restored exactly, so phases 2–3 run as if it had just
    been trained."""
    cache = Cache(ctx.cache_dir) if ctx.cache_dir else None
    key = f"phase1-{content_hash(phase1_identity(module, data, params, ctx, phase))}"
    hit = cache.load_model(key) if cache is not None else None
    if hit is not None:
        state, report = hit
        rng = [state.pop(k) for k in sorted(k for k in state if k.startswith(RNG_KEY))]
        module.load_state_dict(state)
        _restore_rng_states(ctx.device, rng)
        return FitReport(history=report.history, metrics={**report.metrics, "cached": 1.0})
    report = run_phase(module, data, params, ctx, 0, phase)
    if cache is not None:
        extra = {f"{RNG_KEY}{i}": s for i, s in enumerate(_rng_states(ctx.device))}
        cache.save_model(key, {**module.state_dict(), **extra}, report, {"what": "joint-explainer phase 1"})
    return FitReport(history=report.history, metrics={**report.metrics, "cached": 0.0})


RNG_KEY = "__rng_state_"


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    """torch's CPU generator state, and the device's on CUDA (dropout in the small VGG draws from it)."""
    states = [torch.random.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _restore_rng_states(device: torch.device, states: list[torch.Tensor]) -> None:
    torch.random.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


DEGENERATE_SPREAD = 0.02
"""Below this spread (the mean over images of each map's standard deviation, the standard deviation
of the per-image means, or the mean over pixels of the standard deviation across images) an
explanation in [0, 1) says nothing about where to look in *this* image."""

@torch.no_grad()
def explanation_stats(module: JointModel, split, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """Summary of the explanations of a split, in eval mode: ``mean``; ``spread`` (mean per-map std:
    does a map vary within the image); ``between`` (std of the per-map means) and ``pixel_spread``
    (mean over pixels of the std across images: is the map a different one for each image, or one
    fixed pattern). With a mask, over the images whose mask is not empty: ``mass_inside`` (mean
    share of a map's mass inside the mask, Σẑ·z/Σẑ), ``area_share`` (the mask's mean share of the
    image: what a uniform map scores), ``focus`` (their ratio: 1 for a map that ignores the object)
    and ``pointing`` (share of maps whose maximum lies in the mask; a constant map misses)."""
    module.eval()
    means, stds, inside, share, hits = [], [], [], [], []
    total = total2 = None
    n = 0
    for batch in iterate(_resident(split, device), max(batch_size, 32), device):
        z = module.explain(batch["x"]).double()
        flat = z.flatten(1)
        means.append(flat.mean(1))
        stds.append(flat.std(1) if flat.shape[1] > 1 else torch.zeros(len(z), dtype=z.dtype, device=z.device))
        total = flat.sum(0) if total is None else total + flat.sum(0)
        total2 = (flat ** 2).sum(0) if total2 is None else total2 + (flat ** 2).sum(0)
        n += len(z)
        if "mask" in batch:
            m = batch["mask"].bool().flatten(1)
            keep = m.any(1)
            mass = flat.sum(1)
            inside.append(torch.where(mass > 0, (flat * m).sum(1) / mass.clamp_min(1e-12), torch.nan)[keep])
            share.append(m.double().mean(1)[keep])
            peaked = flat.amax(1) > flat.amin(1)  # a constant map points nowhere (its argmax is pixel 0)
            hits.append((m.gather(1, flat.argmax(1, keepdim=True))[:, 0] & peaked).double()[keep])
    if not means:
        return {k: math.nan for k in EXPLANATION_STATS[:4]}
    m, sd = torch.cat(means), torch.cat(stds)
    variance = (total2 - total ** 2 / n) / max(n - 1, 1)
    out = {"mean": float(m.mean()), "spread": float(sd.mean()), "between": float(m.std()) if n > 1 else 0.0,
           "pixel_spread": float(variance.clamp_min(0).sqrt().mean()) if n > 1 else 0.0}
    if inside and len(torch.cat(inside)):
        mass_inside, area = float(torch.cat(inside).nanmean()), float(torch.cat(share).mean())
        out.update({"mass_inside": mass_inside, "area_share": area, "focus": mass_inside / area if area else math.nan,
                    "pointing": float(torch.cat(hits).mean())})
    return out


def degenerate_warnings(stats: Mapping[str, float], tolerance: float = DEGENERATE_SPREAD) -> list[str]:
    """One sentence when the explainer's output is near-constant (every map the same value:
    saturated white at its start, or collapsed to 0, so the classifier is ungated or sees nothing),
    or one fixed pattern for every image (e.g. a dark frame or stripes finer than the classifier's
    gates: it varies within a map, not between images)."""
    mean, spread, between = stats.get("mean", math.nan), stats.get("spread", math.nan), stats.get("between", math.nan)
    pixel = stats.get("pixel_spread", math.nan)
    if not all(math.isfinite(v) for v in (mean, spread, between)):
        return []
    if spread < tolerance and between < tolerance:
        kind = ("collapsed to 0" if mean < 0.05 else "saturated near its all-white start" if mean > 0.8
                else "constant")
        return [f"the in-model explanation is degenerate on the validation set: {kind} (mean {mean:.3f}, "
                f"spread within a map {spread:.4f}, between maps {between:.4f}, both below {tolerance:g}); "
                "it does not say where the model looks (see the explainer's phase-2 settings: alpha, lr_expl, "
                "expl_optimizer, epochs, init_bias)."]
    if math.isfinite(pixel) and pixel < tolerance and between < tolerance:
        return [f"the in-model explanation is one fixed pattern on the validation set: it varies within a map "
                f"(spread {spread:.4f}) but hardly between images (per-pixel spread across images {pixel:.4f}, "
                f"between map means {between:.4f}, both below {tolerance:g}); it does not say where the model "
                "looks in each image (see the module docstring: sub-gate textures, a uniformly lowered map)."]
    return []


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
        version="3",
        description="In-model explainer + classifier (small VGG or ResNet-18), three-phase training with an "
                    "unsupervised or hybrid explanation loss (Rio-Torto et al.).",
        params=PARAMS,
        provides=frozenset({"conv_layer", "gradients", "in_model_explainer"}),
        requires=requires,
        layers=layers,
        explainer=lambda module: module.explain,
        # what decides the initial weights: with seeding = "paired", the unsupervised and the hybrid
        # model of a seed start from the same weights and see the same batches
        architecture=("classifier", "width", "stem", "init_bias"),
    )
