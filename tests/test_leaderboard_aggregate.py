"""Aggregation on synthetic results whose every number is known in advance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from xbench.errors import DataError
from xbench.leaderboard import stats
from xbench.leaderboard.aggregate import aggregate, family_kind, model_pairs
from xbench.leaderboard.load import load_frame
from xbench.leaderboard.synthetic import table, write_run

SEEDS = (0, 1, 2)
SAMPLES = np.arange(4)
LABELS = np.array([0, 1, 0, 1])
PREDS = np.array([0, 1, 0, 0])  # sample 3 is misclassified
MODELS = {"m-a": {"loss": "cce", "untrained": False}, "m-b": {"loss": "heatmap", "untrained": False},
          "m-u": {"loss": "cce", "untrained": True}}
BASE = {"good": 0.8, "bad": 0.4, "rand": 0.2}
SHIFT = {"m-a": 0.0, "m-b": 0.05, "m-u": -0.5}


def hit(model, method, seed, sample):
    if model == "m-u":
        return 0.1 + 0.01 * seed + 0.001 * sample
    return BASE[method] + SHIFT[model] + 0.01 * seed + 0.001 * sample


def rmse(corruption, severity, method, sample):
    return {"noise": 10.0, "blur": 20.0}[corruption] * severity + (0 if method == "good" else 5) + sample


def exact_run(path, *, stale=False):
    tables = []
    for model, params in MODELS.items():
        for seed in SEEDS:
            cell = dict(dataset_label="toy", model_label=model, seed=seed, model_params=json.dumps(params))
            tables.append(table({**cell, "scope": "model", "metric_label": "classification",
                                 "category": "classification", "value_name": ["accuracy", "delta_auc/noise/1"],
                                 "family": [None, "delta_auc"], "facet": [None, "noise"], "level": [None, 1],
                                 "value": [0.75 + 0.01 * seed, 0.02 * (seed + 1)], "higher_is_better": [True, False]},
                                2))
            for method in BASE:
                base = {**cell, "method_label": method, "sample": SAMPLES, "label": LABELS, "prediction": PREDS,
                        "method_baseline": method == "rand"}
                hits = np.array([hit(model, method, seed, s) for s in SAMPLES])
                misses = 1 - hits
                if model == "m-a" and method == "bad" and seed == 0:
                    misses[1] = np.nan  # an undefined value (e.g. empty mask) is left out of every mean
                names = ["hit", "miss", "count"]
                tables.append(table({**base, "metric_label": "loc", "value_name": np.repeat(names, 4),
                                     "value": np.concatenate([hits, misses, 10 * hits]),
                                     "higher_is_better": np.repeat(np.array([True, False, None], dtype=object), 4),
                                     **{k: np.tile(v, 3) for k, v in (("sample", SAMPLES), ("label", LABELS),
                                                                     ("prediction", PREDS))}}, 12))
                tables.append(table({**base, "metric_label": "regions", "value_name": ["mass/heart", "mass/marker"],
                                     "family": "mass", "facet": ["heart", "marker"],
                                     "value": [0.7, 0.1], "higher_is_better": None, "sample": [0, 0],
                                     "label": [0, 0], "prediction": [0, 0]}, 2))
                facets = [("noise", 1), ("noise", 2), ("blur", 1)]
                tables.append(table({**base, "metric_label": "robust", "category": "robustness",
                                     "value_name": np.repeat([f"rmse/{c}/{s}" for c, s in facets], 4),
                                     "family": "rmse", "facet": np.repeat([c for c, _ in facets], 4),
                                     "level": np.repeat([s for _, s in facets], 4).astype(float),
                                     "value": np.concatenate([[rmse(c, s, method, i) for i in SAMPLES]
                                                              for c, s in facets]).astype(float),
                                     "higher_is_better": False,
                                     **{k: np.tile(v, 3) for k, v in (("sample", SAMPLES), ("label", LABELS),
                                                                     ("prediction", PREDS))}}, 12))
    run = write_run(path, tables)
    if stale:  # a part from an older plan: on disk, not in the manifest's units
        from xbench.store import RunStore

        RunStore(path).write_part("stale0000", table({"dataset_label": "old", "model_label": "m-a", "seed": 0,
                                                      "method_label": "good", "metric_label": "loc",
                                                      "value_name": "hit", "value": 99.0, "sample": 0,
                                                      "higher_is_better": True}))
    return run


@pytest.fixture(scope="module")
def agg(tmp_path_factory):
    run = exact_run(tmp_path_factory.mktemp("exact"), stale=True)
    frame, manifest = load_frame(run)
    return aggregate(frame, resamples=500)


def row(frame, view="all", **where):
    sel = frame[frame["view"] == view] if "view" in frame else frame
    for k, v in where.items():
        sel = sel[sel[k].astype(object) == v]
    assert len(sel) == 1, (where, len(sel))
    return sel.iloc[0]


def test_means_over_seeds_and_samples_are_exact(agg):
    r = row(agg.series, model_label="m-a", method_label="good", metric_label="loc", value_name="hit")
    assert r["mean"] == pytest.approx(0.8 + 0.01 + 0.0015)
    assert (r["seeds"], r["samples"], r["ci_over"]) == (3, 12, "seeds")
    per_seed = np.array([0.8 + 0.01 * s + 0.0015 for s in SEEDS])
    lo, hi = stats.bootstrap_ci(per_seed[None], resamples=500, seed=3)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo[0], hi[0]))
    assert per_seed.min() <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= per_seed.max()
    correct = row(agg.series, "correct", model_label="m-a", method_label="good", metric_label="loc", value_name="hit")
    assert correct["mean"] == pytest.approx(0.8 + 0.01 + 0.001)  # samples 0..2 only
    assert correct["samples"] == 9


def test_non_finite_values_are_left_out(agg):
    r = row(agg.per_seed, model_label="m-a", method_label="bad", metric_label="loc", value_name="miss", seed=0)
    assert r["n"] == 3
    assert r["mean"] == pytest.approx(np.mean([1 - hit("m-a", "bad", 0, s) for s in (0, 2, 3)]))


def test_stale_parts_are_ignored(agg):
    assert "old" not in set(agg.series["dataset_label"].astype(object))


def test_ranks_direction_baselines_and_rank_intervals(agg):
    hit_ranks = {m: row(agg.series, model_label="m-a", method_label=m, metric_label="loc", value_name="hit")
                 for m in BASE}
    assert hit_ranks["good"]["rank"] == 1 and hit_ranks["bad"]["rank"] == 2
    assert np.isnan(hit_ranks["rand"]["rank"]) and hit_ranks["rand"]["method_baseline"]
    assert (hit_ranks["good"]["rank_low"], hit_ranks["good"]["rank_high"]) == (1, 1)
    miss = row(agg.series, model_label="m-a", method_label="good", metric_label="loc", value_name="miss")
    assert miss["rank"] == 1  # lower is better
    count = row(agg.series, model_label="m-a", method_label="good", metric_label="loc", value_name="count")
    assert np.isnan(count["rank"])  # no direction, no rank
    untrained = row(agg.series, model_label="m-u", method_label="good", metric_label="loc", value_name="hit")
    assert untrained["model_baseline"] and not untrained["method_baseline"]


def test_family_summary_is_the_per_sample_mean_over_facets(agg):
    r = row(agg.series, model_label="m-b", method_label="bad", metric_label="robust", value_name="rmse/*")
    expected = np.mean([rmse(c, s, "bad", i) for c, s in [("noise", 1), ("noise", 2), ("blur", 1)] for i in SAMPLES])
    assert r["mean"] == pytest.approx(expected)
    assert r["higher_is_better"] is False or r["higher_is_better"] == False  # noqa: E712
    member = row(agg.per_seed, model_label="m-b", method_label="bad", metric_label="robust",
                 value_name="rmse/blur/1", seed=1)
    assert member["mean"] == pytest.approx(np.mean([rmse("blur", 1, "bad", i) for i in SAMPLES]))
    assert "rmse/blur/1" not in set(agg.series["value_name"].astype(object))  # members feed figures, not tables


def test_family_kinds_decide_summaries(tmp_path):
    # adapted: family_kinds/summaries_of parsed value names and are gone; the kind now follows from
    # the rows' facet columns, and the summaries from the kind
    assert family_kind(None, 3.0) == "curve" and family_kind("contrast", 3.0) == "grid"
    assert family_kind("heart", None) == "categorical" and family_kind(None, None) is None
    cell = dict(dataset_label="toy", model_label="m", seed=0, method_label="x", higher_is_better=False)
    run = write_run(tmp_path, [
        table({**cell, "metric_label": "curve", "family": "morf", "level": [0.0, 1.0], "value": [1.0, 3.0],
               "sample": [0, 0]}, 2),
        table({**cell, "metric_label": "grid", "family": "rmse", "facet": ["contrast", "contrast", "noise"],
               "level": [1.0, 2.0, 1.0], "value": [1.0, 3.0, 8.0], "sample": [0, 0, 0]}, 3),
        table({**cell, "metric_label": "cat", "family": "mass", "facet": ["heart", "fat"], "value": [0.7, 0.1],
               "sample": [0, 0]}, 2),
        table({**cell, "metric_label": "plain", "value_name": "tpr", "value": [0.5], "sample": [0]}, 1)])
    frame, _ = load_frame(run)
    series = aggregate(frame, resamples=50).series
    series = series[series["view"] == "all"]
    names = dict(zip(zip(series["metric_label"].astype(str), series["value_name"].astype(str)), series["mean"]))
    assert set(names) == {("curve", "morf/*"), ("grid", "rmse/*"), ("grid", "rmse/contrast/*"), ("grid", "rmse/noise/*"),
                   ("cat", "mass/heart"), ("cat", "mass/fat"), ("plain", "tpr")}
    assert names[("curve", "morf/*")] == pytest.approx(2.0) and names[("grid", "rmse/*")] == pytest.approx(4.0)
    assert names[("grid", "rmse/contrast/*")] == pytest.approx(2.0)


def test_per_corruption_summary_and_categorical_members(agg):
    r = row(agg.series, model_label="m-a", method_label="good", metric_label="robust", value_name="rmse/noise/*")
    assert r["mean"] == pytest.approx(np.mean([rmse("noise", s, "good", i) for s in (1, 2) for i in SAMPLES]))
    heart = row(agg.series, model_label="m-a", method_label="good", metric_label="regions", value_name="mass/heart")
    assert heart["mean"] == pytest.approx(0.7) and np.isnan(heart["rank"])  # no direction declared
    assert "mass/*" not in set(agg.series["value_name"].astype(object))


def test_model_level_values_and_their_families(agg):
    acc = row(agg.models, model_label="m-b", metric_label="classification", value_name="accuracy")
    assert acc["mean"] == pytest.approx(0.76) and acc["seeds"] == 3
    fam = row(agg.models, model_label="m-b", metric_label="classification", value_name="delta_auc/*")
    assert fam["mean"] == pytest.approx(0.04)


def test_paired_wilcoxon_on_the_same_seed_sample_pairs(agg):
    r = row(agg.paired, model_label="m-b", metric_label="loc", value_name="hit", method_a="bad", method_b="good")
    pairs = [(hit("m-b", "bad", s, i), hit("m-b", "good", s, i)) for s in SEEDS for i in SAMPLES]
    a, b = np.array(pairs).T
    assert r["n"] == 12
    assert r["p"] == pytest.approx(st.wilcoxon(a, b).pvalue)
    assert r["r"] == pytest.approx(-1.0) and r["median_diff"] == pytest.approx(-0.4)
    fam = agg.paired[(agg.paired["view"] == "all") & (agg.paired["model_label"].astype(object) == "m-b")
                     & (agg.paired["value_name"].astype(object) == "hit")]
    assert len(fam) == 3  # bad–good, bad–rand, good–rand
    assert fam["p_holm"].to_numpy() == pytest.approx(stats.holm(fam["p"].to_numpy()))
    correct = row(agg.paired, "correct", model_label="m-b", metric_label="loc", value_name="hit", method_a="bad",
                  method_b="good")
    assert correct["n"] == 9


def test_group_tests_compare_variants_over_per_seed_means(agg):
    r = row(agg.groups, dataset_label="toy", method_label="good", metric_label="loc", value_name="hit",
            model_a="m-a", model_b="m-b")
    x = [0.8 + 0.01 * s + 0.0015 for s in SEEDS]
    y = [0.85 + 0.01 * s + 0.0015 for s in SEEDS]
    ref = st.mannwhitneyu(x, y)
    assert (r["n_a"], r["n_b"], r["U"]) == (3, 3, ref.statistic)
    assert r["p"] == pytest.approx(ref.pvalue)
    assert r["cles"] == 0 and r["r"] == -1
    assert r["d"] == pytest.approx((np.mean(x) - np.mean(y)) / np.std(x, ddof=1))
    assert r["differs"] == "loss: cce vs heatmap"
    acc = row(agg.groups, method_label="—", value_name="accuracy", model_a="m-a", model_b="m-b")
    assert acc["mean_a"] == pytest.approx(0.76)


def test_model_pairs_one_parameter_at_a_time_when_many_variants():
    params = {f"v{d}{p}": {"degree": d, "pretrain": p} for d in (1, 2, 3) for p in ("imagenet", "mri")}
    pairs = model_pairs(list(params), params)
    assert len(pairs) == 3 + 2 * 3  # pre-training at each degree; each pair of degrees per pre-training
    assert all(len(diff.split(",")) == 1 for _, _, diff in pairs)
    few = {"a": {"x": 1, "y": 1}, "b": {"x": 2, "y": 2}}
    assert model_pairs(list(few), few) == [("a", "b", "x, y")]


def test_a_damaged_part_is_named(tmp_path):
    exact_run(tmp_path)
    part = sorted((tmp_path / "results").glob("*.parquet"))[0]
    part.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=part.name):
        load_frame(tmp_path)


def test_empty_run_aggregates_to_empty_frames(tmp_path):
    write_run(tmp_path, [])
    frame, _ = load_frame(tmp_path)
    agg = aggregate(frame)
    assert agg.series.empty and agg.paired.empty and agg.groups.empty and agg.models.empty
    assert isinstance(agg.samples, pd.DataFrame)


def test_parts_of_results_schema_1_are_upgraded_on_reading(tmp_path):
    """A part written before the facts had columns of their own: one merged ``baseline`` flag and
    families only in the value names. The leaderboard reads it the way the core upgrades it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xbench.results import V1_COLUMNS

    exact_run(tmp_path)
    frame_now, _ = load_frame(tmp_path)
    for part in (tmp_path / "results").glob("*.parquet"):
        old = pq.read_table(part).to_pandas()
        old["baseline"] = old["method_baseline"].fillna(False).astype(bool) | old["model_untrained"]
        pq.write_table(pa.Table.from_pandas(old[V1_COLUMNS + ["baseline"]], preserve_index=False), part)
    frame_then, _ = load_frame(tmp_path)
    columns = ["model_label", "method_label", "value_name", "family", "facet", "level", "model_untrained",
               "method_baseline", "value"]
    key = ["model_label", "method_label", "metric_label", "value_name", "seed", "sample"]

    def tidy(f):
        return f.astype({c: object for c in f.columns if c not in ("value", "level", "seed", "sample")}) \
            .sort_values(key).reset_index(drop=True)[columns]

    now = tidy(frame_now)
    # schema 1 could not tell a baseline method on an untrained model from the model's own flag:
    # the core's upgrade gives such rows method_baseline False (the method stays a baseline on the
    # trained models, so the leaderboard still flags it)
    method = now["method_baseline"].notna()
    now.loc[method, "method_baseline"] = [bool(b) and not bool(u) for b, u in
                                          zip(now.loc[method, "method_baseline"], now.loc[method, "model_untrained"])]
    pd.testing.assert_frame_equal(tidy(frame_then), now, check_dtype=False)
    series = aggregate(frame_then, resamples=100).series
    assert row(series, model_label="m-a", method_label="rand", metric_label="loc", value_name="hit")["method_baseline"]
    r = row(series, model_label="m-b", method_label="bad", metric_label="robust", value_name="rmse/*")
    assert r["mean"] == pytest.approx(np.mean([rmse(c, s, "bad", i) for c, s in [("noise", 1), ("noise", 2),
                                                                               ("blur", 1)] for i in SAMPLES]))
