"""Faithfulness Correlation against Quantus with the same random subsets, and on a linear model
whose answer is known.

``crosscheck_*`` return (max |ours − reference|, tolerance) for the verification record."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from xbench import TrainedModel, testing
from xbench.plugins.metrics import faithfulness_correlation as fc

SPEC = next(iter(fc.xbench_metrics()))
RUNS, SUBSET = 30, 20


class Linear(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 12, 12, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([-s, s], 1)


def _setup(maps=None, **params):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                        nn.Linear(36, 2)).eval()
    split = testing.planted_split(6, size=12, seed=2, patch=4)
    if maps is None:
        maps = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    ctx = testing.metric_context(TrainedModel(net, None, {}), split, attribution=maps, seed=9)
    return net, split, maps, testing.score(SPEC, ctx, runs=RUNS, subset=SUBSET, **params)


def crosscheck_quantus() -> tuple[float, float]:
    """Against quantus.FaithfulnessCorrelation (0.6) on a one-channel model with the same subsets
    (fed to its ``np.random.choice`` calls in its order: run by run, sample by sample), fill
    'black' (each image's minimum in both), logits, maps unnormalised."""
    import quantus

    net, split, maps, out = _setup()
    subsets = fc.random_subsets(torch.Generator().manual_seed(9), 6, RUNS, 144, SUBSET).numpy()
    order = iter(subsets.reshape(-1, SUBSET))
    metric = quantus.FaithfulnessCorrelation(nr_runs=RUNS, subset_size=SUBSET, perturb_baseline="black",
                                             normalise=False, abs=False, return_aggregate=False,
                                             disable_warnings=True)
    with mock.patch.object(np.random, "choice", side_effect=lambda *a, **k: next(order)):
        theirs = np.asarray(metric(model=net, x_batch=split.images.numpy(), y_batch=split.labels.numpy(),
                                   a_batch=maps.numpy(), device="cpu"))
    return float(np.abs(out["faithfulness_correlation"].numpy() - theirs).max()), 1e-6


def test_agrees_with_quantus():
    pytest.importorskip("quantus")
    diff, tol = crosscheck_quantus()
    assert diff <= tol, (diff, tol)


def test_the_true_contributions_of_a_linear_model_correlate_perfectly():
    # with fill 0 (black on images whose minimum is 0), Δlogit = Σ_S w·x exactly: the map w ⊙ x
    # correlates 1 with it, its negative −1, a random map less
    net = Linear().eval()
    split = testing.planted_split(6, size=12, seed=2, patch=4)
    x = split.images.clone()
    x[:, :, 0, 0] = 0.0
    split = type(split)(images=x, labels=torch.ones(6, dtype=torch.long), masks=split.masks)
    truth = (net.w.detach() * x)
    for maps, want in ((truth, 1.0), (-truth, -1.0)):
        ctx = testing.metric_context(TrainedModel(net, None, {}), split, attribution=maps, reduction="sum")
        got = testing.score(SPEC, ctx, runs=RUNS, subset=SUBSET)["faithfulness_correlation"]
        torch.testing.assert_close(got, torch.full((6,), want, dtype=torch.float64), rtol=0, atol=1e-9)
    ctx = testing.metric_context(TrainedModel(net, None, {}), split, attribution=torch.rand(6, 1, 12, 12),
                                 reduction="sum")
    assert (testing.score(SPEC, ctx, runs=RUNS, subset=SUBSET)["faithfulness_correlation"] < 0.9).all()


def test_a_constant_map_is_undefined_and_flagged():
    _, _, _, out = _setup(maps=torch.ones(6, 1, 12, 12))
    assert torch.isnan(out["faithfulness_correlation"]).all()


def test_subsets_are_without_replacement():
    s = fc.random_subsets(torch.Generator().manual_seed(0), 3, 4, 50, 20)
    assert s.shape == (4, 3, 20)
    assert all(len(set(row.tolist())) == 20 for row in s.reshape(-1, 20))
