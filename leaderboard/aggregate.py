"""From tidy rows to the leaderboard's numbers.

Levels of aggregation (per *view*: all test samples, or correctly classified ones only, Oliveira):

1. per (dataset, model, method, metric, value, seed): the mean over samples (non-finite values
   left out). What a value is comes from the rows' own columns (``family``, ``facet``, ``level``),
   never from the shape of its name: a *curve* (``level`` only, e.g. MoRF step k) and a *grid*
   (``facet`` and ``level``, e.g. corruption × severity) also get a summary value ``<family>/*``,
   the per-sample mean over their members, and a grid one per facet, ``<family>/<facet>/*`` (over
   its levels); the members of a *categorical* family (``facet`` only, e.g. ``mass/heart``) are
   values of their own;
2. per series (dataset, model, method, metric, value): the mean over seeds of the per-seed means,
   with a 95% bootstrap interval over seeds (over samples when a single seed has results);
3. ranks of the methods in each model's column (null baselines left out), in the metric's
   direction, with bootstrap intervals on ranks where every method shares the same seeds;
4. paired Wilcoxon tests between methods on the same (seed, sample) pairs, Holm-corrected within
   each (dataset, model, metric, value), and Callanan's group tests between model variants over
   per-seed means, Holm-corrected within each (dataset, method, metric, value);
5. what explaining cost: per (dataset, method), the median over its cells of the explanation time
   per sample and of the peak memory (``explain_seconds``, ``explain_peak_bytes``);
6. how far the metrics agree on the methods' ranking (:mod:`xbench.leaderboard.reliability`).

Null baselines are the rows' flags: a model column is one where ``model_untrained``, a method row
where ``method_baseline``.

Engine: plain pandas ``groupby(observed=True, sort=False)`` on the categorical columns. It replaced
a hand-rolled engine (integer codes combined into one key, ``pd.factorize``, ``np.bincount``) after
both were measured in one session on the project's 2-core machine (shared, load average 7–11), on
the 5-million-row synthetic run of ``tests/benchmarks/test_bench_leaderboard.py``, interleaved:

- the grouping steps alone (family summaries and per-seed means of both views, 2.1 million
  headline rows): hand-rolled 10.2 and 8.9 s, pandas 12.2 and 13.8 s;
- the whole build (``xbench leaderboard``): hand-rolled 63.3 and 40.1 s, pandas 55.0 and 41.4 s
  (the pandas builds also read nine more columns and compute the costs and the metric agreement;
  figures dominate both); reading the parts alone took 13–18 s in the same session.

pandas groups about 1.4× slower, which the whole build does not show through the noise, and both
stay inside the one-minute budget even on the loaded machine; the hand-rolled engine is not
clearly needed, so the shorter, standard code won. The benchmark asserts the budget as a ratio
to reading the parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from . import stats
from .load import parse_params
from .reliability import metric_agreement

KEYS = ["dataset_label", "model_label", "method_label", "metric_label", "value_name"]
DESCRIBE = ["family", "facet", "level", "summary"]
"""What a value is (constant per metric and value): its family and facets, and whether it is a
summary over a family's members (then ``facet`` is set for a per-facet summary)."""
CARRIED = ["correct", "higher_is_better", "category", "method_baseline", "model_untrained"]
VIEWS = ("all", "correct")
NUMERIC = {"n", "statistic", "p", "r", "median_diff"}
MIN_GROUP = 2  # model instances per group for a group comparison
SUMMARY_KEYS = ["dataset_label", "model_label", "method_label", "metric_label", "family", "seed", "sample"]


def family_kind(facet, level) -> str | None:
    """``curve`` (a level only), ``categorical`` (a facet only), ``grid`` (both); None for a plain
    value (neither)."""
    has_facet = facet is not None and not pd.isna(facet)
    has_level = level is not None and not pd.isna(level)
    if has_level:
        return "grid" if has_facet else "curve"
    return "categorical" if has_facet else None


