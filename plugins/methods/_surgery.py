"""Temporary model surgery that attribution libraries need, undone exactly afterwards.

Why: Captum's hook-based methods (Guided Backprop, Deconvolution, DeepLift, LRP) and Zennit fail or
silently compute the wrong thing on in-place activations (a backward hook cannot see a tensor that
was overwritten), and CAM hooks would capture post-ReLU values. Models from torchvision use
``ReLU(inplace=True)`` everywhere. Libraries also leave traces on error (hooks, ``rule``
attributes, canonizer attributes). ``attribution_ready`` switches every in-place flag off and, on
exit, restores each module's flags, training mode, hooks, attributes and children as they were,
so a method never changes the user's model, even when it raises.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)
_OVERRIDABLE = ("rule", "forward", "activations")  # instance attributes libraries set or delete


class _Snapshot:
    """What one module looked like: its attribute names, hooks, children, mode and in-place flag.
    Plain dict operations only: it runs around every attribution call."""

    __slots__ = ("module", "names", "kept", "hooks", "children", "training", "inplace")

    def __init__(self, module: nn.Module):
        d = module.__dict__
        self.module = module
        self.names = set(d)
        self.kept = {name: d[name] for name in _OVERRIDABLE if name in d}
        self.hooks = {name: dict(hooks) for name in _HOOK_DICTS if (hooks := d.get(name))}  # the non-empty ones
        self.children = dict(d["_modules"])
        self.training = d["training"]
        self.inplace = d.get("inplace")

    def restore(self) -> None:
        m = self.module
        d = m.__dict__
        if len(d) != len(self.names) or not self.names.issuperset(d):
            for name in set(d) - self.names:
                delattr(m, name)
        for name, value in self.kept.items():
            if d.get(name, self) is not value:
                setattr(m, name, value)
        for name in _HOOK_DICTS:
            current, hooks = d.get(name), self.hooks.get(name)
            if current and (hooks is None or current.keys() != hooks.keys()):
                current.clear()
            if hooks and current.keys() != hooks.keys():
                current.update(hooks)
        if d["_modules"] != self.children:
            d["_modules"].clear()
            d["_modules"].update(self.children)
        d["training"] = self.training
        if self.inplace is not None:
            d["inplace"] = self.inplace


@contextmanager
def attribution_ready(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, no submodule works in place; afterwards ``module`` is exactly as before
    (in-place flags, training mode, hooks, ``rule`` and other added attributes, children)."""
    snapshots = [_Snapshot(m) for m in module.modules()]
    try:
        for snap in snapshots:
            if snap.inplace is True:
                snap.module.__dict__["inplace"] = False
        yield module
    finally:
        for snap in snapshots:
            snap.restore()


class _PerCall(nn.Module):
    """Stands in for a parameter-free module that the forward pass calls several times: the i-th
    call of a pass goes to the i-th of its own copies, so per-module hooks (DeepLift's) see one
    call each. The root module's forward pre-hook resets the count."""

    def __init__(self, original: nn.Module, calls: int):
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(original) for _ in range(calls))
        self.count = 0

    def forward(self, *args, **kwargs):
        module = self.copies[min(self.count, len(self.copies) - 1)]
        self.count += 1
        return module(*args, **kwargs)


_REUSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reused_modules(module: nn.Module, example: torch.Tensor) -> dict[nn.Module, int]:
    """Parameter-free leaf modules that one forward pass calls more than once, with their call
    counts; found by one forward pass on ``example`` per model (remembered for the model's life)."""
    if module in _REUSED:
        return _REUSED[module]
    counts: dict[nn.Module, int] = {}
    handles = [m.register_forward_pre_hook(lambda m, _i: counts.__setitem__(m, counts.get(m, 0) + 1))
               for m in module.modules() if not m._modules and not m._parameters]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    reused = {m: n for m, n in counts.items() if n > 1}
    _REUSED[module] = reused
    return reused


def give_each_call_its_module(module: nn.Module, example: torch.Tensor) -> int:
    """Within :func:`attribution_ready` only: replace every parameter-free leaf module that one
    forward pass calls more than once (torchvision's ResNet blocks call one ``relu`` twice) by
    per-call copies. Returns how many were replaced."""
    reused = _reused_modules(module, example)
    if not reused:
        return 0
    wrappers = {m: _PerCall(m, n) for m, n in reused.items()}
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if child in wrappers:
                parent._modules[name] = wrappers[child]

    def reset(_module, _inputs):
        for w in wrappers.values():
            w.count = 0

    module.register_forward_pre_hook(reset)
    return len(reused)
