"""MPRT / eMPRT / random-logit speed on the small CNN, batch 32 of 1×32×32, saliency, measured in
one run against two references:

- ``floor``: the explanations the metric cannot avoid, as plain saliency calls of the batch
  (MPRT cascade with its curve: L = 4; eMPRT and random logit: 1);
- ``quantus``: Quantus 0.6's MPRT (top-down), EfficientMPRT and RandomLogit on the same inputs,
  with a precomputed a_batch where it takes one.

Run::

    OMP_NUM_THREADS=1 pytest tests/benchmarks/test_bench_randomisation.py --benchmark-enable -s \\
        --benchmark-timer time.process_time

The last test prints the ratios (xbench / floor, quantus / xbench). No timed assertions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xbench import TrainedModel, testing
from xbench.attribution import run_method
from xbench.plugins.methods import captum as cm
from xbench.plugins.metrics import randomisation as rm
from xbench.plugins.models.small_cnn import SmallCNN

SPECS = {s.name: s for s in rm.xbench_metrics()}
SALIENCY = next(s for s in cm.xbench_methods() if s.name == "saliency")
MEDIANS: dict[tuple[str, str], float] = {}
FLOOR_CALLS = {"mprt": 4, "emprt": 1, "random-logit": 1}


@pytest.fixture(scope="module")
def setup():
    data = testing.planted_dataset(n_train=8, n_val=8, n_test=32, size=32, seed=0)
    torch.manual_seed(0)
    module = SmallCNN(1, 2, 16).eval()
    model = TrainedModel(module=module, info=data.describe(), target_layers={})
    explain = lambda m, x, t: run_method(SALIENCY, m, x, t, {"abs": True})  # noqa: E731
    raw = explain(model, data.test.images[:32], data.test.labels[:32])
    return data, model, explain, raw


def _quantus_saliency(model, inputs, targets, **kwargs):
    from captum.attr import Saliency

    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    return Saliency(model).attribute(x, target=torch.as_tensor(np.asarray(targets)), abs=True).detach().numpy()


def _floor(benchmark, metric, data, model, explain, raw):
    x, y = data.test.images[:32], data.test.labels[:32]
    benchmark.pedantic(lambda: [explain(model, x, y) for _ in range(FLOOR_CALLS[metric])], rounds=5, iterations=1)


def _xbench(benchmark, metric, data, model, explain, raw):
    def go():
        return testing.score(SPECS[metric], testing.metric_context(model, data.test, attribution=raw, explain=explain,
                                                                   n=32))
    benchmark.pedantic(go, rounds=5, iterations=1, warmup_rounds=1)


def _quantus(benchmark, metric, data, model, explain, raw):
    quantus = pytest.importorskip("quantus")
    x, y = data.test.images[:32].numpy(), data.test.labels[:32].numpy()
    make = {"mprt": lambda: quantus.MPRT(layer_order="top_down", disable_warnings=True),
            "emprt": lambda: quantus.EfficientMPRT(abs=True, disable_warnings=True),
            "random-logit": lambda: quantus.RandomLogit(num_classes=2, abs=True, disable_warnings=True)}[metric]

    def go():
        return make()(model=model.module, x_batch=x, y_batch=y, a_batch=raw.numpy(), explain_func=_quantus_saliency,
                      device="cpu", batch_size=32)
    benchmark.pedantic(go, rounds=5, iterations=1, warmup_rounds=1)


KINDS = {"floor": _floor, "xbench": _xbench, "quantus": _quantus}


@pytest.mark.parametrize("metric,kind", [(m, k) for m in FLOOR_CALLS for k in KINDS])
def test_randomisation_speed(benchmark, setup, metric, kind):
    benchmark.group = f"{metric} cnn-32x1x32"
    KINDS[kind](benchmark, metric, *setup)
    MEDIANS[metric, kind] = benchmark.stats.stats.median


def test_report_ratios():
    """Prints the ratios of the medians measured above (run with -s to see them)."""
    lines = []
    for metric in FLOOR_CALLS:
        got = {kind: MEDIANS.get((metric, kind)) for kind in KINDS}
        if got["floor"] is None or got["xbench"] is None:
            continue
        line = (f"{metric}: floor {got['floor'] * 1e3:.1f} ms, xbench {got['xbench'] * 1e3:.1f} ms "
                f"({got['xbench'] / got['floor']:.2f}x floor)")
        if got["quantus"] is not None:
            line += f", quantus {got['quantus'] * 1e3:.1f} ms ({got['quantus'] / got['xbench']:.2f}x xbench)"
        lines.append(line)
    print("\n" + "\n".join(lines))
    assert lines, "run the benchmarks above first (pytest --benchmark-enable)"
