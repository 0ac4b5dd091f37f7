"""AOPC / MoRF (Samek et al. 2017, as used by Rio-Torto et al. 2020; seed-algorithms.md §1.8, §5.4.3).

Tile the reduced attribution into s×s patches, rank them by mean relevance (most relevant first),
perturb the k most relevant patches cumulatively for k = 1..L and record f(x^k), the softmax
probability of a chosen class. AOPC_L = 1/(L+1) · Σ_{k=0..L} (f(x⁰) − f(x^k)) per sample; the MoRF
curve f(x^0..L) is kept as the value family ``morf/<k>`` for figures.

Why it is fast: every perturbed image of the batch is built with one gather and one fill from a
per-pixel patch rank, and the N·L images go through the model in chunks of ``chunk`` images, so
there is no Python loop over samples, patches or steps and memory is bounded by ``chunk`` whatever
L is. f(x⁰) is the runner's clean forward (``ctx.logits``). ``chunk = 0`` (the default) means the
batch size N that the runner gives the metric: on a CPU larger chunks cost more per image
(activations fall out of cache; measured 1.03× the plain-forward floor at N, 1.2–1.8× at 4–8·N);
on a GPU a larger chunk may pay off (untested here: no GPU in this task).

The model is called as a whole on the perturbed image, so an in-model explainer–classifier
recomputes its explanation on x^k inside its forward (the source fed the clean image with the
perturbed explanation: a bug not reproduced).

Fills, in the [0, 1] image space of xbench datasets: ``black`` 0, ``white`` 1, ``gray`` 0.5,
``blur`` (the pixels of a Gaussian-blurred copy of the image: σ = ``blur_sigma_patches`` · s pixels,
separable kernel of radius ⌈3σ⌉, replicate padding; blurring at the patch's own scale removes what
the patch carries and keeps its local mean), and ``uniform`` (U(0, 1) per pixel and channel, one
noise image per sample drawn from the seeded ``ctx.generator``, so a patch keeps its noise across
steps). Patches tied in relevance are ordered by a permutation drawn from ``ctx.generator``.
"""

from __future__ import annotations

import math

import torch

from xbench import Family, MetricContext, MetricSpec, Param, hookimpl

from ._common import CLASS_DOC, class_choice, class_probability, constant_maps, defined, explained_class

FILLS = {"black": 0.0, "white": 1.0, "gray": 0.5, "blur": None, "uniform": None}


def patch_grid(height: int, width: int, patch: int, device: torch.device) -> tuple[torch.Tensor, int, int]:
    """Patch index of every pixel (row-major patches; partial patches at the right/bottom border)."""
    gh, gw = math.ceil(height / patch), math.ceil(width / patch)
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    return (rows[:, None] * gw + cols[None, :]).flatten(), gh, gw


