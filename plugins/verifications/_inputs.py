"""Small inputs the checks share: metric contexts over hand-made maps or a plain module, a method
called as a run calls it, and one small CNN trained on planted data (trained once per process)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from xbench import DatasetInfo, TrainedModel, results, testing
from xbench.attribution import run_method
from xbench.specs import defaults

PLANTED = "a small CNN (width 8) trained 4 epochs on 256 planted 1×32×32 images; its first 16 test images"


def maps_context(attribution, mask=None, seed: int = 0):
    """A context over hand-made ``(N, H, W)`` maps for metrics that need no model (``sum``
    reduction: a one-channel map stays as it is)."""
    a = torch.as_tensor(attribution, dtype=torch.float32)
    n = a.shape[0]
    dummy = torch.zeros(n, dtype=torch.long)
    return results.metric_context(
        model=None, inputs=torch.zeros(n, 1, *a.shape[1:]), labels=dummy, logits=torch.zeros(n, 2), targets=dummy,
        target_mode="label", params={}, generator=torch.Generator().manual_seed(seed), predict=None,
        attribution=results.prepare_attribution(a, tuple(a.shape[1:]), "sum"), reduction="sum",
        mask=None if mask is None else torch.as_tensor(mask, dtype=torch.bool))


def module_context(module: nn.Module, x: torch.Tensor, attribution: torch.Tensor, labels: torch.Tensor,
                   seed: int = 0):
    """A context for a plain module on ``x`` with ``attribution`` ``(N, H, W)`` (``sum``
    reduction), targets = labels."""
    with torch.no_grad():
        logits = module(x).float()
    a = attribution.float()
    return results.metric_context(
        model=TrainedModel(module=module, info=None, target_layers={}), inputs=x, labels=labels, logits=logits,
        targets=labels, target_mode="label", params={}, generator=torch.Generator().manual_seed(seed),
        predict=module, attribution=results.prepare_attribution(a, tuple(a.shape[-2:]), "sum"), reduction="sum",
        device=x.device)


def explain(spec, module: nn.Module, x: torch.Tensor, targets: torch.Tensor, layers=None, **params):
    """``spec``'s maps as a run computes them, with its defaults updated by ``params``."""
    _, c, h, w = x.shape
    model = TrainedModel(module.eval(), DatasetInfo("check", c, h, w, ("a", "b", "c")), layers or {})
    return run_method(spec, model, x, targets, {**defaults(spec.params), **params})


@lru_cache(maxsize=1)
def planted_cnn():
    """(dataset, trained model): see :data:`PLANTED`."""
    data = testing.planted_dataset(n_train=256, n_val=64, n_test=64, size=32, seed=0)
    return data, testing.train_small_cnn(data, epochs=4, width=8)
