"""Localisation against ground truth: TPR/TNR of the top-|GT| pixels (Oliveira et al.) and
POMPOM, the share of meaningful pixels outside the mask (Rio-Torto et al.).

Both read the reduced ``(N, H, W)`` attribution (by default ``abs-luminance``, which is exactly
Oliveira's grayscale combination of |attribution|).
"""

from __future__ import annotations

import torch

from xbench import MetricContext, MetricSpec, hookimpl


def top_k_mask(attribution: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per sample, the ``k`` highest-valued pixels; ties go to the lower flat index (deterministic)."""
    flat = attribution.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return (ranks < k[:, None]).reshape(attribution.shape)


def _constant(a: torch.Tensor) -> torch.Tensor:
    flat = a.flatten(1)
    return flat.amax(1) == flat.amin(1)


def tpr_tnr(ctx: MetricContext) -> dict[str, torch.Tensor]:
    a, gt = ctx.attribution, ctx.mask.bool()
    p = gt.flatten(1).sum(1)
    top = top_k_mask(a, p)
    tp = (top & gt).flatten(1).sum(1).double()
    fp = (top & ~gt).flatten(1).sum(1).double()
    fn = (~top & gt).flatten(1).sum(1).double()
    tn = (~top & ~gt).flatten(1).sum(1).double()
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=a.device)
    tpr = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), nan)
    tnr = torch.where(tn + fp > 0, tn / (tn + fp).clamp(min=1), nan)
    ctx.flag(p == 0, "empty mask: TPR undefined")
    ctx.flag(p == gt[0].numel(), "mask covers the whole image: TNR undefined")
    ctx.flag(_constant(a), "constant attribution: top pixels chosen by index")
    return {"tpr": tpr, "tnr": tnr, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def pompom(ctx: MetricContext) -> dict[str, torch.Tensor]:
    eps = float(ctx.params["epsilon"])
    a = ctx.attribution.clamp(min=0)
    if ctx.params["normalise"] == "minmax":
        lo = a.flatten(1).amin(1).view(-1, 1, 1)
        a = a - lo
    peak = a.flatten(1).amax(1).view(-1, 1, 1)
    z_hat = torch.where(peak > 0, a / peak.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(a))
    outside = (~ctx.mask.bool()).to(a.dtype)
    meaningful = ((outside * z_hat) > eps).flatten(1).sum(1).double()
    ctx.flag(peak.flatten() <= 0, "all-zero attribution: no meaningful pixels")
    return {"pompom": meaningful / ((outside > eps).flatten(1).sum(1).double() + eps)}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="tpr-tnr", score=tpr_tnr, category="localisation", requires=frozenset({"mask"}),
        values={"tpr": True, "tnr": True, "tp": None, "fp": None, "fn": None, "tn": None},
        description="Top-|GT| pixels of the attribution against the ground truth: TPR (= precision@|GT|), "
                    "TNR and confusion counts (Oliveira et al. 2024).",
    )
    yield MetricSpec(
        name="pompom", score=pompom, category="localisation", requires=frozenset({"mask"}),
        values={"pompom": False}, params={"epsilon": 1e-6, "normalise": "max"},
        description="Percentage of meaningful pixels outside the mask, on maps scaled to [0, 1] by their "
                    "maximum (Rio-Torto et al. 2020). Lower is better.",
    )
