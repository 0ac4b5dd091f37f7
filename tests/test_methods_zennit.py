"""Zennit LRP composites: same numbers as Zennit called directly, conservation where the rules
conserve, and the canonizer that fits the architecture."""

import pytest
import torch
import torchvision
from test_methods_toys import relu_chain, tiny_resnet
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.plugins.methods.zennit import choose_canonizer
from xbench.registry import load_registry
from xbench.specs import defaults

INFO = DatasetInfo("toy", 3, 16, 16, ("a", "b", "c"))
COMPOSITES = ["lrp-epsilon-plus-flat", "lrp-epsilon-gamma-box", "lrp-epsilon-alpha2-beta1", "lrp-alpha1-beta0"]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def run(registry, name, module, x, t, **params):
    spec = registry.get("methods", name).spec
    return run_method(spec, TrainedModel(module.eval(), INFO, {}), x, t, {**defaults(spec.params), **params})


def chain(bias: bool = True, batchnorm: bool = False) -> nn.Sequential:
    return relu_chain(bias=bias, batchnorm=batchnorm)


def test_canonizer_is_chosen_from_the_architecture():
    assert choose_canonizer(torchvision.models.resnet18(num_classes=2)) == "resnet"
    assert choose_canonizer(tiny_resnet()) == "resnet"
    assert choose_canonizer(chain(batchnorm=True)) == "merge-batchnorm"
    assert choose_canonizer(chain()) == "vgg"


@pytest.mark.parametrize("batchnorm", [False, True])
def test_equals_zennit_called_directly(registry, batchnorm):
    from zennit.canonizers import SequentialMergeBatchNorm

    module = chain(batchnorm=batchnorm)
    if batchnorm:  # non-trivial running statistics, so merging them matters
        with torch.no_grad():
            module[1].running_mean.uniform_(-0.5, 0.5)
            module[1].running_var.uniform_(0.5, 2.0)
            module[1].weight.uniform_(0.5, 1.5)
    x, t = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])
    for name, composite in (
        ("lrp-epsilon-plus-flat", EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])),
        ("lrp-epsilon-gamma-box", EpsilonGammaBox(low=torch.zeros_like(x), high=torch.ones_like(x),
                                                  canonizers=[SequentialMergeBatchNorm()])),
    ):
        with Gradient(module, composite) as attributor:
            logits, _ = attributor(x, lambda out: out)
            onehot = torch.eye(3)[t] * logits.detach()
            _, direct = attributor(x, onehot)
        torch.testing.assert_close(run(registry, name, module, x, t), direct)


def test_alpha1_beta0_conserves_relevance_on_a_bias_free_relu_chain(registry):
    module = chain(bias=False)
    x, t = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        logit = module(x).gather(1, t[:, None])[:, 0]
    r = run(registry, "lrp-alpha1-beta0", module, x, t)
    torch.testing.assert_close(r.sum((1, 2, 3)), logit, rtol=1e-3, atol=1e-5)
    # z⁺ on positive inputs only ever assigns relevance of the logit's sign
    assert ((r * logit.sign().view(-1, 1, 1, 1)) >= -1e-7).all()


def test_resnet_canonizer_makes_the_residual_sum_conserve_relevance(registry):
    net = tiny_resnet(bias_free=True)
    x, t = torch.rand(4, 3, 16, 16), torch.tensor([0, 2, 1, 0])
    with torch.no_grad():
        logit = net(x).gather(1, t[:, None])[:, 0]
    with_canonizer = run(registry, "lrp-alpha1-beta0", net, x, t).sum((1, 2, 3))
    torch.testing.assert_close(with_canonizer, logit, rtol=1e-2, atol=1e-4)
    without = run(registry, "lrp-alpha1-beta0", net, x, t, canonizer="none").sum((1, 2, 3))
    assert ((without - logit).abs() > 0.1 * logit.abs()).all()  # the skip connection double-counts


@pytest.mark.parametrize("name", COMPOSITES)
def test_composites_are_finite_and_leave_the_model_unchanged(registry, name):
    module = chain(batchnorm=True)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    x, t = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    out = run(registry, name, module, x, t)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    assert all(isinstance(m, nn.BatchNorm2d) for m in module.modules() if "BatchNorm" in type(m).__name__)


def test_gamma_box_range_is_a_param(registry):
    module = chain()
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    default = run(registry, "lrp-epsilon-gamma-box", module, x, t)
    wide = run(registry, "lrp-epsilon-gamma-box", module, x, t, low=-1.0, high=2.0)
    assert not torch.allclose(default, wide)
