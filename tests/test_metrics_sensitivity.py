"""Max- and Avg-Sensitivity against Captum's ``sensitivity_max`` and Quantus' MaxSensitivity and
AvgSensitivity on the same model, maps and perturbations; edge cases.

``crosscheck_*`` return (max |ours − reference|, tolerance) for the verification record."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xbench import TrainedModel, testing
from xbench.attribution import reduce_attribution, run_method
from xbench.plugins.metrics import sensitivity as sm
from xbench.registry import load_registry
from xbench.specs import defaults

SPEC = next(iter(sm.xbench_metrics()))
SAMPLES, RADIUS = 5, 0.05


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


def ours() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model, split, explainer = setup()
    raw = explainer(model, split.images, split.labels)
    ctx = testing.metric_context(model, split, attribution=raw, explain=explainer, seed=11)
    out = testing.score(SPEC, ctx, samples=SAMPLES, radius=RADIUS)
    deltas = sm.perturbations(split.images, SAMPLES, RADIUS, torch.Generator().manual_seed(11))
    return out["max_sensitivity"], out["avg_sensitivity"], deltas


def crosscheck_captum() -> tuple[float, float]:
    """Max-Sensitivity against ``captum.metrics.sensitivity_max`` with the same perturbations (Captum
    expands each example ``n_perturb_samples`` times in a row; its perturb_func is given ours in that
    order) and the same reduced saliency maps. Definition difference: none (both divide by the clean
    map's Frobenius norm)."""
    from captum.metrics import sensitivity_max

    model, split, explainer = setup()
    ours_max, _, deltas = ours()
    n = len(split.images)
    arranged = deltas.transpose(0, 1).reshape(n * SAMPLES, *deltas.shape[2:])  # row i·S + j = sample i, draw j

    def explanation(inputs, target):  # Captum hands the inputs as a tuple of tensors
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        return (reduce_attribution(explainer(model, x, target), (16, 16), "abs-luminance"),)

    theirs = sensitivity_max(explanation, split.images, perturb_func=lambda x: x + arranged,
                             n_perturb_samples=SAMPLES, target=split.labels)
    return float((ours_max - theirs.double()).abs().max()), 1e-6


def crosscheck_quantus(kind: str) -> tuple[float, float]:
    """Max- or Avg-Sensitivity against Quantus (0.6) with our perturbations fed in its order (one
    whole batch per draw), maps unnormalised, no absolute value."""
    import quantus

    model, split, explainer = setup()
    ours_max, ours_avg, deltas = ours()
    draws = iter(deltas)

    def perturb(arr, **_kwargs):
        return arr + next(draws).reshape(arr.shape).numpy()

    def explain_func(model, inputs, targets, **_kwargs):
        x = torch.as_tensor(inputs).float()
        maps = reduce_attribution(explainer(TrainedModel(model, None, {}), x, torch.as_tensor(targets).long()),
                                  tuple(x.shape[-2:]), "abs-luminance")
        return maps[:, None].numpy()

    metric = (quantus.MaxSensitivity if kind == "max" else quantus.AvgSensitivity)(
        nr_samples=SAMPLES, perturb_func=perturb, normalise=False, abs=False, disable_warnings=True)
    x = split.images.numpy()
    a = explain_func(model.module, x, split.labels.numpy())
    theirs = np.asarray(metric(model=model.module, x_batch=x, y_batch=split.labels.numpy(), a_batch=a,
                               explain_func=explain_func, device="cpu"))
    mine = (ours_max if kind == "max" else ours_avg).numpy()
    return float(np.abs(mine - theirs).max()), 1e-5


def test_max_sensitivity_matches_captum():
    diff, tol = crosscheck_captum()
    assert diff <= tol, (diff, tol)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_sensitivity_matches_quantus(kind):
    pytest.importorskip("quantus")
    diff, tol = crosscheck_quantus(kind)
    assert diff <= tol, (diff, tol)


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
