"""How fast the leaderboard builds from a large run: 5 million result rows.

The run is synthetic (``xbench.leaderboard.synthetic.random_run``, rows built by
``xbench.results.RowBuilder``: two datasets, seven model variants across fine-tune degree,
pre-training and an untrained baseline, three seeds, five method variants including CAM layers and
a random baseline, 1,250 samples, TPR/TNR/POMPOM, a MoRF curve, an RMSE family, model-level ΔAUC
and model-fit rows, explanation costs). Measured in the same session:

- ``floor``: reading every Parquet part of the run with pyarrow, all columns (what any tool that
  looks at the results must pay);
- ``build``: ``xbench leaderboard`` end to end (load, aggregate with bootstrap CIs, tests, costs
  and metric agreement, figures, pages, Markdown, CSV).

Run::

    pytest tests/benchmarks/test_bench_leaderboard.py --benchmark-enable -s

The issue's budget is a build under a minute on the project's 2-core machine. As every benchmark
here it is asserted as a ratio to the floor measured in the same run, so a slower or busier
machine does not fail it by itself: in the session that chose the grouping engine (see
``xbench.leaderboard.aggregate``; load average 7–11 on the 2 cores) the floor took 13–18 s and the
build 41–55 s, a ratio of 2.6–3.5; ``MAX_RATIO`` allows about twice that.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from xbench.leaderboard import build_leaderboard
from xbench.leaderboard.synthetic import random_run

MAX_RATIO = 6.0
MEDIANS: dict[str, float] = {}
INFO: dict[str, object] = {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench5m")
    random_run(path, datasets=("lesions", "cardiac"), samples=1250, morf_steps=8, gallery=3, size=32)
    return path


def test_floor_read_all_parts(benchmark, run_dir):
    files = sorted((run_dir / "results").glob("*.parquet"))

    def read():
        return sum(pq.read_table(f).num_rows for f in files)

    rows = benchmark.pedantic(read, rounds=2, iterations=1, warmup_rounds=0)
    INFO["rows"] = rows
    assert rows >= 4_900_000
    MEDIANS["floor"] = benchmark.stats.stats.median


def test_build_leaderboard(benchmark, run_dir, tmp_path):
    site = benchmark.pedantic(lambda: build_leaderboard(run_dir, tmp_path / "site"), rounds=1, iterations=1)
    prov = json.loads((site / "provenance.json").read_text())
    assert prov["rows"] >= 4_900_000 and (site / "dataset-lesions.html").is_file()
    assert prov["run_status"]["complete"]
    INFO["stages"] = prov["build_seconds"]
    MEDIANS["build"] = benchmark.stats.stats.median
    benchmark.extra_info.update(rows=prov["rows"], stages=prov["build_seconds"])


def test_build_within_budget_of_the_floor():
    """The build costs at most ``MAX_RATIO`` times reading the parts; prints the stages."""
    if "floor" not in MEDIANS or "build" not in MEDIANS:
        pytest.skip("run the whole module")
    ratio = MEDIANS["build"] / MEDIANS["floor"]
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in INFO["stages"].items())
    print(f"\nleaderboard from {INFO['rows']:,} rows: build {MEDIANS['build']:.1f} s ({stages}); "
          f"reading the parts alone {MEDIANS['floor']:.1f} s; ratio {ratio:.1f}× (at most {MAX_RATIO:.0f}×)")
    assert ratio <= MAX_RATIO, f"the build takes {ratio:.1f}× reading the parts; the budget is {MAX_RATIO:.0f}×"
