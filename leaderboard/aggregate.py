"""From tidy rows to the leaderboard's numbers, vectorised with integer group codes.

Levels of aggregation (per *view*: all test samples, or correctly classified ones only, Oliveira):

1. per (dataset, model, method, metric, value, seed): the mean over samples (non-finite values
   left out); a value *family* (``rmse/<corruption>/<severity>``, ``morf/<k>`` …) also gets a
   summary value ``<family>/*``, the per-sample mean over its facets;
2. per series (dataset, model, method, metric, value): the mean over seeds of the per-seed means,
   with a 95% bootstrap interval over seeds (over samples when a single seed has results);
3. ranks of the methods in each model's column (null baselines left out), in the metric's
   direction, with bootstrap intervals on ranks where every method shares the same seeds;
4. paired Wilcoxon tests between methods on the same (seed, sample) pairs, Holm-corrected within
   each (dataset, model, metric, value), and Callanan's group tests between model variants over
   per-seed means, Holm-corrected within each (dataset, method, metric, value).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from . import stats
from .load import parse_params

KEYS = ["dataset_label", "model_label", "method_label", "metric_label", "value_name"]
VIEWS = ("all", "correct")
NUMERIC = {"n", "statistic", "p", "r", "median_diff"}
MIN_GROUP = 2  # model instances per group for a group comparison


def family_of(value_name: str) -> str | None:
    """``rmse/contrast/3`` → ``rmse``; plain names and summaries (``…/*``) → None."""
    return value_name.split("/", 1)[0] if "/" in value_name and not value_name.endswith("/*") else None


def facets_of(value_name: str) -> list[str]:
    return value_name.split("/")[1:]


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def family_kinds(value_names) -> dict[str, str]:
    """How each family's facets are shaped, which decides how it is shown:

    - ``curve``: one integer facet (``morf/<k>``): a summary over k in the tables, a curve figure;
    - ``corruption``: (name, number) facets (``rmse/<corruption>/<severity>``): a summary over all
      facets, one per corruption (over severities), and figures against severity and layer;
    - ``categorical``: one named facet (``mass/<region>``): each member is a value of its own;
    - ``other``: a summary over all facets.
    """
    shapes: dict[str, list[list[str]]] = {}
    for name in value_names:
        f = family_of(str(name))
        if f:
            shapes.setdefault(f, []).append(facets_of(str(name)))
    kinds = {}
    for f, facets in shapes.items():
        if all(len(x) == 1 and x[0].lstrip("-").isdigit() for x in facets):
            kinds[f] = "curve"
        elif all(len(x) == 2 and _numeric(x[1]) for x in facets):
            kinds[f] = "corruption"
        elif all(len(x) == 1 for x in facets):
            kinds[f] = "categorical"
        else:
            kinds[f] = "other"
    return kinds


def summaries_of(value_name: str, kinds: dict[str, str]) -> list[str]:
    """The summary values a family member feeds: ``rmse/*`` and ``rmse/contrast/*`` for a
    corruption family, ``morf/*`` for a curve; none for categorical members and plain values."""
    f = family_of(value_name)
    if f is None or kinds.get(f) == "categorical":
        return []
    out = [f"{f}/*"]
    if kinds.get(f) == "corruption":
        out.append(f"{f}/{facets_of(value_name)[0]}/*")
    return out


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
    model_params: dict[str, dict]
    method_params: dict[str, dict]


# ----------------------------------------------------------------------------- grouping helpers

def _codes(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (0..k-1, missing = its own code) and the labels they stand for."""
    col = frame[column]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int64)
        labels = np.asarray(col.cat.categories, dtype=object)
        if (codes < 0).any():
            labels = np.append(labels, None)
            codes = np.where(codes < 0, len(labels) - 1, codes)
        return codes, labels
    codes, labels = pd.factorize(col.to_numpy(), sort=True, use_na_sentinel=False)
    return codes.astype(np.int64), np.asarray(labels)


def _group(codes: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group rows by several code columns (hashing, no sort): (group id per row, numbered in
    order of first appearance; (G, k) codes of each group; index of each group's first row)."""
    if not codes[0].size:
        return np.zeros(0, np.int64), np.zeros((0, len(codes)), np.int64), np.zeros(0, np.int64)
    combined = np.zeros(codes[0].shape, np.int64)
    total = 1
    for c, s in zip(codes, sizes):
        s = max(int(s), 1)
        if total * s >= 2**62:  # would overflow: renumber what we have first
            combined = pd.factorize(combined)[0].astype(np.int64)
            total = int(combined.max()) + 1
        combined = combined * s + c
        total *= s
    gid = pd.factorize(combined)[0].astype(np.int64)
    first = pd.Series(gid).drop_duplicates().index.to_numpy()  # code i first appears at first[i]
    rows = np.stack([c[first] for c in codes], axis=1)
    return gid, rows, first


def _means(values: np.ndarray, groups: np.ndarray, size: int, weight: np.ndarray | None = None):
    """Mean of the finite values per group (nan where none) and their count."""
    ok = np.isfinite(values)
    if weight is not None:
        ok &= weight
    count = np.bincount(groups[ok], minlength=size)
    total = np.bincount(groups[ok], weights=values[ok], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, count


# ----------------------------------------------------------------------------- families

def _with_family_summaries(sample: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(headline rows, family-member rows). Headline rows are the plain values, the members of
    categorical families, and one row per sample for each summary (:func:`summaries_of`): the
    per-sample mean over the facets it covers."""
    names = [str(n) for n in sample["value_name"].cat.categories]
    kinds = family_kinds(names)
    feeds = [summaries_of(n, kinds) for n in names]
    vcode = sample["value_name"].cat.codes.to_numpy()
    member = np.array([bool(f) for f in feeds] + [False])[vcode]
    if not member.any():
        return sample, sample.iloc[:0]
    members = sample[member]
    summary_names = sorted({x for f in feeds for x in f})
    names_cat = sample["value_name"].cat.add_categories(summary_names)
    code_of = {n: len(names) + i for i, n in enumerate(summary_names)}
    cols = ["dataset_label", "model_label", "method_label", "metric_label"]
    codes, labels = zip(*(_codes(members, c) for c in cols))
    seed_codes, seed_labels = _codes(members, "seed")
    sample_codes, sample_labels = _codes(members, "sample")
    mcode = members["value_name"].cat.codes.to_numpy()
    values = members["value"].to_numpy(float)
    derived = []
    for level in range(max(len(f) for f in feeds)):  # 0: over all facets, 1: over the last facet
        target = np.array([code_of[f[level]] if len(f) > level else -1 for f in feeds])[mcode]
        use = target >= 0
        gid, rows, first = _group([c[use] for c in (*codes, target, seed_codes, sample_codes)],
                                  [len(x) for x in labels] + [len(names) + len(summary_names), len(seed_labels),
                                                              len(sample_labels)])
        mean, _ = _means(values[use], gid, len(rows))
        src = members[use].iloc[first]
        part = pd.DataFrame({c: src[c].array for c in sample.columns if c not in ("value_name", "value")})
        part["value_name"] = pd.Categorical.from_codes(rows[:, len(cols)], dtype=names_cat.dtype)
        part["value"] = mean
        derived.append(part)
    plain = sample[~member].assign(value_name=names_cat[~member])
    headline = pd.concat([plain, *derived], ignore_index=True)
    headline["value_name"] = headline["value_name"].cat.remove_unused_categories()
    return headline, members


# ----------------------------------------------------------------------------- main entry

def aggregate(frame: pd.DataFrame, *, resamples: int = stats.RESAMPLES, seed: int = 0) -> Aggregates:
    """All the leaderboard's numbers from the rows of :func:`xbench.leaderboard.load.load_frame`."""
    model_params = _params(frame, "model_label", "model_params")
    method_params = _params(frame, "method_label", "method_params")
    sample = frame[frame["scope"] == "sample"]
    model = frame[frame["scope"] == "model"]
    headline, members = _with_family_summaries(sample) if not sample.empty else (sample, sample)

    correct = {"all": None, "correct": headline["correct"].fillna(False).to_numpy(bool)}
    per_seed_parts, series_parts = _series(headline, correct, resamples, seed)
    if len(members):
        mcorrect = {"all": None, "correct": members["correct"].fillna(False).to_numpy(bool)}
        per_seed_parts += _series(members, mcorrect, resamples, seed, summarise=False)[0]
    per_seed = pd.concat(per_seed_parts, ignore_index=True)
    series = pd.concat(series_parts, ignore_index=True)
    series = _flag_baselines(series, model_params)
    series = _rank(series, per_seed, resamples, seed)

    model_rows, model_members = _with_model_families(model)
    (mps,), (msr,) = _series(model_rows, {"all": None}, resamples, seed, model_level=True)
    if len(model_members):
        (mm,), _ = _series(model_members, {"all": None}, resamples, seed, summarise=False, model_level=True)
        mps = pd.concat([mps, mm], ignore_index=True)
    paired = _paired(headline, series)
    groups = _group_tests(per_seed, mps, model_params, set(series["value_name"].astype(object)),
                          set(msr["value_name"].astype(object)) if len(msr) else set())
    return Aggregates(series=series, per_seed=per_seed, models=msr, model_per_seed=mps, paired=paired,
                      groups=groups, samples=headline, model_params=model_params, method_params=method_params)


def _params(frame: pd.DataFrame, label: str, params: str) -> dict[str, dict]:
    if frame.empty:
        return {}
    (lc, ll), (pc, pl) = _codes(frame, label), _codes(frame, params)
    _, rows, _ = _group([lc, pc], [len(ll), len(pl)])
    return {str(ll[a]): parse_params(pl[b]) for a, b in rows if ll[a] is not None}


def _with_model_families(model: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Model-level rows (categorical family members kept) plus one ``<family>/*`` row per
    (dataset, model, seed, metric, family): the mean over its facets."""
    if model.empty:
        return model, model
    names = model["value_name"].astype(str)
    kinds = family_kinds(names.unique())
    overall = names.map(lambda n: (summaries_of(n, kinds) or [None])[0])
    member = overall.notna().to_numpy()
    members = model[member]
    if not member.any():
        return model, members
    summary = (members.assign(value_name=overall[member].to_numpy())
               .astype({"value_name": object})
               .groupby(["dataset_label", "model_label", "metric_label", "value_name", "seed"], observed=True,
                        sort=False)
               .agg(value=("value", "mean"), higher_is_better=("higher_is_better", "first"),
                    category=("category", "first"), method_baseline=("method_baseline", "first"),
                    method_label=("method_label", "first"), scope=("scope", "first"))
               .reset_index())
    out = pd.concat([model[~member].astype({"value_name": object}), summary], ignore_index=True)
    for c in KEYS + ["category"]:
        out[c] = out[c].astype("category")
    return out, members


def _series(rows: pd.DataFrame, views: dict[str, np.ndarray | None], resamples: int, seed: int, *,
            summarise: bool = True, model_level: bool = False) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Per-seed means and (if ``summarise``) per-series mean and CI, for each view (a row mask,
    None = every row); the rows are grouped once for all views."""
    codes, labels = zip(*(_codes(rows, c) for c in KEYS))
    seed_codes, seed_labels = _codes(rows, "seed")
    values = rows["value"].to_numpy(float)
    sid, srow, first = _group(list(codes), [len(x) for x in labels])
    meta = rows.iloc[first]
    keys = {c: labels[j][srow[:, j]] for j, c in enumerate(KEYS)}
    hib = meta["higher_is_better"].to_numpy(object)
    category = meta["category"].astype(object).to_numpy()
    baseline = _any_by(rows["method_baseline"].fillna(False).to_numpy(bool), sid, len(srow))
    per_seed_out, series_out = [], []
    for view, weight in views.items():
        per_seed, series = _one_view(values, sid, seed_codes, seed_labels, len(srow), weight, resamples, seed,
                                     summarise, model_level)
        s_idx = per_seed.pop("series").to_numpy()
        per_seed_out.append(pd.DataFrame({c: k[s_idx] for c, k in keys.items()}).assign(
            **per_seed, higher_is_better=hib[s_idx], view=view))
        if summarise:
            kept = series.pop("series").to_numpy()
            series_out.append(pd.DataFrame({c: k[kept] for c, k in keys.items()}).assign(
                **series, higher_is_better=hib[kept], category=category[kept], row_baseline=baseline[kept],
                view=view))
    return per_seed_out, series_out


def _one_view(values, sid, seed_codes, seed_labels, n_series, weight, resamples, seed, summarise, model_level):
    n_seeds = max(len(seed_labels), 1)
    mean, count = _means(values, sid * n_seeds + seed_codes, n_series * n_seeds, weight)
    mean, count = mean.reshape(n_series, n_seeds), count.reshape(n_series, n_seeds)
    present = count > 0
    s_idx, k_idx = np.nonzero(present)
    per_seed = {"series": s_idx, "seed": np.asarray(seed_labels)[k_idx].astype(np.int64),
                "mean": mean[s_idx, k_idx], "n": count[s_idx, k_idx]}
    per_seed = pd.DataFrame(per_seed)
    if not summarise:
        return per_seed, None
    finite = np.isfinite(mean) & present
    seeds_used = finite.sum(1)
    overall = np.where(seeds_used > 0, np.where(finite, mean, 0).sum(1) / np.maximum(seeds_used, 1), np.nan)
    lo, hi = np.full(n_series, np.nan), np.full(n_series, np.nan)
    ci_over = np.where(seeds_used >= 2, "seeds", "none" if model_level else "samples").astype(object)
    # over seeds: rows with the same number of finite seeds share one resampling
    for n in np.unique(seeds_used[seeds_used >= 2]):
        which = np.flatnonzero(seeds_used == n)
        block = np.sort(np.where(finite[which], mean[which], np.inf), axis=1)[:, :n]  # finite values first
        lo[which], hi[which] = stats.bootstrap_ci(block, resamples=resamples, seed=seed + int(n))
    # a single seed: over its samples (model-level values have one number per seed: no interval)
    single = np.flatnonzero(seeds_used == 1)
    if single.size and not model_level:
        pick = np.isin(sid, single)
        if weight is not None:
            pick &= weight
        slo, shi, _ = stats.grouped_bootstrap_ci(values[pick], sid[pick], resamples=resamples, seed=seed)
        slo = np.pad(slo, (0, max(0, n_series - len(slo))), constant_values=np.nan)
        shi = np.pad(shi, (0, max(0, n_series - len(shi))), constant_values=np.nan)
        lo[single], hi[single] = slo[single], shi[single]
    kept = np.flatnonzero(count.sum(1) > 0)
    series = pd.DataFrame({"series": kept, "mean": overall[kept], "ci_low": lo[kept], "ci_high": hi[kept],
                           "ci_over": ci_over[kept], "seeds": seeds_used[kept], "samples": count.sum(1)[kept]})
    return per_seed, series


def _any_by(flags: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(groups, weights=flags.astype(float), minlength=size) > 0


def _flag_baselines(series: pd.DataFrame, model_params: dict[str, dict]) -> pd.DataFrame:
    """A model column is a null baseline when its params say ``untrained``; a method row is one
    when the method is a null baseline (its rows' ``method_baseline`` flag)."""
    untrained = {k for k, v in model_params.items() if v.get("untrained")}
    model_baseline = series["model_label"].astype(object).isin(untrained).to_numpy()
    base_methods = set(series.loc[series["row_baseline"].to_numpy(bool), "method_label"].astype(object))
    return series.drop(columns="row_baseline").assign(
        model_baseline=model_baseline,
        method_baseline=series["method_label"].astype(object).isin(base_methods).to_numpy(),
    )


def _segments(frame: pd.DataFrame, columns: list[str]):
    """Yield (key tuple, row positions) for each group of ``columns`` (fast: one sort, no pandas
    groupby per group)."""
    if frame.empty:
        return
    codes, labels = zip(*(_codes(frame, c) for c in columns))
    gid, rows, _ = _group(list(codes), [len(x) for x in labels])
    order = np.argsort(gid, kind="stable")
    bounds = np.flatnonzero(np.diff(gid[order])) + 1
    for g, idx in zip(np.unique(gid), np.split(order, bounds)):
        yield tuple(labels[j][rows[g, j]] for j in range(len(columns))), idx


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
    sub = series[rankable]
    blocks = {key: idx for key, idx in _segments(per_seed, cols)}
    p_method = per_seed["method_label"].astype(object).to_numpy()
    p_seed = per_seed["seed"].to_numpy(np.int64)
    p_mean = per_seed["mean"].to_numpy(float)
    positions = np.flatnonzero(rankable)
    for key, idx in _segments(sub, cols):
        where = positions[idx]
        hib = bool(series["higher_is_better"].iloc[where[0]])
        means = series["mean"].to_numpy(float)[where]
        rank[where] = stats.ranks(means, hib)
        if len(where) < 2 or key not in blocks:
            continue
        b = blocks[key]
        methods, _, m = _matrix(p_method[b], p_seed[b], p_mean[b])
        lookup = {name: i for i, name in enumerate(methods)}
        wanted = [lookup.get(name) for name in series["method_label"].astype(object).to_numpy()[where]]
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
    if headline.empty:
        return pd.DataFrame(columns=columns)
    directed = headline["higher_is_better"].notna().to_numpy()
    codes, labels = zip(*(_codes(headline, c) for c in fam_cols))
    gid, rows, first = _group([c[directed] for c in codes], [len(x) for x in labels])
    method, method_labels = _codes(headline, "method_label")
    method = method[directed]
    obs = headline["seed"].to_numpy(np.int64)[directed] * (int(headline["sample"].max()) + 1) + \
        headline["sample"].to_numpy(np.int64)[directed]
    value = headline["value"].to_numpy(float)[directed]
    correct = headline["correct"].fillna(False).to_numpy(bool)[directed]
    hib = headline["higher_is_better"].to_numpy(object)[directed]
    out: dict[str, list[np.ndarray]] = {}
    for view in VIEWS:
        keep = np.ones(len(gid), bool) if view == "all" else correct
        idx_all = np.flatnonzero(keep)
        order = idx_all[np.argsort(gid[idx_all], kind="stable")]
        bounds = np.flatnonzero(np.diff(gid[order])) + 1
        for idx in np.split(order, bounds) if order.size else []:
            m_codes, _, m = _matrix(method[idx], obs[idx], value[idx])
            if len(m_codes) < 2:
                continue
            alphabetical = np.argsort(method_labels[m_codes.astype(int)].astype(str), kind="stable")
            m_codes, m = m_codes[alphabetical], m[alphabetical]
            ia, ib = (np.array(x) for x in zip(*combinations(range(len(m_codes)), 2)))
            res = stats.paired_wilcoxon(m[ia], m[ib])
            g = gid[idx[0]]
            k = len(ia)
            part = {"view": [view] * k, **{c: [labels[j][rows[g, j]]] * k for j, c in enumerate(fam_cols)},
                    "method_a": method_labels[m_codes[ia].astype(int)], "method_b": method_labels[m_codes[ib].astype(int)],
                    "n": res["n"], "statistic": res["statistic"], "p": res["p"], "r": res["r"],
                    "median_diff": res["median_diff"], "higher_is_better": [bool(hib[idx[0]])] * k}
            for key, v in part.items():
                out.setdefault(key, []).append(np.asarray(v, dtype=object if key not in NUMERIC else float))
    if not out:
        return pd.DataFrame(columns=columns)
    paired = pd.DataFrame({key: np.concatenate(v) for key, v in out.items()})
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
