"""Localisation against ground truth, from the definitions in seed-algorithms.md §5.4:

- ``tpr-tnr``: top-|GT| pixels of the attribution against the mask (Oliveira et al. 2024);
- ``pompom``: share of meaningful pixels outside the mask (Rio-Torto et al. 2020);
- ``mass-in-region``: share of positive attribution inside each named region, and the region's
  share of the image (Callanan);
- ``emd``: earth mover's distance between the top-|GT| pixels and the mask (Oliveira, optional).

All read the reduced ``(N, H, W)`` attribution (by default ``abs-luminance``, which is exactly
Oliveira's grayscale combination of |attribution|). Maps at a layer's resolution arrive already
upsampled bilinearly to the image by the core's recorded reduction, so masks are never resampled.
"""

from __future__ import annotations

import numpy as np
import torch

from xbench import Family, MetricContext, MetricSpec, Param, hookimpl
from xbench.errors import DataError, UsageError

from ._common import _names, checked_mask, constant_maps, defined, positive_share

TIES = ("split", "index", "random")


# ----------------------------------------------------------------------------- top-k selection

def _descending_order(flat: torch.Tensor, ties: str, generator: torch.Generator | None) -> torch.Tensor:
    """Indices sorting each row descending; ties by lower index, or by a seeded random permutation."""
    if ties == "random":
        key = torch.rand(flat.shape, generator=generator, device=flat.device, dtype=torch.float64)
        pre = torch.argsort(key, dim=1)
        inner = torch.argsort(flat.gather(1, pre), dim=1, descending=True, stable=True)
        return pre.gather(1, inner)
    return torch.argsort(flat, dim=1, descending=True, stable=True)


def top_k_weights(attribution: torch.Tensor, k: torch.Tensor, ties: str = "split",
                  generator: torch.Generator | None = None, legacy_strict_threshold: bool = False) -> torch.Tensor:
    """Per sample, membership in the ``k`` highest pixels, ``(N, H, W)`` float in [0, 1].

    ``ties`` decides pixels tied at the k-th value: ``split`` shares the remaining places equally
    among them (the expectation over all tie-breaks, so a constant map scores exactly chance;
    deterministic; memberships may be fractional), ``index`` takes the lower flat index,
    ``random`` a permutation drawn from ``generator``. ``legacy_strict_threshold`` is the source's
    rule: M = a > the (k+1)-th largest value, which drops every pixel tied at the threshold.
    """
    flat = attribution.flatten(1)
    n, p = flat.shape
    k = k.to(flat.device).long().clamp(0, p)
    if legacy_strict_threshold:
        values = torch.sort(flat, dim=1, descending=True).values
        thr = torch.where(k < p, values.gather(1, k.clamp(max=p - 1)[:, None])[:, 0],
                          torch.full_like(values[:, 0], -float("inf")))
        return (flat > thr[:, None]).to(flat.dtype).reshape(attribution.shape)
    if ties == "split":
        values = torch.sort(flat, dim=1, descending=True).values
        kth = values.gather(1, (k - 1).clamp(min=0)[:, None])
        above = flat > kth
        tied = flat == kth
        share = (k - above.sum(1)).to(flat.dtype) / tied.sum(1).clamp(min=1).to(flat.dtype)
        w = above.to(flat.dtype) + tied.to(flat.dtype) * share[:, None]
        return torch.where((k > 0)[:, None], w, torch.zeros_like(w)).reshape(attribution.shape)
    order = _descending_order(flat, ties, generator)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(p, device=flat.device).expand(n, p))
    return (ranks < k[:, None]).to(flat.dtype).reshape(attribution.shape)


