"""Captum methods: exact answers where the math gives one (linear models, conservation, completeness)."""

import pytest
import torch
from test_methods_toys import relu_chain, tiny_resnet
from torch import nn

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.registry import load_registry
from xbench.specs import defaults

INFO = DatasetInfo("toy", 2, 8, 8, ("a", "b", "c"))


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def explain(registry, name, module, x, t, layers=None, **params):
    spec = registry.get("methods", name).spec
    model = TrainedModel(module.eval(), INFO, layers or {})
    return run_method(spec, model, x, t, {**defaults(spec.params), **params})


def test_input_x_gradient_of_a_linear_model_is_w_times_x_exactly(registry):
    torch.manual_seed(0)
    linear = nn.Linear(2 * 8 * 8, 3)
    module = nn.Sequential(nn.Flatten(), linear)
    x, t = torch.randn(5, 2, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    out = explain(registry, "input-x-gradient", module, x, t)
    expected = x * linear.weight.detach()[t].reshape(5, 2, 8, 8)
    assert torch.equal(out, expected)


def bias_free_relu_net() -> nn.Sequential:
    return relu_chain(channels=2, bias=False, seed=1)


def test_lrp_epsilon_relevance_sums_to_the_explained_logit_without_biases(registry):
    module = bias_free_relu_net()
    x = 100 * torch.rand(6, 2, 8, 8)
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    out = explain(registry, "lrp-epsilon", module, x, t)
    with torch.no_grad():
        logit = module(x).gather(1, t[:, None])[:, 0]
    assert logit.abs().min() > 1e-3  # a real test: the logits are not all ~0
    torch.testing.assert_close(out.sum((1, 2, 3)), logit, rtol=1e-4, atol=1e-5)
    # and with ε → 0 on a bias-free ReLU network LRP-ε is gradient × input (Ancona et al. 2018)
    torch.testing.assert_close(out, explain(registry, "input-x-gradient", module, x, t), rtol=1e-4, atol=1e-5)


def test_lrp_epsilon_param_is_used(registry):
    module = bias_free_relu_net()
    x, t = torch.rand(3, 2, 8, 8), torch.tensor([0, 1, 2])
    small = explain(registry, "lrp-epsilon", module, x, t)
    large = explain(registry, "lrp-epsilon", module, x, t, epsilon=10.0)
    assert large.abs().sum() < 0.5 * small.abs().sum()  # a large ε absorbs relevance


@pytest.mark.parametrize("method", ["integrated-gradients", "deeplift"])
def test_completeness_on_a_resnet_with_inplace_reused_relus(registry, method):
    resnet = tiny_resnet(channels=2)
    x, t = torch.rand(2, 2, 16, 16), torch.tensor([0, 2])
    out = explain(registry, method, resnet, x, t, **({"steps": 64} if method == "integrated-gradients" else {}))
    with torch.no_grad():
        delta = (resnet(x) - resnet(torch.zeros_like(x))).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(out.sum((1, 2, 3)), delta, rtol=2e-2, atol=2e-3)


def test_gradient_shap_without_noise_on_a_linear_model_is_input_x_gradient(registry):
    # with one zero baseline and stdevs 0, every sampled point has the same gradient w, so
    # GradientSHAP = (x - 0) · w whatever the random path positions
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(128, 3))
    x, t = torch.randn(4, 2, 8, 8), torch.tensor([2, 1, 0, 1])
    torch.testing.assert_close(explain(registry, "gradient-shap", module, x, t),
                               explain(registry, "input-x-gradient", module, x, t))


def test_occlusion_finds_the_only_pixels_a_model_reads(registry):
    class Corner(nn.Module):  # the logit of class 0 is the sum of the top-left 4×4 corner
        def forward(self, x):
            s = x[:, :, :4, :4].sum((1, 2, 3))
            return torch.stack([s, -s, torch.zeros_like(s)], 1)

    x = torch.rand(2, 2, 8, 8) + 0.1
    out = explain(registry, "occlusion", Corner(), x, torch.tensor([0, 0]), window=4, stride=4)
    reduced = out.abs().sum(1)
    assert (reduced[:, :4, :4] > 0).all() and (reduced[:, 4:, :] == 0).all() and (reduced[:, :, 4:] == 0).all()


def test_guided_grad_cam_uses_the_named_layer(registry):
    module = bias_free_relu_net()
    layers = {"features.0": module[0], "features.3": module[3]}
    x, t = torch.rand(2, 2, 8, 8), torch.tensor([0, 1])
    deep = explain(registry, "guided-grad-cam", module, x, t, layers=layers)
    assert torch.equal(deep, explain(registry, "guided-grad-cam", module, x, t, layers=layers, layer="features.3"))
    shallow = explain(registry, "guided-grad-cam", module, x, t, layers=layers, layer="features.0")
    assert deep.shape == shallow.shape == x.shape and not torch.allclose(deep, shallow)


def test_captums_per_call_announcements_do_not_reach_the_run_output(registry):
    module = bias_free_relu_net()
    x, t = torch.rand(3, 2, 8, 8), torch.tensor([0, 1, 2])
    import warnings

    for name in ("saliency", "guided-backprop", "deeplift"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            explain(registry, name, module, x, t)
        assert not [w for w in caught if "captum" in w.filename], [str(w.message) for w in caught]
