"""Statistics for the leaderboard, vectorised over many comparisons at once.

- Bootstrap: percentile intervals of the mean from exact multinomial resampling, done as one
  matrix product per sample size (``X @ counts.T / n``), so thousands of intervals cost one BLAS
  call; also intervals on *ranks*, resampling seeds jointly across the methods they were shared by.
- Paired tests between methods on the same samples: Wilcoxon signed-rank (scipy, zero differences
  dropped as in Wilcoxon's original), the matched-pairs rank-biserial correlation, and Holm's
  step-down correction within a family of comparisons.
- Group tests between model variants as in Callanan (pingouin 0.5.1 ``mwu``/``compute_effsize``):
  Shapiro–Wilk per group, two-sided Mann–Whitney U, rank-biserial correlation, common-language
  effect size (CLES = P(X > Y) + ½ P(X = Y)) and Cohen's d with the pooled SD.

Sign convention: every effect (r, CLES − ½, d, median difference) is positive when the first group
(or method) has the larger values. pingouin 0.5.1 reports the rank-biserial correlation with the
opposite sign (1 − 2U/(n₁n₂)), which is why Callanan's table shows r = 1.0 beside d = −10.8.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as st

RESAMPLES = 2000


def _counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap resample counts: row b says how often each of n values is drawn in resample b."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def bootstrap_means(x: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the row means of ``x`` (G, n), all finite: (G, resamples).
    One resampling of the n positions is shared by all rows (rows are paired by position)."""
    x = np.asarray(x, dtype=float)
    rng = np.random.default_rng(seed)
    return x @ _counts(x.shape[1], resamples, rng).T / x.shape[1]


def _interval(means: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=-1)
    return lo, hi


def bootstrap_ci(values, *, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0):
    """Percentile bootstrap interval of the mean. 1-D input: (lo, hi) floats over its finite values,
    (nan, nan) with fewer than two. 2-D input (G, n), all finite: arrays lo, hi per row."""
    x = np.asarray(values, dtype=float)
    if x.ndim == 2:
        if x.shape[1] < 2:
            nan = np.full(x.shape[0], np.nan)
            return nan, nan.copy()
        return _interval(bootstrap_means(x, resamples=resamples, seed=seed), level)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    lo, hi = _interval(bootstrap_means(x[None], resamples=resamples, seed=seed), level)
    return float(lo[0]), float(hi[0])


