"""Pointing game and relevance mass accuracy, against the dataset's ground-truth mask, named as in
Quantus (``PointingGame``, ``RelevanceMassAccuracy``) so its users find them.

- ``pointing-game`` (Zhang et al. 2016, with TorchRay's tolerance): a hit when the maximum of the
  reduced map lies within τ pixels of the mask, i.e. some mask pixel q has ‖p − q‖² < τ² (TorchRay's
  strict test, ``torchray.benchmark.pointing_game.PointingGame.evaluate``), or p is in the mask
  itself (so τ = 0 is Quantus' test: the maximum inside the mask). τ = ``tolerance`` (TorchRay's 15)
  is in pixels of an image whose shorter side is ``reference_side`` (224, the input side of the
  models TorchRay benchmarked): on an image with shorter side s it is τ·s/``reference_side``, so 15
  px at 224 is 1.3 px at 20 (``reference_side = 0`` takes τ in this image's pixels). Several maxima
  (``ties``): ``split`` scores the share of them that hit (the expectation over a random choice
  among them; deterministic; a constant map scores the dilated mask's share of the image),
  ``first`` takes the first in row-major order (``argmax``, as TorchRay's callers do), ``any`` is a
  hit if one of them hits (Quantus). An empty mask is undefined (TorchRay skips it, Quantus gives NaN).
- ``relevance-mass-accuracy`` (Arras et al. 2022): Σ(a⁺·mask)/Σa⁺, the share of the positive
  relevance inside the mask; undefined for an empty mask or a map with no positive relevance.

Both read the reduced ``(N, H, W)`` map (by default ``abs-luminance``, which is non-negative).
The distance test needs the squared distance from every pixel to the mask only up to τ: the
distance within each row from a running maximum of mask indices, then the minimum over the
rows within τ (one tensor op per row offset, all samples and pixels at once).
"""

from __future__ import annotations

import math

import torch

from xbench import MetricContext, MetricSpec, Param, hookimpl

from ._common import checked_mask, constant_maps, defined, positive_share

TIES = ("split", "first", "any")


def row_distance2(mask: torch.Tensor) -> torch.Tensor:
    """Squared distance from every pixel to the nearest mask pixel in its own row (inf if none)."""
    w = mask.shape[-1]
    idx = torch.arange(w, device=mask.device, dtype=torch.float64).expand(mask.shape)
    inf = torch.full_like(idx, math.inf)
    left = torch.where(mask, idx, -inf).cummax(-1).values
    right = -torch.where(mask, -idx, -inf).flip(-1).cummax(-1).values.flip(-1)
    return torch.minimum(idx - left, right - idx) ** 2


def near_mask(mask: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Pixels p with a mask pixel q at ‖p − q‖² < tolerance², or in the mask: (N, H, W) bool."""
    h = mask.shape[-2]
    rows = row_distance2(mask)
    d2 = rows.clone()
    for dy in range(1, min(max(math.ceil(tolerance) - 1, 0), h - 1) + 1):
        d2[:, dy:] = torch.minimum(d2[:, dy:], rows[:, :-dy] + dy * dy)
        d2[:, :-dy] = torch.minimum(d2[:, :-dy], rows[:, dy:] + dy * dy)
    return (d2 < tolerance ** 2) | mask


def effective_tolerance(tolerance: float, reference_side: float, height: int, width: int) -> float:
    return tolerance * min(height, width) / reference_side if reference_side > 0 else tolerance


def pointing_game(ctx: MetricContext) -> dict[str, torch.Tensor]:
    p = ctx.params
    a, ok = ctx.attribution.float(), defined(ctx)
    gt = checked_mask(ctx, ctx.mask)
    tau = effective_tolerance(float(p["tolerance"]), float(p["reference_side"]), *gt.shape[-2:])
    hit = near_mask(gt, tau).flatten(1)
    flat = a.flatten(1)
    peaks = flat == flat.amax(1, keepdim=True)
    if p["ties"] == "first":
        value = hit.gather(1, flat.argmax(1, keepdim=True))[:, 0].double()
    elif p["ties"] == "any":
        value = (hit & peaks).any(1).double()
    else:
        value = (hit & peaks).sum(1).double() / peaks.sum(1).double()
    empty = ~gt.flatten(1).any(1)
    ctx.flag(empty, "empty mask: pointing game undefined")
    ctx.flag(constant_maps(a) & ok, f"constant attribution: every pixel is a maximum (ties = {p['ties']!r})")
    return {"pointing_game": torch.where(empty, torch.full_like(value, math.nan), value)}


def relevance_mass_accuracy(ctx: MetricContext) -> dict[str, torch.Tensor]:
    a, ok = ctx.attribution.float(), defined(ctx)
    gt = checked_mask(ctx, ctx.mask)
    share, silent = positive_share(a, gt)
    empty = ~gt.flatten(1).any(1)
    ctx.flag(silent & ok, "no positive relevance: relevance mass accuracy undefined")
    ctx.flag(empty, "empty mask: relevance mass accuracy undefined")
    return {"relevance_mass_accuracy": torch.where(silent | empty, torch.full_like(share, math.nan), share)}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="pointing-game", score=pointing_game, category="localisation", requires=frozenset({"mask"}),
        values={"pointing_game": True},
        params={"tolerance": Param(15.0, "τ, the hit radius in pixels at the reference side (TorchRay: 15)", ge=0),
                "reference_side": Param(224.0, "the shorter image side τ is given for; τ scales with this "
                                               "image's shorter side (0 = τ in this image's pixels)", ge=0),
                "ties": Param("split", "several maxima: 'split' scores the share that hit, 'first' the first "
                                       "(argmax), 'any' a hit if one hits (Quantus)", choices=TIES)},
        description="Pointing game (Zhang et al. 2016; TorchRay's tolerance): 1 when the map's maximum lies "
                    "within τ pixels of the ground-truth mask (τ = 15 px at a 224-pixel side, scaled to the "
                    "image), else 0. Higher is better.",
    )
    yield MetricSpec(
        name="relevance-mass-accuracy", score=relevance_mass_accuracy, category="localisation",
        requires=frozenset({"mask"}), values={"relevance_mass_accuracy": True},
        description="Relevance mass accuracy (Arras et al. 2022): the share of the positive relevance that "
                    "falls inside the ground-truth mask. Higher is better.",
    )
