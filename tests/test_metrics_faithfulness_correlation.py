"""Faithfulness Correlation against Quantus with the same random subsets, and on a linear model
whose answer is known.

The cross-check against Quantus is a registered verification
(plugins/verifications/metrics_correlation.py), which `xbench verify` and
tests/test_verification.py run."""

from __future__ import annotations

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
