"""Pointing game and relevance mass accuracy, against the dataset's ground-truth mask, named as in
Quantus (``PointingGame``, ``RelevanceMassAccuracy``) so its users find them.

- ``pointing-game`` (Zhang et al. 2016, with TorchRay's tolerance): a hit when the maximum of the
  reduced map lies within τ pixels of the mask, i.e. some mask pixel q has ‖p − q‖² < τ² (TorchRay's
  strict test, ``torchray.benchmark.pointing_game.PointingGame.evaluate``), or p is in the mask
  itself (so τ = 0 is Quantus' test: the maximum inside the mask). τ = ``tolerance`` (TorchRay's
  15) is read by ``tolerance_rule``: ``scaled`` (the default) takes it in pixels of an image whose
  shorter side is ``reference_side`` (224, the input side of the models TorchRay benchmarked) and
  scales it to this image, τ·s/``reference_side`` for shorter side s (15 px at 224 is 1.3 px at
  20), so that small generated images get a proportionate disc; ``torchray`` takes it in this
  image's own pixels, as TorchRay applies 15 px at the original image resolution (on VOC/COCO,
  shorter sides 333–500 px, ``scaled`` is 1.5–2.2× more lenient: use ``torchray`` to compare with
  TorchRay's published tables). Rows record the rule in ``metric_params``, and a label shows it
  when it is ``torchray``. Several maxima (``ties``): ``split`` scores the share of them that hit
  (the expectation over a random choice among them; deterministic; a constant map scores the
  dilated mask's share of the image), ``first`` takes the first in row-major order (``argmax``,
  as TorchRay's callers do), ``any`` is a hit if one of them hits (Quantus). An empty mask is
  undefined (TorchRay skips it, Quantus gives NaN).
- ``relevance-mass-accuracy`` (Arras et al. 2022): Σ(a⁺·mask)/Σa⁺, the share of the positive
  relevance inside the mask; undefined for an empty mask or a map with no positive relevance.

Both read the reduced ``(N, H, W)`` map (by default ``abs-luminance``, which is non-negative).

Why the pointing game is fast: the tolerance is tested only at the maxima, each against the mask
pixels in its disc of radius τ (one gather for all maxima of the batch), not by dilating the mask
around every pixel. A map with many maxima (a constant or coarsely quantised map) would make that
gather larger than the dilation, so such maps use the dilated mask instead (:func:`near_mask`); both
give the same hits.
"""

from __future__ import annotations

import math

import torch

from xbench import MetricContext, MetricSpec, Param, hookimpl

from ._common import checked_mask, defined, positive_share

TIES = ("split", "first", "any")
TOLERANCE_RULES = ("scaled", "torchray")


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


def effective_tolerance(tolerance: float, rule: str, reference_side: float, height: int, width: int) -> float:
    """τ in this image's pixels: ``tolerance`` as it is (``torchray``) or scaled from ``reference_side``."""
    return tolerance if rule == "torchray" else tolerance * min(height, width) / reference_side


