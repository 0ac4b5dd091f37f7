"""Max- and Avg-Sensitivity against Captum's ``sensitivity_max`` and Quantus' MaxSensitivity and
AvgSensitivity on the same model, maps and perturbations; edge cases.

The cross-check against Captum and Quantus is a registered verification
(plugins/verifications/metrics_robustness.py), which `xbench verify` and
tests/test_verification.py run."""

from __future__ import annotations

import torch
from torch import nn

from xbench import TrainedModel, testing
from xbench.attribution import run_method
from xbench.plugins.metrics import sensitivity as sm
from xbench.registry import load_registry
from xbench.specs import defaults

SPEC = next(iter(sm.xbench_metrics()))


def setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2)).eval()
    model = TrainedModel(net, None, {})
    split = testing.planted_split(6, size=16, seed=3)
    spec = load_registry().get("methods", "saliency").spec
    params = defaults(spec.params)

    def explainer(model, x, targets):
        return run_method(spec, model, x, targets, params)

    return model, split, explainer


def test_an_explanation_that_ignores_the_input_has_zero_sensitivity_and_more_noise_more():
    model, split, explainer = setup()
    fixed = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2)) + 0.1

    ctx = testing.metric_context(model, split, attribution=fixed, explain=lambda m, x, t: fixed.clone())
    out = testing.score(SPEC, ctx, samples=3)
    assert torch.equal(out["max_sensitivity"], torch.zeros(6))
    low = testing.score(SPEC, testing.metric_context(model, split, attribution=explainer(model, split.images,
                        split.labels), explain=explainer), radius=0.01, samples=4)
    high = testing.score(SPEC, testing.metric_context(model, split, attribution=explainer(model, split.images,
                         split.labels), explain=explainer), radius=0.3, samples=4)
    assert (high["avg_sensitivity"] > low["avg_sensitivity"]).all()
    assert (low["max_sensitivity"] >= low["avg_sensitivity"]).all()


def test_a_stochastic_method_is_compared_with_its_own_draws():
    # an explanation that is pure noise drawn afresh per call, but seeded alike per re-explanation
    # (as the runner seeds them): its clean re-explanation equals a zero-radius perturbation's
    model, split, _ = setup()

    def seeded_noise(m, x, t):
        return torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) + 0 * x

    other = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(99))  # the batch's own draw
    ctx = testing.metric_context(model, split, attribution=other, explain=seeded_noise)
    out = testing.score(SPEC, ctx, samples=3, radius=1e-9)
    assert torch.equal(out["max_sensitivity"], torch.zeros(6))


def test_a_zero_map_is_undefined_and_flagged():
    model, split, _ = setup()
    zero = torch.zeros(6, 1, 16, 16)
    ctx = testing.metric_context(model, split, attribution=zero, explain=lambda m, x, t: torch.zeros_like(x))
    out = testing.score(SPEC, ctx, samples=2)
    assert torch.isnan(out["max_sensitivity"]).all()
    assert any("zero everywhere" in reason for _, reason in ctx.notes)
