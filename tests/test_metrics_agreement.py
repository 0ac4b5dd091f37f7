"""Krishna et al.'s agreement metrics: against a direct transcription of their definitions (as
OpenXAI writes them: NumPy argsort of |attribution|, set intersections, per sample), through a run's
context with a reference method from the registry, and the cases whose answer is known.

The cross-check against the definitions is a registered verification
(plugins/verifications/metrics_correlation.py), which `xbench verify` and
tests/test_verification.py run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xbench import TrainedModel, testing
from xbench.attribution import run_method
from xbench.plugins.metrics import agreement as ag
from xbench.registry import load_registry
from xbench.specs import defaults

SPEC = next(iter(ag.xbench_metrics()))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2)).eval()


def _method(name: str, model, x, t, **params):
    spec = load_registry().get("methods", name).spec
    return run_method(spec, model, x, t, {**defaults(spec.params), **params})


def test_a_method_agrees_fully_with_itself_and_on_magnitude_only_with_its_negative():
    model = TrainedModel(_net(), None, {})
    split = testing.planted_split(4, size=16, seed=5)
    raw = _method("saliency", model, split.images, split.labels, abs=False)
    same = testing.score(SPEC, testing.metric_context(model, split, attribution=raw),
                         reference="saliency", reference_params={"abs": False}, patch=2)
    assert all(bool((v == 1).all()) for v in same.values())
    flipped = testing.score(SPEC, testing.metric_context(model, split, attribution=-raw),
                            reference="saliency", reference_params={"abs": False}, patch=2)
    for fraction in (0.05, 0.1, 0.25):
        assert (flipped[f"feature_agreement/{fraction!r}"] == 1).all()
        assert (flipped[f"rank_agreement/{fraction!r}"] == 1).all()
        assert (flipped[f"sign_agreement/{fraction!r}"] == 0).all()
        assert (flipped[f"signed_rank_agreement/{fraction!r}"] == 0).all()


def test_disjoint_top_features_do_not_agree_and_a_stochastic_reference_is_seeded():
    model = TrainedModel(_net(), None, {})
    split = testing.planted_split(3, size=16, seed=6)
    left = torch.zeros(3, 1, 16, 16)
    left[:, :, :, :8] = torch.rand(3, 1, 16, 8) + 1
    ea = ag.features(left, (16, 16), 4)
    eb = ea.flip(1)  # mirror the feature order: the top half becomes the bottom half
    got = ag.agreement(ea, eb, 4)
    assert (got["feature_agreement"] == 0).all()
    a = testing.score(SPEC, testing.metric_context(model, split, attribution=left, seed=1), reference="random")
    b = testing.score(SPEC, testing.metric_context(model, split, attribution=left, seed=1), reference="random")
    c = testing.score(SPEC, testing.metric_context(model, split, attribution=left, seed=2), reference="random")
    assert all(torch.equal(a[k], b[k]) for k in a) and any(not torch.equal(a[k], c[k]) for k in a)


def test_an_unknown_reference_is_a_config_error():
    with pytest.raises(ValueError, match="reference method 'no-such-method' is not installed"):
        SPEC.validate({**defaults(SPEC.params), "reference": "no-such-method"})