@dataclass
class Aggregates:
    """Everything the site shows, as tidy frames (``view`` is "all" or "correct")."""

    series: pd.DataFrame         # one row per (view, dataset, model, method, metric, value)
    per_seed: pd.DataFrame       # the per-seed means behind it (family members included, for figures)
    models: pd.DataFrame         # model-level values: one row per (dataset, model, metric, value)
    model_per_seed: pd.DataFrame
    paired: pd.DataFrame         # Wilcoxon signed-rank between methods
    groups: pd.DataFrame         # Mann–Whitney and effect sizes between model variants
    samples: pd.DataFrame        # per-sample headline rows (plain values and family summaries)
    costs: pd.DataFrame          # per (dataset, method): median explanation time and peak memory
    reliability: pd.DataFrame    # Kendall τ between the methods' rankings by two series (reliability.py)
    model_params: dict[str, dict]
    method_params: dict[str, dict]
    untrained: set[str] = field(default_factory=set)        # model labels of untrained models
    metric_names: dict[str, str] = field(default_factory=dict)  # metric label → metric name


# ----------------------------------------------------------------------------- helpers

def _finite(values: pd.Series) -> np.ndarray:
    v = values.to_numpy(float)
    return np.where(np.isfinite(v), v, np.nan)


def _finite_values(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with infinite values as NaN (which means leave out); the rows themselves when none
    are infinite (the usual case: no copy)."""
    if np.isinf(rows["value"].to_numpy(float)).any():
        return rows.assign(value=_finite(rows["value"]))
    return rows


def _objects(series: pd.Series) -> np.ndarray:
    return series.astype(object).to_numpy()


def _first_by(frame: pd.DataFrame, key: str, column: str) -> dict:
    """``key`` value → the first non-null ``column`` value of its rows."""
    if frame.empty:
        return {}
    got = frame.groupby(key, observed=True, sort=False)[column].first()
    return {k: (None if v is pd.NA else v) for k, v in got.items() if k is not None}


def _params(frame: pd.DataFrame, label: str, params: str) -> dict[str, dict]:
    return {str(k): parse_params(v) for k, v in _first_by(frame, label, params).items()}


# ----------------------------------------------------------------------------- families

HEADLINE = KEYS + ["seed", "sample", "value", "family", "facet", "level"] + CARRIED
COSTS = ["explain_seconds", "explain_peak_bytes"]


def _summary(members: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per ``keys`` group: the mean of its finite member values (the carried columns are
    constant within a group)."""
    grouped = _finite_values(members).groupby(keys, observed=True, sort=False)
    return grouped.agg(value=("value", "mean"), **{c: (c, "first") for c in CARRIED}).reset_index()


def _summary_names(part: pd.DataFrame) -> np.ndarray:
    """``rmse/*`` (over every member) or ``rmse/contrast/*`` (over one facet's levels)."""
    fam = _objects(part["family"])
    if "facet" not in part:
        return fam + "/*"
    return fam + "/" + _objects(part["facet"]) + "/*"


def _with_family_summaries(sample: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(headline rows, family-member rows). Headline rows are the plain values, the members of
    categorical families, and one row per sample for each summary of a curve or grid family: the
    per-sample mean over the members it covers."""
    sample = sample[HEADLINE]
    member = (sample["family"].notna() & sample["level"].notna()).to_numpy()
    if not member.any():
        return sample.assign(summary=False), sample.iloc[:0]
    plain, members = sample[~member], sample[member]
    parts = [_summary(members, SUMMARY_KEYS)]
    grid = members[members["facet"].notna().to_numpy()]
    if len(grid):
        parts.append(_summary(grid, SUMMARY_KEYS + ["facet"]))
    names = [_summary_names(part) for part in parts]
    summary_names = sorted({n for arr in names for n in pd.unique(arr)})
    value_type = pd.CategoricalDtype(list(sample["value_name"].cat.categories) + summary_names)
    pieces = [plain.assign(value_name=plain["value_name"].astype(value_type), summary=False)]
    for part, name in zip(parts, names):
        part = part.assign(value_name=pd.Categorical(name, dtype=value_type), level=np.nan, summary=True)
        if "facet" not in part:
            part["facet"] = None
        pieces.append(part.astype({c: sample[c].dtype for c in sample.columns if c != "value_name"
                                   and isinstance(sample[c].dtype, pd.CategoricalDtype)})[pieces[0].columns])
    headline = pd.concat(pieces, ignore_index=True)
    headline["value_name"] = headline["value_name"].cat.remove_unused_categories()
    return headline, members


def _with_model_families(model: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model-level rows (categorical family members kept) plus one ``<family>/*`` row per
    (dataset, model, seed, metric, family): the mean over its members."""
    if model.empty:
        return model.assign(summary=False), model
    member = (model["family"].notna() & model["level"].notna()).to_numpy()
    members = model[member]
    if not member.any():
        return model.assign(summary=False), members
    keys = ["dataset_label", "model_label", "metric_label", "family", "seed"]
    summary = (_finite_values(members)
               .groupby(keys, observed=True, sort=False)
               .agg(value=("value", "mean"), higher_is_better=("higher_is_better", "first"),
                    category=("category", "first"), model_untrained=("model_untrained", "first"))
               .reset_index())
    summary["value_name"] = _objects(summary["family"]) + "/*"
    summary = summary.assign(method_label=None, method_baseline=pd.NA, facet=None, level=np.nan, summary=True,
                             scope="model")
    plain = model[~member].assign(summary=False)
    out = pd.concat([plain.astype({c: object for c in ("value_name", "family", "facet", "method_label")}),
                     summary.reindex(columns=plain.columns)], ignore_index=True)
    for c in KEYS + ["category", "family", "facet"]:
        out[c] = out[c].astype("category")
    return out, members


def facet_counts(*frames: pd.DataFrame) -> dict[tuple[str, str], int]:
    """How many member values each summary covers, per metric: ``(metric, "rmse")`` and
    ``(metric, "rmse/contrast")`` → the number of distinct members (for the tables' titles)."""
    counts: dict[tuple[str, str], int] = {}
    for frame in frames:
        if frame.empty:
            continue
        members = frame[(frame["family"].notna() & frame["level"].notna()).to_numpy()]
        distinct = members[["metric_label", "family", "facet", "value_name"]].astype(object).drop_duplicates()
        for metric, fam, facet, _ in distinct.itertuples(index=False):
            for base in [fam] + ([f"{fam}/{facet}"] if facet is not None and not pd.isna(facet) else []):
                counts[(metric, base)] = counts.get((metric, base), 0) + 1
    return counts


# ----------------------------------------------------------------------------- main entry

def aggregate(frame: pd.DataFrame, *, resamples: int = stats.RESAMPLES, seed: int = 0) -> Aggregates:
    """All the leaderboard's numbers from the rows of :func:`xbench.leaderboard.load.load_frame`."""
    model_params = _params(frame, "model_label", "model_params")
    method_params = _params(frame, "method_label", "method_params")
    untrained = {str(k) for k, v in _first_by(frame, "model_label", "model_untrained").items()
                 if v is not None and not pd.isna(v) and bool(v)}
    metric_names = {str(k): str(v) for k, v in _first_by(frame, "metric_label", "metric").items() if v is not None}
    is_sample = (frame["scope"] == "sample").to_numpy()
    # columns first, then rows: a boolean selection copies every column it keeps
    sample = frame[HEADLINE + [c for c in COSTS if c in frame]][is_sample]
    model = frame[~is_sample]
    headline, members = _with_family_summaries(sample)

    per_seed_parts, series_parts = _series(headline, resamples, seed)
    if len(members):
        per_seed_parts += _series(members.assign(summary=False), resamples, seed, summarise=False)[0]
    per_seed = pd.concat(per_seed_parts, ignore_index=True)
    series = pd.concat(series_parts, ignore_index=True)
    series = _flag_baselines(series)
    series = _rank(series, per_seed, resamples, seed)

    model_rows, model_members = _with_model_families(model)
    mps_parts, msr_parts = _series(model_rows, resamples, seed, model_level=True)
    if len(model_members):
        mps_parts += _series(model_members.assign(summary=False), resamples, seed, summarise=False,
                             model_level=True)[0]
    mps = pd.concat(mps_parts, ignore_index=True)
    msr = pd.concat(msr_parts, ignore_index=True).drop(columns="row_baseline")
    paired = _paired(headline, series)
    groups = _group_tests(per_seed, mps, model_params, set(series["value_name"].astype(object)),
                          set(msr["value_name"].astype(object)) if len(msr) else set())
    return Aggregates(series=series, per_seed=per_seed, models=msr, model_per_seed=mps, paired=paired,
                      groups=groups, samples=headline, costs=_costs(sample),
                      reliability=metric_agreement(series, per_seed, untrained, metric_names, resamples=resamples,
                                                   seed=seed),
                      model_params=model_params,
                      method_params=method_params, untrained=untrained, metric_names=metric_names)


def _series(rows: pd.DataFrame, resamples: int, seed: int, *, summarise: bool = True,
            model_level: bool = False) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Per-seed means and (if ``summarise``) per-series mean and CI, for each view ("all"; and
    "correct", correctly classified samples only, for per-sample rows); one grouping for both."""
    views = ("all",) if model_level else VIEWS
    value = _finite(rows["value"])
    data = {"value": value}
    if "correct" in views:
        data["value_correct"] = np.where(rows["correct"].fillna(False).to_numpy(bool), value, np.nan)
    keys = KEYS + ["seed"]
    meta_cols = {"higher_is_better": "first", "category": "first", "method_baseline": "any",
                 "model_untrained": "first", **{c: "first" for c in DESCRIBE}}
    frame = rows[keys + list(meta_cols)].assign(**data,
                                                method_baseline=rows["method_baseline"].fillna(False).astype(bool))
    aggs = {f"{v}_{s}": (v, s) for v in data for s in ("mean", "count")}
    grouped = frame.groupby(keys, observed=True, sort=False, dropna=False)
    per = grouped.agg(**aggs, **{c: (c, how) for c, how in meta_cols.items()}).reset_index()
    if per.empty:
        ps_cols = keys + DESCRIBE + ["higher_is_better", "mean", "n", "view"]
        series_cols = KEYS + DESCRIBE + ["higher_is_better", "category", "mean", "ci_low", "ci_high", "ci_over", "seeds",
                                         "samples", "row_baseline", "model_baseline", "view"]
        return [pd.DataFrame(columns=ps_cols)], [pd.DataFrame(columns=series_cols)] if summarise else []
    sid = per.groupby(KEYS, observed=True, sort=False, dropna=False).ngroup().to_numpy()
    first = pd.Series(np.arange(len(sid))).groupby(sid).first().to_numpy()  # row of each series
    meta = per.iloc[first].reset_index(drop=True)
    seed_codes, seed_labels = pd.factorize(per["seed"].to_numpy(np.int64), sort=True)
    per_seed_out, series_out = [], []
    for view, column in zip(views, data):
        mean = per[f"{column}_mean"].to_numpy(float)
        count = per[f"{column}_count"].to_numpy(np.int64)
        present = count > 0
        ps = per.loc[present, keys + DESCRIBE + ["higher_is_better"]].assign(
            mean=mean[present], n=count[present], view=view)
        per_seed_out.append(ps.reset_index(drop=True))
        if summarise:
            s = _summarise(rows, value if view == "all" else data["value_correct"], sid, seed_codes,
                           len(seed_labels), mean, count, len(first), resamples, seed, model_level)
            kept = s.pop("series").to_numpy()
            series_out.append(meta.loc[kept, KEYS + DESCRIBE + ["higher_is_better", "category"]]
                              .reset_index(drop=True)
                              .assign(**{k: v.to_numpy() for k, v in s.items()},
                                      row_baseline=meta["method_baseline"].to_numpy(bool)[kept],
                                      model_baseline=meta["model_untrained"].fillna(False).to_numpy(bool)[kept],
                                      view=view))
    return per_seed_out, series_out


def _summarise(rows, values, sid, seed_codes, n_seeds, mean, count, n_series, resamples, seed, model_level):
    """Mean over seeds, its interval and counts, per series (series with no finite value left out)."""
    grid = np.full((n_series, max(n_seeds, 1)), np.nan)
    counts = np.zeros((n_series, max(n_seeds, 1)), np.int64)
    grid[sid, seed_codes] = np.where(count > 0, mean, np.nan)
    counts[sid, seed_codes] = count
    finite = np.isfinite(grid)
    seeds_used = finite.sum(1)
    overall = np.where(seeds_used > 0, np.where(finite, grid, 0).sum(1) / np.maximum(seeds_used, 1), np.nan)
    lo, hi = np.full(n_series, np.nan), np.full(n_series, np.nan)
    ci_over = np.where(seeds_used >= 2, "seeds", "none" if model_level else "samples").astype(object)
    # over seeds: rows with the same number of finite seeds share one resampling
    for n in np.unique(seeds_used[seeds_used >= 2]):
        which = np.flatnonzero(seeds_used == n)
        block = np.sort(np.where(finite[which], grid[which], np.inf), axis=1)[:, :n]  # finite values first
        lo[which], hi[which] = stats.bootstrap_ci(block, resamples=resamples, seed=seed + int(n))
    # a single seed: over its samples (model-level values have one number per seed: no interval)
    single = np.flatnonzero(seeds_used == 1)
    if single.size and not model_level:
        row_series = rows.groupby(KEYS, observed=True, sort=False, dropna=False).ngroup().to_numpy()
        pick = np.isin(row_series, single) & np.isfinite(values)
        slo, shi, _ = stats.grouped_bootstrap_ci(values[pick], row_series[pick], resamples=resamples, seed=seed)
        slo = np.pad(slo, (0, max(0, n_series - len(slo))), constant_values=np.nan)
        shi = np.pad(shi, (0, max(0, n_series - len(shi))), constant_values=np.nan)
        lo[single], hi[single] = slo[single], shi[single]
    total = counts.sum(1)
    kept = np.flatnonzero(total > 0)
    return pd.DataFrame({"series": kept, "mean": overall[kept], "ci_low": lo[kept], "ci_high": hi[kept],
                         "ci_over": ci_over[kept], "seeds": seeds_used[kept], "samples": total[kept]})


def _flag_baselines(series: pd.DataFrame) -> pd.DataFrame:
    """A method row is a null baseline when the method is one (its rows' ``method_baseline``
    flag); a model column when the model is untrained (``model_baseline``, from the rows'
    ``model_untrained``)."""
    base_methods = set(series.loc[series["row_baseline"].to_numpy(bool), "method_label"].astype(object))
    return series.drop(columns="row_baseline").assign(
        method_baseline=series["method_label"].astype(object).isin(base_methods).to_numpy())


def _costs(sample: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method): the median over its cells (model × seed) of the explanation time per
    sample and of the peak memory while explaining, and how many cells recorded them."""
    columns = ["dataset_label", "method_label", "seconds", "peak_bytes", "cells"]
    if sample.empty or "explain_seconds" not in sample:
        return pd.DataFrame(columns=columns)
    cell = ["dataset_label", "model_label", "seed", "method_label"]
    per_cell = (sample[cell + ["explain_seconds", "explain_peak_bytes"]]
                .groupby(cell, observed=True, sort=False)
                .agg(seconds=("explain_seconds", "max"), peak_bytes=("explain_peak_bytes", "max")))
    per_cell = per_cell[per_cell["seconds"].notna() | per_cell["peak_bytes"].notna()].reset_index()
    if per_cell.empty:
        return pd.DataFrame(columns=columns)
    out = (per_cell.astype({"peak_bytes": float})
           .groupby(["dataset_label", "method_label"], observed=True, sort=True)
           .agg(seconds=("seconds", "median"), peak_bytes=("peak_bytes", "median"), cells=("seconds", "size"))
           .reset_index())
    return out[columns]


def _matrix(row_keys: np.ndarray, col_keys: np.ndarray, values: np.ndarray):
    """A (rows × columns) matrix from long data (nan where missing)."""
    r, r_labels = pd.factorize(row_keys, sort=True)
    c, c_labels = pd.factorize(col_keys, sort=True)
    r_labels, c_labels = np.asarray(r_labels), np.asarray(c_labels)
    out = np.full((len(r_labels), len(c_labels)), np.nan)
    out[r, c] = values
    return r_labels, c_labels, out


def _rank(series: pd.DataFrame, per_seed: pd.DataFrame, resamples: int, seed: int) -> pd.DataFrame:
    """Ranks of the non-baseline methods in each column, and their bootstrap intervals."""
    rank = np.full(len(series), np.nan)
    rank_low, rank_high = rank.copy(), rank.copy()
    rankable = series["higher_is_better"].notna().to_numpy() & ~series["method_baseline"].to_numpy(bool) & \
        np.isfinite(series["mean"].to_numpy(float))
    cols = ["view", "dataset_label", "model_label", "metric_label", "value_name"]
    blocks = per_seed.groupby(cols, observed=True, sort=False).indices if len(per_seed) else {}
    p_method = _objects(per_seed["method_label"])
    p_seed = per_seed["seed"].to_numpy(np.int64)
    p_mean = per_seed["mean"].to_numpy(float)
    means_all = series["mean"].to_numpy(float)
    methods_all = _objects(series["method_label"])
    hib_all = series["higher_is_better"].to_numpy(object)
    positions = np.flatnonzero(rankable)
    sub = series.iloc[positions]
    for key, idx in (sub.groupby(cols, observed=True, sort=False).indices.items() if len(sub) else []):
        where = positions[idx]
        hib = bool(hib_all[where[0]])
        rank[where] = stats.ranks(means_all[where], hib)
        if len(where) < 2 or key not in blocks:
            continue
        b = blocks[key]
        methods, _, m = _matrix(p_method[b], p_seed[b], p_mean[b])
        lookup = {name: i for i, name in enumerate(methods)}
        wanted = [lookup.get(name) for name in methods_all[where]]
        if None in wanted:
            continue
        m = m[wanted]
        if m.shape[1] >= 2 and np.isfinite(m).all():
            rank_low[where], rank_high[where] = stats.bootstrap_rank_ci(m, hib, resamples=resamples, seed=seed)
    return series.assign(rank=rank, rank_low=rank_low, rank_high=rank_high)


# ----------------------------------------------------------------------------- tests

def _paired(headline: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """Wilcoxon signed-rank between every two methods on the same (seed, sample) pairs, per
    (view, dataset, model, metric, value) with a direction; Holm within each."""
    fam_cols = ["dataset_label", "model_label", "metric_label", "value_name"]
    columns = ["view", *fam_cols, "method_a", "method_b", "n", "statistic", "p", "p_holm", "r", "median_diff",
               "higher_is_better"]
    needed = [*fam_cols, "method_label", "seed", "sample", "value", "correct", "higher_is_better"]
    directed = headline[needed][headline["higher_is_better"].notna().to_numpy()] if len(headline) else headline
    if directed.empty:
        return pd.DataFrame(columns=columns)
    method = _objects(directed["method_label"])
    obs = directed["seed"].to_numpy(np.int64) * (int(directed["sample"].max()) + 1) + \
        directed["sample"].to_numpy(np.int64)
    value = directed["value"].to_numpy(float)
    correct = directed["correct"].fillna(False).to_numpy(bool)
    hib = directed["higher_is_better"].to_numpy(object)
    groups = directed.groupby(fam_cols, observed=True, sort=False).indices
    out: dict[str, list[np.ndarray]] = {}
    for view in VIEWS:
        for key, idx in groups.items():
            if view == "correct":
                idx = idx[correct[idx]]
            if not idx.size:
                continue
            methods, _, m = _matrix(method[idx], obs[idx], value[idx])
            if len(methods) < 2:
                continue
            alphabetical = np.argsort(methods.astype(str), kind="stable")
            methods, m = methods[alphabetical], m[alphabetical]
            ia, ib = (np.array(x) for x in zip(*combinations(range(len(methods)), 2)))
            res = stats.paired_wilcoxon(m[ia], m[ib])
            k = len(ia)
            part = {"view": [view] * k, **{c: [key[j]] * k for j, c in enumerate(fam_cols)},
                    "method_a": methods[ia], "method_b": methods[ib],
                    "n": res["n"], "statistic": res["statistic"], "p": res["p"], "r": res["r"],
                    "median_diff": res["median_diff"], "higher_is_better": [bool(hib[idx[0]])] * k}
            for name, v in part.items():
                out.setdefault(name, []).append(np.asarray(v, dtype=object if name not in NUMERIC else float))
    if not out:
        return pd.DataFrame(columns=columns)
    paired = pd.DataFrame({name: np.concatenate(v) for name, v in out.items()})
    family = paired.groupby(["view", *fam_cols], sort=False, dropna=False).ngroup()
    paired["p_holm"] = stats.holm(paired["p"].to_numpy(float), family.to_numpy())
    return paired[columns]


def model_pairs(models: list[str], params: dict[str, dict], names: dict[str, str] | None = None,
                all_pairs_up_to: int = 4) -> list[tuple[str, str, str]]:
    """Which model variants to compare: every pair when there are at most ``all_pairs_up_to``,
    otherwise the pairs that differ in exactly one param (one sweep axis, e.g. the pre-training at
    a fixed fine-tune degree, or trained against untrained). Returns (a, b, what differs)."""
    out = []
    for a, b in combinations(sorted(models), 2):
        pa_, pb = params.get(a, {}), params.get(b, {})
        diff = sorted(k for k in set(pa_) | set(pb) if pa_.get(k) != pb.get(k))
        same_kind = names is None or names.get(a) == names.get(b)
        if len(diff) == 1 and same_kind:
            k = diff[0]
            out.append((a, b, f"{k}: {pa_.get(k)} vs {pb.get(k)}"))
        elif len(models) <= all_pairs_up_to:
            out.append((a, b, ", ".join(diff) if diff else "model"))
    return out


def _group_tests(per_seed: pd.DataFrame, model_per_seed: pd.DataFrame, model_params: dict[str, dict],
                 headline_names: set[str], model_names: set[str]) -> pd.DataFrame:
    """Callanan's comparison of model groups: the observations are per-model-instance (per-seed)
    scores of each variant, for every method and value, and for the model-level values."""
    columns = ["view", "dataset_label", "method_label", "metric_label", "value_name", "model_a", "model_b",
               "differs", "n_a", "n_b", "mean_a", "mean_b", "U", "p", "p_holm", "r", "cles", "d",
               "shapiro_p_a", "shapiro_p_b", "higher_is_better"]
    plain = per_seed[per_seed["value_name"].astype(object).isin(headline_names).to_numpy()]
    mplain = model_per_seed[model_per_seed["value_name"].astype(object).isin(model_names).to_numpy()]
    frames = [plain, mplain.assign(view="all")] if len(mplain) else [plain]
    data = pd.concat([f.astype({c: object for c in KEYS}) for f in frames if len(f)], ignore_index=True) \
        if any(len(f) for f in frames) else pd.DataFrame()
    if data.empty:
        return pd.DataFrame(columns=columns)
    data["method_label"] = data["method_label"].fillna("—")
    data = data[np.isfinite(data["mean"].to_numpy(float))]
    jobs: dict[tuple[int, int], list] = {}
    for dataset, dgroup in data.groupby("dataset_label", sort=True):
        pairs = model_pairs(list(dgroup["model_label"].unique()), model_params)
        if not pairs:
            continue
        values = {k: g["mean"].to_numpy(float) for k, g in dgroup.groupby(
            ["view", "method_label", "metric_label", "value_name", "model_label"], sort=True)}
        fams = sorted({k[:4] for k in values})
        for fam in fams:
            for a, b, differs in pairs:
                x, y = values.get((*fam, a)), values.get((*fam, b))
                if x is None or y is None or len(x) < MIN_GROUP or len(y) < MIN_GROUP:
                    continue
                jobs.setdefault((len(x), len(y)), []).append(((fam[0], dataset, *fam[1:], a, b, differs), x, y))
    out = []
    for _, items in jobs.items():
        keys = [k for k, _, _ in items]
        res = stats.compare_groups(np.stack([x for _, x, _ in items]), np.stack([y for _, _, y in items]))
        frame = pd.DataFrame(keys, columns=columns[:8])
        frame["n_a"] = [len(x) for _, x, _ in items]
        frame["n_b"] = [len(y) for _, _, y in items]
        for k in ("mean_a", "mean_b", "U", "p", "r", "cles", "d", "shapiro_p_a", "shapiro_p_b"):
            frame[k] = res[k]
        out.append(frame)
    if not out:
        return pd.DataFrame(columns=columns)
    groups = pd.concat(out, ignore_index=True)
    direction = data.drop_duplicates(["dataset_label", "metric_label", "value_name"]).set_index(
        ["dataset_label", "metric_label", "value_name"])["higher_is_better"]
    groups["higher_is_better"] = [direction.get((d, m, v)) for d, m, v in
                                  zip(groups["dataset_label"], groups["metric_label"], groups["value_name"])]
    family = groups.groupby(["view", "dataset_label", "method_label", "metric_label", "value_name"], sort=False,
                            dropna=False).ngroup()
    groups["p_holm"] = stats.holm(groups["p"].to_numpy(float), family.to_numpy())
    return groups.sort_values(["view", "dataset_label", "metric_label", "value_name", "method_label", "model_a",
                               "model_b"]).reset_index(drop=True)[columns]
