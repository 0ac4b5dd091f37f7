"""RISE: masks and saliency against a NumPy transcription of the authors' code (scikit-image
resize with reflect boundary, the same grids and shifts), the expectation it estimates, and a
model that reads one corner only.

``crosscheck_rise`` returns (max |ours − reference|, tolerance) for the verification record."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.plugins.methods import rise as R
from xbench.registry import load_registry
from xbench.specs import defaults

INFO = DatasetInfo("toy", 1, 20, 28, ("a", "b"))


def authors_masks(grid: np.ndarray, shifts_y, shifts_x, height: int, width: int) -> np.ndarray:
    """eclique/RISE ``generate_masks`` with the grid and shifts given (it draws them in its loop)."""
    from skimage.transform import resize

    n, s, _ = grid.shape
    cell = np.ceil(np.array((height, width)) / s).astype(int)
    up = (s + 1) * cell
    out = np.empty((n, height, width))
    for i in range(n):
        y, x = shifts_y[i], shifts_x[i]
        out[i] = resize(grid[i].astype(float), up, order=1, mode="reflect",
                        anti_aliasing=False)[y:y + height, x:x + width]
    return out


def crosscheck_rise() -> tuple[float, float]:
    """The plugin's maps against the authors' formula Σ_i p_t(x ⊙ M_i)·M_i / (N·p) with the authors'
    masks, built from the same grids and shifts (drawn from the same seeded generator in the same
    order). Definition difference: none (the masks are shared by every image of a batch, as in the
    authors' code)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(12, 2)).eval()
    x, t = torch.rand(3, 1, 20, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1])
    count, cells, p = 60, 5, 0.4
    spec = load_registry().get("methods", "rise").spec
    ours = run_method(spec, TrainedModel(net, INFO, {}), x, t,
                      {**defaults(spec.params), "masks": count, "cells": cells, "p": p, "memory_mb": 1e-6},
                      generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the draws of rise_masks, in its order
    grid = (torch.rand((count, cells, cells), generator=g) < p).numpy()
    cell_h, cell_w = math.ceil(20 / cells), math.ceil(28 / cells)
    sy = torch.randint(0, cell_h, (count,), generator=g).numpy()
    sx = torch.randint(0, cell_w, (count,), generator=g).numpy()
    masks = authors_masks(grid, sy, sx, 20, 28)
    with torch.no_grad():
        probs = np.stack([net(x * torch.from_numpy(m).float()[None, None]).softmax(1).numpy() for m in masks], 1)
    sal = np.einsum("nk,khw->nhw", probs[np.arange(3), :, t.numpy()], masks) / (count * p)
    return float(np.abs(ours[:, 0].double().numpy() - sal).max()), 1e-5


def test_rise_matches_the_authors_formula_and_masks():
    pytest.importorskip("skimage")
    diff, tol = crosscheck_rise()
    assert diff <= tol, (diff, tol)


@pytest.mark.parametrize("cells, size", [(7, 32), (5, 20), (3, 28), (1, 9)])
def test_resize_matrix_is_scikit_images_reflect_resize(cells, size):
    from skimage.transform import resize

    grid = torch.rand(cells, cells, generator=torch.Generator().manual_seed(cells), dtype=torch.float64)
    up = (cells + 1) * math.ceil(size / cells)
    r = R.resize_matrix(cells, up)
    ours = r @ grid @ r.T
    ref = resize(grid.numpy(), (up, up), order=1, mode="reflect", anti_aliasing=False)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_rise_finds_the_only_region_a_model_reads():
    class Corner(nn.Module):  # P(class 0) rises with the brightness of the top-left 6 × 6 corner
        def forward(self, x):
            s = 8 * (x[:, :, :6, :6].mean((1, 2, 3)) - 0.25)
            return torch.stack([s, -s], 1)

    x = torch.full((2, 1, 20, 28), 0.5)
    spec = load_registry().get("methods", "rise").spec
    out = run_method(spec, TrainedModel(Corner(), INFO, {}), x, torch.tensor([0, 0]),
                     {**defaults(spec.params), "masks": 1500, "cells": 5},
                     generator=torch.Generator().manual_seed(0))[:, 0]
    inside, outside = out[:, :6, :6].mean((1, 2)), out[:, 10:, 14:].mean((1, 2))
    assert (inside > outside + 0.05).all(), (inside, outside)


def test_masks_are_in_unit_range_with_mean_p_and_shared_by_the_batch():
    m = R.rise_masks(400, 7, 0.3, 32, 32, torch.Generator().manual_seed(3))
    assert m.shape == (400, 32, 32) and m.min() >= 0 and m.max() <= 1
    assert abs(float(m.mean()) - 0.3) < 0.02
