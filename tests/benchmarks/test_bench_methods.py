"""Attribution-method throughput, and what xbench's wrappers cost over the libraries.

Run: ``pytest tests/benchmarks/test_bench_methods.py --benchmark-enable``. The throughput report
records each method's images per second on one fixed model and batch in ``extra_info`` (a report,
with no target; it checks only that each map has the batch's shape and is finite); the overhead test times the
xbench wrapper and the same Captum/Zennit call made directly, interleaved in one run, and compares
the median of the paired ratios (target: under 5%). On a shared CPU single timings jump by tens of
percent; pairs of adjacent calls in alternating order cancel slow load changes, and the number of
pairs grows for fast methods so the median settles.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.plugins.models import small_cnn
from xbench.registry import load_registry
from xbench.specs import defaults

BATCH, SIZE = 16, 64
INFO = DatasetInfo("bench", 3, SIZE, SIZE, ("a", "b", "c", "d"))


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def fixed():
    torch.manual_seed(0)
    module = small_cnn.build(INFO, defaults(small_cnn.PARAMS)).eval()
    layers = {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}
    model = TrainedModel(module, INFO, layers)
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    t = torch.arange(BATCH) % 4
    return model, x, t


def method_names():
    return [n for n in load_registry().names("methods") if n != "in-model"]


@pytest.mark.parametrize("name", method_names())
def test_throughput_report(benchmark, registry, fixed, name):
    model, x, t = fixed
    spec = registry.get("methods", name).spec
    params = defaults(spec.params)
    maps = benchmark.pedantic(run_method, args=(spec, model, x, t, params), rounds=5, warmup_rounds=1)
    assert maps.shape[0] == BATCH and torch.isfinite(maps).all()
    benchmark.extra_info["images_per_second"] = BATCH / benchmark.stats.stats.median
    benchmark.extra_info["batch"] = f"{BATCH}x3x{SIZE}x{SIZE}, small-cnn width {defaults(small_cnn.PARAMS)['width']}"


def _direct_captum(name, module, x, t, params):
    from captum import attr

    from xbench.plugins.methods._chunking import rows_within

    if name == "saliency":
        return attr.Saliency(module).attribute(x, target=t, abs=True)
    if name == "input-x-gradient":
        return attr.InputXGradient(module).attribute(x, target=t)
    if name == "integrated-gradients":
        return attr.IntegratedGradients(module).attribute(
            x, baselines=torch.zeros_like(x), target=t, n_steps=params["steps"], method=params["method"],
            internal_batch_size=max(len(x), rows_within(module, x, params["memory_mb"])))
    if name == "deeplift":
        return attr.DeepLift(module).attribute(x, baselines=torch.zeros_like(x), target=t)
    if name == "guided-backprop":
        return attr.GuidedBackprop(module).attribute(x, target=t)
    if name == "lrp-epsilon":
        return attr.LRP(module).attribute(x, target=t)
    raise KeyError(name)


def _direct_zennit(name, module, x, t, params):
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat
    from zennit.torchvision import VGGCanonizer

    composite = (EpsilonPlusFlat(canonizers=[VGGCanonizer()]) if name == "lrp-epsilon-plus-flat" else
                 EpsilonGammaBox(low=torch.zeros_like(x), high=torch.ones_like(x), canonizers=[VGGCanonizer()]))
    with Gradient(module, composite) as attributor:
        _, relevance = attributor(x, lambda logits: torch.eye(logits.shape[1])[t] * logits.detach())
    return relevance


DIRECT = {
    **{n: _direct_captum for n in ("saliency", "input-x-gradient", "integrated-gradients", "deeplift",
                                   "guided-backprop", "lrp-epsilon")},
    **{n: _direct_zennit for n in ("lrp-epsilon-plus-flat", "lrp-epsilon-gamma-box")},
}


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared CPU, two spinning threads make single timings jump by 2×."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_wrapper_overhead(benchmark, registry, fixed, one_thread, name):
    model, x, t = fixed
    spec = registry.get("methods", name).spec
    params = defaults(spec.params)
    calls = {"wrapper": lambda: spec.explain(model, x.clone(), t, params),
             "direct": lambda: DIRECT[name](name, model.module, x.clone(), t, params)}
    ratios: list[float] = []
    best = {"wrapper": float("inf"), "direct": float("inf")}

    def pair():
        # adjacent calls see the same load; alternate the order so neither always goes first
        order = ("wrapper", "direct") if len(ratios) % 2 == 0 else ("direct", "wrapper")
        took = {}
        for kind in order:
            start = time.perf_counter()
            calls[kind]()
            took[kind] = time.perf_counter() - start
            best[kind] = min(best[kind], took[kind])
            model.module.zero_grad(set_to_none=True)
        ratios.append(took["wrapper"] / took["direct"])

    torch.testing.assert_close(calls["wrapper"](), calls["direct"](), rtol=1e-4, atol=1e-6)
    start = time.perf_counter()
    calls["direct"]()
    rounds = int(min(120, max(12, 10.0 / (time.perf_counter() - start))))  # about 20 s per method
    benchmark.pedantic(pair, rounds=rounds, warmup_rounds=1)
    ratios = ratios[1:]  # the warm-up pair
    ratio = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    benchmark.extra_info.update(pairs=len(ratios), overhead=ratio - 1, overhead_iqr=[q1 - 1, q3 - 1],
                                wrapper_min_s=best["wrapper"], direct_min_s=best["direct"])
    assert ratio < 1.05, f"{name}: the wrapper costs {100 * (ratio - 1):.1f}% over calling the library directly"
