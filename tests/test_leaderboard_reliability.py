"""The metric-reliability panel on synthetic runs whose agreement is known in advance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as st

from xbench.leaderboard.aggregate import aggregate
from xbench.leaderboard.load import load_frame
from xbench.leaderboard.reliability import POOLED, _kendall
from xbench.leaderboard.synthetic import table, write_run
from xbench.leaderboard.tables import reliability as reliability_panel

METHODS = ["a", "b", "c", "d"]
SAMPLES = np.arange(3)


def scores(order, seed):
    """Per-sample values of each method: method i scores order[i] (+ the same per-seed shift for all)."""
    return {m: order[i] + 0.01 * seed + 0.001 * SAMPLES for i, m in enumerate(METHODS)}


SERIES = {  # (metric label, metric name, its params (JSON), value, higher is better) → the methods' order of merit
    ("loc", "loc", "{}", "hit", True): [1, 2, 3, 4],
    ("loc", "loc", "{}", "miss", False): [-1, -2, -3, -4],      # lower is better: the same ranking
    ("rev", "rev", "{}", "x", True): [4, 3, 2, 1],              # reversed
    ("swap", "swap", "{}", "y", True): [1, 2, 4, 3],            # one discordant pair of six
    ("aopc[fill=black]", "aopc", '{"fill": "black"}', "aopc", True): [1, 2, 3, 4],
    ("aopc[fill=blur]", "aopc", '{"fill": "blur"}', "aopc", True): [10, 20, 30, 40],
}


def agreement_run(path, seeds=(0, 1, 2)):
    tables = []
    models = {"m1": {"untrained": False, "v": 1}, "m2": {"untrained": False, "v": 2},
              "mu": {"untrained": True, "v": 1}}
    for model, params in models.items():
        for seed in seeds:
            cell = {"dataset_label": "toy", "model_label": model, "seed": seed, "model_params": json.dumps(params)}
            for (label, name, metric_params, value, hib), order in SERIES.items():
                if params["untrained"]:
                    order = [order[i] for i in (2, 0, 3, 1)]  # an untrained model ranks at random
                for method, v in scores(order, seed).items():
                    tables.append(table({**cell, "method_label": method, "metric_label": label, "metric": name,
                                         "metric_params": metric_params, "value_name": value, "value": v, "higher_is_better": hib,
                                         "sample": SAMPLES}, 3))
                tables.append(table({**cell, "method_label": "random", "method_baseline": True, "metric_label": label,
                                     "metric": name, "metric_params": metric_params, "value_name": value, "value": 100.0 * (1 if hib else -1)
                                     * np.ones(3), "higher_is_better": hib, "sample": SAMPLES}, 3))
    return write_run(path, tables)


@pytest.fixture(scope="module")
def agg(tmp_path_factory):
    frame, _ = load_frame(agreement_run(tmp_path_factory.mktemp("agree")))
    return aggregate(frame, resamples=200)


def pair(frame, a, b, model=POOLED):
    sel = frame[(frame["model_label"] == model)
                & (((frame["metric_a"] == a[0]) & (frame["value_a"] == a[1]) & (frame["metric_b"] == b[0])
                    & (frame["value_b"] == b[1]))
                   | ((frame["metric_a"] == b[0]) & (frame["value_a"] == b[1]) & (frame["metric_b"] == a[0])
                      & (frame["value_b"] == a[1])))]
    assert len(sel) == 1, (a, b, model, len(sel))
    return sel.iloc[0]


def test_identical_rankings_agree_perfectly(agg):
    r = pair(agg.reliability, ("loc", "hit"), ("loc", "miss"))
    assert (r["tau"], r["tau_low"], r["tau_high"]) == (1.0, 1.0, 1.0)  # every resampling keeps the order
    assert (r["methods"], r["models"], r["seeds"], r["kind"]) == (4, 2, 3, "metrics")  # no baseline, no untrained


def test_reversed_ranking_is_minus_one_and_one_swap_is_two_thirds(agg):
    assert pair(agg.reliability, ("loc", "hit"), ("rev", "x"))["tau"] == -1.0
    swap = pair(agg.reliability, ("loc", "hit"), ("swap", "y"))
    assert swap["tau"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    assert pair(agg.reliability, ("rev", "x"), ("swap", "y"))["tau"] == pytest.approx(-4 / 6)


def test_untrained_models_and_baselines_are_left_out(agg):
    models = set(agg.reliability["model_label"])
    assert models == {"m1", "m2", POOLED}
    per_model = pair(agg.reliability, ("loc", "hit"), ("rev", "x"), model="m2")
    assert per_model["tau"] == -1.0 and per_model["models"] == 1


def test_hyper_parameter_variants_of_one_metric(agg):
    variants = agg.reliability[(agg.reliability["kind"] == "variants") & (agg.reliability["model_label"] == POOLED)]
    assert len(variants) == 1
    v = variants.iloc[0]
    assert {v["metric_a"], v["metric_b"]} == {"aopc[fill=black]", "aopc[fill=blur]"} and v["tau"] == 1.0


def test_the_panel_is_a_symmetric_matrix_with_the_variants_apart(agg):
    panel = reliability_panel(agg.reliability, lambda metric, value: value)
    assert len(panel.series) == len(SERIES)
    n = len(panel.series)
    for i in range(n):
        assert panel.matrix[i][i] is None
        for j in range(n):
            if i != j:
                assert panel.matrix[i][j] is panel.matrix[j][i] and panel.matrix[i][j] is not None
    hit, rev = panel.series.index("loc / hit"), panel.series.index("rev / x")
    assert panel.matrix[hit][rev].tau == -1.0 and panel.matrix[hit][rev].shade == -3
    assert [(v.value, v.agreement.tau) for v in panel.variants] == [("aopc", 1.0)]


def test_one_seed_has_no_interval(tmp_path):
    frame, _ = load_frame(agreement_run(tmp_path, seeds=(0,)))
    r = pair(aggregate(frame, resamples=50).reliability, ("loc", "hit"), ("rev", "x"))
    assert r["tau"] == -1.0 and np.isnan(r["tau_low"]) and np.isnan(r["tau_high"])


def test_kendall_matches_scipy_tau_b_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(5, 1, 9)).astype(float)  # 5 series of 9 methods, with ties
    valid = np.ones((5, 9), bool)
    valid[4, 2] = False  # series 4 does not score method 2
    pairs = [(0, 1), (1, 2), (0, 4)]
    tau, shared = _kendall(x, valid, pairs)
    for p, (a, b) in enumerate(pairs):
        keep = valid[a] & valid[b]
        assert tau[p, 0] == pytest.approx(st.kendalltau(x[a, 0, keep], x[b, 0, keep]).statistic)
        assert shared[p] == keep.sum()
