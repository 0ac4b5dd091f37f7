"""Claims evaluated on synthetic result rows whose answers are known (xbench.leaderboard.findings)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from xbench.claims import parse_claims
from xbench.leaderboard.findings import Verdict, evaluate, exit_status
from xbench.leaderboard.markdown import findings_markdown
from xbench.leaderboard.synthetic import table
from xbench.leaderboard.tables import findings

TEXT = ["dataset", "dataset_label", "model", "model_label", "model_params", "method", "method_label",
        "method_params", "metric", "metric_label", "value_name", "family", "facet", "scope"]


# ── result rows, built by the core's RowBuilder (xbench.leaderboard.synthetic.table) ─────────────


def _label(name: str, params: dict) -> str:
    shown = {k: v for k, v in params.items() if k != "untrained" or v}
    return name + ("[" + ",".join(f"{k}={v}" for k, v in shown.items()) + "]" if shown else "")


def values_rows(*, model="net", params=None, untrained=False, dataset="synth", seeds=range(5), means=0.5,
                method="saliency", method_params=None, baseline=False, metric="tpr-tnr", value_name="tpr",
                family=None, facet=None, level=None, samples=6, spread=0.01, correct=True, seed_jitter=0.0,
                per_sample=None, note=None):
    """One unit per seed: sample i of seed s has value means(s) + spread·(i − mean i) (+ a per-seed
    jitter), or ``per_sample(s, i)``. ``means`` is a number or a callable of the seed. ``correct``:
    bool, or a callable of the sample (a wrong sample is predicted as the other class)."""
    params = {"untrained": untrained, **(params or {})}
    method_params = method_params or {}
    offsets = (np.arange(samples) - (samples - 1) / 2) * spread
    ok = np.array([correct(i) if callable(correct) else correct for i in range(samples)], bool)
    units = []
    for s in seeds:
        centre = (means(s) if callable(means) else means) + seed_jitter * ((s * 7919) % 11 - 5) / 5
        value = [per_sample(s, i) for i in range(samples)] if per_sample else centre + offsets
        units.append(table({
            "dataset": dataset, "dataset_label": dataset, "model": model, "model_label": _label(model, params),
            "model_params": params, "seed": s, "method": method, "method_label": _label(method, method_params),
            "method_params": method_params, "method_baseline": baseline, "metric": metric, "metric_label": metric,
            "value_name": value_name, "family": family, "facet": facet, "level": level, "higher_is_better": True,
            "value": np.asarray(value, float), "sample": list(range(samples)), "label": [0] * samples,
            "prediction": np.where(ok, 0, 1).tolist(), **({"note": note} if note else {})}, samples))
    return units


def fit_rows(*, model="net", params=None, untrained=False, dataset="synth", seeds=range(5), accuracy=0.95,
             chance=0.5):
    """The model-fit unit of each cell; ``accuracy`` is a number or a dict seed → accuracy."""
    params = {"untrained": untrained, **(params or {})}
    return [table({"dataset": dataset, "dataset_label": dataset, "model": model, "model_label": _label(model, params),
                   "model_params": params, "seed": s, "metric": "model-fit", "metric_label": "model-fit",
                   "scope": "model", "category": "classification",
                   "value_name": ["test_accuracy", "val_accuracy", "chance"],
                   "value": [accuracy[s] if isinstance(accuracy, dict) else accuracy] * 2 + [chance],
                   "higher_is_better": [True, True, True]}, 3)
            for s in seeds]


def frame(*parts, categorical=False) -> pd.DataFrame:
    """The units' rows as the leaderboard reads them (nullable booleans; text as categoricals too)."""
    df = pa.concat_tables([t for part in parts for t in part]).to_pandas(
        types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    if categorical:
        for col in TEXT:
            df[col] = df[col].astype("category")
    return df


def claim(**keys) -> dict:
    base = {"id": "c", "claim": "a claim", "source": "a paper", "metric": "tpr-tnr", "value": "tpr"}
    return {**base, **keys}


def one(rows: pd.DataFrame, **keys) -> Verdict:
    (verdict,) = evaluate(rows, [claim(**keys)])
    json.dumps(verdict.to_dict())  # always serialisable
    assert verdict.reason
    return verdict


def two_models(mean_a, mean_b, *, seeds=range(5), acc_a=0.95, acc_b=0.95, **extra):
    return (values_rows(model="loss", params={"loss": "heatmap"}, means=mean_a, seeds=seeds, **extra)
            + values_rows(model="loss", params={"loss": "cce"}, means=mean_b, seeds=seeds, **extra)
            + fit_rows(model="loss", params={"loss": "heatmap"}, seeds=seeds, accuracy=acc_a)
            + fit_rows(model="loss", params={"loss": "cce"}, seeds=seeds, accuracy=acc_b))


A = {"model": "loss[loss=heatmap]"}
B = {"model": "loss[loss=cce]"}


def by_seed(base, step=0.01):
    return lambda s: base + step * s


# ── greater / less ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("categorical", [False, True])
def test_greater_reproduced_with_callanan_numbers(categorical):
    rows = frame(two_models(by_seed(0.8), by_seed(0.26)), categorical=categorical)
    v = one(rows, relation="greater", a=A, b=B, published={"a": 0.796, "b": 0.26})
    assert v.verdict == "reproduced", v.reason
    m = v.measured
    assert m["a"] == pytest.approx(0.82) and m["b"] == pytest.approx(0.28)
    assert m["U"] == 25 and m["n_a"] == m["n_b"] == 5
    assert m["p"] == pytest.approx(2 / 252) and m["d"] > 10
    assert v.n == 10 and exit_status([v]) == 0


def test_less_mirrors_greater_and_contradiction_is_reported():
    rows = frame(two_models(by_seed(0.8), by_seed(0.26)))
    less = one(rows, relation="less", a=B, b=A, published={"a": 0.26, "b": 0.796, "d": -11.88, "U": 0})
    assert less.verdict == "reproduced" and less.measured["U"] == 0 and less.measured["d"] < -10
    wrong = one(rows, relation="greater", a=B, b=A)
    assert wrong.verdict == "contradicted" and "opposite" in wrong.reason
    assert exit_status([less, wrong]) == 1


def test_greater_inconclusive_when_not_significant():
    # interleaved seed means: a = .50,.52,.54,.56,.58 vs b = .51,.53,... → p far above alpha
    rows = frame(two_models(by_seed(0.50, 0.02), by_seed(0.51, 0.02)))
    v = one(rows, relation="greater", a=A, b=B)
    assert v.verdict == "inconclusive" and v.reason.startswith("not significant")
    assert v.measured["p"] > 0.05


def test_mann_whitney_three_vs_three_cannot_reach_alpha():
    rows = frame(two_models(by_seed(0.8), by_seed(0.26), seeds=range(3)))
    v = one(rows, relation="greater", a=A, b=B)
    assert v.verdict == "inconclusive"
    assert "3 vs 3" in v.reason and "need ≥ 4 per group" in v.reason
    # the same data at a looser alpha can decide: 2 / C(6, 3) = 0.1 < 0.2
    assert one(rows, relation="greater", a=A, b=B, alpha=0.2).verdict == "reproduced"


def test_too_few_seeds_against_min_seeds():
    rows = frame(two_models(by_seed(0.8), by_seed(0.26), seeds=range(4)))
    v = one(rows, relation="greater", a=A, b=B, min_seeds=5, test="bootstrap")
    assert v.verdict == "inconclusive" and v.reason.startswith("too few seeds") and "min_seeds = 5" in v.reason


def test_an_instance_without_a_defined_value_is_named_with_its_rows_note():
    """A model instance whose every value is NaN (e.g. all its CAMs zero, so a mass share is 0/0)
    drops out of the test; the verdict names it and says why, from the rows' own note."""
    why = "hires-cam map all zero: no positive evidence for the explained class"
    heatmap = {"model": "loss", "params": {"loss": "heatmap"}}
    rows = frame(values_rows(**heatmap, means=by_seed(0.8), seeds=range(4))
                 + values_rows(**heatmap, seeds=[4], per_sample=lambda s, i: float("nan"), note=why)
                 + values_rows(model="loss", params={"loss": "cce"}, means=by_seed(0.26))
                 + fit_rows(**heatmap) + fit_rows(model="loss", params={"loss": "cce"}))
    v = one(rows, relation="greater", a=A, b=B)
    assert v.verdict == "reproduced" and v.measured["n_a"] == 4 and v.measured["n_b"] == 5  # 2 / C(9, 4) < 0.05
    assert v.undefined == [{"dataset": "synth", "model": "loss[loss=heatmap]", "seed": 4, "method": "saliency",
                            "value": "tpr", "facet": None, "level": None, "rows": 6, "why": why}]
    assert v.measured["undefined_rows"] == 6
    assert f"left out with no defined value: loss[loss=heatmap] seed 4 on synth (saliency, tpr, all 6 rows undefined: " \
           f"{why})" in v.reason
    short = one(rows, relation="greater", a=A, b=B, min_seeds=5)  # the same instance decides "too few seeds"
    assert short.verdict == "inconclusive" and short.reason.startswith("too few seeds: side a has 4")
    assert "loss[loss=heatmap] seed 4" in short.reason and why in short.reason
    whole = one(frame(two_models(by_seed(0.8), by_seed(0.26))), relation="greater", a=A, b=B)
    assert whole.undefined == [] and "undefined_rows" not in whole.measured and "no defined value" not in whole.reason


def test_wilcoxon_pairs_per_sample_across_models():
    # every (seed, sample) pair has a − b = 0.1: 30 positive differences
    rows = frame(two_models(by_seed(0.6), by_seed(0.5)))
    v = one(rows, relation="greater", a=A, b=B, test="wilcoxon")
    assert v.verdict == "reproduced", v.reason
    assert v.measured["n_pairs"] == 30 and v.measured["r"] == pytest.approx(1.0)
    flipped = one(rows, relation="less", a=A, b=B, test="wilcoxon")
    assert flipped.verdict == "contradicted"


def test_wilcoxon_with_few_pairs_cannot_reach_alpha():
    rows = frame(two_models(0.6, 0.5, seeds=range(4), samples=1))  # 4 pairs: smallest p = 2/16
    v = one(rows, relation="greater", a=A, b=B, test="wilcoxon")
    assert v.verdict == "inconclusive" and "cannot reach" in v.reason


def test_bootstrap_over_seeds_reproduced_and_inconclusive():
    rows = frame(two_models(by_seed(0.6), by_seed(0.5)))
    v = one(rows, relation="greater", a=A, b=B, test="bootstrap")
    assert v.verdict == "reproduced" and v.measured["ci_low"] > 0 and v.measured["paired"] is True
    # paired by seed, the differences are -0.08, -0.04, 0, 0.04, 0.08
    noisy = frame(two_models(by_seed(0.50, 0.02), lambda s: 0.5 + 0.02 * (4 - s)))
    u = one(noisy, relation="greater", a=A, b=B, test="bootstrap")
    assert u.verdict == "inconclusive" and u.measured["ci_low"] < 0 < u.measured["ci_high"]


def test_samples_correct_only_counts_correctly_classified_samples():
    # on the misclassified samples (odd ones) model a is far worse: with every sample, b wins;
    # on correct samples only, a wins
    def rows_for(model_params, good, bad):
        return values_rows(model="loss", params=model_params, seeds=range(5), samples=6,
                           per_sample=lambda s, i: good if i % 2 == 0 else bad, correct=lambda i: i % 2 == 0)

    rows = frame(rows_for({"loss": "heatmap"}, 0.8, 0.0) + rows_for({"loss": "cce"}, 0.5, 0.5)
                 + fit_rows(model="loss", params={"loss": "heatmap"}) + fit_rows(model="loss", params={"loss": "cce"}))
    everything = one(rows, relation="greater", a=A, b=B)
    correct = one(rows, relation="greater", a=A, b=B, samples="correct")
    assert everything.verdict == "contradicted"
    assert correct.verdict == "reproduced" and correct.measured["a"] == pytest.approx(0.8)


# ── the accuracy floor ───────────────────────────────────────────────────────────────────────────


def test_accuracy_floor_drops_instances_and_says_so():
    rows = frame(two_models(by_seed(0.8), by_seed(0.26), seeds=range(6),
                            acc_b={0: 0.5, 1: 0.95, 2: 0.95, 3: 0.95, 4: 0.95, 5: 0.95}))
    v = one(rows, relation="greater", a=A, b=B, accuracy_floor={"above_chance": 0.2})
    assert v.verdict == "reproduced"
    assert v.measured["n_b"] == 5 and v.measured["n_a"] == 6
    assert [(e["model"], e["seed"]) for e in v.excluded] == [("loss[loss=cce]", 0)]
    assert "left out" in v.reason
    # without the floor's margin the chance-level seed is still out (strictly above chance)...
    assert one(rows, relation="greater", a=A, b=B).measured["n_b"] == 5
    # ... and an absolute floor below its accuracy keeps it
    assert one(rows, relation="greater", a=A, b=B, accuracy_floor={"absolute": 0.4}).measured["n_b"] == 6


def test_accuracy_floor_leaves_too_few_seeds():
    low = {0: 0.5, 1: 0.55, 2: 0.95, 3: 0.95, 4: 0.95}
    rows = frame(two_models(by_seed(0.8), by_seed(0.26), acc_b=low))
    v = one(rows, relation="greater", a=A, b=B, accuracy_floor={"above_chance": 0.2}, test="bootstrap", min_seeds=4)
    assert v.verdict == "inconclusive" and v.reason.startswith("too few seeds") and "side b has 3" in v.reason
    assert len(v.excluded) == 2


def test_whole_variant_below_floor_is_inconclusive_naming_it():
    rows = frame(two_models(by_seed(0.8), by_seed(0.26), acc_b=0.52))
    v = one(rows, relation="greater", a=A, b=B, accuracy_floor={"above_chance": 0.2})
    assert v.verdict == "inconclusive"
    assert "loss[loss=cce]" in v.reason and "did not learn" in v.reason and "0.52" in v.reason and "0.5" in v.reason


def test_untrained_models_need_no_accuracy_and_missing_accuracy_is_inconclusive():
    untrained = frame(values_rows(model="net", untrained=True, means=by_seed(0.2)))
    v = one(untrained, relation="near", target=0.22, tolerance=0.05)
    assert v.verdict == "reproduced", v.reason
    trained = frame(values_rows(model="net", means=by_seed(0.2)))
    w = one(trained, relation="near", target=0.22, tolerance=0.05)
    assert w.verdict == "inconclusive" and w.reason.startswith("no accuracy recorded")


# ── largest / smallest ───────────────────────────────────────────────────────────────────────────


def methods_rows(means: dict, *, seeds=range(5), **extra):
    rows = fit_rows(model="joint", seeds=seeds)
    for method, mean in means.items():
        rows += values_rows(model="joint", method=method, means=mean, seeds=seeds, baseline=method == "random",
                            metric="aopc", value_name="aopc", **extra)
    return frame(rows)


def test_largest_among_methods():
    rows = methods_rows({"in-model": by_seed(0.32, 0.001), "grad-cam": by_seed(0.27, 0.001),
                         "saliency": by_seed(0.25, 0.001)}, seeds=range(8))
    v = one(rows, metric="aopc", value="aopc", relation="largest", among="method", a={"method": "in-model"})
    assert v.verdict == "reproduced", v.reason
    assert v.measured["closest"] == "grad-cam" and v.measured["b"] == pytest.approx(0.2735)
    assert len(v.measured["comparisons"]) == 2
    # saliency is not the largest: grad-cam beats it significantly
    w = one(rows, metric="aopc", value="aopc", relation="largest", among="method", a={"method": "saliency"})
    assert w.verdict == "contradicted" and "significantly larger" in w.reason
    # b narrows the competitors: against saliency alone grad-cam is the largest
    u = one(rows, metric="aopc", value="aopc", relation="largest", among="method", a={"method": "grad-cam"},
            b={"method": "saliency"})
    assert u.verdict == "reproduced" and list(v.measured["means"]) == ["in-model", "grad-cam", "saliency"]


def test_largest_inconclusive_when_one_competitor_is_not_beaten_and_holm_counts():
    # in-model's seed means interleave with grad-cam's (.30,.32,... vs .31,.33,...): not significant
    tied = methods_rows({"in-model": by_seed(0.30, 0.02), "grad-cam": by_seed(0.31, 0.02), "saliency": 0.1})
    v = one(tied, metric="aopc", value="aopc", relation="largest", among="method", a={"method": "in-model"})
    assert v.verdict == "inconclusive" and v.reason.startswith("not significant") and "grad-cam" in v.reason
    # 4 vs 4 models reach 2/70 < 0.05 once, but not after Holm over 2 competitors (2 · 2/70 = 0.057)
    four = methods_rows({"in-model": 0.5, "grad-cam": 0.3, "saliency": 0.2}, seeds=range(4))
    w = one(four, metric="aopc", value="aopc", relation="largest", among="method", a={"method": "in-model"})
    assert w.verdict == "inconclusive" and "Holm" in w.reason and "need ≥ 5 per group" in w.reason
    # against one competitor the same 4 vs 4 decide
    x = one(four, metric="aopc", value="aopc", relation="largest", among="method", a={"method": "in-model"},
            b={"method": "grad-cam"})
    assert x.verdict == "reproduced"


def test_smallest_among_facets_and_levels():
    rows = fit_rows(model="resnet")
    for facet, mean in (("contrast", 0.9), ("noise", 0.5), ("blur", 0.4)):
        for level in (1, 2):
            rows += values_rows(model="resnet", metric="saliency-rmse", value_name=f"rmse/{facet}/{level}",
                                family="rmse", facet=facet, level=level, means=by_seed(mean + 0.05 * level))
    rows = frame(rows)
    base = {"metric": "saliency-rmse", "value": "rmse"}
    largest = one(rows, **base, relation="largest", among="facet", a={"facet": "contrast"})
    assert largest.verdict == "reproduced", largest.reason
    assert largest.measured["means"]["contrast"] == pytest.approx(0.9 + 0.075 + 0.02)
    smallest = one(rows, **base, relation="smallest", among="facet", a={"facet": "contrast"})
    assert smallest.verdict == "contradicted"
    by_level = one(rows, **base, facet="blur", relation="smallest", among="level", a={"level": 1}, test="bootstrap")
    assert by_level.verdict == "reproduced" and set(by_level.measured["means"]) == {"1", "2"}


def test_largest_with_no_competitors_is_inconclusive():
    rows = methods_rows({"in-model": 0.3})
    v = one(rows, metric="aopc", value="aopc", relation="largest", among="method", a={"method": "in-model"})
    assert v.verdict == "inconclusive" and v.reason.startswith("no competitors")


# ── increasing / decreasing ──────────────────────────────────────────────────────────────────────


def degree_rows(means: dict, *, seeds=range(3), pretrain="imagenet", acc=0.95):
    rows = []
    for degree, mean in means.items():
        params = {"degree": degree, "pretrain": pretrain}
        rows += values_rows(model="vgg16", params=params, means=mean, seeds=seeds)
        rows += fit_rows(model="vgg16", params=params, seeds=seeds, accuracy=acc)
    return rows


def test_increasing_along_model_param_with_explicit_order():
    rows = frame(degree_rows({"1": 0.17, "2": 0.36, "4": 0.52, "all": 0.53})
                 + degree_rows({"1": 0.6, "2": 0.5, "4": 0.4, "all": 0.3}, pretrain="mri"))
    keys = dict(relation="increasing", along="model:degree", order=["1", "2", "4", "all"])
    v = one(rows, **keys, a={"model_params": {"pretrain": "imagenet"}})
    assert v.verdict == "reproduced", v.reason
    assert list(v.measured["means"]) == ["1", "2", "4", "all"] and v.measured["monotone"] is True
    assert v.measured["means"]["2"] == pytest.approx(0.36) and v.measured["rho"] > 0.9
    w = one(rows, **keys, a={"model_params": {"pretrain": "mri"}})
    assert w.verdict == "contradicted" and w.measured["rho"] < -0.9
    # without narrowing, the two pre-trainings cancel out
    u = one(rows, **keys)
    assert u.verdict == "inconclusive" and u.reason.startswith("no significant trend")


def test_decreasing_along_level_natural_order_and_too_few_positions():
    rows = fit_rows(model="resnet")
    for level in (1, 2, 3, 4, 10):
        rows += values_rows(model="resnet", metric="saliency-rmse", value_name=f"rmse/contrast/{level}",
                            family="rmse", facet="contrast", level=level, means=by_seed(1.0 - 0.05 * level, 0.001))
    rows = frame(rows)
    v = one(rows, metric="saliency-rmse", value="rmse", relation="decreasing", along="level")
    assert v.verdict == "reproduced", v.reason
    assert list(v.measured["means"]) == ["1", "2", "3", "4", "10"]  # natural, not text, order
    assert one(rows, metric="saliency-rmse", value="rmse", relation="increasing", along="level").verdict == "contradicted"
    # two positions × two seeds: even a perfect ordering gives ρ = 0.89, p = 0.11, so it cannot decide
    small = rows[rows["seed"].isin([0, 1])]
    w = one(small, metric="saliency-rmse", value="rmse", relation="decreasing", along="level", min_seeds=2,
            order=[1, 2])
    assert w.verdict == "inconclusive" and "cannot reach" in w.reason and "2 positions × 2 seeds" in w.reason
    # a position with fewer seeds than min_seeds
    x = one(small, metric="saliency-rmse", value="rmse", relation="decreasing", along="level")
    assert x.verdict == "inconclusive" and x.reason.startswith("too few seeds: position 1")


def test_trend_on_unknown_param_is_inconclusive_with_a_hint():
    rows = frame(degree_rows({"1": 0.2, "2": 0.3}))
    v = one(rows, relation="increasing", along="model:degre")
    assert v.verdict == "inconclusive" and 'did you mean "degree"' in v.reason


def test_trend_along_method_param():
    rows = fit_rows(model="resnet")
    for layer, mean in (("0", 0.1), ("1", 0.2), ("2", 0.4)):
        rows += values_rows(model="resnet", method="grad-cam", method_params={"layer": layer},
                            metric="saliency-rmse", value_name="rmse/noise/3", family="rmse", facet="noise", level=3,
                            means=by_seed(mean))
    v = one(frame(rows), metric="saliency-rmse", value="rmse/noise/*", relation="increasing", along="method:layer")
    assert v.verdict == "reproduced", v.reason


# ── near ─────────────────────────────────────────────────────────────────────────────────────────


def test_near_reproduced_contradicted_and_straddling():
    rows = frame(values_rows(model="vgg16", untrained=True, means=by_seed(0.18, 0.005)))
    keys = dict(relation="near", untrained=True, tolerance=0.02, chance=0.034)
    v = one(rows, **keys, target=0.19)
    assert v.verdict == "reproduced", v.reason
    assert v.measured["a"] == pytest.approx(0.19) and v.measured["a_over_chance"] == pytest.approx(0.19 / 0.034)
    assert "× chance" in v.reason
    assert one(rows, **keys, target=0.30).verdict == "contradicted"
    edge = one(rows, **keys, target=0.19 + 0.02)  # the band's edge cuts through the interval
    assert edge.verdict == "inconclusive" and "straddles" in edge.reason


def test_above_and_below_a_target():
    rows = frame(values_rows(model="vgg16", untrained=True, means=by_seed(2.4, 0.05)))
    keys = dict(untrained=True)
    v = one(rows, **keys, relation="above", target=2.0)
    assert v.verdict == "reproduced" and v.measured["a"] == pytest.approx(2.5), v.reason
    assert v.measured["ci_low"] > 2.0 and "above the target" in v.reason
    assert one(rows, **keys, relation="above", target=3.0).verdict == "contradicted"
    assert one(rows, **keys, relation="below", target=3.0).verdict == "reproduced"
    assert one(rows, **keys, relation="below", target=2.0).verdict == "contradicted"
    edge = one(rows, **keys, relation="above", target=2.5)  # the target cuts through the interval
    assert edge.verdict == "inconclusive" and "contains the target" in edge.reason


# ── no rows, hints, display ──────────────────────────────────────────────────────────────────────


def test_no_matching_rows_say_what_is_closest():
    rows = frame(two_models(0.8, 0.3))
    v = one(rows, metric="tpr-tnx", relation="greater", a=A, b=B)
    assert v.verdict == "inconclusive" and 'did you mean "tpr-tnr"' in v.reason
    w = one(rows, value="tnr", relation="greater", a=A, b=B)
    assert w.reason.startswith("no matching rows") and "tnr" in w.reason
    x = one(rows, relation="greater", a={"model": "loss[loss=heatmapp]"}, b=B)
    assert "side a" in x.reason and 'did you mean "loss[loss=heatmap]"' in x.reason
    y = one(rows, relation="greater", a=A, b=B, dataset="other")
    assert y.verdict == "inconclusive" and "dataset" in y.reason


def test_brackets_in_labels_match_literally_and_globs_still_work():
    rows = frame(two_models(by_seed(0.8), by_seed(0.26))
                 + values_rows(model="losse", means=0.0) + fit_rows(model="losse"))
    # "loss[loss=cce]" read as a glob matches "losse" (loss + one of l,o,s,=,c,e); the exact label wins
    v = one(rows, relation="greater", a={"model": "loss[[]loss=heatmap]"}, b={"model": "loss[loss=cce]"})
    assert v.verdict == "reproduced" and v.measured["n_b"] == 5
    w = one(rows, relation="greater", a={"model": "loss*heatmap*"}, b={"model": ["loss[loss=cce]", "losse"]})
    assert w.measured["n_b"] == 10


def test_table_markdown_escape_and_exit_status():
    rows = frame(two_models(by_seed(0.8), by_seed(0.26)))
    claims = [claim(id="good", relation="greater", a=A, b=B, published={"a": 0.796, "b": 0.26}),
              claim(id="bad", claim="a <script>alert(1)</script> | pipe", relation="less", a=A, b=B),
              claim(id="none", relation="greater", a=A, b=B, metric="nothing")]
    verdicts = evaluate(rows, claims)
    assert [v.verdict for v in verdicts] == ["reproduced", "contradicted", "inconclusive"]
    table = findings(verdicts).rows
    assert table[0].measured.startswith("a 0.820, b 0.280") and table[0].published == "a 0.796, b 0.260"
    assert table[2].n == 0 and table[2].published == "—"
    md = findings_markdown(findings(verdicts))
    assert "<script>" not in md and "&lt;script&gt;" in md and r"\| pipe" in md
    assert "1 reproduced · 1 contradicted · 1 inconclusive" in md
    assert exit_status(verdicts) == 1 and exit_status(verdicts[::2]) == 0 and exit_status([]) == 0
    assert findings_markdown(findings([])) == ""


def test_claims_round_trip_through_the_manifest():
    parsed = parse_claims([claim(relation="greater", a=A, b=B)])
    table = json.loads(json.dumps([c.to_dict() for c in parsed]))
    rows = frame(two_models(by_seed(0.8), by_seed(0.26)))
    assert evaluate(rows, table)[0].to_dict() == evaluate(rows, parsed)[0].to_dict()


def test_empty_results_and_no_claims():
    (v,) = evaluate(pd.DataFrame(), [claim(relation="near", target=0.1, tolerance=0.1)])
    assert v.verdict == "inconclusive" and v.reason.startswith("no matching rows") and v.n == 0
    assert evaluate(pd.DataFrame(), []) == []
