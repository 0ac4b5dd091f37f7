"""The renderer-independent table builder (xbench.leaderboard.tables): the objects that both the
HTML templates and the Markdown export read, built from a run whose every number is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xbench.leaderboard.aggregate import aggregate
from xbench.leaderboard.findings import evaluate
from xbench.leaderboard.load import load_run
from xbench.leaderboard.synthetic import table, write_run
from xbench.leaderboard.tables import Cost, Names, dataset_page, findings

MODELS = {"net[depth=10]": {"depth": 10, "untrained": False}, "net[depth=2]": {"depth": 2, "untrained": False},
          "net[untrained=true]": {"depth": 2, "untrained": True}}
BASE = {"good": 0.8, "bad": 0.4, "random": 0.2}
SECONDS = {"good": 0.004, "bad": 0.001, "random": 0.0001}
GRID = [("contrast", 1), ("contrast", 2), ("noise", 1), ("noise", 2)]
MANIFEST = {"specs": {"metrics": [
    {"name": "robust", "families": {"rmse": {"kind": "grid", "facet": "corruption", "level": "severity",
                                             "higher_is_better": False}}},
    {"name": "cls", "families": {"delta_auc": {"kind": "grid", "facet": "corruption", "level": "severity",
                                               "higher_is_better": False},
                                 "sensitivity": {"kind": "categorical", "facet": "class", "level": None,
                                                 "higher_is_better": True}}}]}}


def known_run(path):
    tables = []
    for model, params in MODELS.items():
        for seed in (0, 1):
            cell = {"dataset_label": "toy", "model_label": model, "model": "net", "seed": seed,
                    "model_params": json.dumps(params)}
            tables.append(table({**cell, "scope": "model", "metric_label": "cls", "category": "classification",
                                 "value_name": ["accuracy", None, None, None],
                                 "family": [None, "sensitivity", "delta_auc", "delta_auc"],
                                 "facet": [None, "NOR", "contrast", "contrast"], "level": [None, None, 1, 2],
                                 "value": [0.9 - 0.1 * params["untrained"] + 0.01 * seed, 0.7, 0.02, 0.04],
                                 "higher_is_better": [True, True, False, False]}, 4))
            for method, base in BASE.items():
                unit = {**cell, "method_label": method, "method_baseline": method == "random",
                        "explain_seconds": SECONDS[method] * (1 + seed), "explain_peak_bytes": 2**20 * (1 + seed)}
                tables.append(table({**unit, "metric_label": "loc", "value_name": "hit",
                                     "value": base + 0.1 * seed + np.array([0.0, 0.02]), "higher_is_better": True,
                                     "sample": [0, 1], "label": [0, 1], "prediction": [0, 1]}, 2))
                tables.append(table({**unit, "metric_label": "robust", "category": "robustness", "family": "rmse",
                                     "facet": np.repeat([c for c, _ in GRID], 2),
                                     "level": np.repeat([float(s) for _, s in GRID], 2),
                                     "value": np.repeat([10.0 * s + (0 if method == "good" else 5) for _, s in GRID], 2),
                                     "higher_is_better": False, "sample": np.tile([0, 1], len(GRID))}, 2 * len(GRID)))
    return write_run(path, tables, MANIFEST)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = load_run(known_run(tmp_path_factory.mktemp("tables")))
    agg = aggregate(run.frame, resamples=200)
    names = Names.of(agg, run.manifest)
    return dataset_page(agg, "toy", "dataset-toy.html", names), run


def table_of(page, value, view="all"):
    (t,) = [t for s in page.views[view] for t in s.ranked + s.descriptive if t.value == value]
    return t


def test_models_in_natural_order_untrained_last(built):
    page, _ = built
    assert [(m.label, m.untrained) for m in page.models] == [
        ("net[depth=2]", False), ("net[depth=10]", False), ("net[untrained=true]", True)]
    assert page.n_methods == 3 and page.seeds == 2


def test_score_table_cells_ranks_baselines_and_costs(built):
    page, _ = built
    t = table_of(page, "hit")
    assert (t.metric, t.name, t.direction, t.category, t.over) == ("loc", "hit", "↑", "localisation", "")
    assert [c.label for c in t.columns] == ["net[depth=2]", "net[depth=10]", "net[untrained=true]"]
    assert [c.untrained for c in t.columns] == [False, False, True]
    assert t.columns[0].accuracy == pytest.approx(0.905) and t.columns[2].accuracy == pytest.approx(0.805)
    assert [r.method for r in t.rows] == ["good", "bad", "random"] and t.rows[-1].baseline
    good = t.rows[0]
    assert good.cells[0].mean == pytest.approx(0.8 + 0.05 + 0.01) and good.cells[0].best
    assert good.mean_rank == 1.0 and t.rows[1].mean_rank == 2.0 and math.isnan(t.rows[2].mean_rank)
    assert not t.rows[2].cells[0].has_rank  # a baseline is never ranked
    # cost: median over the 6 cells (3 models × 2 seeds) of the per-sample time and the peak
    assert t.costs and good.cost == Cost(pytest.approx(0.006), pytest.approx(1.5 * 2**20), 6)
    correct = table_of(page, "hit", "correct")
    assert correct.rows[0].cells[0].mean == pytest.approx(0.8 + 0.05 + 0.01)


def test_summaries_are_named_with_their_members_and_the_declared_facet_names(built):
    page, _ = built
    overall, contrast = table_of(page, "rmse/*"), table_of(page, "rmse/contrast/*")
    assert (overall.name, overall.over) == ("rmse (mean over 4 facets)", "corruption × severity")
    assert (contrast.name, contrast.over) == ("rmse/contrast (mean over 2 facets)", "severity")
    assert overall.rows[0].method == "good" and overall.rows[0].cells[0].mean == pytest.approx(15.0)
    assert [s.category for s in page.views["all"]] == ["localisation", "robustness"]


def test_model_level_tables(built):
    page, _ = built
    main, detail = page.classification.main, page.classification.detail
    assert [c.value for c in main.columns] == ["accuracy", "delta_auc/*"]
    assert main.columns[1].name == "delta_auc (mean over 2 facets)"
    assert [c.value for c in detail.columns] == ["sensitivity/NOR"]  # a categorical member: per class
    assert [r.model for r in main.rows] == [m.label for m in page.models] and main.rows[-1].untrained
    (grid, *_) = page.grids
    assert len(page.grids) == 3 and grid.title == "cls / delta_auc on net[depth=2]"
    assert (grid.facet_name, grid.level_name, grid.levels) == ("corruption", "severity", ["1", "2"])
    assert [(r.facet, r.cells) for r in grid.rows] == [("contrast", [pytest.approx(0.02), pytest.approx(0.04)])]


def test_tests_and_leaders(built):
    page, _ = built
    assert {b.view for b in page.paired} == {"all", "correct"}
    block = next(b for b in page.paired if b.view == "all" and b.title.startswith("robust"))
    assert "rmse (mean over 4 facets)" in {r["value_display"] for r in block.rows}
    leaders = {x["table"]: x["method"] for x in page.leaders}
    assert leaders["loc / hit ↑"] == "good" and leaders["robust / rmse (mean over 4 facets) ↓"] == "good"


def test_findings_rows(built):
    _, run = built
    claim = {"id": "good-beats-bad", "claim": "good > bad", "source": "here", "metric": "loc", "value": "hit",
             "relation": "greater", "a": {"method": "good"}, "b": {"method": "bad"}, "test": "wilcoxon"}
    f = findings(evaluate(run.frame, [claim]))
    assert [(r.id, r.relation) for r in f.rows] == [("good-beats-bad", "greater")]
    assert f.counts == {"reproduced": 0, "contradicted": 0, "inconclusive": 1}  # no model-fit accuracy recorded
    assert f.rows[0].reason.startswith("no accuracy recorded")


def test_methods_at_a_glance_ranks_each_method_per_category(built):
    page, _ = built
    o = page.overview
    assert o.categories == ["localisation", "robustness"]
    rows = {r.method: r for r in o.rows}
    assert [r.method for r in o.rows] == ["good", "bad", "random"]
    assert rows["good"].ranks == [1.0, 1.0] and rows["bad"].ranks == [2.0, 2.0]
    assert rows["random"].baseline and rows["random"].ranks == [None, None]  # baselines are never ranked
    assert o.best(0) == 1.0 and o.costs and rows["good"].cost.cells == 6


def test_cost_ranks_for_the_heatmap(built):
    """The heatmap's cost column: the rank of each method's time per sample, fastest first, among the
    non-baseline methods (good 4 ms, bad 1 ms per sample at seed 0; the medians over cells)."""
    page, _ = built
    o = page.overview
    ranks = dict(zip([r.method for r in o.rows], o.cost_ranks()))
    assert ranks == {"good": 2.0, "bad": 1.0, "random": None}
    assert o.ranked_methods == 2


def test_the_pages_say_how_the_costs_were_measured():
    from xbench.costs import MEASURES
    from xbench.leaderboard.tables import cost_note

    both = {"cells": {"a": {"costs": {"m": {"memory": "cpu-allocator"}}},
                      "b": {"costs": {"m": {"memory": "cuda-allocator"}, "n": {"memory": None}}}}}
    note = cost_note(both)
    assert MEASURES["cpu-allocator"] in note and MEASURES["cuda-allocator"] in note and "older" not in note
    assert "Time per sample" in note and "above what was allocated before it" in note
    older = {"cells": {"a": {"costs": {"m": {"peak_bytes": 2**30, "peak_scope": "method"}}}}}
    assert "older xbench: the process's peak memory" in cost_note(older)
    assert "not recorded in this run" in cost_note({})
