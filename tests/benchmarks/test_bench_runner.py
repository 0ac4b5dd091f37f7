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
