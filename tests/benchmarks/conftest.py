"""Benchmarks run only when asked for: `pytest tests/benchmarks --benchmark-enable`.

They compare against a reference measured in the same run (ratios), never against wall-clock
thresholds; the default test run skips them to stay within its time budget.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_enable", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with --benchmark-enable")
    for item in items:
        item.add_marker(skip)