def grouped_bootstrap_ci(values, groups, *, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0):
    """Bootstrap intervals of the mean for ragged groups: ``groups`` are integer ids 0..G-1.

    Non-finite values are dropped; groups with fewer than two values get nan. Groups of the same
    size share one matrix product. Returns (lo, hi, n) arrays of length G."""
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups, dtype=np.int64)
    keep = np.isfinite(values)
    values, groups = values[keep], groups[keep]
    size = int(groups.max()) + 1 if groups.size else 0
    order = np.argsort(groups, kind="stable")
    values, groups = values[order], groups[order]
    counts = np.bincount(groups, minlength=size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    lo = np.full(size, np.nan)
    hi = np.full(size, np.nan)
    for n in np.unique(counts):
        if n < 2:
            continue
        which = np.flatnonzero(counts == n)
        block = values[starts[which][:, None] + np.arange(n)]
        lo[which], hi[which] = bootstrap_ci(block, level=level, resamples=resamples, seed=seed + int(n))
    return lo, hi, counts


def bootstrap_rank_ci(matrix, higher_is_better: bool, *, level: float = 0.95, resamples: int = RESAMPLES,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of each method's rank (1 = best) when the seeds, shared by all methods
    (columns of ``matrix`` (k methods, n seeds), all finite), are resampled jointly."""
    m = np.asarray(matrix, dtype=float)
    if m.shape[1] < 2 or m.shape[0] < 1:
        nan = np.full(m.shape[0], np.nan)
        return nan, nan.copy()
    means = bootstrap_means(m, resamples=resamples, seed=seed)  # (k, B)
    key = -means if higher_is_better else means
    ranks = st.rankdata(key, method="min", axis=0)
    return _interval(ranks, level)


def ranks(values, higher_is_better: bool) -> np.ndarray:
    """Competition ranks (1 = best; ties share the best rank); nan stays nan."""
    v = np.asarray(values, dtype=float)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)
    if ok.any():
        out[ok] = st.rankdata(-v[ok] if higher_is_better else v[ok], method="min")
    return out


def holm(pvalues, families=None) -> np.ndarray:
    """Holm's step-down adjusted p-values, within each family (all one family by default).
    nan p-values are left out of the count and stay nan."""
    p = np.asarray(pvalues, dtype=float)
    fam = np.zeros(p.shape, np.int64) if families is None else np.unique(np.asarray(families), return_inverse=True)[1]
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    pf, ff = p[ok], fam[ok]
    order = np.lexsort((pf, ff))
    ps, fs = pf[order], ff[order]
    m = np.bincount(fs)
    first = np.concatenate([[0], np.cumsum(m)[:-1]])
    position = np.arange(ps.size) - first[fs]  # 0-based rank inside the family
    scaled = np.minimum(1.0, (m[fs] - position) * ps)
    adjusted = np.maximum.accumulate(scaled + 2.0 * fs) - 2.0 * fs  # running max within each family
    out[ok[order]] = adjusted
    return out


def paired_wilcoxon(x, y) -> dict[str, np.ndarray]:
    """Wilcoxon signed-rank tests of x − y, one per row of (P, n) arrays.

    Pairs with a non-finite member are dropped (per row); zero differences are dropped
    (Wilcoxon's rule, scipy's default ``zero_method="wilcox"``). Each row's p-value is scipy's for
    that row alone: rows with more than 50 pairs use its normal approximation with tie correction
    and no continuity correction, computed here for all rows at once; smaller rows call scipy
    (exact or permutation distribution). Returns n (pairs used), n_nonzero, statistic
    (min(T+, T−), as scipy), p (two-sided; nan with no non-zero difference), r (matched-pairs
    rank-biserial, (T+ − T−)/(T+ + T−)) and median_diff."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    d = x - y
    ok = np.isfinite(d)
    rows = d.shape[0]
    res = {key: np.full(rows, np.nan) for key in ("statistic", "p", "r", "median_diff")}
    res["n"] = ok.sum(1)
    res["n_nonzero"] = (ok & (d != 0)).sum(1)
    if d.shape[1]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res["median_diff"] = np.nanmedian(np.where(ok, d, np.nan), axis=1)
    clean = np.where(ok, d, 0.0)  # dropped pairs count as zero differences, which are dropped anyway
    plus, minus, ties = _signed_rank_sums(clean)
    total = plus + minus
    with np.errstate(invalid="ignore", divide="ignore"):
        res["r"] = np.where(total > 0, (plus - minus) / total, np.nan)
    res["statistic"] = np.where(res["n_nonzero"] > 0, np.minimum(plus, minus), np.nan)
    n = res["n_nonzero"].astype(float)
    se = np.sqrt((n * (n + 1) * (2 * n + 1) - ties / 2) / 24)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (plus - n * (n + 1) / 4) / se
    large = (res["n"] > 50) & (n > 0)
    res["p"][large] = np.minimum(1.0, 2 * st.norm.sf(np.abs(z[large])))
    for i in np.flatnonzero(~large & (n > 0)):
        row = d[i, ok[i]]
        nonzero = np.abs(row[row != 0])
        if row.size <= 13 and (nonzero.size < row.size or np.unique(nonzero).size < nonzero.size):
            res["p"][i] = _sign_flip_p(row, plus[i])  # what scipy's permutation test computes, without its cost
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res["p"][i] = st.wilcoxon(row, zero_method="wilcox", alternative="two-sided").pvalue
    return res


def _sign_flip_p(d: np.ndarray, observed: float) -> float:
    """Two-sided p of T+ under all 2^n sign flips (scipy's choice for n ≤ 13 with ties or zeros)."""
    n = d.size
    nonzero = d != 0
    ranks = np.zeros(n)
    ranks[nonzero] = st.rankdata(np.abs(d[nonzero]))
    signs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # every sign pattern, 1 = positive
    null = signs @ ranks
    gamma = abs(observed) * np.finfo(float).eps * 100
    less = np.mean(null <= observed + gamma)
    greater = np.mean(null >= observed - gamma)
    return float(min(1.0, 2 * min(less, greater)))


def _signed_rank_sums(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of finite differences: T+ and T− (average ranks of |d| over the non-zero
    differences) and the tie term Σ(t³ − t) over groups of tied non-zero |d|."""
    rows, n = d.shape
    if n == 0:
        zero = np.zeros(rows)
        return zero, zero.copy(), zero.copy()
    a = np.where(d != 0, np.abs(d), np.inf)  # zeros sort last and are never ranked
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    new = np.ones(s.shape, bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    gid = np.cumsum(new.ravel()) - 1  # tie groups, never spanning rows (each row starts one)
    size = np.bincount(gid)
    avg = np.bincount(gid, weights=np.tile(np.arange(1.0, n + 1), rows)) / size
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, avg[gid].reshape(rows, n), axis=1)
    plus = np.where(d > 0, ranks, 0.0).sum(1)
    minus = np.where(d < 0, ranks, 0.0).sum(1)
    row_of_group = np.repeat(np.arange(rows), new.sum(1))
    finite = np.isfinite(s.ravel()[new.ravel()])
    ties = np.bincount(row_of_group, weights=np.where(finite, size ** 3.0 - size, 0.0), minlength=rows)
    return plus, minus, ties


def mann_whitney(x, y) -> dict[str, np.ndarray]:
    """Two-sided Mann–Whitney U per row of x (P, n1) against y (P, n2), all finite: U (of x),
    p, rank-biserial r = 2·CLES − 1 and CLES = U / (n1·n2) = P(X > Y) + ½ P(X = Y)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    u, p = np.full(x.shape[0], np.nan), np.full(x.shape[0], np.nan)
    # scipy picks exact or asymptotic p-values for a whole batch (ties anywhere → asymptotic), so
    # rows with and without ties go in separate calls: each row gets the p-value scipy gives it alone
    both = np.concatenate([x, y], axis=1)
    ordered = np.sort(both, axis=1)
    tied = (np.diff(ordered, axis=1) == 0).any(axis=1)
    for rows in (np.flatnonzero(tied), np.flatnonzero(~tied)):
        if rows.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                test = st.mannwhitneyu(x[rows], y[rows], axis=1, alternative="two-sided")
            u[rows], p[rows] = test.statistic, test.pvalue
    cles = u / (x.shape[1] * y.shape[1])
    return {"U": u, "p": p, "cles": cles, "r": 2.0 * cles - 1.0}


def cohens_d(x, y) -> np.ndarray:
    """Cohen's d per row, (mean x − mean y) / pooled SD (ddof 1), as pingouin's ``cohen``."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    n1, n2 = x.shape[1], y.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.sqrt(((n1 - 1) * x.var(1, ddof=1) + (n2 - 1) * y.var(1, ddof=1)) / (n1 + n2 - 2))
        return (x.mean(1) - y.mean(1)) / pooled


def shapiro(x) -> tuple[np.ndarray, np.ndarray]:
    """Shapiro–Wilk W and p per row (nan below three values or for constant rows)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    nan = np.full(x.shape[0], np.nan)
    if x.shape[1] < 3:
        return nan, nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = st.shapiro(x, axis=1)
    w, p = np.asarray(test.statistic, float).copy(), np.asarray(test.pvalue, float).copy()
    constant = np.ptp(x, axis=1) == 0
    w[constant] = np.nan
    p[constant] = np.nan
    return w, p


def compare_groups(x, y) -> dict[str, np.ndarray]:
    """Callanan's comparison of two groups of models, per row: Shapiro–Wilk p of each group,
    Mann–Whitney U and p, rank-biserial r, CLES, Cohen's d, and the group means."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    out = mann_whitney(x, y)
    out["d"] = cohens_d(x, y)
    out["shapiro_p_a"] = shapiro(x)[1]
    out["shapiro_p_b"] = shapiro(y)[1]
    out["mean_a"] = x.mean(1)
    out["mean_b"] = y.mean(1)
    return out
