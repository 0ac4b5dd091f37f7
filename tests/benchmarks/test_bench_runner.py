"""The runner's overhead on the quick preset: total run time against the plugin calls' own time.

Plugin time is what the runner measures around every plugin call (load, build, fit, predict,
explain, score); everything else — planning, hashing, caches, reductions, row building, Parquet
writes, the manifest — is the runner's overhead. Run: pytest tests/benchmarks --benchmark-enable
"""

from __future__ import annotations

import shutil

from xbench.config import load_config
from xbench.registry import load_registry
from xbench.runner import run


def test_runner_overhead_on_quick_preset(benchmark, tmp_path):
    registry = load_registry()
    config = load_config("quick", registry)
    out = tmp_path / "quick"

    def once():
        shutil.rmtree(out, ignore_errors=True)
        return run(config, registry, out=out)

    summary = benchmark.pedantic(once, rounds=1, iterations=1)
    assert not summary.failed, summary.failed
    overhead = summary.wall_seconds - summary.plugin_seconds
    ratio = summary.wall_seconds / summary.plugin_seconds
    benchmark.extra_info.update(wall_seconds=summary.wall_seconds, plugin_seconds=summary.plugin_seconds,
                                overhead_seconds=overhead, wall_over_plugin=ratio, units=summary.computed)
    print(f"\nquick preset: wall {summary.wall_seconds:.1f} s, plugin calls {summary.plugin_seconds:.1f} s, "
          f"overhead {overhead:.2f} s ({100 * (ratio - 1):.1f}%) over {summary.computed} units")
    assert ratio < 1.05, f"runner overhead {100 * (ratio - 1):.1f}% of plugin time"


def test_corrupted_batches_shared_between_methods(benchmark):
    """saliency-rmse on six methods of one cell: with the corrupted batches computed once per cell
    (``MetricContext.reuse``) against once per method, in one process, the same numbers. Target:
    ≥ 1.1× (measured 1.2–1.3× on a loaded 2-core machine, one thread, CPU time; the methods' own
    re-explaining is in both)."""
    import time

    import torch

    from xbench import testing
    from xbench.attribution import run_method
    from xbench.cell import SharedInputs
    from xbench.results import metric_context, prepare_attribution
    from xbench.specs import defaults

    torch.set_num_threads(1)
    registry = load_registry()
    data = testing.planted_dataset(n_train=8, n_val=8, n_test=32, size=96)
    model = testing.model_from_spec(registry.get("models", "small-cnn").spec, data, {"width": 8})
    x, t = data.test.images, data.test.labels
    metric = registry.get("metrics", "saliency-rmse").spec
    params = {**defaults(metric.params), "severities": [1, 3, 5]}
    logits = model.module(x).detach()
    contexts = []
    for name in ("saliency", "input-x-gradient", "grad-cam", "centre", "random", "sobel"):
        spec = registry.get("methods", name).spec
        p = defaults(spec.params)
        attribution = prepare_attribution(run_method(spec, model, x, t, p), tuple(x.shape[-2:]), "abs-luminance", name)
        contexts.append(dict(model=model, inputs=x, labels=t, logits=logits, targets=t, target_mode="label",
                             params=params, predict=model.module, attribution=attribution, dataset=data, method=name,
                             explainer=lambda m, v, w, spec=spec, p=p: run_method(spec, m, v, w, p)))

    def cell(shared: bool):
        store = SharedInputs()
        return [metric.score(metric_context(**c, generator=torch.Generator().manual_seed(0),
                                            shared=store.of((0, 32)) if shared else None))["rmse"]
                for c in contexts]

    def fastest(shared: bool, rounds: int = 3) -> float:
        best = float("inf")
        for _ in range(rounds):
            start = time.process_time()
            cell(shared)
            best = min(best, time.process_time() - start)
        return best

    alone, shared = cell(False), cell(True)
    assert all(torch.equal(a[k], s[k]) for a, s in zip(alone, shared) for k in a)
    per_method = fastest(False)
    once = benchmark.pedantic(lambda: fastest(True), rounds=1, iterations=1)
    ratio = per_method / once
    benchmark.extra_info.update(per_method_seconds=per_method, shared_seconds=once, ratio=ratio)
    print(f"\nsaliency-rmse on 6 methods: per method {per_method:.2f} s, shared {once:.2f} s ({ratio:.2f}×)")
    assert ratio >= 1.1
