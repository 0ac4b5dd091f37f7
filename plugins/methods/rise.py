"""RISE (Petsiuk et al., BMVC 2018): randomised input sampling for explanation, batched on the device.

``masks`` random masks: each a ``cells`` × ``cells`` grid of cells kept with probability ``p``,
upsampled bilinearly to (cells + 1) × the cell size (cell size = ⌈H / cells⌉ × ⌈W / cells⌉) and
cropped to H × W at a random shift within one cell; the map of class t is
S_t = Σ_i f_t(x ⊙ M_i) · M_i / (masks · p), with f_t the softmax probability of the target class.
The upsampling is the authors' ``skimage.transform.resize(order=1, mode="reflect",
anti_aliasing=False)``, written as two interpolation matrices (rows and columns) so that all masks
come from one batched product; it equals scikit-image's resize (checked in the tests).

Our own implementation: no RISE is in Captum, Quantus or pytorch-grad-cam, and the authors' code
builds the masks in NumPy one by one. One set of masks per batch, drawn from the run's seeded
generator, serves every image of the batch (as the authors' code does); the N·masks masked images
run in chunks that fit ``memory_mb``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from xbench import MethodSpec, Param, TrainedModel, hookimpl

from ._chunking import MEMORY_PARAM, rows_within, with_backoff
from ._surgery import attribution_ready


def resize_matrix(size_in: int, size_out: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """(size_out, size_in) weights of linear interpolation with half-pixel centres and NumPy's
    ``reflect`` boundary (mirror without repeating the edge): scikit-image's ``resize`` with
    ``order=1, mode="reflect"`` along one axis."""
    out = torch.arange(size_out, device=device, dtype=torch.float64)
    u = (out + 0.5) * (size_in / size_out) - 0.5
    lo = torch.floor(u)
    frac = u - lo
    lo = lo.long()

    def reflect(i: torch.Tensor) -> torch.Tensor:
        if size_in == 1:
            return torch.zeros_like(i)
        period = 2 * (size_in - 1)
        i = torch.remainder(i, period)
        return torch.where(i >= size_in, period - i, i)

    weights = torch.zeros(size_out, size_in, device=device, dtype=torch.float64)
    rows = torch.arange(size_out, device=device)
    weights.index_put_((rows, reflect(lo)), 1 - frac, accumulate=True)
    weights.index_put_((rows, reflect(lo + 1)), frac, accumulate=True)
    return weights.to(dtype)


def rise_masks(count: int, cells: int, p: float, height: int, width: int, generator: torch.Generator,
               device=None, dtype=torch.float32) -> torch.Tensor:
    """``count`` RISE masks (count, H, W) in [0, 1]: grids drawn first, then the shifts."""
    grid = (torch.rand((count, cells, cells), generator=generator, device=device) < p).to(dtype)
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    up_h, up_w = (cells + 1) * cell_h, (cells + 1) * cell_w
    shift_y = torch.randint(0, cell_h, (count,), generator=generator, device=device)
    shift_x = torch.randint(0, cell_w, (count,), generator=generator, device=device)
    rows = resize_matrix(cells, up_h, device, dtype)   # (up_h, cells)
    cols = resize_matrix(cells, up_w, device, dtype)   # (up_w, cells)
    ys = shift_y[:, None] + torch.arange(height, device=device)[None, :]   # (count, H)
    xs = shift_x[:, None] + torch.arange(width, device=device)[None, :]    # (count, W)
    # M_i = R[ys_i] · grid_i · C[xs_i]ᵀ: only the rows and columns the crop keeps
    return torch.einsum("nhc,ncd,nwd->nhw", rows[ys], grid, cols[xs])


def rise(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any], *,
         generator: torch.Generator) -> torch.Tensor:
    count, cells, p = int(params["masks"]), int(params["cells"]), float(params["p"])
    n, _, h, w = x.shape
    masks = rise_masks(count, cells, p, h, w, generator, device=x.device, dtype=x.dtype)
    target = target.to(x.device)
    with torch.no_grad(), attribution_ready(model.module) as m:

        def attempt(rows: int) -> torch.Tensor:
            scores = torch.empty(n, count, device=x.device, dtype=x.dtype)
            for start in range(0, n * count, rows):
                j = torch.arange(start, min(start + rows, n * count), device=x.device)
                i, k = j // count, j % count
                probs = m(x[i] * masks[k][:, None]).float().softmax(1)
                scores[i, k] = probs.gather(1, target[i][:, None])[:, 0].to(x.dtype)
            return scores

        scores = with_backoff(attempt, rows_within(m, x, params["memory_mb"], grad=False), "rise")
    return torch.einsum("nk,khw->nhw", scores, masks)[:, None] / (count * p)


@hookimpl
def xbench_methods():
    yield MethodSpec(
        name="rise", explain=rise, stochastic=True,
        params={"masks": Param(2000, "random masks per batch (Petsiuk et al.: 4000 for ResNet-50 on ImageNet)", ge=1),
                "cells": Param(7, "s: the masks' grid is s × s cells (Petsiuk et al.: 7)", ge=1),
                "p": Param(0.5, "probability that a cell is kept (Petsiuk et al.: 0.5)", gt=0, le=1),
                "memory_mb": MEMORY_PARAM},
        description="RISE (Petsiuk et al. 2018): the target's probability on randomly masked copies, averaged "
                    "with the masks as weights; smooth random masks on a coarse grid, batched on the device.",
    )
