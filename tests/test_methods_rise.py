"""RISE: masks and saliency against a NumPy transcription of the authors' code (scikit-image
resize with reflect boundary, the same grids and shifts), the expectation it estimates, and a
model that reads one corner only.

``crosscheck_rise`` returns (max |ours − reference|, tolerance) for the verification record.

The cross-check against the authors' code is a registered verification
(plugins/verifications/methods_expanding.py), which `xbench verify` and
tests/test_verification.py run."""

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
