"""Sparseness (Gini) and Complexity (entropy) against Quantus and closed forms.

The cross-check against Quantus is a registered verification
(plugins/verifications/metrics_complexity.py), which `xbench verify` and
tests/test_verification.py run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xbench import TrainedModel, testing
from xbench.plugins.metrics import complexity as cm
from xbench.plugins.models.small_cnn import SmallCNN

SPECS = {s.name: s for s in cm.xbench_metrics()}


def _maps(n: int = 8, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(n, 1, size, size, generator=g) ** 4  # skewed, as attributions are
    maps[0] = 0
    maps[0, 0, 3, 5] = 2.0  # one pixel holds everything
    maps[1] = 0.5          # every pixel equal
    return maps


def _ours(name: str, maps: torch.Tensor) -> np.ndarray:
    split = testing.planted_split(len(maps), size=maps.shape[-1], seed=1)
    model = TrainedModel(SmallCNN(1, 2, width=4).eval(), None, {})
    ctx = testing.metric_context(model, split, attribution=maps)
    return testing.score(SPECS[name], ctx)[name].numpy()


def test_closed_forms_at_the_extremes():
    n = 16 * 16
    sparse, entropy = _ours("sparseness", _maps()), _ours("complexity", _maps())
    assert sparse[0] == pytest.approx(1 - 1 / n) and entropy[0] == pytest.approx(0.0, abs=1e-12)
    assert sparse[1] == pytest.approx(0.0, abs=1e-12) and entropy[1] == pytest.approx(math.log(n))
    # a map on half the pixels, equal there: Gini 1/2, entropy ln(n/2)
    half = torch.zeros(2, 1, 16, 16)
    half[:, :, :8] = 3.0
    assert _ours("sparseness", half) == pytest.approx([0.5, 0.5])
    assert _ours("complexity", half) == pytest.approx([math.log(n / 2)] * 2)


def test_sign_and_scale_do_not_matter_and_zero_maps_are_undefined():
    maps = _maps()
    for name in SPECS:
        np.testing.assert_allclose(_ours(name, -3 * maps), _ours(name, maps), rtol=1e-6)  # float32 maps
    zero = torch.zeros(2, 1, 16, 16)
    assert np.isnan(_ours("sparseness", zero)).all() and np.isnan(_ours("complexity", zero)).all()
