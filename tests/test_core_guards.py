"""The guards compare exactly: every change a plugin can make to the model or to a tensor it is
handed is seen, named and undone, and nothing else is reported (NaN equals NaN)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

from xbench.guards import ModelGuard, Pristine, digest, same_bytes


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2)).eval()


def _noop(*args, **kwargs):
    return None


def _swap_logits(module, inputs, output):
    return output.flip(1)


EDITS = {
    "negated weights": (lambda m: m[0].weight.data.neg_(), "the model's weights ('0.weight')"),
    "permuted filters": (lambda m: m[0].weight.data.copy_(m[0].weight.data.flip(0)), "the model's weights ('0.weight')"),
    "a changed buffer": (lambda m: m[1].running_mean.data.add_(1), "the model's weights ('1.running_mean')"),
    "weights cast in place": (lambda m: m.half(), "the model's weights ('0.weight', '0.bias', '1.weight', '1.bias'"),
    "forward hook": (lambda m: m.register_forward_hook(_swap_logits), "a forward hook on the model (left registered"),
    "forward hook with kwargs": (lambda m: m[5].register_forward_hook(_noop, with_kwargs=True),
                                 "a forward hook on '5' (left registered"),
    "forward pre-hook": (lambda m: m[0].register_forward_pre_hook(_noop), "a forward pre-hook on '0'"),
    "full backward hook": (lambda m: m[0].register_full_backward_hook(_noop), "a backward hook on '0'"),
    "legacy backward hook": (lambda m: m[5].register_backward_hook(_noop), "a backward hook on '5'"),
    "backward pre-hook": (lambda m: m[5].register_full_backward_pre_hook(_noop), "a backward pre-hook on '5'"),
    "state-dict hook": (lambda m: m._register_state_dict_hook(_noop), "a state dict hook on the model"),
    "load-state-dict pre-hook": (lambda m: m._register_load_state_dict_pre_hook(_noop),
                                 "a load state dict pre-hook on the model"),
    "global forward hook": (lambda m: torch_module.register_module_forward_hook(_swap_logits),
                            "a global module forward hook on every module"),
    "tensor hook": (lambda m: m[0].weight.register_hook(lambda g: -g), "a tensor backward hook on parameter '0.weight'"),
    "training mode": (lambda m: m.train(), "the mode of the model and 6 more submodule(s) (left in training mode)"),
    "a swapped submodule": (lambda m: m.__setitem__(2, nn.Identity()), "the submodules of the model ('2'"),
    "a replaced parameter": (lambda m: setattr(m[5], "bias", nn.Parameter(torch.zeros(2))), "the parameters of '5' ('bias'"),
    "an instance forward": (lambda m: setattr(m, "forward", lambda x: torch.zeros(len(x), 2)),
                            "the forward of the model (replaced on the instance)"),
    "a new class": (lambda m: setattr(m[2], "__class__", nn.Tanh), "the class of '2' (ReLU → Tanh)"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_every_change_to_the_model_is_named_and_undone(edit):
    model = _model()
    x = torch.rand(3, 1, 6, 6)
    with torch.no_grad():
        before = model(x)
    guard = ModelGuard(model)
    assert guard.changes() == []
    change, named = EDITS[edit]
    change(model)
    changes = guard.changes()
    assert any(named in c for c in changes), changes
    guard.restore()
    assert guard.changes() == []
    assert not torch_module._global_forward_hooks
    with torch.no_grad():
        assert same_bytes(model(x), before)  # exactly the model it was


def test_hooks_that_were_there_before_are_kept_and_a_removed_one_is_put_back():
    model = _model()
    own = model[0].register_forward_hook(_noop)  # the model plugin's own hook, part of the model
    guard = ModelGuard(model)
    own.remove()
    assert guard.changes() == [f"a forward hook on '0' (removed: {_noop.__module__}._noop)"]
    guard.restore()
    assert list(model[0]._forward_hooks.values()) == [_noop] and guard.changes() == []


def test_nan_is_equal_to_itself_and_a_sign_of_zero_is_not():
    a = torch.tensor([float("nan"), 1.0, 0.0])
    assert same_bytes(a, a.clone())
    assert not same_bytes(a, torch.tensor([float("nan"), 1.0, -0.0]))
    assert not same_bytes(a, a.double())
    assert same_bytes(a.view(3, 1).t(), a.clone().view(3, 1).t())  # not contiguous: compared all the same
    model = _model()
    with torch.no_grad():
        model[5].bias[0] = float("nan")
    assert ModelGuard(model).changes() == []  # NaN weights are not a change (they are reported as NaN elsewhere)


def test_pristine_names_what_changed_and_restores_the_copies():
    x, labels = torch.rand(8, 1, 4, 4), torch.arange(8)
    split = torch.rand(20, 3)
    pristine = Pristine({"ctx.inputs": x, "ctx.labels": labels, "split": split, "none": None}, digest_only=["split"])
    before = x.clone()
    x.copy_(x.flip(0))  # a permutation: every sum and norm unchanged
    split.copy_(split.flip(0))
    assert pristine.changed() == ["ctx.inputs", "split"]
    assert pristine.restore() == ["split"]  # a digest cannot restore: the caller reloads it
    assert same_bytes(x, before) and pristine.changed() == ["split"]
    assert digest(torch.zeros(2)) != digest(torch.zeros(2, 1)) and digest([1]) is None