def disc(tolerance: float, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column offsets (dy, dx) with dy² + dx² < τ², and (0, 0), within the image's extent."""
    r = min(max(math.ceil(tolerance) - 1, 0), max(height, width) - 1)
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    inside = (dy * dy + dx * dx < tolerance ** 2) | ((dy == 0) & (dx == 0))
    inside &= (dy.abs() < height) & (dx.abs() < width)
    return dy[inside], dx[inside]


DILATE_BELOW = 4.0
"""A map whose maxima would gather more than ``DILATE_BELOW`` × its pixels × (⌈τ⌉ + 1) mask values
uses the dilated mask (:func:`near_mask`, about ⌈τ⌉ + 1 passes over the image) instead."""
GATHER_ELEMENTS = 1 << 22
"""The most mask values gathered at once (memory: 8 bytes of index each)."""


def peak_hits(mask: torch.Tensor, tolerance: float, sample: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
    """Whether each point (``sample``, row-major ``pixel``) lies within τ of its sample's mask
    (TorchRay's test; in the mask itself when τ = 0): (K,) bool."""
    n, h, w = mask.shape
    dy, dx = disc(tolerance, h, w)
    count = torch.bincount(sample, minlength=n)
    dilate = count * len(dy) > DILATE_BELOW * h * w * (math.ceil(tolerance) + 1)
    hit = torch.zeros(len(sample), dtype=torch.bool, device=mask.device)
    by_dilation = dilate[sample]
    if bool(by_dilation.any()):
        rows = dilate.nonzero()[:, 0]
        slot = torch.full((n,), -1, dtype=torch.long, device=mask.device)
        slot[rows] = torch.arange(len(rows), device=mask.device)
        near = near_mask(mask[rows], tolerance).flatten(1)
        hit[by_dilation] = near[slot[sample[by_dilation]], pixel[by_dilation]]
    dy, dx, flat = dy.to(mask.device), dx.to(mask.device), mask.flatten()
    for chunk in (~by_dilation).nonzero()[:, 0].split(max(1, GATHER_ELEMENTS // len(dy))):
        s, q = sample[chunk, None], pixel[chunk, None]
        r, c = q // w + dy, q % w + dx
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        hit[chunk] = (flat[(s * h + r.clamp(0, h - 1)) * w + c.clamp(0, w - 1)] & inside).any(1)
    return hit


def pointing_game(ctx: MetricContext) -> dict[str, torch.Tensor]:
    p = ctx.params
    a, ok = ctx.attribution.float(), defined(ctx)
    gt = checked_mask(ctx, ctx.mask)
    n = len(gt)
    tau = effective_tolerance(float(p["tolerance"]), p["tolerance_rule"], float(p["reference_side"]),
                              *gt.shape[-2:])
    flat = a.flatten(1)
    peaks = flat >= flat.amax(1, keepdim=True)  # the maxima (none in a map with NaN)
    sample, pixel = peaks.nonzero(as_tuple=True)
    count = torch.bincount(sample, minlength=n)
    if p["ties"] == "first":
        sample, pixel = torch.arange(n, device=gt.device), flat.argmax(1)
    hit = peak_hits(gt, tau, sample, pixel).double()
    if p["ties"] == "first":
        value = hit
    else:
        hits = torch.zeros(n, dtype=torch.float64, device=gt.device).index_add_(0, sample, hit)
        value = (hits > 0).double() if p["ties"] == "any" else hits / count.double()
    empty = gt.flatten(1).view(torch.uint8).amax(1) == 0  # (as bytes: a reduction over bools is slower)
    ctx.flag(empty, "empty mask: pointing game undefined")
    ctx.flag((count == flat.shape[1]) & ok, f"constant attribution: every pixel is a maximum (ties = {p['ties']!r})")
    return {"pointing_game": torch.where(empty, torch.full_like(value, math.nan), value)}


def relevance_mass_accuracy(ctx: MetricContext) -> dict[str, torch.Tensor]:
    a, ok = ctx.attribution.float(), defined(ctx)
    gt = checked_mask(ctx, ctx.mask)
    share, silent = positive_share(a, gt)
    empty = ~gt.flatten(1).any(1)
    ctx.flag(silent & ok, "no positive relevance: relevance mass accuracy undefined")
    ctx.flag(empty, "empty mask: relevance mass accuracy undefined")
    return {"relevance_mass_accuracy": torch.where(silent | empty, torch.full_like(share, math.nan), share)}


def _side_problem(value) -> str | None:
    if value > 0:
        return None
    return "must be > 0 (for τ in this image's own pixels, set tolerance_rule = \"torchray\")"


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="pointing-game", score=pointing_game, category="localisation", requires=frozenset({"mask"}),
        values={"pointing_game": True},
        params={"tolerance": Param(15.0, "τ, the hit radius in pixels at the reference side (TorchRay: 15)", ge=0),
                "tolerance_rule": Param("scaled", "how τ is read: 'scaled' in pixels at the reference side, scaled "
                                                  "to this image; 'torchray' in this image's own pixels (TorchRay "
                                                  "applies 15 px at the original image resolution)",
                                        choices=TOLERANCE_RULES, label=True),
                "reference_side": Param(224.0, "the shorter image side τ is given for under the 'scaled' rule; τ "
                                               "scales with this image's shorter side", check=_side_problem),
                "ties": Param("split", "several maxima: 'split' scores the share that hit, 'first' the first "
                                       "(argmax), 'any' a hit if one hits (Quantus)", choices=TIES)},
        description="Pointing game (Zhang et al. 2016; TorchRay's tolerance): 1 when the map's maximum lies "
                    "within τ pixels of the ground-truth mask, else 0; τ = 15 px at a 224-pixel side scaled to "
                    "the image (tolerance_rule 'scaled', the default) or 15 px of this image ('torchray', "
                    "TorchRay's rule at the original resolution). Higher is better.",
    )
    yield MetricSpec(
        name="relevance-mass-accuracy", score=relevance_mass_accuracy, category="localisation",
        requires=frozenset({"mask"}), values={"relevance_mass_accuracy": True},
        description="Relevance mass accuracy (Arras et al. 2022): the share of the positive relevance that "
                    "falls inside the ground-truth mask. Higher is better.",
    )
