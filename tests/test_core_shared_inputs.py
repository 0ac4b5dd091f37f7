"""Inputs derived from a batch alone (its corrupted copies) are computed once per cell and shared by
every method's metrics (``MetricContext.reuse``): the same numbers as computing them per method,
each metric gets its own copy, and the store keeps to its budget."""

from __future__ import annotations

import torch

from xbench import testing
from xbench.attribution import run_method
from xbench.cell import SharedInputs
from xbench.registry import load_registry
from xbench.results import metric_context, prepare_attribution
from xbench.specs import defaults


def test_a_shared_tensor_is_computed_once_per_batch_and_each_caller_gets_a_copy():
    store = SharedInputs()
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0)

    first = store.get((0, 32), "k", compute)
    second = store.get((0, 32), "k", compute)
    second.mul_(0)  # a caller that changes its copy changes nothing for the next
    third = store.of((0, 32))("k", compute)
    assert len(calls) == 1 and torch.equal(first, torch.arange(6.0)) and torch.equal(third, torch.arange(6.0))
    store.get((32, 64), "k", compute)  # another batch: its own value
    assert len(calls) == 2
    store.clear()
    store.get((0, 32), "k", compute)
    assert len(calls) == 3


def test_the_store_keeps_to_its_budget_least_recently_used_out():
    store = SharedInputs(budget=3 * 400)  # three tensors of 100 float32
    for i in range(4):
        store.get(i, "k", lambda: torch.zeros(100))
    assert store.size == 1200 and [b for b, _ in store.items] == [1, 2, 3]
    store.get(1, "k", lambda: torch.ones(100))  # a hit moves to the back
    store.get(4, "k", lambda: torch.zeros(100))
    assert [b for b, _ in store.items] == [3, 1, 4]
    assert store.get(5, "big", lambda: torch.zeros(1000)).numel() == 1000 and (5, "big") not in store.items


def test_saliency_rmse_gives_the_same_numbers_with_the_corruptions_shared_between_methods():
    registry = load_registry()
    data = testing.planted_dataset(n_train=8, n_val=8, n_test=8, size=32)
    model = testing.model_from_spec(registry.get("models", "small-cnn").spec, data, {"width": 4})
    x, t = data.test.images, data.test.labels
    metric = registry.get("metrics", "saliency-rmse").spec
    params = {**defaults(metric.params), "severities": [1, 5]}
    logits = model.module(x).detach()

    def score(method: str, shared):
        spec = registry.get("methods", method).spec
        p = defaults(spec.params)
        attribution = prepare_attribution(run_method(spec, model, x, t, p), tuple(x.shape[-2:]), "abs-luminance",
                                          method)
        ctx = metric_context(model=model, inputs=x, labels=t, logits=logits, targets=t, target_mode="label",
                             params=params, generator=torch.Generator().manual_seed(0), predict=model.module,
                             attribution=attribution, explainer=lambda m, v, w: run_method(spec, m, v, w, p),
                             dataset=data, method=method, shared=shared)
        return metric.score(ctx)["rmse"]

    store = SharedInputs()
    for method in ("saliency", "grad-cam", "sobel"):
        alone, shared = score(method, None), score(method, store.of((0, 8)))
        assert alone.keys() == shared.keys() and all(torch.equal(alone[k], shared[k]) for k in alone)
    assert len(store.items) == len(params["corruptions"]) * 2  # one corrupted batch per corruption × severity
