"""What a plugin is handed comes back exactly as it was, or the plugin is named and its units fail.

Why: the plugins of a cell share one model, one test split and one batch at a time. A method that
edits the weights (a negation or a permutation keeps every norm), leaves a hook on a layer or a
submodule swapped, or a metric that reorders the test images in place, would silently change every
later plugin's numbers, and the method's maps would be cached under the clean model's key. So the
cell keeps a pristine copy of what it hands out and compares *exactly* after every plugin call:

* tensors byte for byte (NaN equals NaN, ``-0.0`` differs from ``0.0``): :func:`same_bytes`;
* the model (:class:`ModelGuard`): every parameter and buffer byte for byte, its structure
  (children, parameters and buffers by identity, class, training mode, an instance ``forward``),
  every hook dict of every submodule (forward, forward-pre, backward full and legacy,
  backward-pre, state-dict and load-state-dict hooks), the hooks on its parameters, and torch's
  global module hooks. What changed is named, and :meth:`ModelGuard.restore` puts it all back
  (a hook a plugin left behind is removed);
* a whole test split, too large to copy for every call, by a BLAKE2 digest of its bytes
  (:func:`digest`); everything else handed for one batch against a copy (:class:`Pristine`).

Comparing bytes against a copy (``memcmp`` on the CPU) is exact and much cheaper than hashing them.
Measured per plugin call, one thread, on a heavily loaded 2-core CPU: full-width CIFAR ResNet-18
(45 MB of weights) 32–40 ms, against 18–26 ms for the norm checksum this replaced (which a negation
passed), ~200 ms for a BLAKE2 digest and ~70 ms for ``torch.equal``; VGG16 at 1/8 width (8 MB)
1.6–1.9 ms. That is about 3 % of one forward pass of a batch of 32 for either model; the structure
and hooks take under 1 ms, the batch's tensors well under 1 ms.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .checks import ContractError
from .specs import Dataset, Split, TrainedModel


class PluginMisbehaved(ContractError):
    """A plugin changed something it was handed: its units fail, the others are protected."""


class NotFinite(ContractError):
    """A dataset or a model holds NaN or Inf values: named by split or layer, with counts."""


# ----------------------------------------------------------------------------- exact tensors

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _memcmp() -> Callable[[int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError, TypeError):  # no C library to ask (e.g. some Windows builds)
        return None
    fn.restype, fn.argtypes = ctypes.c_int, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    return fn


_MEMCMP = _memcmp()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as integers of the same width, so equality is bitwise (NaN == NaN)."""
    if t.dtype == torch.bool:
        return t
    if t.is_complex():
        return torch.view_as_real(t).view(_INT_OF_SIZE[t.element_size() // 2])
    return t.view(_INT_OF_SIZE[t.element_size()])


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors hold exactly the same bytes (same dtype, shape and device)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    if a.layout != torch.strided or b.layout != torch.strided:
        return bool(torch.equal(a, b))
    if (_MEMCMP is not None and a.device.type == "cpu" and a.is_contiguous() and b.is_contiguous()
            and a.dtype != torch.bool):
        return _MEMCMP(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0
    return bool(torch.equal(_bits(a.detach()), _bits(b.detach())))


def digest(t: Any) -> str | None:
    """A BLAKE2 digest of a tensor's dtype, shape and bytes (None for what is not a tensor, e.g. a
    lazy array whose batches are made on demand and so cannot be changed in place)."""
    if not isinstance(t, torch.Tensor):
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    data = t.detach().cpu().contiguous().reshape(-1)
    if data.numel():
        h.update(memoryview(data.view(torch.uint8).numpy()))
    return h.hexdigest()


class Pristine:
    """What one plugin call is handed, by name: exact copies (or, for ``digest_only`` names, digests)
    taken before the call; :meth:`changed` names what the call changed, :meth:`restore` puts back
    what a copy can (a digested tensor cannot be restored: the caller reloads it)."""

    def __init__(self, tensors: Mapping[str, Any], digest_only: Iterable[str] = ()):
        digested = set(digest_only)
        self.tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        self.copies = {k: v.detach().clone() for k, v in self.tensors.items() if k not in digested}
        self.digests = {k: digest(v) for k, v in self.tensors.items() if k in digested}

    def changed(self) -> list[str]:
        return [k for k, v in self.tensors.items()
                if not (same_bytes(v, self.copies[k]) if k in self.copies else digest(v) == self.digests[k])]

    def restore(self) -> list[str]:
        """Put the copied tensors back; return the names of digested ones that changed."""
        lost = []
        for k, v in self.tensors.items():
            if k in self.copies:
                if not same_bytes(v, self.copies[k]):
                    _put(v, self.copies[k])
            elif digest(v) != self.digests[k]:
                lost.append(k)
        return lost


def _put(target: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        if target.dtype == value.dtype and target.shape == value.shape and target.device == value.device:
            target.copy_(value)
        else:  # resized or cast in place: give it its old storage back
            target.data = value.clone()


# ----------------------------------------------------------------------------- the model

_MISSING = object()


def _hook_dicts(owner: Any) -> dict[str, Any]:
    """Every hook container an object carries (whatever this torch version names them)."""
    return {k: v for k, v in vars(owner).items() if "hook" in k and not callable(v)}


def _kind(name: str) -> str:
    """``_forward_pre_hooks`` -> ``forward pre-hook``."""
    words = name.strip("_").removeprefix("global_").replace("_hooks", "").replace("_", " ")
    return f"{words} hook".replace("pre hook", "pre-hook")


def _auxiliary(name: str) -> bool:
    """Hook dicts that only flag another dict's entries (not worth a message of their own)."""
    return name.endswith(("_with_kwargs", "_always_called")) or not name.endswith("hooks")


def _same_items(a: Any, b: Any) -> bool:
    """Equal by identity of every value (dicts of tensors or hooks), or equal plain values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(a.get(k, _MISSING) is v for k, v in b.items())
    return a is b or (not isinstance(a, dict) and not isinstance(b, dict) and a == b)


def _hook_name(fn: Any) -> str:
    target = getattr(fn, "__func__", fn)
    target = getattr(target, "func", target)  # functools.partial
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or type(target).__name__
    return f"{module}.{name}" if module else name


def _where(path: str) -> str:
    return "the model" if not path else f"{path!r}"


class _ModuleState:
    """One submodule's structure: what its dicts hold (by identity), its class, mode and hooks."""

    __slots__ = ("path", "module", "type", "training", "forward", "dicts", "tensor_hooks")

    def __init__(self, path: str, module: nn.Module):
        d = vars(module)
        self.path, self.module, self.type = path, module, type(module)
        self.training = d.get("training")
        self.forward = d.get("forward", _MISSING)
        self.dicts = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _hook_dicts(module).items()}
        for k in ("_modules", "_parameters", "_buffers"):
            self.dicts[k] = dict(d[k])
        self.tensor_hooks = {(name, k): _tensor_hooks(p, k) for name, p in d["_parameters"].items()
                             if p is not None for k in _TENSOR_HOOKS}

    def changes(self) -> list[str]:
        m, d = self.module, vars(self.module)
        where = _where(self.path)
        out = []
        if type(m) is not self.type:
            out.append(f"the class of {where} ({self.type.__name__} → {type(m).__name__})")
        if d.get("forward", _MISSING) is not self.forward:
            out.append(f"the forward of {where} (replaced on the instance)")
        for name, before in self.dicts.items():
            now = d.get(name, _MISSING)
            if _same_items(now, before):
                continue
            if name in ("_modules", "_parameters", "_buffers"):
                what = {"_modules": "submodules", "_parameters": "parameters", "_buffers": "buffers"}[name]
                keys = sorted(k for k in set(now or {}) | set(before) if (now or {}).get(k, _MISSING) is not before.get(k))
                out.append(f"the {what} of {where} ({', '.join(map(repr, keys))} added, removed or replaced)")
            elif not _auxiliary(name):
                out += _hook_changes(_kind(name), where, now, before)
        for name in set(_hook_dicts(m)) - set(self.dicts):  # a hook dict torch made since
            if not _auxiliary(name) and d[name]:
                out += _hook_changes(_kind(name), where, d[name], {})
        for (pname, name), before in self.tensor_hooks.items():
            p = d["_parameters"].get(pname)
            now = _tensor_hooks(p, name) if p is not None else before
            if not _same_items(now, before):
                out += _hook_changes(f"tensor {_kind(name)}", f"parameter {_join(self.path, pname)!r}", now, before)
        return out

    def restore(self) -> None:
        m, d = self.module, vars(self.module)
        if type(m) is not self.type:
            m.__class__ = self.type
        d["training"] = self.training
        if self.forward is _MISSING:
            d.pop("forward", None)
        else:
            d["forward"] = self.forward
        for name, before in self.dicts.items():
            _restore_dict(d, name, before)
        for name in set(_hook_dicts(m)) - set(self.dicts):  # a hook dict that did not exist before
            if isinstance(d[name], dict):
                d[name].clear()
        for (pname, name), before in self.tensor_hooks.items():
            p = d["_parameters"].get(pname)
            hooks = getattr(p, name, None) if p is not None else None
            if hooks is not None and not _same_items(dict(hooks), before):
                hooks.clear()
                hooks.update(before)


_TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")  # attributes of the tensor type, not in vars()


def _tensor_hooks(t: torch.Tensor, name: str) -> dict:
    return dict(getattr(t, name, None) or {})


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _restore_dict(owner: dict, name: str, before: Any) -> None:
    now = owner.get(name, _MISSING)
    if _same_items(now, before):
        return
    if isinstance(before, dict) and isinstance(now, dict):
        now.clear()
        now.update(before)
    else:
        owner[name] = copy.copy(before) if isinstance(before, dict) else before


def _hook_changes(kind: str, where: str, now: Any, before: Any) -> list[str]:
    now = now if isinstance(now, dict) else {}
    before = before if isinstance(before, dict) else {}
    added = [_hook_name(fn) for k, fn in now.items() if before.get(k, _MISSING) is not fn]
    removed = [_hook_name(fn) for k, fn in before.items() if now.get(k, _MISSING) is not fn]
    out = [f"a {kind} on {where} (left registered: {name})" for name in added]
    out += [f"a {kind} on {where} (removed: {name})" for name in removed]
    return out or [f"the {kind}s of {where}"]


def _global_hooks() -> dict[str, Any]:
    from torch.nn.modules import module as torch_module

    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in _hook_dicts(torch_module).items()}


def named_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (persistent or not) by its dotted name."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


class ModelGuard:
    """The model as it was when the guard was made: exact copies of its parameters and buffers (on
    their device), and the structure and hooks of every submodule and of torch's global module
    hooks. :meth:`changes` says what differs now, :meth:`restore` makes it so again."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.values = {k: v.detach().clone() for k, v in named_tensors(module).items()}
        self.modules = [_ModuleState(path, m) for path, m in module.named_modules()]
        self.globals = _global_hooks()

    def changes(self) -> list[str]:
        out = [c for state in self.modules for c in state.changes()]
        flipped = [s for s in self.modules if vars(s.module).get("training") != s.training]
        if flipped:
            more = f" and {len(flipped) - 1} more submodule(s)" if len(flipped) > 1 else ""
            mode = "training" if vars(flipped[0].module).get("training") else "eval"
            out.append(f"the mode of {_where(flipped[0].path)}{more} (left in {mode} mode)")
        from torch.nn.modules import module as torch_module

        now = _hook_dicts(torch_module)
        for name, before in self.globals.items():
            if not _same_items(now.get(name, _MISSING), before) and not _auxiliary(name):
                out += _hook_changes(f"global module {_kind(name)}", "every module", now.get(name), before)
        current = named_tensors(self.module)
        edited = [k for k, v in self.values.items() if k in current and not same_bytes(current[k].detach(), v)]
        if edited:
            shown = ", ".join(map(repr, edited[:4])) + (f" and {len(edited) - 4} more" if len(edited) > 4 else "")
            out.append(f"the model's weights ({shown})")
        return out

    def restore(self) -> None:
        for state in self.modules:
            state.restore()
        from torch.nn.modules import module as torch_module

        for name, before in self.globals.items():
            _restore_dict(vars(torch_module), name, before)
        current = named_tensors(self.module)
        for k, v in self.values.items():
            if not same_bytes(current[k].detach(), v):
                _put(current[k], v)


def nonfinite_weights(module: nn.Module) -> list[str]:
    """The parameters and buffers that hold NaN or Inf, each with its counts."""
    out = []
    for name, t in named_tensors(module).items():
        if t.is_floating_point() or t.is_complex():
            text = _nonfinite_counts(t.detach())
            if text:
                out.append(f"{name!r} ({text} of {t.numel()} values)")
    return out


def _nonfinite_counts(t: torch.Tensor) -> str:
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    return " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)


def nonfinite_split(split: Split) -> str | None:
    """Where a split's images hold NaN or Inf ("12 NaN values in 3 of 48 samples: 0, 5, 17"), or None.
    Only a tensor is scanned: a lazy array's batches are checked when the cell predicts them."""
    images = split.images
    if not isinstance(images, torch.Tensor) or not (images.is_floating_point() or images.is_complex()):
        return None
    bad = ~torch.isfinite(images.detach()).reshape(len(images), -1).all(1) if len(images) else None
    if bad is None or not bool(bad.any()):
        return None
    return nonfinite_samples(images[bad], bad.nonzero().flatten().tolist(), len(images))


def nonfinite_samples(bad_images: torch.Tensor, indices: list[int], total: int) -> str:
    shown = ", ".join(map(str, indices[:8])) + (", …" if len(indices) > 8 else "")
    return f"{_nonfinite_counts(bad_images)} values in {len(indices)} of {total} samples ({shown})"


# ----------------------------------------------------------------------------- what plugins are handed

def handed_model(model: TrainedModel) -> TrainedModel:
    """The cell's model for one plugin call: the same network (guarded), its own copies of the
    lists and reports around it, so reassigning a field changes nothing for the next plugin."""
    return dataclasses.replace(model, target_layers=dict(model.target_layers), report=copy.deepcopy(model.report))


def handed_dataset(dataset: Dataset | None) -> Dataset | None:
    """The dataset a metric may look at: its own copy of the info, and splits copied on first use
    (metrics rarely read them; the split a cell runs on is not theirs to change)."""
    if dataset is None:
        return None

    def copied(name: str) -> Callable[[], Split]:
        return lambda: _copy_split(dataset.split(name))

    try:
        info = copy.deepcopy(dict(dataset.info))
    except Exception:  # noqa: BLE001 - something in it cannot be copied: the top level still is
        info = dict(dataset.info)
    return Dataset(dataset.name, tuple(dataset.class_names), {k: copied(k) for k in dataset.splits}, info)


def _copy_split(split: Split) -> Split:
    clone = lambda v: v.clone() if isinstance(v, torch.Tensor) else v  # noqa: E731 - lazy arrays make new batches
    return Split(clone(split.images), clone(split.labels), clone(split.masks),
                 {k: clone(v) for k, v in split.regions.items()}, copy.deepcopy(dict(split.meta)))


def split_tensors(dataset: Dataset) -> dict[str, torch.Tensor]:
    """Every tensor of the dataset's loaded splits, by ``split.field`` name."""
    out: dict[str, torch.Tensor] = {}
    for name, split in dataset._loaded.items():
        for field, value in (("images", split.images), ("labels", split.labels), ("masks", split.masks),
                             *((f"regions[{k!r}]", v) for k, v in split.regions.items())):
            if isinstance(value, torch.Tensor):
                out[f"{name}.{field}"] = value
    return out
