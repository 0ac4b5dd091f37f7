"""Expanding Captum methods: SmoothGrad and VarGrad against Captum's NoiseTunnel with a per-image σ,
DeepLiftShap against Captum and against DeepLIFT's mean over baselines, and the shared memory
budget (chunking never changes a deterministic result; a CUDA out-of-memory error halves the chunk;
random draws come from the run's generator).

The cross-check against Captum (NoiseTunnel, DeepLiftShap) is a registered verification
(plugins/verifications/methods_expanding.py), which `xbench verify` and
tests/test_verification.py run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.plugins.methods import _chunking
from xbench.registry import load_registry
from xbench.specs import defaults

INFO = DatasetInfo("toy", 3, 12, 12, ("a", "b", "c"))


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3)).eval()


def explain(name, module, x, t, seed=0, **params):
    spec = load_registry().get("methods", name).spec
    gen = torch.Generator().manual_seed(seed) if spec.stochastic else None
    return run_method(spec, TrainedModel(module, INFO, {}), x, t, {**defaults(spec.params), **params},
                      generator=gen)


def images_of_different_ranges() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 12, 12, generator=g)
    return x * torch.tensor([1.0, 0.25, 4.0]).view(3, 1, 1, 1) + torch.tensor([0.0, 0.5, -2.0]).view(3, 1, 1, 1)


# ----------------------------------------------------------------------------- cross-checks

# ----------------------------------------------------------------------------- tests

def test_smoothgrad_of_a_linear_model_is_its_weights_and_vargrad_is_zero():
    # the gradient of a linear model is w whatever the noise: a forgotten division by the image's
    # range (the method differentiates the rescaled image) would give w · range instead
    torch.manual_seed(0)
    linear = nn.Linear(3 * 12 * 12, 3)
    net = nn.Sequential(nn.Flatten(), linear).eval()
    x, t = images_of_different_ranges(), torch.tensor([2, 0, 1])
    w = linear.weight.detach()[t].view(3, 3, 12, 12)
    torch.testing.assert_close(explain("smoothgrad", net, x, t, samples=4), w, rtol=1e-4, atol=1e-6)
    assert explain("vargrad", net, x, t, samples=4).abs().max() < 1e-9


def test_vargrad_sigma_follows_each_images_range():
    # f = Σ v ⊙ x²: ∂f/∂x = 2 v ⊙ (x + ε), so VarGrad = 4 v² σ_i² with σ_i = noise × range_i
    v = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(4)) + 0.5

    class Quadratic(nn.Module):
        def forward(self, x):
            s = (v * x * x).flatten(1).sum(1)
            return torch.stack([s, -s], 1)

    x, t = images_of_different_ranges(), torch.zeros(3, dtype=torch.long)
    out = explain("vargrad", Quadratic(), x, t, samples=400, noise=0.1)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(3, 1, 1, 1)
    expected = 4 * v * v * (0.1 * span) ** 2
    ratio = (out / expected).flatten(1).mean(1)  # the sample variance of 400 draws, averaged over 432 pixels
    torch.testing.assert_close(ratio, torch.ones(3), rtol=0.03, atol=0)


def test_deeplift_shap_is_the_mean_of_deeplift_over_its_levels_and_complete():
    net = conv_net(6)
    x, t = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(7)), torch.tensor([1, 2, 0])
    shap = explain("deeplift-shap", net, x, t, samples=3, baselines="levels")
    levels = [explain("deeplift", net, x, t, baseline=b) for b in (0.0, 0.5, 1.0)]
    torch.testing.assert_close(shap, sum(levels) / 3, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # completeness: Σ attributions = f(x) − mean_b f(b)
        fx = net(x).gather(1, t[:, None])[:, 0]
        fb = torch.stack([net(torch.full_like(x, b)).gather(1, t[:, None])[:, 0] for b in (0.0, 0.5, 1.0)]).mean(0)
    torch.testing.assert_close(shap.sum((1, 2, 3)), fx - fb, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name, params", [("integrated-gradients", {"steps": 8}), ("occlusion", {"window": 4, "stride": 4}),
                                          ("deeplift-shap", {"samples": 3, "baselines": "levels"})])
def test_memory_budget_chunks_without_changing_deterministic_results(name, params):
    net = conv_net(8)
    x, t = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(9)), torch.tensor([0, 1, 2, 0, 1])
    whole = explain(name, net, x, t, **params)
    one_row = explain(name, net, x, t, memory_mb=1e-6, **params)
    torch.testing.assert_close(one_row, whole, rtol=1e-5, atol=1e-7)


def test_rows_follow_the_budget_and_the_model():
    net = conv_net()
    x = torch.rand(2, 3, 12, 12)
    per_row = _chunking.row_bytes(net, x)
    # the activations of one row: two conv outputs and two ReLUs (6×12×12 each), pool, flatten, linear
    activations = 4 * (4 * 6 * 144 + 24 + 24 + 3)
    assert per_row == 2 * (activations + 4 * 3 * 144)
    assert _chunking.rows_within(net, x, per_row * 10 / 2**20) == 10
    assert _chunking.rows_within(net, x, 1e-9) == 1


def test_out_of_memory_halves_the_chunk_and_repeats_the_same_draws():
    seen: list[tuple[int, float]] = []

    def attempt(rows: int) -> torch.Tensor:
        draw = float(torch.rand(1))
        seen.append((rows, draw))
        if rows > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.tensor(rows)

    assert int(_chunking.with_backoff(attempt, 16, "toy")) == 2
    assert [r for r, _ in seen] == [16, 8, 4, 2]
    assert len({d for _, d in seen}) == 1  # every retry started from the same random state
    with pytest.raises(Exception, match="even with one model input"):
        _chunking.with_backoff(lambda rows: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("oom")), 4, "toy")


@pytest.mark.parametrize("name", ["gradient-shap", "smoothgrad", "deeplift-shap"])
def test_random_draws_come_from_the_runs_generator_and_leave_global_state(name):
    net = conv_net(10)
    x, t = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(11)), torch.tensor([0, 2])
    params = {"samples": 3} if name != "gradient-shap" else {"samples": 3, "stdevs": 0.1}
    import numpy as np

    np.random.seed(123)
    torch.manual_seed(123)
    a = explain(name, net, x, t, seed=1, **params)
    after = (torch.rand(1), np.random.rand())
    np.random.seed(999)  # other global states: the same maps
    torch.manual_seed(999)
    b = explain(name, net, x, t, seed=1, **params)
    c = explain(name, net, x, t, seed=2, **params)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    np.random.seed(123)
    torch.manual_seed(123)
    explain(name, net, x, t, seed=1, **params)
    assert (torch.rand(1), np.random.rand()) == after  # the global generators were restored
