"""The row contract (xbench.results), without training anything: what a metric may return, the NaN
rule for every map a metric sees, the rows RowBuilder writes, and older parts upgraded."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from xbench import results
from xbench.config import Variant
from xbench.plan import Cell
from xbench.results import (
    NONFINITE,
    REEXPLAINED,
    SCHEMA,
    V1_COLUMNS,
    MetricOutputError,
    RowBuilder,
    UnitIdentity,
    prepare_attribution,
    score,
    upgrade,
    validated,
)
from xbench.specs import Family, MetricSpec, TrainedModel

N = 4


def spec(values, scope="sample", score_fn=None) -> MetricSpec:
    return MetricSpec("m", score_fn or (lambda ctx: {}), values, "localisation", scope=scope)


# ----------------------------------------------------------------------------- output validation

def test_plain_values_and_every_kind_of_family_are_validated_into_rows_of_values():
    s = spec({"hit": True, "count": None, "morf": Family(False, level="step"), "mass": Family(True, facet="region"),
              "rmse": Family(False, facet="corruption", level="severity")})
    out = validated(s, {"hit": torch.ones(N), "count": [1, 2, 3, 4], "morf": {0: torch.zeros(N), 2: torch.ones(N)},
                        "mass": {"left ventricle": torch.ones(N)}, "rmse": {("contrast", 3): torch.ones(N)}}, N)
    by = {v.name: v for v in out}
    assert set(by) == {"hit", "count", "morf/0", "morf/2", "mass/left-ventricle", "rmse/contrast/3"}
    assert by["morf/2"].family == "morf" and by["morf/2"].level == 2.0 and by["morf/2"].facet is None
    assert by["rmse/contrast/3"].facet == "contrast" and by["rmse/contrast/3"].higher_is_better is False
    assert by["count"].higher_is_better is None and by["count"].values.dtype == torch.float64


@pytest.mark.parametrize("out, n, match", [
    ({"undeclared": torch.ones(N)}, N, "undeclared value 'undeclared'"),
    ({"hit": torch.ones(N + 1)}, N, r"expected one value per sample \(4,\)"),
    ({"hit": torch.ones(N)}, None, "expected a scalar"),
    ({"hit": torch.ones(N, dtype=torch.complex64)}, N, "complex values"),
    ({"hit": "high"}, N, "not a number"),
    ({}, N, "returned no values"),
    ([1.0], N, "must return a dict"),
    ({"morf": torch.ones(N)}, N, "declares 'morf' as a family"),
    ({"morf": {"first": torch.ones(N)}}, N, "each key must be a number"),
])
def test_what_a_metric_may_not_return_is_refused_with_the_reason(out, n, match):
    with pytest.raises(MetricOutputError, match=match):
        validated(spec({"hit": True, "morf": Family(False, level="step")}), out, n)


# ----------------------------------------------------------------------------- the NaN rule

def context(maps: torch.Tensor | None = None, explainer=None):
    x = torch.rand(N, 1, 6, 6)
    model = TrainedModel(module=torch.nn.Identity(), info=None, target_layers={})
    prepared = None if maps is None else prepare_attribution(maps, (6, 6), "abs-luminance")
    return results.metric_context(model=model, inputs=x, labels=torch.zeros(N, dtype=torch.long),
                                  logits=torch.zeros(N, 2), targets=torch.zeros(N, dtype=torch.long),
                                  target_mode="label", params={}, generator=torch.Generator().manual_seed(0),
                                  predict=lambda v: torch.zeros(len(v), 2), attribution=prepared,
                                  explainer=explainer)


def test_nonfinite_maps_are_zeroed_flagged_and_every_value_of_their_sample_is_nan():
    maps = torch.rand(N, 1, 6, 6)
    maps[1, 0, 2, 2] = float("nan")
    maps[3, 0, 0, 0] = float("inf")
    ctx = context(maps)
    assert torch.isfinite(ctx.attribution).all() and torch.isfinite(ctx.raw_attribution).all()
    assert ctx.undefined.tolist() == [False, True, False, True]
    seen = {}

    def mean_map(c):
        seen["finite"] = bool(torch.isfinite(c.attribution).all())
        return {"hit": c.attribution.flatten(1).mean(1), "count": torch.ones(N)}

    out = {v.name: v.values for v in score(spec({"hit": True, "count": None}, score_fn=mean_map), ctx)}
    assert seen["finite"]
    for values in out.values():
        assert [math.isnan(v) for v in values.tolist()] == [False, True, False, True]
    assert results.notes_per_sample(ctx, N) == [None, NONFINITE, None, NONFINITE]


def test_maps_a_metric_asks_for_again_follow_the_same_rule():
    """Re-explained maps (a randomised model, corrupted or noisy inputs): finite for the metric, the
    sample that had NaN flagged and reported NaN; stacked copies of the batch map to their sample."""
    def explainer(model, x, targets):
        out = torch.ones(len(x), 1, 6, 6)
        out[len(x) - 2] = float("nan")  # the second-to-last map of every call
        return out

    ctx = context(torch.rand(N, 1, 6, 6), explainer)
    seen = {}

    def metric(c):
        again = c.explain(c.inputs)
        stacked = c.explain_raw(torch.cat([c.inputs, c.inputs]), targets=torch.zeros(2 * N, dtype=torch.long))
        seen["finite"] = bool(torch.isfinite(again).all() and torch.isfinite(stacked).all())
        return {"hit": again.flatten(1).mean(1)}

    (value,) = score(spec({"hit": True}, score_fn=metric), ctx)
    assert seen["finite"]
    assert [math.isnan(v) for v in value.values.tolist()] == [False, False, True, False]
    assert results.notes_per_sample(ctx, N)[2] == REEXPLAINED
    other = context(torch.rand(N, 1, 6, 6), explainer)  # maps of unrelated inputs: no sample to blame
    other.explain_raw(torch.rand(3, 1, 6, 6), targets=torch.zeros(3, dtype=torch.long))
    assert other.undefined.all()


def test_a_metric_that_returns_nan_without_a_reason_gets_a_note():
    ctx = context(torch.rand(N, 1, 6, 6))
    score(spec({"hit": True}, score_fn=lambda c: {"hit": torch.tensor([0.0, float("nan"), 1.0, 1.0])}), ctx)
    assert results.notes_per_sample(ctx, N)[1] == "metric m returned NaN or Inf without a reason"


# ----------------------------------------------------------------------------- rows

def identity(untrained=False, method=True, baseline=False) -> UnitIdentity:
    cell = Cell(Variant("datasets", "d", "1", {"n": 1}, "d[n=1]"),
                Variant("models", "m", "2", {"untrained": untrained}, "m"), 7)
    meth = Variant("methods", "saliency", "1", {}, "saliency") if method else None
    metric = Variant("metrics", "loc", "3", {"k": 2}, "loc[k=2]")
    return UnitIdentity("u1", cell, meth, metric, "label", "abs-luminance", baseline)


def test_sample_rows_hold_one_row_per_value_and_sample_with_every_schema_column():
    s = spec({"hit": True, "morf": Family(False, level="step")})
    values = validated(s, {"hit": torch.tensor([1.0, 0.0, 0.5]), "morf": {4: torch.zeros(3)}}, 3)
    builder = RowBuilder(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([0, 1, 1]))
    table = builder.sample_table(identity(baseline=True), s, values, 3, [None, "empty mask", None],
                                 {"seconds_per_sample": 0.01, "added_bytes": 2048})
    assert table.schema.equals(SCHEMA) and table.num_rows == 6
    rows = table.to_pylist()
    first = rows[0]
    assert (first["dataset_label"], first["model_version"], first["metric_params"], first["seed"]) == \
        ("d[n=1]", "2", json.dumps({"k": 2}, separators=(",", ":")), 7)
    assert first["method_baseline"] is True and first["model_untrained"] is False and first["scope"] == "sample"
    assert [r["correct"] for r in rows[:3]] == [True, False, True] and [r["note"] for r in rows[:3]] == \
        [None, "empty mask", None]
    morf = rows[3]
    assert (morf["value_name"], morf["family"], morf["level"], morf["higher_is_better"]) == ("morf/4", "morf", 4.0, False)
    assert rows[5]["explain_seconds"] == 0.01 and rows[5]["explain_peak_bytes"] == 2048


def test_model_rows_have_no_method_sample_or_costs_and_the_untrained_flag_comes_from_the_params():
    s = spec({"accuracy": True}, scope="model")
    values = validated(s, {"accuracy": 0.9}, None)
    table = RowBuilder(np.zeros(0), np.zeros(0), np.zeros(0)).model_table(identity(untrained=True, method=False), s,
                                                                           values, "a note")
    (row,) = table.to_pylist()
    assert row["model_untrained"] is True and row["method"] is None and row["method_baseline"] is None
    assert row["sample"] is None and row["correct"] is None and row["reduction"] is None and row["note"] == "a note"
    assert row["explain_seconds"] is None and row["value"] == pytest.approx(0.9)


def test_parts_of_results_schema_1_are_upgraded():
    s = spec({"morf": Family(False, level="step"), "rmse": Family(False, facet="corruption", level="severity"),
              "hit": True})
    values = validated(s, {"morf": {1: torch.ones(2)}, "rmse": {("blur", 2): torch.ones(2)}, "hit": torch.ones(2)}, 2)
    now = RowBuilder(np.zeros(2), np.zeros(2), np.zeros(2)).sample_table(identity(baseline=True), s, values, 2,
                                                                         [None, None])
    old = now.to_pandas()
    old["baseline"] = old["method_baseline"].fillna(False).astype(bool) | old["model_untrained"]
    v1 = pa.Table.from_pandas(old[V1_COLUMNS + ["baseline"]], preserve_index=False)
    assert results.schema_version(v1.schema.metadata) == 1
    up = upgrade(v1)
    assert up.schema.equals(SCHEMA)
    for column in ("value_name", "family", "facet", "level", "method_baseline", "model_untrained", "value"):
        assert up.column(column).to_pylist() == now.column(column).to_pylist(), column
    assert results.schema_version(results.stamp(now).schema.metadata) == results.RESULTS_SCHEMA


# ----------------------------------------------------------------------------- the README

def test_the_readme_lists_every_column_of_the_schema():
    documented = [name for names, _ in results.COLUMN_DOCS for name in names]
    assert sorted(documented) == sorted(SCHEMA.names) and len(documented) == len(set(documented))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert results.columns_markdown() in readme, (
        "README's column table differs from xbench.results.SCHEMA: paste the output of "
        "`python -c 'import xbench.results as r; print(r.columns_markdown())'` into its Results section")
    assert re.search(r"\[ARCHITECTURE\.md\]\(ARCHITECTURE\.md\)", readme)


def test_every_column_but_the_per_row_ones_is_constant_within_a_unit():
    s = spec({"hit": True, "morf": Family(False, level="step")})
    values = validated(s, {"hit": torch.tensor([1.0, 0.0, 0.5]), "morf": {4: torch.zeros(3), 8: torch.ones(3)}}, 3)
    table = RowBuilder(np.array([0, 1, 1]), np.array([1, 1, 0]), np.array([0, 1, 1])).sample_table(
        identity(), s, values, 3, ["a", None, "b"], {"seconds_per_sample": 0.5, "added_bytes": 1})
    varying = {name for name in SCHEMA.names if len({json.dumps(v) for v in table.column(name).to_pylist()}) > 1}
    assert varying <= set(results.ROW_COLUMNS) and set(results.ROW_COLUMNS) <= set(SCHEMA.names)
    assert {"value_name", "value", "sample", "label", "prediction", "correct", "note"} <= varying
