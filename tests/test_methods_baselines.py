"""Null baselines: the sobel/laplace switch, the random map, the baseline flag; the in-model method returns
the model's own map. (Sobel and Laplace against scipy: plugins/verifications/methods_baselines.py.)"""

import pytest
import torch
from torch import nn

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.errors import XbenchError
from xbench.registry import load_registry
from xbench.specs import defaults

INFO = DatasetInfo("toy", 3, 12, 10, ("a", "b"))


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def run(registry, name, x, model=None, **params):
    spec = registry.get("methods", name).spec
    model = model or TrainedModel(nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 2)), INFO, {})
    return run_method(spec, model, x, torch.zeros(len(x), dtype=torch.long), {**defaults(spec.params), **params})


def test_sobel_is_not_the_laplace_copy_unless_asked(registry):
    x = torch.rand(2, 3, 12, 10)
    laplace = run(registry, "laplace", x)
    assert not torch.allclose(run(registry, "sobel", x), laplace)
    assert torch.equal(run(registry, "sobel", x, legacy_laplace_copy=True), laplace)


def test_random_map_is_uniform_per_pixel_and_follows_the_seed(registry):
    x = torch.rand(64, 3, 12, 10)
    torch.manual_seed(5)
    a = run(registry, "random", x)
    torch.manual_seed(5)
    b = run(registry, "random", x)
    assert a.shape == (64, 1, 12, 10) and torch.equal(a, b)
    assert 0 <= a.min() and a.max() < 1 and abs(a.mean().item() - 0.5) < 0.02
    assert not torch.equal(a[0], a[1])


def test_baselines_are_marked_as_such(registry):
    flags = {n: registry.get("methods", n).spec.baseline for n in registry.names("methods")}
    assert {n for n, b in flags.items() if b} >= {"random", "sobel", "laplace"}
    assert not flags["saliency"] and not flags["grad-cam"] and not flags["in-model"]


class Gated(nn.Module):
    """A stand-in for the joint explainer–classifier: a map in [0, 1] gates the classifier."""

    def __init__(self):
        super().__init__()
        self.explainer = nn.Conv2d(3, 1, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def explain(self, x):
        return torch.sigmoid(self.explainer(x))[:, 0]

    def forward(self, x):
        return self.head((x * self.explain(x)[:, None]).mean((2, 3)))


def test_in_model_returns_the_models_own_explanation(registry):
    net = Gated().eval()
    x = torch.rand(3, 3, 12, 10)
    out = run(registry, "in-model", x, model=TrainedModel(net, INFO, {}, explain=net.explain))
    torch.testing.assert_close(out, net.explain(x).detach())
    assert out.shape == (3, 12, 10) and not out.requires_grad


def test_in_model_without_an_explainer_is_a_clear_error(registry):
    with pytest.raises(XbenchError, match="no in-model explainer.*in_model_explainer"):
        run(registry, "in-model", torch.rand(1, 3, 12, 10))
