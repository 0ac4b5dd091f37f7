"""A VGG16-based classifier trained with a HiResCAM-outside-the-region loss term, and its
cross-entropy baseline trained the same way (Callanan, IMVIP 2022; seed-algorithms.md §3.2, §5.4.9).

Architecture (the source's Keras model): VGG16's conv base → flatten → Dense(100, ReLU,
He-uniform) → Dense(classes) logits; the losses read ``sigmoid(logits)``, attribution methods the
logits. ``loss = "heatmap"``: L = MSE(onehot, σ(logits)) + w · mean(HiResCAM ⊙ ¬region), where
HiResCAM = ReLU(mean_k(A_k ⊙ ∂y_c/∂A_k)) / max at the last conv (``block5_conv3``), c the predicted
class, and ¬region the complement of the ground truth (the heart) resized bilinearly to the CAM's
size; second-order gradients flow through the CAM. ``loss = "cce"``: Keras' categorical
cross-entropy on the sigmoid outputs (renormalised to sum to 1). Both train every layer with Adam
(the source froze the conv base of its CCE model, which confounds the comparison:
``legacy_frozen_base``). The CAM is batched: samples do not interact in this network, so the
gradient of the summed predicted logits gives every sample's own CAM (the source used batch 1).
``heatmap_warmup`` ramps the CAM term in over its first epochs (the source: none), for models
trained from scratch, which can otherwise zero their CAM before they learn the classes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, FitReport, ModelSpec, Param, hookimpl
from xbench.errors import XbenchError

from . import _pretraining as pretraining
from ._training import _resident, fit_classifier, iterate, trainable_parameters
from .vgg16_finetune import block_last_convs, init_vgg, vgg16_features

LOSSES = ("heatmap", "cce")
KERAS_EPSILON = 1e-7

PARAMS = {
    "loss": Param("heatmap", "the objective: 'heatmap' (MSE on sigmoid outputs + the HiResCAM-outside-the-region "
                             "term) or 'cce' (the cross-entropy baseline)", choices=LOSSES, label=True),
    "heatmap_weight": Param(1.0, "weight of the HiResCAM term (the source's 1)", ge=0),
    "heatmap_warmup": Param(0.0, "epochs over which the HiResCAM term's weight ramps linearly from 0 to heatmap_weight "
                                 "(the source's 0: full weight from the first step). From scratch the term can "
                                 "silence the CAM before the classes are learned, a dead start", ge=0),
    "region": Param("mask", "the region the CAM should stay inside: the ground-truth 'mask' or a named region"),
    "width": Param(1.0, "channel scale of the VGG16 base (1 = the real one)", gt=0),
    "hidden": Param(100, "units of the dense layer after the base (the source's 100)", ge=1),
    "pretrain": Param("imagenet", "where the base's weights come from", choices=pretraining.SOURCES, label=True),
    "lr": Param(1e-5, "Adam's learning rate", gt=0),
    "batch_size": Param(8, "training batch size (the source's 1)", ge=1),
    "epochs": Param(3, "most training epochs", ge=1),
    "patience": Param(3, "epochs without a better validation loss before stopping", ge=1),
    "legacy_frozen_base": Param(False, "freeze the VGG16 base for the CCE model, as the source did (a confound)"),
    **pretraining.PARAMS,
}


class HeatmapVGG(nn.Module):
    def __init__(self, channels: int, classes: int, height: int, width_px: int, width: float = 1.0,
                 hidden: int = 100, batch_norm: bool = False):
        super().__init__()
        self.features = vgg16_features(channels, width, batch_norm)
        h, w = height, width_px
        for _ in range(5):
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise XbenchError(f"heatmap-loss: inputs of {height}×{width_px} px are too small for VGG16's five "
                              "pooling steps; they need at least 32 px per side.")
        last_conv = [m for m in self.features if isinstance(m, nn.Conv2d)][-1]
        self.head = nn.Sequential(nn.Linear(last_conv.out_channels * h * w, hidden), nn.ReLU(), nn.Linear(hidden, classes))
        init_vgg(self.features)
        nn.init.kaiming_uniform_(self.head[0].weight, nonlinearity="relu")  # Keras he_uniform
        nn.init.xavier_uniform_(self.head[2].weight)  # Keras' default glorot_uniform
        nn.init.zeros_(self.head[0].bias)
        nn.init.zeros_(self.head[2].bias)

    def activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, logits): the last conv block's activation (after its ReLU, before the last pool) and the logits."""
        a = self.features[:-1](x)
        return a, self.head(torch.flatten(self.features[-1](a), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def hirescam(a: torch.Tensor, logits: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
    """HiResCAM of the predicted class at activation ``a``: ReLU(mean_k(A_k ⊙ ∂y_c/∂A_k)) / max,
    ``(N, h, w)`` in [0, 1] (all-zero maps stay zero)."""
    c = logits.argmax(1)
    score = logits.gather(1, c[:, None]).sum()
    (grad,) = torch.autograd.grad(score, a, create_graph=create_graph)
    cam = F.relu((a * grad).mean(1))
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(peak > 0, cam / peak.clamp(min=torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


def outside(region: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The complement of a bool region ``(N, H, W)``, resized bilinearly to ``size`` (soft at borders, as cv2 INTER_LINEAR)."""
    return F.interpolate((~region.bool()).float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def region_of(batch: Mapping[str, Any], region: str) -> torch.Tensor:
    if region == "mask":
        if "mask" not in batch:
            raise XbenchError("heatmap-loss: loss = \"heatmap\" needs the dataset's ground-truth mask, and this "
                              "dataset has none; use a dataset that provides `mask`, or set region to a region name.")
        return batch["mask"]
    if region not in batch["regions"]:
        raise XbenchError(f"heatmap-loss: region {region!r} is not among the dataset's regions "
                          f"({', '.join(sorted(batch['regions'])) or 'none'}); set region to one of them or \"mask\".")
    return batch["regions"][region]


def cce_on_sigmoid(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Keras ``categorical_crossentropy`` on sigmoid outputs: renormalised to sum 1, clipped to
    [1e-7, 1 − 1e-7], −log of the true class.

    Computed in log space, log q_y = logσ(z_y) − logsumexp_j logσ(z_j), and clipped there (the clip is
    monotone, so the value is Keras' to float rounding): σ(z)/Σσ(z) is 0/0 once every logit of a
    sample is far below zero, which made the loss NaN and the run report a divergence it did not have.
    """
    log_p = F.logsigmoid(logits)
    log_q = log_p.gather(1, y[:, None])[:, 0] - torch.logsumexp(log_p, dim=1)
    lo, hi = torch.tensor([KERAS_EPSILON, 1 - KERAS_EPSILON], dtype=log_q.dtype).log().tolist()
    return -log_q.clamp(lo, hi)


def objective(module: HeatmapVGG, batch: Mapping[str, Any], params: Mapping[str, Any], *,
              create_graph: bool, weight: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss ``(N,)`` and logits; ``weight`` of the HiResCAM term (default: heatmap_weight)."""
    if params["loss"] == "cce":
        logits = module(batch["x"])
        return cce_on_sigmoid(logits, batch["y"]), logits
    a, logits = module.activations(batch["x"])
    onehot = F.one_hot(batch["y"], logits.shape[1]).to(logits.dtype)
    mse = ((onehot - torch.sigmoid(logits)) ** 2).mean(1)
    cam = hirescam(a, logits, create_graph=create_graph)
    term = (cam * outside(region_of(batch, str(params["region"])), tuple(cam.shape[-2:]))).flatten(1).mean(1)
    return mse + (float(params["heatmap_weight"]) if weight is None else weight) * term, logits


def warmup_weights(params: Mapping[str, Any], steps_per_epoch: int) -> Iterator[float]:
    """The HiResCAM term's weight at each training step: a linear ramp from 0 over ``heatmap_warmup``
    epochs, then ``heatmap_weight``. Without it (the source), a model trained from scratch can learn
    to zero its predicted class's CAM, which zeroes the term, before it learns the classes: on the
    callanan preset (2026-12-08) an Exp. 2 model stayed at validation accuracy 0.5 from epoch 3 on,
    while the same start with the term off reached 1.0 in one epoch."""
    full, ramp = float(params["heatmap_weight"]), float(params["heatmap_warmup"]) * steps_per_epoch
    for t in itertools.count():
        yield full * min(1.0, t / ramp) if ramp > 0 else full


def build(info: DatasetInfo, params: Mapping[str, Any]) -> nn.Module:
    return HeatmapVGG(info.channels, info.num_classes, info.height, info.width, float(params["width"]),
                      int(params["hidden"]))


def layers(module: nn.Module) -> dict[str, nn.Module]:
    return block_last_convs(module.features)


def fit(module: nn.Module, data: Dataset, params: Mapping[str, Any], ctx: FitContext) -> FitReport:
    info = data.describe()
    facts = pretraining.initialise(
        module, info, params, ctx, head="head", keep="features.",
        build_pretext=lambda k: HeatmapVGG(info.channels, k, info.height, info.width, float(params["width"]),
                                           int(params["hidden"]), batch_norm=True))
    for p in module.features.parameters():
        p.requires_grad_(not params["legacy_frozen_base"])
    trainable = [p for p in module.parameters() if p.requires_grad]
    count = float(trainable_parameters(module))
    optimizer = torch.optim.Adam(trainable, lr=float(params["lr"]))

    weights = warmup_weights(params, math.ceil(len(data.train) / int(params["batch_size"])))

    def step(m, batch):
        loss, logits = objective(m, batch, params, create_graph=True, weight=next(weights))
        return loss.mean(), logits

    def eval_loss(m, batch):
        with torch.enable_grad():
            loss, logits = objective(m, batch, params, create_graph=False)
        return loss.detach().sum(), logits.detach()

    report = fit_classifier(module, data.train, data.val, ctx, epochs=int(params["epochs"]), optimizer=optimizer,
                            batch_size=int(params["batch_size"]), step=step, eval_loss=eval_loss,
                            patience=int(params["patience"]), name=f"heatmap-loss[{params['loss']}]")
    for p in module.parameters():
        p.requires_grad_(True)
    report.metrics.update(trainable_parameters=count, **facts)
    region = str(params["region"])
    if (data.val.masks is not None) if region == "mask" else (region in data.val.regions):
        report.metrics["val_cam_in_region"] = cam_mass_inside(module, data.val, ctx.device,
                                                              int(params["batch_size"]), region)
    return report


def cam_mass_inside(module: HeatmapVGG, split, device: torch.device, batch_size: int = 32,
                    region: str = "mask") -> float:
    """Mean over samples of the share of HiResCAM mass (upsampled bilinearly to the image) inside the region."""
    module.eval()
    shares = []
    for batch in iterate(_resident(split, device), batch_size, device):
        with torch.enable_grad():
            a, logits = module.activations(batch["x"])
            cam = hirescam(a, logits).detach()
        up = F.interpolate(cam[:, None], size=tuple(batch["x"].shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        inside = (up * region_of(batch, region).float()).flatten(1).sum(1)
        total = up.flatten(1).sum(1)
        shares.append(torch.where(total > 0, inside / total.clamp(min=1e-12), torch.zeros_like(total)))
    return float(torch.cat(shares).mean()) if shares else float("nan")


def requires(params: Mapping[str, Any]) -> set[str]:
    if params.get("loss") != "heatmap":
        return set()
    return {"mask"} if params.get("region", "mask") == "mask" else {"regions"}


@hookimpl
def xbench_models():
    yield ModelSpec(
        name="heatmap-loss",
        build=build,
        fit=fit,
        version="2",
        description="VGG16-based classifier trained with a HiResCAM-outside-the-heart loss term, or its "
                    "cross-entropy baseline trained the same way (Callanan).",
        params=PARAMS,
        provides=frozenset({"conv_layer", "gradients", "lrp"}),
        requires=requires,
        layers=layers,
        # what decides the initial weights: with seeding = "paired", the heatmap model and its CCE
        # baseline start from the same weights and see the same batches
        architecture=("width", "hidden", "pretrain", *pretraining.PARAMS),
    )
