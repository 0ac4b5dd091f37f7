"""Deletion and insertion (Petsiuk et al. 2018, RISE): the probability of the explained class as the
most relevant pixels are deleted from the image, or inserted into a start image that lacks them.

Pixels (``patch = 1``) or small s×s patches (ranked by their mean relevance, ties by a seeded random
permutation, as AOPC) are taken most relevant first in ``steps`` equal fractions t_j = j/steps,
j = 0..steps: at t_j the first round(t_j·P) of the P patches are deleted (replaced by the ``fill``:
``black`` 0, ``blur`` the pixels of a Gaussian-blurred copy, σ = ``blur_sigma`` pixels, or ``mean``
each image's per-channel mean) or inserted (copied from the image onto the ``start``: ``blurred``,
the blurred copy, or ``black``). f is the softmax probability of the chosen class (param ``class``);
the curves are ``deletion/<j>`` and ``insertion/<j>`` (j the step), and ``deletion`` and
``insertion`` their areas under the curve over t ∈ [0, 1] by the trapezoid rule. A lower deletion
and a higher insertion AUC are better.

Work shared across steps and images: the deletion curve starts at the clean forward pass
(``ctx.logits``) and the insertion curve ends there; with the black fill (or start) the image with
every pixel replaced is the same black image for every sample, so one forward pass of one image
gives that end of the curve; every other step is one forward pass of the batch. So deletion to
black costs steps − 1 forward passes of the batch, insertion steps (RISE's loop: steps + 2,
counting its clean pass). Batching the steps of several images together was measured slower on a
CPU (larger batches cost more per image there, as for AOPC).

RISE's defaults: deletion to black, insertion from a blur with σ = 5 (RISE used an 11×11 kernel,
zero padding; here the radius is ⌈3σ⌉ with replicate padding, so borders do not darken), and
steps of 224·8 pixels on 224×224 images (28 steps); ``steps`` fixes the number instead.
"""

from __future__ import annotations

import torch

from xbench import Family, MetricContext, MetricSpec, Param, hookimpl

from ._common import CLASS_DOC, class_choice, class_probability, constant_maps, defined, explained_class
from .faithfulness import gaussian_blur, morf_order, patch_grid, patch_relevance

DELETION_FILLS = ("black", "blur", "mean")
INSERTION_STARTS = ("blurred", "black")


def substrate(x: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    """The image whose pixels replace (deletion) or underlie (insertion) the original ones."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    return gaussian_blur(x, sigma)


def patch_pixels(height: int, width: int, patch: int, device: torch.device) -> torch.Tensor:
    """(P, patch²) row-major pixel indices of every patch; a partial patch at the border repeats its
    first pixel (copying a pixel twice is copying it once)."""
    pixel_patch, gh, gw = patch_grid(height, width, patch, device)
    by_patch = torch.argsort(pixel_patch, stable=True)
    counts = torch.bincount(pixel_patch, minlength=gh * gw)
    first = counts.cumsum(0) - counts
    slot = torch.minimum(torch.arange(patch * patch, device=device), counts[:, None] - 1)
    return by_patch[first[:, None] + slot]


def curve(ctx: MetricContext, a: torch.Tensor, *, insert: bool, patch: int, steps: int, other: str,
          sigma: float, choice) -> torch.Tensor:
    """f at t_j = j/steps, j = 0..steps, (N, steps + 1) float64."""
    x = ctx.inputs
    n, c, h, w = x.shape
    pixels = patch_pixels(h, w, patch, x.device)
    order = morf_order(patch_relevance(a, patch), ctx.generator)  # patches, most relevant first
    source = substrate(x, other, sigma)
    image = (source if insert else x).contiguous().clone()        # step 0, changed in place step by step
    fill = (x if insert else source).reshape(n, c, h * w)
    classes = explained_class(ctx, choice)
    out = torch.empty(n, steps + 1, dtype=torch.float64, device=x.device)
    clean, bare = (steps, 0) if insert else (0, steps)  # the image itself; every pixel from the substrate
    out[:, clean] = class_probability(ctx.logits, classes)
    module = ctx.model.module
    done = 0
    with torch.no_grad():
        if other == "black":  # the bare image is the same for every sample: one forward pass
            out[:, bare] = class_probability(module(source[:1]).expand(n, -1), classes)
        for j in range(steps + 1):
            taken = int(j * len(pixels) / steps + 0.5)   # the first patches, most relevant first
            index = pixels[order[:, done:taken]].view(n, 1, -1).expand(n, c, -1)
            image.view(n, c, h * w).scatter_(2, index, fill.gather(2, index))
            done = taken
            if j != clean and not (j == bare and other == "black"):
                out[:, j] = class_probability(module(image), classes)
    return out


def trapezoid(values: torch.Tensor) -> torch.Tensor:
    """Area under (N, steps + 1) values over equally spaced t ∈ [0, 1]."""
    steps = values.shape[1] - 1
    return (values.sum(1) - (values[:, 0] + values[:, -1]) / 2) / steps


def _score(ctx: MetricContext, insert: bool) -> dict[str, torch.Tensor]:
    p = ctx.params
    a = ctx.attribution.float()
    other = p["start"] if insert else p["fill"]
    values = curve(ctx, a, insert=insert, patch=int(p["patch"]), steps=int(p["steps"]), other=other,
                   sigma=float(p["blur_sigma"]), choice=p["class"])
    ctx.flag(constant_maps(a) & defined(ctx), "constant attribution: patch order is a seeded random permutation")
    name = "insertion" if insert else "deletion"
    return {name: trapezoid(values), f"{name}_curve": {j: values[:, j] for j in range(values.shape[1])}}


def deletion(ctx: MetricContext) -> dict[str, torch.Tensor]:
    return _score(ctx, insert=False)


def insertion(ctx: MetricContext) -> dict[str, torch.Tensor]:
    return _score(ctx, insert=True)


def _params(kind: str) -> dict[str, Param]:
    common = {"patch": Param(1, "side of the square patches taken at once, in pixels (1 = pixel-wise)", ge=1),
              "steps": Param(16, "number of equal fractions of the patches, the curve's steps", ge=1),
              "blur_sigma": Param(5.0, "σ of the blurred image, in pixels (RISE: 5)", gt=0),
              "class": Param("target", CLASS_DOC, check=class_choice)}
    if kind == "deletion":
        return {"fill": Param("black", "what replaces a deleted pixel", choices=DELETION_FILLS, label=True), **common}
    return {"start": Param("blurred", "the image the pixels are inserted into", choices=INSERTION_STARTS, label=True),
            **common}


SUMMARIES = {
    "deletion": (False, "delete the most relevant pixels (or patches) in equal steps (black, blur or mean fill)",
                 "Lower"),
    "insertion": (True, "insert the most relevant pixels (or patches) in equal steps into a blurred (or black) "
                        "image", "Higher"),
}


@hookimpl
def xbench_metrics():
    for name, (higher, what, better) in SUMMARIES.items():
        yield MetricSpec(
            name=name, score=insertion if higher else deletion, category="faithfulness", params=_params(name),
            values={name: higher, f"{name}_curve": Family(higher, level="step", name=name)},
            description=f"{name.capitalize()} (Petsiuk et al. 2018): {what}; {name} = area under the "
                        f"class-probability curve {name}/<step>. {better} is better.",
        )