def patch_relevance(a: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean of ``a`` (N, H, W) over each patch's pixels inside the image: (N, P)."""
    n, h, w = a.shape
    if patch == 1:
        return a.flatten(1).double()
    pixel_patch, gh, gw = patch_grid(h, w, patch, a.device)
    sums = torch.zeros(n, gh * gw, dtype=torch.float64, device=a.device)
    sums.index_add_(1, pixel_patch, a.flatten(1).double())
    counts = torch.bincount(pixel_patch, minlength=gh * gw).double()
    return sums / counts


def morf_order(relevance: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Patches most relevant first, (N, P) indices; ties broken by a seeded random permutation
    (each patch draws a key, tied patches go in ascending key order).

    One sort by relevance; then only the tied patches (NaN ones included) are sorted again, by run
    of equal values and key, and put back in their run's places."""
    n, p = relevance.shape
    key = torch.rand((n, p), generator=generator, device=relevance.device, dtype=torch.float64)
    values, order = torch.sort(relevance, dim=1, descending=True, stable=True)
    same = (values[:, 1:] == values[:, :-1]) | (values[:, 1:].isnan() & values[:, :-1].isnan())
    if bool(same.any()):
        new_run = torch.ones(n, p, dtype=torch.bool, device=relevance.device)
        new_run[:, 1:] = ~same
        tied = ~new_run
        tied[:, :-1] |= same
        run = new_run.flatten().cumsum(0).view(n, p)[tied]             # members, by run then place
        rows, places = tied.nonzero(as_tuple=True)
        members = order[rows, places]
        by_key = torch.argsort(key[rows, members], stable=True)
        order[rows, places] = members[by_key[torch.argsort(run[by_key], stable=True)]]
    return order


def morf_ranks(relevance: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Rank of every patch, 0 = most relevant (the inverse of :func:`morf_order`)."""
    order = morf_order(relevance, generator)
    n, p = order.shape
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(p, device=relevance.device).expand(n, p))
    return ranks


def blur_matrix(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(size, size) matrix of the 1-D Gaussian filter, radius ⌈3σ⌉, replicate padding folded in."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    rows = torch.arange(size, device=device)[:, None]
    cols = (rows + torch.arange(-radius, radius + 1, device=device)).clamp(0, size - 1)
    return torch.zeros(size, size, device=device, dtype=dtype).index_put_(
        (rows.expand_as(cols), cols), k.expand_as(cols), accumulate=True)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), radius ⌈3σ⌉, replicate padding: two matrix
    products with banded matrices (8–20× faster on a CPU than two depthwise convolutions, which
    round the same sums in another order: they differ by ~1e-7)."""
    h, w = x.shape[-2:]
    return blur_matrix(h, sigma, x.dtype, x.device) @ (x @ blur_matrix(w, sigma, x.dtype, x.device).T)


def fill_source(ctx: MetricContext, fill: str, patch: int):
    """A scalar fill, or the (N, C, H, W) image whose pixels replace perturbed ones (``fill`` and
    ``blur_sigma_patches`` were checked against their Params when the config was read)."""
    if FILLS[fill] is not None:
        return FILLS[fill]
    x = ctx.inputs
    if fill == "uniform":
        return torch.rand(x.shape, generator=ctx.generator, device=x.device, dtype=x.dtype)
    return gaussian_blur(x, float(ctx.params["blur_sigma_patches"]) * patch)


def morf_curve(ctx: MetricContext, a: torch.Tensor, *, patch: int, steps: int, fill: str, choice,
               chunk: int) -> torch.Tensor:
    """f(x^k) for k = 0..L, (N, L+1), with L = min(steps, number of patches)."""
    x = ctx.inputs
    n, c, h, w = x.shape
    module = ctx.model.module
    pixel_patch, gh, gw = patch_grid(h, w, patch, x.device)
    ranks = morf_ranks(patch_relevance(a, patch), ctx.generator)
    steps_l = min(int(steps), gh * gw)
    compact = torch.int16 if gh * gw < 2**15 else torch.int32
    pixel_rank = ranks[:, pixel_patch].to(compact)  # (N, H·W): a pixel is filled from step rank + 1 on
    classes = explained_class(ctx, choice)
    source = fill_source(ctx, fill, patch)
    curve = torch.empty(n, steps_l + 1, dtype=torch.float64, device=x.device)
    curve[:, 0] = class_probability(ctx.logits, classes)
    total = n * steps_l
    chunk = int(chunk) if int(chunk) > 0 else n
    for start in range(0, total, chunk):
        j = torch.arange(start, min(start + chunk, total), device=x.device)
        sample, k = j // steps_l, j % steps_l + 1
        hit = (pixel_rank[sample] < k.to(compact)[:, None]).view(-1, 1, h, w)
        perturbed = x[sample]
        if isinstance(source, float):
            perturbed.masked_fill_(hit, source)
        else:
            perturbed = torch.where(hit, source[sample], perturbed)
        with torch.no_grad():
            curve[sample, k] = class_probability(module(perturbed), classes[sample])
    return curve


def aopc(ctx: MetricContext) -> dict[str, torch.Tensor]:
    a = ctx.attribution.float()
    p = ctx.params
    curve = morf_curve(ctx, a, patch=int(p["patch"]), steps=int(p["steps"]), fill=p["fill"], choice=p["class"],
                       chunk=int(p["chunk"]))
    ctx.flag(constant_maps(a) & defined(ctx), "constant attribution: patch order is a seeded random permutation")
    out = {"aopc": (curve[:, :1] - curve).mean(1), "morf": {k: curve[:, k] for k in range(curve.shape[1])}}
    out.update(removal_check(ctx, p["fill"]))
    return out


def removal_check(ctx: MetricContext, fill: str) -> dict[str, torch.Tensor]:
    """``in_distribution`` (1 or 0 per sample) where the dataset says which fills remove content from
    its images (``Dataset.info["removal_fills"]``: its background value and blur): black patches on a
    white background add strokes instead of removing them, and such a curve measures how the model
    reacts to out-of-distribution inputs, not what the explanation found. Flagged when it is so."""
    fills = (getattr(ctx.dataset, "info", None) or {}).get("removal_fills")
    if fills is None:
        return {}
    n = len(ctx.inputs)
    inside = fill in fills
    if not inside:
        ctx.flag(torch.ones(n, dtype=torch.bool), f"fill {fill!r} does not remove content from these images (fills "
                                                   f"that do: {', '.join(fills)}): an out-of-distribution perturbation")
    return {"in_distribution": torch.full((n,), float(inside), dtype=torch.float64, device=ctx.device)}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="aopc", score=aopc, category="faithfulness",
        values={"aopc": True, "morf": Family(None, level="step"), "in_distribution": None},
        params={"patch": Param(8, "side of the square patches removed at each step, in pixels", ge=1),
                "steps": Param(100, "L, the most patches removed (at most the number of patches)", ge=1),
                "fill": Param("black", "what replaces a removed patch", choices=tuple(FILLS), label=True),
                "class": Param("target", CLASS_DOC, check=class_choice),
                "blur_sigma_patches": Param(0.5, "σ of the blur fill, in patch sides", gt=0),
                "chunk": Param(0, "perturbed images per forward pass; 0 = the batch size", ge=0)},
        description="Area over the MoRF perturbation curve (Samek et al.; Rio-Torto et al. 2020): s×s patches "
                    "by mean relevance, L = min(steps, patches) cumulative fills (black, white, gray, blur, "
                    "uniform), f = softmax probability of the chosen class; morf/<k> is the curve.",
    )
