"""Model surgery for attribution: in-place activations are handled and the user's model comes back
exactly as it was, also when a method fails half-way."""

import pytest
import torch
from test_methods_toys import relu_chain, tiny_resnet
from torch import nn

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.registry import load_registry
from xbench.plugins.methods._surgery import attribution_ready, give_each_call_its_module
from xbench.specs import defaults

INFO = DatasetInfo("toy", 3, 16, 16, ("a", "b"))


def vgg_like() -> nn.Sequential:
    return relu_chain(batchnorm=True)


def fingerprint(module: nn.Module):
    """Everything a method could leave behind on a model."""
    out = []
    for name, m in module.named_modules():
        hooks = sum(len(getattr(m, h)) for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                                    "_backward_pre_hooks"))
        out.append((name, type(m).__name__, m.training, getattr(m, "inplace", None), hooks,
                    tuple(sorted(vars(m))), tuple(m._modules)))
    return out


def trained_model(module: nn.Module) -> TrainedModel:
    layers = {n: m for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}
    return TrainedModel(module, INFO, layers)


def test_inplace_flags_are_off_inside_and_restored_after():
    model = vgg_like()
    before = fingerprint(model)
    with attribution_ready(model) as m:
        assert all(not getattr(x, "inplace", False) for x in m.modules())
    assert fingerprint(model) == before
    assert model[2].inplace is True and model[8].inplace is True


def test_restores_hooks_attributes_children_and_mode_after_an_error():
    model = vgg_like()
    model[9].rule = "the author's own rule"
    before = fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        with attribution_ready(model) as m:
            m[0].register_forward_hook(lambda *a: None)
            m[4].rule = "left behind"
            del m[9].rule
            m[5].activations = {"x": 1}
            m._modules["7"] = nn.Identity()
            m.train()
            raise RuntimeError("boom")
    assert fingerprint(model) == before
    assert model[9].rule == "the author's own rule"
    assert isinstance(model[7], nn.Flatten)


@pytest.mark.parametrize("method", ["guided-backprop", "deconvolution", "deeplift", "lrp-epsilon", "grad-cam",
                                    "lrp-epsilon-plus-flat", "integrated-gradients"])
def test_methods_work_on_inplace_relus_and_nn_flatten_and_leave_no_trace(method):
    registry = load_registry()
    spec = registry.get("methods", method).spec
    model = vgg_like()
    before = fingerprint(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, t = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 1, 0])
    first = run_method(spec, trained_model(model), x, t, defaults(spec.params))
    assert torch.isfinite(first).all() and first.abs().sum() > 0
    assert fingerprint(model) == before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # a second call gives the same answer: nothing leaked from the first
    second = run_method(spec, trained_model(model), x, t, defaults(spec.params))
    torch.testing.assert_close(first, second)


def test_reused_activation_gets_one_module_per_call_and_is_restored():
    resnet = tiny_resnet()
    before = fingerprint(resnet)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = resnet(x)
    with attribution_ready(resnet) as m:
        replaced = give_each_call_its_module(m, x[:1])
        assert replaced == 2  # the shared `relu` of each BasicBlock
        calls = {}
        for mod in m.modules():
            if isinstance(mod, nn.ReLU):
                mod.register_forward_hook(lambda mod, i, o: calls.__setitem__(mod, calls.get(mod, 0) + 1))
        with torch.no_grad():
            torch.testing.assert_close(m(x), reference)
            m(x)
        assert set(calls.values()) == {2}  # once per pass, two passes
    assert fingerprint(resnet) == before
