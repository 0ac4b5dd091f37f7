"""Benchmarks run only when asked for: `pytest tests/benchmarks --benchmark-enable`.

They compare against a reference measured in the same run (ratios), never against wall-clock
thresholds; the default test run skips them to stay within its time budget.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    # pytest calls this hook with every collected item, not only this folder's: skip ours alone.
    if config.getoption("benchmark_enable", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with --benchmark-enable")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)
