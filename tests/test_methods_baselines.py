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


def torchray_hit(mask: torch.Tensor, point: tuple[float, float], tolerance: int = 15) -> bool:
    """TorchRay's PointingGame.evaluate: a hit when a mask pixel lies within ``tolerance`` of the
    point (u, v) = (x, y), pixel centres at integer coordinates."""
    v, u = torch.meshgrid((torch.arange(mask.shape[0], dtype=torch.float32) - point[1]) ** 2,
                          (torch.arange(mask.shape[1], dtype=torch.float32) - point[0]) ** 2, indexing="ij")
    return bool((mask & ((v + u) < tolerance ** 2)).any())


@pytest.mark.parametrize("height, width", [(12, 10), (11, 9), (224, 224), (375, 500)])
def test_centre_peaks_at_the_true_centre_or_at_torchrays_point(registry, height, width):
    x = torch.rand(2, 3, height, width)
    true = run(registry, "centre", x)[0, 0]
    ray = run(registry, "centre", x, peak="torchray")[0, 0]
    # the default is symmetric about ((H−1)/2, (W−1)/2): flipping either axis leaves it unchanged
    assert torch.allclose(true, true.flip(0)) and torch.allclose(true, true.flip(1))
    peak = divmod(int(ray.argmax()), width)
    assert peak == (height // 2, width // 2) and (ray == ray.max()).sum() == 1
    # TorchRay's center baseline points at (W/2, H/2): on even sides the peak pixel is that point, so
    # TorchRay's pointing game scores it exactly as TorchRay's own center row; on odd sides it is
    # half a pixel below and right of it
    point = (width / 2, height / 2)
    assert abs(peak[1] - point[0]) <= 0.5 and abs(peak[0] - point[1]) <= 0.5
    if height % 2 == 0 and width % 2 == 0:
        assert (peak[1], peak[0]) == point
        yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        for dy in range(-20, 21, 5):
            box = (yy - height // 2 - dy).abs().le(2) & (xx - width // 2 - 14).abs().le(2)
            assert torchray_hit(box, point) == torchray_hit(box, (float(peak[1]), float(peak[0])))


def test_centre_peak_must_be_a_known_rule(registry):
    from xbench.config import check_param, plugin_params
    from xbench.errors import UsageError

    spec = registry.get("methods", "centre").spec
    with pytest.raises(UsageError, match="'centre', 'torchray'"):
        check_param("test", "methods", "centre", "peak", "torch-ray", plugin_params("methods", spec))