def top_k_mask(attribution: torch.Tensor, k: torch.Tensor, ties: str = "index",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample, the ``k`` highest pixels as a bool mask (ties by ``index`` or ``random``)."""
    if ties == "split":
        raise UsageError("a pixel set needs ties = 'index' or 'random'; 'split' gives fractional memberships")
    return top_k_weights(attribution, k, ties, generator) > 0.5


# ----------------------------------------------------------------------------- metrics

def tpr_tnr(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """TPR = TP/(TP+FN) (= precision@|GT|, since |M| = |GT|), TNR = TN/(TN+FP), and the counts."""
    a, ok = ctx.attribution.float(), defined(ctx)
    gt = checked_mask(ctx, ctx.mask)
    p = gt.flatten(1).sum(1)
    m = top_k_weights(a, p, ctx.params["ties"], ctx.generator, ctx.params["legacy_strict_threshold"]).double()
    g = gt.double()
    tp = (m * g).flatten(1).sum(1)
    fp = (m * (1 - g)).flatten(1).sum(1)
    fn = ((1 - m) * g).flatten(1).sum(1)
    tn = ((1 - m) * (1 - g)).flatten(1).sum(1)
    nan = torch.full_like(tp, float("nan"))
    tpr = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1e-12), nan)
    tnr = torch.where(tn + fp > 0, tn / (tn + fp).clamp(min=1e-12), nan)
    ctx.flag(p == 0, "empty mask: TPR undefined")
    ctx.flag(p == gt[0].numel(), "mask covers the whole image: TNR undefined")
    ctx.flag(constant_maps(a) & ok, "constant attribution: top pixels decided by the tie rule")
    return {"tpr": tpr, "tnr": tnr, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def normalised_map(a: torch.Tensor, rule: str) -> torch.Tensor:
    """ẑ in [0, 1] from the positive part of ``a``: ``max`` divides by the maximum, ``minmax`` maps
    [min, max] to [0, 1]. All-zero (``max``) or constant (``minmax``) maps become all zero."""
    a = a.clamp(min=0)
    if rule == "minmax":
        a = a - a.flatten(1).amin(1).view(-1, 1, 1)
    peak = a.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(peak > 0, a / peak.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(a))


def pompom(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """#{(1−z)·ẑ > ε} / (#{(1−z) > ε} + ε) on ẑ = the positive attribution scaled to [0, 1]."""
    eps = float(ctx.params["epsilon"])
    a, ok = ctx.attribution.float(), defined(ctx)
    z = checked_mask(ctx, ctx.mask).double()
    z_hat = normalised_map(a.double(), ctx.params["normalise"])
    outside = 1 - z
    meaningful = ((outside * z_hat) > eps).flatten(1).sum(1).double()
    value = meaningful / ((outside > eps).flatten(1).sum(1).double() + eps)
    silent = (z_hat.flatten(1).amax(1) <= 0) & ok
    ctx.flag(silent, "all-zero (or, with minmax, constant) attribution: no meaningful pixels, POMPOM undefined")
    ctx.flag(z.flatten(1).all(1), "mask covers the whole image: no pixel outside it, POMPOM is 0 by its ε")
    ctx.flag(~z.bool().flatten(1).any(1), "empty mask: POMPOM counts meaningful pixels over the whole image")
    value = torch.where(silent, torch.full_like(value, float("nan")), value)
    return {"pompom": value}


def mass_in_region(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """frac_R = Σ(h⁺·R)/Σh⁺ and area_R = |R|/|image| for every named region R of the dataset."""
    a, ok = ctx.attribution.float(), defined(ctx)
    if not ctx.regions:
        dataset, method = _names(ctx)
        raise DataError(f"Dataset {dataset!r} gives no named regions to score method {method!r} against; "
                        "the 'mass-in-region' metric needs a split with regions (tag 'regions').")
    peak = a.flatten(1).amax(1)
    silent = (peak <= 0) & ok
    _, method = _names(ctx)
    # say why, on the row: a CAM of the explained class with no positive cell (its evidence there is
    # all negative) is a real outcome, e.g. a class predicted because the others score lower still
    ctx.flag(silent & (peak == 0), f"{method} map all zero: no positive evidence for the explained class, "
                                   "so the share of its mass in each region is undefined (0/0)")
    ctx.flag(silent & (peak < 0), f"{method} map all negative: no positive attribution, so the share of its "
                                  "mass in each region is undefined (0/0)")
    mass, area = {}, {}
    for name, region in sorted(ctx.regions.items()):
        r = checked_mask(ctx, region, f"region {name!r}").flatten(1)
        share, _ = positive_share(a, r)
        mass[name] = torch.where(silent, torch.full_like(share, float("nan")), share)
        area[name] = r.double().mean(1)
        ctx.flag(~r.any(1), f"region {name!r} is empty in this image (its mass is 0)")
    return {"mass": mass, "area": area}


def earth_movers_distance(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """Exact EMD between the top-|GT| pixels M and the mask G, uniform mass 1/p on each point,
    cost = squared Euclidean distance in pixel (row, column) units.

    With equal point counts and uniform masses the optimal plan is a permutation (Birkhoff), so
    the exact OT problem is a linear assignment, solved by scipy per image: there is no batched
    exact OT in torch, so this is the one metric that loops over samples.
    """
    from scipy.optimize import linear_sum_assignment

    a, ok = ctx.attribution.float(), defined(ctx)
    gt = checked_mask(ctx, ctx.mask)
    p = gt.flatten(1).sum(1)
    limit = int(ctx.params["max_points"])
    m = top_k_mask(a, p, ctx.params["ties"], ctx.generator).cpu().numpy()
    g = gt.cpu().numpy()
    values = torch.full((len(p),), float("nan"), dtype=torch.float64)
    for i in torch.nonzero((p > 0) & (p <= limit) & ok).flatten().tolist():
        src, dst = np.argwhere(m[i]).astype(np.float64), np.argwhere(g[i]).astype(np.float64)
        cost = np.square(src[:, None, :] - dst[None, :, :]).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        values[i] = float(cost[rows, cols].sum()) / len(rows)
    ctx.flag(p == 0, "empty mask: EMD undefined")
    ctx.flag(p > limit, f"mask larger than max_points = {limit}: EMD skipped (raise max_points; cost grows as p³)")
    ctx.flag(constant_maps(a) & ok, "constant attribution: top pixels decided by the tie rule")
    return {"emd": values}


TIES_DOC = ("pixels tied at the |GT|-th value: 'split' shares the remaining places equally (deterministic; a "
            "constant map scores chance), 'index' takes the lower index, 'random' a seeded order")


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="tpr-tnr", score=tpr_tnr, category="localisation", requires=frozenset({"mask"}), version="2",
        values={"tpr": True, "tnr": True, "tp": None, "fp": None, "fn": None, "tn": None},
        params={"ties": Param("split", TIES_DOC, choices=TIES),
                "legacy_strict_threshold": Param(False, "the source's rule: keep pixels strictly above the "
                                                        "(|GT|+1)-th value, dropping every pixel tied there")},
        description="Top-|GT| pixels of the attribution against the ground truth: TPR (= precision@|GT|), "
                    "TNR and confusion counts (Oliveira et al. 2024). Ties at the |GT|-th value share the "
                    "remaining places ('split'), or go by 'index' or a seeded 'random' order.",
    )
    yield MetricSpec(
        name="pompom", score=pompom, category="localisation", requires=frozenset({"mask"}), version="2",
        values={"pompom": False},
        params={"epsilon": Param(1e-6, "a pixel is meaningful when its scaled relevance exceeds ε", gt=0),
                "normalise": Param("max", "how the positive attribution is scaled to [0, 1]", choices=("max", "minmax"))},
        description="Percentage of meaningful pixels outside the mask, on the positive attribution scaled to "
                    "[0, 1] by its maximum (or min-max) (Rio-Torto et al. 2020). Lower is better.",
    )
    yield MetricSpec(
        name="mass-in-region", score=mass_in_region, category="localisation", requires=frozenset({"regions"}),
        values={"mass": Family(None, facet="region"), "area": Family(None, facet="region")},
        description="Share of the positive attribution inside each named region (mass/<region>) and the "
                    "region's share of the image (area/<region>) (Callanan). Average per class, then over "
                    "classes, for the source's model-level score.",
    )
    yield MetricSpec(
        name="emd", score=earth_movers_distance, category="localisation", requires=frozenset({"mask"}),
        values={"emd": False},
        params={"ties": Param("random", "ties at the |GT|-th value: 'index' or a seeded 'random' order",
                              choices=("index", "random")),
                "max_points": Param(4096, "masks with more pixels are skipped (the exact solve grows as p³)", ge=1)},
        description="Exact earth mover's distance (squared Euclidean pixel cost, uniform masses) between the "
                    "top-|GT| pixels and the ground truth (Oliveira et al. 2024). Lower is better.",
    )
