"""How far the metrics can be trusted to rank methods: do they agree with each other, and with
themselves across their own hyper-parameters?

For every dataset, each headline *series* (a metric and one of its directed values, e.g.
``tpr-tnr / tpr`` or ``aopc[patch=8] / morf/*``) ranks the non-baseline methods by their mean
over seeds, in the value's direction (so "better" is the same end for every series). Between two
series the agreement is Kendall's τ-b of those rankings over the methods both score: 1 = the same
order, 0 = unrelated, −1 = reversed.

- Per trained model column, τ is computed on that model's methods; *pooled*, it is the mean of the
  per-model τ over the trained models where both series rank at least ``MIN_METHODS`` methods.
- Intervals: the model's seeds are resampled (the same resampling for every series and method of
  that model, since a seed is one trained model instance shared by all of them), the per-seed means
  averaged over the resampled seeds, the methods re-ranked and τ recomputed; the percentile 95%
  interval of those τ (pooled: of their mean over models). One seed: no interval.
- *Hyper-parameter stability* is the same τ between the variants of one metric (the same
  ``metric``, different ``metric_label``, e.g. AOPC with ``fill``/``patch`` variants) on the same
  value: a metric whose ranking flips with its own settings cannot be trusted on one of them.

τ-b is computed from the signs of the pairwise differences of the methods' means, vectorised over
series, method pairs and resamples (ties count as in ``scipy.stats.kendalltau``).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from . import stats

MIN_METHODS = 3  # two methods give τ = ±1 by construction: not evidence of anything
RESAMPLES = 1000
POOLED = "pooled"
COLUMNS = ["dataset_label", "model_label", "kind", "metric_a", "value_a", "metric_b", "value_b", "tau", "tau_low",
           "tau_high", "methods", "models", "seeds"]


def headline_series(series: pd.DataFrame) -> pd.DataFrame:
    """The (dataset, metric, value) series that rank methods: a direction, sample-level (not the
    classification values), and not the per-facet summaries (``rmse/contrast/*``), whose overall
    summary already stands for them."""
    s = series[(series["view"] == "all").to_numpy() & series["higher_is_better"].notna().to_numpy()
               & (series["category"].astype(object) != "classification").to_numpy()]
    per_facet = s["summary"].fillna(False).to_numpy(bool) & s["facet"].notna().to_numpy()
    return s[~per_facet]


def metric_agreement(series: pd.DataFrame, per_seed: pd.DataFrame, untrained: set[str],
                     metric_names: dict[str, str], *, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Kendall τ between every two headline series, per trained model column and pooled, with
    bootstrap intervals over seeds; ``kind`` is ``variants`` for two hyper-parameter variants of
    one metric on the same value, else ``metrics``. Columns ``COLUMNS``."""
    heads = headline_series(series)
    if heads.empty:
        return pd.DataFrame(columns=COLUMNS)
    baselines = set(heads.loc[heads["method_baseline"].to_numpy(bool), "method_label"].astype(object))
    keep = heads[["dataset_label", "metric_label", "value_name", "higher_is_better"]].astype(
        {"dataset_label": object, "metric_label": object, "value_name": object}).drop_duplicates(
        ["dataset_label", "metric_label", "value_name"])
    ps = per_seed[(per_seed["view"] == "all").to_numpy()]
    ps = ps[["dataset_label", "model_label", "method_label", "metric_label", "value_name", "seed", "mean"]].astype(
        {c: object for c in ("dataset_label", "model_label", "method_label", "metric_label", "value_name")})
    ps = ps[~ps["method_label"].isin(baselines) & ~ps["model_label"].isin(untrained) & ps["method_label"].notna()]
    ps = ps.merge(keep, on=["dataset_label", "metric_label", "value_name"])
    out = []
    for dataset, d in ps.groupby("dataset_label", sort=True):
        keys = sorted(set(zip(d["metric_label"], d["value_name"])))
        if len(keys) < 2:
            continue
        out.append(_dataset(dataset, d, keys, metric_names, resamples, seed))
    if not out:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(out, ignore_index=True)[COLUMNS]


def _dataset(dataset: str, d: pd.DataFrame, keys: list[tuple[str, str]], metric_names: dict[str, str],
             resamples: int, seed: int) -> pd.DataFrame:
    index = {k: i for i, k in enumerate(keys)}
    n_series = len(keys)
    pairs = list(combinations(range(n_series), 2))
    per_model = {}  # model → (tau (P,), boot (P, B) or None, methods (P,), seeds)
    for m_index, (model, g) in enumerate(d.groupby("model_label", sort=True)):
        methods = sorted(g["method_label"].unique())
        seeds = sorted(g["seed"].unique())
        x = np.full((n_series, len(methods), len(seeds)), np.nan)
        s_idx = np.array([index[k] for k in zip(g["metric_label"], g["value_name"])])
        i_idx = pd.Index(methods).get_indexer(g["method_label"])
        k_idx = pd.Index(seeds).get_indexer(g["seed"])
        sign = np.where(g["higher_is_better"].astype(bool).to_numpy(), 1.0, -1.0)
        x[s_idx, i_idx, k_idx] = g["mean"].to_numpy(float) * sign
        valid = np.isfinite(x).all(axis=2)  # a method counts in a series when every seed has a value
        filled = np.where(np.isfinite(x), x, 0.0)
        point = filled.mean(axis=2)  # (S, M)
        tau, n_methods = _kendall(point[:, None, :], valid, pairs)
        boot = None
        if len(seeds) >= 2:
            means = stats.bootstrap_means(filled.reshape(-1, len(seeds)), resamples=resamples,
                                          seed=seed + m_index).reshape(n_series, len(methods), resamples)
            boot, _ = _kendall(np.moveaxis(means, 2, 1), valid, pairs)  # (P, B)
        per_model[model] = (tau[:, 0], boot, n_methods, len(seeds))
    rows = []
    for p, (a, b) in enumerate(pairs):
        (ma, va), (mb, vb) = keys[a], keys[b]
        variants = ma != mb and va == vb and metric_names.get(ma, ma) == metric_names.get(mb, mb)
        kind = "variants" if variants else "metrics"
        taus, boots, counts, seeds = [], [], [], []
        for model, (tau, boot, n_methods, k) in per_model.items():
            if n_methods[p] < MIN_METHODS or not np.isfinite(tau[p]):
                continue
            lo, hi = _interval(boot[p] if boot is not None else None)
            rows.append({"dataset_label": dataset, "model_label": model, "kind": kind, "metric_a": ma, "value_a": va,
                         "metric_b": mb, "value_b": vb, "tau": float(tau[p]), "tau_low": lo, "tau_high": hi,
                         "methods": int(n_methods[p]), "models": 1, "seeds": k})
            taus.append(tau[p])
            boots.append(boot[p] if boot is not None else None)
            counts.append(int(n_methods[p]))
            seeds.append(k)
        if not taus:
            continue
        pooled_boot = np.nanmean(np.stack(boots), axis=0) if all(b is not None for b in boots) else None
        lo, hi = _interval(pooled_boot)
        rows.append({"dataset_label": dataset, "model_label": POOLED, "kind": kind, "metric_a": ma, "value_a": va,
                     "metric_b": mb, "value_b": vb, "tau": float(np.mean(taus)), "tau_low": lo, "tau_high": hi,
                     "methods": min(counts), "models": len(taus), "seeds": min(seeds)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _kendall(scores: np.ndarray, valid: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Kendall τ-b between series a and b for each pair (a, b) in ``pairs``.

    ``scores`` (S, R, M): each series' method scores in R replicates (1 for the point estimate, B
    for resamples); ``valid`` (S, M): the methods each series ranks. Returns τ (P, R), nan where
    fewer than two methods are shared or a ranking is all ties, and the shared methods (P,)."""
    n_methods = scores.shape[2]
    if n_methods < 2:
        return np.full((len(pairs), scores.shape[1]), np.nan), np.zeros(len(pairs), np.int64)
    i, j = (np.array(x) for x in zip(*combinations(range(n_methods), 2)))
    signs = np.sign(scores[:, :, i] - scores[:, :, j])  # (S, R, pairs of methods)
    both = valid[:, i] & valid[:, j]  # (S, method pairs)
    a, b = (np.array(x) for x in zip(*pairs)) if pairs else (np.zeros(0, int), np.zeros(0, int))
    shared = both[a] & both[b]  # (P, method pairs)
    sa, sb = signs[a] * shared[:, None, :], signs[b] * shared[:, None, :]
    num = (sa * sb).sum(-1)
    den = np.sqrt((sa ** 2).sum(-1) * (sb ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(den > 0, num / den, np.nan)
    common = (valid[a] & valid[b]).sum(-1)
    return tau, common


def _interval(boot: np.ndarray | None) -> tuple[float, float]:
    if boot is None:
        return float("nan"), float("nan")
    boot = boot[np.isfinite(boot)]
    if not boot.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(lo), float(hi)
