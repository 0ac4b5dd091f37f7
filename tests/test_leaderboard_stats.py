"""The leaderboard's statistics against scipy, brute force and the Callanan seed's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from xbench.leaderboard import stats


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    x = np.random.default_rng(3).normal(2.0, 1.5, 40)
    lo, hi = stats.bootstrap_ci(x, resamples=20000)
    ref = st.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", random_state=1).confidence_interval
    sd = x.std(ddof=1) / np.sqrt(x.size)
    assert lo == pytest.approx(ref.low, abs=0.05 * sd)
    assert hi == pytest.approx(ref.high, abs=0.05 * sd)
    assert lo < x.mean() < hi


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(11)
    true_mean = 3.0
    data = rng.normal(true_mean, 2.0, size=(1000, 30))  # 1000 experiments of 30 values, one matrix product
    lo, hi = stats.bootstrap_ci(data, resamples=2000, seed=5)
    coverage = np.mean((lo <= true_mean) & (true_mean <= hi))
    # percentile intervals under-cover slightly at n = 30; binomial SE of the estimate ≈ 0.007
    assert 0.92 <= coverage <= 0.97, coverage
    lo90, hi90 = stats.bootstrap_ci(data, level=0.90, resamples=2000, seed=5)
    assert np.all(hi90 - lo90 < hi - lo)
    assert 0.86 <= np.mean((lo90 <= true_mean) & (true_mean <= hi90)) <= 0.93


def test_bootstrap_ci_degenerate_inputs():
    assert np.isnan(stats.bootstrap_ci([1.0])).all()
    assert np.isnan(stats.bootstrap_ci([np.nan, 2.0, np.inf])).all()
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    lo, hi = stats.bootstrap_ci(np.ones((3, 1)))
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_grouped_bootstrap_matches_one_group_at_a_time_and_drops_non_finite():
    rng = np.random.default_rng(0)
    values = rng.normal(size=23)
    groups = np.array([0] * 10 + [1] * 10 + [2] * 2 + [3])
    values[3] = np.nan  # group 0 keeps 9 values
    lo, hi, n = stats.grouped_bootstrap_ci(values, groups, resamples=500, seed=2)
    assert list(n) == [9, 10, 2, 1]
    for g, size in [(0, 9), (1, 10), (2, 2)]:
        v = values[groups == g]
        v = v[np.isfinite(v)]
        ref_lo, ref_hi = stats.bootstrap_ci(v[None], resamples=500, seed=2 + size)
        assert (lo[g], hi[g]) == (ref_lo[0], ref_hi[0])
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def test_rank_intervals_tight_when_separated_and_wide_when_tied():
    seeds = np.array([[0.90, 0.91, 0.92, 0.90],   # clearly best
                      [0.50, 0.52, 0.49, 0.51],
                      [0.50, 0.49, 0.52, 0.51],   # tied with the previous
                      [0.10, 0.12, 0.11, 0.10]])
    lo, hi = stats.bootstrap_rank_ci(seeds, higher_is_better=True, resamples=1000)
    assert (lo[0], hi[0]) == (1, 1)
    assert (lo[3], hi[3]) == (4, 4)
    assert lo[1] == 2 and hi[1] == 3 and lo[2] == 2 and hi[2] == 3
    lo, hi = stats.bootstrap_rank_ci(seeds, higher_is_better=False, resamples=1000)
    assert (lo[0], hi[0]) == (4, 4) and (lo[3], hi[3]) == (1, 1)


def test_ranks_follow_direction_share_ties_and_skip_nan():
    assert list(stats.ranks([0.2, 0.9, 0.5, 0.9], True)) == [4, 1, 3, 1]
    assert list(stats.ranks([0.2, 0.9, 0.5], False)) == [1, 3, 2]
    r = stats.ranks([0.2, np.nan, 0.5], True)
    assert r[0] == 2 and np.isnan(r[1]) and r[2] == 1


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 → running max 0.02 0.03 0.06 0.06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    fam = np.array(["a", "a", "b", "b"])
    assert stats.holm(p, fam) == pytest.approx([0.02, 0.04, 0.03, 0.01])
    out = stats.holm([0.5, np.nan, 0.9])
    assert out[0] == pytest.approx(1.0) and np.isnan(out[1]) and out[2] == pytest.approx(1.0)


def _rank_biserial_brute(d):
    d = d[np.isfinite(d) & (d != 0)]
    r = st.rankdata(np.abs(d))
    return (r[d > 0].sum() - r[d < 0].sum()) / r.sum()


@pytest.mark.parametrize("n", [6, 9, 30, 50, 51, 300])
def test_paired_wilcoxon_matches_scipy_row_by_row(n):
    rng = np.random.default_rng(n)
    rows = 12 if n > 13 else 4  # scipy itself is slow on small samples with ties (a permutation test)
    x = np.round(rng.normal(size=(rows, n)), 1)  # rounding makes ties
    y = np.round(x + rng.normal(0.3, 1.0, size=(rows, n)), 1)
    y[:rows - 1, :2] = x[:rows - 1, :2]          # zero differences (not in the last row: exact branch)
    x[1, 3] = np.nan                             # a missing pair
    x[2] = y[2]                                  # no difference at all
    res = stats.paired_wilcoxon(x, y)
    for i in range(rows):
        ok = np.isfinite(x[i]) & np.isfinite(y[i])
        assert res["n"][i] == ok.sum()
        if i == 2:
            assert np.isnan(res["p"][i]) and np.isnan(res["r"][i])
            continue
        ref = st.wilcoxon(x[i, ok], y[i, ok])
        assert res["p"][i] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        assert res["statistic"][i] == pytest.approx(ref.statistic)
        assert res["r"][i] == pytest.approx(_rank_biserial_brute(x[i] - y[i]))
        assert res["median_diff"][i] == pytest.approx(np.median(x[i, ok] - y[i, ok]))


def test_group_comparison_matches_scipy_and_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(0.5, 0.1, size=(5, 7))
    y = rng.normal(0.45, 0.12, size=(5, 9))
    x[0, :3] = y[0, :3]  # ties across groups
    res = stats.compare_groups(x, y)
    for i in range(5):
        ref = st.mannwhitneyu(x[i], y[i], alternative="two-sided")
        assert res["U"][i] == pytest.approx(ref.statistic)
        assert res["p"][i] == pytest.approx(ref.pvalue)
        diff = x[i][:, None] - y[i][None, :]
        cles = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
        assert res["cles"][i] == pytest.approx(cles)
        assert res["r"][i] == pytest.approx(2 * cles - 1)
        pooled = np.sqrt((6 * x[i].var(ddof=1) + 8 * y[i].var(ddof=1)) / 14)
        assert res["d"][i] == pytest.approx((x[i].mean() - y[i].mean()) / pooled)
        assert res["shapiro_p_a"][i] == pytest.approx(st.shapiro(x[i]).pvalue)
        assert res["shapiro_p_b"][i] == pytest.approx(st.shapiro(y[i]).pvalue)


def _exact(mean, sd, n, seed):
    z = np.random.default_rng(seed).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


def test_callanan_heart_overlap_comparison():
    """Exp 1: CCE n=25 mean 0.260 (sd 0.026) vs heatmap loss n=23 mean 0.796 (sd 0.067): complete
    separation, U = 0, CLES = 0, d ≈ −10.7 (the seed reports −10.78 from unrounded data;
    pingouin 0.5.1 printed RBC = +1.0 with its opposite sign convention)."""
    cce, heat = _exact(0.260, 0.026, 25, 0), _exact(0.796, 0.067, 23, 1)
    res = stats.compare_groups(cce, heat)
    pooled = np.sqrt((24 * 0.026**2 + 22 * 0.067**2) / 46)
    assert res["d"][0] == pytest.approx((0.260 - 0.796) / pooled, rel=1e-9)
    assert res["d"][0] == pytest.approx(-10.78, abs=0.1)
    assert res["U"][0] == 0 and res["cles"][0] == 0 and res["r"][0] == -1
    assert res["p"][0] == pytest.approx(st.mannwhitneyu(cce, heat).pvalue)
    assert res["p"][0] < 1e-8


def test_callanan_sex_marker_numbers():
    """Exp 2 sex-marker overlap: U = 483 of 23 × 22 pairs gives CLES 0.955 and |r| 0.909 (the seed's
    table: U 483, RBC −0.909, CLES 0.955)."""
    y = np.arange(22.0)
    x = np.array([21.5] * 21 + [20.5, -1.0])  # 21·22 + 21 + 0 = 483 pairs with x > y
    res = stats.compare_groups(x, y)
    assert res["U"][0] == 483
    assert res["cles"][0] == pytest.approx(0.955, abs=5e-4)
    assert res["r"][0] == pytest.approx(0.909, abs=5e-4)
    assert res["p"][0] == pytest.approx(st.mannwhitneyu(x, y).pvalue)
