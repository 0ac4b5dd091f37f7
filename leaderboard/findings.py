"""Findings: a study's claims (``xbench.claims``) evaluated from the result rows alone.

``evaluate(rows, claims)`` turns each claim into a ``Verdict``: *reproduced*, *contradicted* or
*inconclusive*, always with a one-sentence ``reason``, the measured numbers under the same names as
the published ones, and the data its rows ran on. It reads the rows only (never a plugin).

How a claim is evaluated
========================

Steps 1–4 (its rows, its sides, the accuracy floor, per-seed means) are
:mod:`xbench.leaderboard.claim_rows`. Then the relation's record (:data:`xbench.claims.RELATIONS`)
says how it is decided (its ``evaluator``), by which tests, in which direction:

5. **Can the test decide?** Before testing, the smallest p-value the test can reach at this n is
   compared with alpha (Holm-divided by the number of comparisons for largest/smallest):
   Mann–Whitney's exact 2 / C(n_a + n_b, n_a) (3 vs 3 models: 0.1), Wilcoxon's 2 / 2^n (n
   non-zero pairs), Spearman's p for a perfectly monotone sequence with these ties. If it cannot
   reach alpha: inconclusive, saying how many seeds per group would.
6. **Test.**

   - ``mann-whitney``: two-sided Mann–Whitney U of the a instances against the b instances
     (``U`` of a, ``p``, rank-biserial ``r``, ``cles``) and Cohen's ``d`` (pooled SD).
   - ``wilcoxon``: two-sided signed-rank test of a − b, paired per sample on (seed, sample) plus
     every one of dataset, model, method and value that both sides share (a side's several rows
     for one key are averaged first). Model-level values cannot be paired per sample. With
     ``samples = "correct"`` the pairs are the samples that both sides classify correctly.
   - ``bootstrap``: percentile bootstrap of the difference of means over model instances: paired
     (per-instance differences) when both sides hold the same instances once the columns they
     differ in are ignored, else two independent resamplings. ``p`` = 2·min(P*(Δ ≤ 0), P*(Δ ≥ 0)),
     and the (1 − alpha) interval ``ci_low``..``ci_high``.
   - ``spearman``: ρ between the position index and the per-seed means (``rho``, ``p``), with the
     per-position means in ``means`` and whether they are strictly ``monotone``.
   - ``near``: the bootstrap (1 − 2·alpha) interval of the mean (the two one-sided tests of an
     equivalence test at alpha); ``above``/``below``: the same interval (a one-sided test at alpha).

Verdicts
--------

- greater/less: *reproduced* when p < alpha in the published direction; *contradicted* when
  p < alpha in the opposite direction; else inconclusive "not significant".
- largest/smallest: every (candidate, competitor) pair is tested, Holm-corrected as one family.
  *Reproduced* when every candidate beats every competitor significantly; *contradicted* when some
  competitor is significantly larger (for largest; smaller for smallest) than a candidate; else
  inconclusive, naming the closest competitor. ``a`` is the weakest candidate's mean, ``b`` the
  strongest competitor's, ``diff`` = a − b, ``means`` every one of them, ``p`` the largest
  Holm-adjusted p (the one that must be below alpha), ``comparisons`` each pair's p and p_holm.
- increasing/decreasing: *reproduced* when ρ has the published sign with p < alpha;
  *contradicted* when it has the other sign with p < alpha.
- near: *reproduced* when the whole (1 − 2·alpha) interval lies within target ± tolerance;
  *contradicted* when it lies wholly outside; else inconclusive.
- above/below: *reproduced* when the whole interval lies beyond the target on the published side;
  *contradicted* when it lies wholly on the other side; else inconclusive.

The typed table of the verdicts, and its HTML and Markdown forms, are
:func:`xbench.leaderboard.tables.findings` and :mod:`xbench.leaderboard.markdown`; ``exit_status`` is
1 when any claim is contradicted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from ..claims import ALONG_FIXED, Claim, parse_claims, position_key
from ..errors import did_you_mean
from .claim_rows import (Inconclusive, Rows, apply_floor, claim_rows, enough, keys, observations, side,
                         table, undefined, undefined_note)
from .formatting import fmt_number, fmt_p, natural_key
from .stats import bootstrap_means, cohens_d, holm, mann_whitney, paired_wilcoxon

AMONG_COLUMN = {"method": "method_label", "model": "model_label", "facet": "facet", "level": "level"}
RESAMPLES = 4000


@dataclass
class Verdict:
    """One claim's outcome. ``data``: the dataset labels of the rows it was decided on (a stand-in's
    label says what it stands in for); ``excluded``: the model instances left out below the accuracy
    floor; ``undefined``: those left out (for some method or value) because none of their values is
    defined, with why. ``to_dict`` gives plain JSON types (NaN as None)."""

    id: str
    claim: str
    source: str
    relation: str
    verdict: str
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    statistic: str = ""
    n: int = 0
    test: str = ""
    alpha: float = 0.05
    excluded: list[dict[str, Any]] = field(default_factory=list)
    undefined: list[dict[str, Any]] = field(default_factory=list)
    data: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


def evaluate(rows: pd.DataFrame, claims: Iterable[Claim | Mapping[str, Any]]) -> list[Verdict]:
    """Each claim's verdict from the result rows alone (columns of the results schema; text columns
    may be categoricals or strings). ``claims``: parsed claims, or their tables (from the manifest)."""
    claims = list(claims)
    fresh = iter(parse_claims([c for c in claims if not isinstance(c, Claim)], "the claims"))
    frame = Rows(rows)
    return [_evaluate_one(frame, c if isinstance(c, Claim) else next(fresh)) for c in claims]


def exit_status(verdicts: Iterable[Verdict]) -> int:
    """1 when any claim is contradicted, else 0 (inconclusive claims do not fail a run)."""
    return int(any(v.verdict == "contradicted" for v in verdicts))


def _evaluate_one(frame: Rows, c: Claim) -> Verdict:
    verdict = Verdict(id=c.id, claim=c.claim, source=c.source, relation=c.relation, verdict="inconclusive",
                      reason="", published=dict(c.published), statistic=c.statistic, test=c.statistic_test,
                      alpha=c.alpha)
    try:
        base = claim_rows(frame, c)
        verdict.data = frame.uniques("dataset_label", mask=base)
        EVALUATORS[c.kind.evaluator](frame, c, base, verdict)
    except Inconclusive as stop:
        verdict.verdict, verdict.reason = "inconclusive", stop.reason
        verdict.excluded = stop.excluded or verdict.excluded
        if stop.floor:
            verdict.measured = _plain(verdict.measured)
            return verdict
    if verdict.excluded:
        verdict.reason = verdict.reason.rstrip(".") + "; " + _excluded_note(verdict.excluded) + "."
    if verdict.undefined:
        verdict.reason = verdict.reason.rstrip(".") + "; " + undefined_note(verdict.undefined) + "."
    verdict.measured = _plain(verdict.measured)
    return verdict


def _floor(frame: Rows, c: Claim, rows: pd.DataFrame, verdict: Verdict) -> pd.DataFrame:
    """The rows above the accuracy floor; records the instances left out below it, and those left
    without a defined value (so the reason names both, decided or not)."""
    rows, verdict.excluded = apply_floor(frame, c, rows)
    verdict.undefined = undefined(rows)
    missing = int(np.count_nonzero(~np.isfinite(rows["value"].to_numpy(float))))
    if missing:
        verdict.measured["undefined_rows"] = missing  # left out of the per-seed means
    return rows


def _excluded_note(excluded: Sequence[Mapping[str, Any]]) -> str:
    """"left out: model x seed 0 (accuracy 0.5 against chance 0.5), ..." (the first three)."""
    parts = []
    for e in excluded[:3]:
        what = (f"accuracy {fmt_number(e['accuracy'])} against chance {fmt_number(e['chance'])}"
                if e["accuracy"] is not None else "no accuracy recorded")
        parts.append(f"{e['model']} seed {e['seed']} ({what})")
    more = f" and {len(excluded) - 3} more" if len(excluded) > 3 else ""
    return "left out below the accuracy floor: " + ", ".join(parts) + more


def _decide(verdict: Verdict, c: Claim, p: float, effect: float, *, yes: str, no: str, neither: str) -> None:
    """Reproduced when p < alpha in the relation's direction (``effect`` > 0 when a, or the trend, is
    larger), contradicted when p < alpha the other way, else inconclusive; each with its reason."""
    significant = np.isfinite(p) and p < c.alpha
    if significant and effect * c.kind.sign > 0:
        verdict.verdict, verdict.reason = "reproduced", yes
    elif significant and effect * c.kind.sign < 0:
        verdict.verdict, verdict.reason = "contradicted", no
    else:
        verdict.reason = neither


def _p(value: Any) -> str:
    return f"p = {fmt_p(value)}"


# ── greater / less ───────────────────────────────────────────────────────────────────────────────


def _two_sides(frame: Rows, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    ma = side(frame, base, c.a, "a")
    mb = side(frame, base, c.b, "b")
    if (ma & mb).any():
        raise Inconclusive("sides a and b select some of the same rows; make their selectors exclusive.")
    rows = _floor(frame, c, table(frame, ma | mb), verdict)
    labels = _row_labels(ma, mb, rows)
    res = _compare(c, rows[labels == "a"], rows[labels == "b"], comparisons=1)
    effect = res.pop("effect")
    verdict.measured.update(res)
    verdict.n = int(res.get("n", 0))
    p = res["p"]
    word, other = (">", "<") if c.kind.sign > 0 else ("<", ">")
    summary = f"a {fmt_number(res['a'])} vs b {fmt_number(res['b'])}"
    _decide(verdict, c, p, effect,
            yes=f"a {word} b as published: {summary}, {_p(p)} < {c.alpha:g}{_sizes(res)}.",
            no=f"the opposite holds: a {other} b significantly, {summary}, {_p(p)} < {c.alpha:g}{_sizes(res)}.",
            neither=f"not significant: {summary}, {_p(p)} ≥ {c.alpha:g}{_sizes(res)}.")


def _row_labels(ma: np.ndarray, mb: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """'a' or 'b' for each of ``rows`` (built from ``ma | mb`` in row order, then filtered)."""
    both = np.flatnonzero(ma | mb)
    return pd.Series(np.where(ma[both], "a", "b"), index=np.arange(both.size)).loc[rows.index].to_numpy()


def _sizes(res: Mapping[str, Any]) -> str:
    if "n_pairs" in res:
        return f" ({res['n_pairs']} paired samples from {res['n_a']} vs {res['n_b']} model instances)"
    return f" ({res['n_a']} vs {res['n_b']} model instances)"


def _compare(c: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame, comparisons: int,
             label_a: str = "a", label_b: str = "b") -> dict[str, Any]:
    """One two-sided comparison of two sides: the measured numbers, with ``effect`` (> 0 when a is
    larger) and ``p``. Raises Inconclusive when it cannot decide at this n."""
    test = c.statistic_test
    oa, ob = observations(a_rows), observations(b_rows)
    enough(oa, c, f"side {label_a}")
    enough(ob, c, f"side {label_b}")
    xa, xb = oa["value"].to_numpy(float), ob["value"].to_numpy(float)
    res: dict[str, Any] = {"a": float(xa.mean()), "b": float(xb.mean()), "diff": float(xa.mean() - xb.mean()),
                           "n_a": int(xa.size), "n_b": int(xb.size)}
    target = c.alpha / comparisons
    d = float(cohens_d(xa[None], xb[None])[0])
    if test == "mann-whitney":
        best = 2.0 / math.comb(xa.size + xb.size, xa.size)
        if best >= target:
            raise Inconclusive(_too_few_mw(xa.size, xb.size, c.alpha, comparisons, best))
        mw = mann_whitney(xa[None], xb[None])
        res.update({"U": float(mw["U"][0]), "p": float(mw["p"][0]), "r": float(mw["r"][0]),
                    "cles": float(mw["cles"][0]), "d": d, "n": int(xa.size + xb.size)})
        res["effect"] = res["r"]
    elif test == "wilcoxon":
        x, y = _pairs(a_rows, b_rows, label_a, label_b)
        nonzero = int(np.count_nonzero(np.isfinite(x - y) & (x != y)))
        best = 2.0 ** (1 - nonzero) if nonzero else 1.0
        if best >= target:
            need = next(k for k in itertools.count(1) if 2.0 ** (1 - k) < target)
            raise Inconclusive(f"too few samples: with {nonzero} non-zero paired differences a two-sided Wilcoxon "
                               f"test cannot reach p < {fmt_p(target)} (its smallest p is {fmt_p(best)}); "
                               f"need ≥ {need}.")
        w = paired_wilcoxon(x[None], y[None])
        res.update({"W": float(w["statistic"][0]), "p": float(w["p"][0]), "r": float(w["r"][0]),
                    "median_diff": float(w["median_diff"][0]), "n_pairs": int(w["n"][0]), "n": int(w["n"][0]),
                    "d": d})
        res["effect"] = res["r"]
    else:  # bootstrap over model instances
        paired = _paired_instances(oa, ob)
        level = 1 - c.alpha / comparisons
        if paired is not None:
            diff = bootstrap_means(paired[None], resamples=RESAMPLES, seed=0)[0]
        else:
            diff = (bootstrap_means(xa[None], resamples=RESAMPLES, seed=0)[0]
                    - bootstrap_means(xb[None], resamples=RESAMPLES, seed=1)[0])
        lo, hi = np.quantile(diff, [(1 - level) / 2, 1 - (1 - level) / 2])
        # (k + 1) / (B + 1): a bootstrap p is never 0
        tail = min(np.count_nonzero(diff <= 0), np.count_nonzero(diff >= 0))
        res.update({"paired": paired is not None, "ci_low": float(lo), "ci_high": float(hi),
                    "p": min(1.0, 2 * (tail + 1) / (diff.size + 1)), "n": int(xa.size + xb.size), "d": d})
        res["effect"] = res["diff"]
    return res


def _too_few_mw(na: int, nb: int, alpha: float, comparisons: int, best: float) -> str:
    need = next(k for k in itertools.count(2) if comparisons * 2.0 / math.comb(2 * k, k) < alpha)
    holm_note = f" after Holm over {comparisons} comparisons" if comparisons > 1 else ""
    return (f"too few seeds: with {na} vs {nb} models a two-sided Mann–Whitney test cannot reach "
            f"p < {alpha:g}{holm_note} (its smallest {'Holm-adjusted ' if comparisons > 1 else ''}p is "
            f"{fmt_p(min(1.0, best * comparisons))}); need ≥ {need} per group.")


def _shared(a_rows: pd.DataFrame, b_rows: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """The columns whose values the two sides share (so they belong in a pairing key)."""
    return [col for col in candidates
            if set(a_rows[col].dropna().unique()) == set(b_rows[col].dropna().unique())
            and a_rows[col].isna().all() == b_rows[col].isna().all()]


def _pairs(a_rows: pd.DataFrame, b_rows: pd.DataFrame, label_a: str, label_b: str) -> tuple[np.ndarray, np.ndarray]:
    if a_rows["sample"].isna().all() or b_rows["sample"].isna().all():
        raise Inconclusive("the Wilcoxon test pairs per-sample values, and these are model-level values; use "
                           "test = \"mann-whitney\" or \"bootstrap\".")
    key = ["seed", "sample"] + _shared(a_rows, b_rows, ["dataset_label", "model_label", "method_label", "value_name"])
    fa = a_rows[np.isfinite(a_rows["value"]) & a_rows["sample"].notna()]
    fb = b_rows[np.isfinite(b_rows["value"]) & b_rows["sample"].notna()]
    joined = pd.concat([fa.groupby(key, dropna=False)["value"].mean().rename("a"),
                        fb.groupby(key, dropna=False)["value"].mean().rename("b")], axis=1, join="inner")
    if joined.empty:
        raise Inconclusive(f"no paired samples: sides {label_a} and {label_b} share no ({', '.join(key)}) key.")
    return joined["a"].to_numpy(float), joined["b"].to_numpy(float)


def _paired_instances(oa: pd.DataFrame, ob: pd.DataFrame) -> np.ndarray | None:
    """Per-instance differences a − b when both sides hold the same instances (ignoring the
    columns they differ in), else None."""
    key = ["seed"] + _shared(oa, ob, ["dataset_label", "model_label"])
    if oa.duplicated(key).any() or ob.duplicated(key).any():
        return None
    ia, ib = oa.set_index(key)["value"], ob.set_index(key)["value"]
    if set(ia.index) != set(ib.index):
        return None
    return (ia - ib.loc[ia.index]).to_numpy(float)


# ── largest / smallest ───────────────────────────────────────────────────────────────────────────


def _extreme(frame: Rows, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    column = AMONG_COLUMN[c.among]
    ma = side(frame, base, c.a, "a")
    pool = side(frame, base, c.b, "b")
    rows = _floor(frame, c, table(frame, ma | pool), verdict)
    is_a = _row_labels(ma, pool & ~ma, rows) == "a"
    rows["_pos"] = keys(rows[column], position_key)
    cands = rows[is_a & rows["_pos"].notna()]
    cand_values = sorted(cands["_pos"].unique(), key=natural_key)
    comp = rows[~is_a & rows["_pos"].notna() & ~rows["_pos"].isin(cand_values)]
    comp_values = sorted(comp["_pos"].unique(), key=natural_key)
    if not cand_values:
        raise Inconclusive(f"no matching rows: side a has no {c.among} values.")
    if not comp_values:
        raise Inconclusive(f"no competitors: the claim's rows hold no other {c.among} than {', '.join(cand_values)}.")
    m = len(cand_values) * len(comp_values)
    sign = c.kind.sign
    results = [(cv, kv, _compare(c, cands[cands["_pos"] == cv], comp[comp["_pos"] == kv], comparisons=m,
                                 label_a=f"a ({cv})", label_b=f"competitor {kv}"))
               for cv in cand_values for kv in comp_values]
    p_holm = holm([r["p"] for _, _, r in results])
    means = {v: float(observations(part[part["_pos"] == v])["value"].mean())
             for part, values in ((cands, cand_values), (comp, comp_values)) for v in values}
    weakest = min(cand_values, key=lambda v: means[v] * sign)
    strongest = max(comp_values, key=lambda v: means[v] * sign)
    largest_p = float(np.nanmax(p_holm)) if np.isfinite(p_holm).any() else float("nan")
    verdict.measured.update({"a": means[weakest], "b": means[strongest], "diff": means[weakest] - means[strongest],
                             "means": means, "candidate": weakest, "closest": strongest, "p": largest_p,
                             "comparisons": [{"a": cv, "b": kv, "p": r["p"], "p_holm": float(ph),
                                              "diff": r["diff"], **({"d": r["d"]} if "d" in r else {})}
                                             for (cv, kv, r), ph in zip(results, p_holm)],
                             "n": int(sum(r["n"] for _, _, r in results))})
    verdict.n = int(len(observations(rows[rows["_pos"].notna()], ["_pos"])))
    significant = [np.isfinite(ph) and ph < c.alpha for ph in p_holm]
    wins = [s and r["effect"] * sign > 0 for s, (_, _, r) in zip(significant, results)]
    losses = [(cv, kv, ph) for s, (cv, kv, r), ph in zip(significant, results, p_holm) if s and r["effect"] * sign < 0]
    if all(wins):
        verdict.verdict = "reproduced"
        verdict.reason = (f"{', '.join(cand_values)} is the {c.relation} {c.among} as published: "
                          f"{fmt_number(means[weakest])} against at best {fmt_number(means[strongest])} ({strongest}), "
                          f"every one of {m} comparisons significant after Holm (largest {_p(largest_p)} < "
                          f"{c.alpha:g}).")
    elif losses:
        cv, kv, ph = min(losses, key=lambda t: t[2])
        verdict.verdict = "contradicted"
        verdict.reason = (f"{kv} is significantly {'larger' if sign > 0 else 'smaller'} than {cv}: "
                          f"{fmt_number(means[kv])} vs {fmt_number(means[cv])}, Holm {_p(ph)} < {c.alpha:g}.")
    else:
        undecided = [(cv, kv, ph) for (cv, kv, _), ph, won in zip(results, p_holm, wins) if not won]
        cv, kv, ph = max(undecided, key=lambda t: 2.0 if not np.isfinite(t[2]) else t[2])
        verdict.reason = (f"not significant against every competitor: {cv} {fmt_number(means[cv])} vs {kv} "
                          f"{fmt_number(means[kv])}, Holm {_p(ph)} ≥ {c.alpha:g}.")


# ── increasing / decreasing ──────────────────────────────────────────────────────────────────────


def _trend(frame: Rows, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    mask = side(frame, base, c.a, "a")
    along = c.along or ""
    if along in ALONG_FIXED:
        rows = table(frame, mask)
        rows["_pos"] = keys(rows[along], position_key)
        if rows["_pos"].isna().all():
            raise Inconclusive(f"no positions: the claim's rows have no {along} (is the value a family with a "
                               f"{along}?).")
    else:
        kind, param = along.split(":", 1)
        column = f"{kind}_params"
        rows = table(frame, mask, [column])
        parsed = frame.params(column)
        rows["_pos"] = keys(rows[column], lambda t: position_key(parsed[t][param]) if param in parsed.get(t, {})
                            else None)
        if rows["_pos"].isna().all():
            known = sorted({k for t in rows[column].dropna().unique() for k in parsed.get(t, {})})
            raise Inconclusive(f"no positions: no row has {kind} parameter {param!r}{did_you_mean(param, known)} "
                               f"(parameters present: {', '.join(known) or 'none'}).")
    rows = rows[rows["_pos"].notna()]
    present = sorted(rows["_pos"].unique(), key=natural_key)
    order = present
    if c.order is not None:
        order = [position_key(v) for v in c.order]
        missing = [p for p in order if p not in present]
        if missing:
            raise Inconclusive(f"no rows at position {', '.join(missing)} of along = {along!r} "
                               f"(positions present: {', '.join(present)}).")
        rows = rows[rows["_pos"].isin(order)]
    if len(order) < 2:
        raise Inconclusive(f"a trend needs at least two positions along {along!r}; the rows have {', '.join(order)}.")
    obs = observations(_floor(frame, c, rows, verdict), ["_pos"])
    means: dict[str, float] = {}
    counts = []
    for pos in order:
        at = obs[obs["_pos"] == pos]
        enough(at, c, f"position {pos}")
        means[pos] = float(at["value"].mean())
        counts.append(len(at))
    x = obs["_pos"].map({p: i for i, p in enumerate(order)}).to_numpy(float)
    y = obs["value"].to_numpy(float)
    best_x = np.repeat(np.arange(len(order), dtype=float), counts)
    best = float(st.spearmanr(best_x, np.arange(best_x.size)).pvalue)
    if not best < c.alpha:
        raise Inconclusive(f"too few seeds: with {len(order)} positions × {min(counts)} seeds a Spearman test cannot "
                           f"reach p < {c.alpha:g} (its smallest p is {fmt_p(best)}); add seeds or positions.")
    with np.errstate(all="ignore"):
        test = st.spearmanr(x, y)
    rho, p = float(test.statistic), float(test.pvalue)
    steps = np.diff([means[pos] for pos in order])
    verdict.measured.update({"rho": rho, "p": p, "means": means, "monotone": bool(np.all(steps * c.kind.sign > 0)),
                             "n": int(y.size), "positions": len(order)})
    verdict.n = int(y.size)
    path = " → ".join(f"{pos}: {fmt_number(means[pos])}" for pos in order)
    _decide(verdict, c, p, rho,
            yes=f"{c.relation} along {along} as published: {path}; ρ = {rho:.2f}, {_p(p)} < {c.alpha:g}.",
            no=f"the opposite trend holds along {along}: {path}; ρ = {rho:.2f}, {_p(p)} < {c.alpha:g}.",
            neither=f"no significant trend along {along}: {path}; ρ = {fmt_number(rho)}, {_p(p)} ≥ {c.alpha:g}.")


# ── near ─────────────────────────────────────────────────────────────────────────────────────────


def _mean_interval(frame: Rows, c: Claim, base: np.ndarray, verdict: Verdict) -> tuple[float, float, str]:
    """The mean of the ``a`` rows with its bootstrap (1 − 2·alpha) interval, recorded in the verdict;
    returns the interval and how the mean reads (relative to ``chance`` when the claim gives one)."""
    obs = observations(_floor(frame, c, table(frame, side(frame, base, c.a, "a")), verdict))
    enough(obs, c, "the selection")
    x = obs["value"].to_numpy(float)
    means = bootstrap_means(x[None], resamples=RESAMPLES, seed=0)[0]
    lo, hi = (float(q) for q in np.quantile(means, [c.alpha, 1 - c.alpha]))
    mean = float(x.mean())
    verdict.measured.update({"a": mean, "ci_low": lo, "ci_high": hi, "target": c.target, "diff": mean - c.target,
                             "n": int(x.size)})
    rel = ""
    if c.chance is not None:
        verdict.measured.update({"chance": c.chance, "a_over_chance": mean / c.chance})
        rel = f", {mean / c.chance:.1f}× chance ({fmt_number(c.chance)})"
    verdict.n = int(x.size)
    text = f"mean {fmt_number(mean)}{rel}, {100 * (1 - 2 * c.alpha):g}% CI [{fmt_number(lo)}, {fmt_number(hi)}]"
    return lo, hi, text


def _near(frame: Rows, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    lo, hi, text = _mean_interval(frame, c, base, verdict)
    low, high = c.target - c.tolerance, c.target + c.tolerance
    verdict.measured["tolerance"] = c.tolerance
    summary = f"{text} against {fmt_number(c.target)} ± {fmt_number(c.tolerance)} over {verdict.n} model instances"
    if lo >= low and hi <= high:
        verdict.verdict, verdict.reason = "reproduced", f"within tolerance as published: {summary}."
    elif lo > high or hi < low:
        verdict.verdict, verdict.reason = "contradicted", f"outside the tolerance: {summary}."
    else:
        verdict.reason = f"the interval straddles the tolerance band: {summary}."


def _bound(frame: Rows, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    lo, hi, text = _mean_interval(frame, c, base, verdict)
    word, other = ("above", "below") if c.kind.sign > 0 else ("below", "above")
    summary = f"{text} against {fmt_number(c.target)} over {verdict.n} model instances"
    beyond, short = (lo > c.target, hi < c.target) if c.kind.sign > 0 else (hi < c.target, lo > c.target)
    if beyond:
        verdict.verdict, verdict.reason = "reproduced", f"{word} the target as published: {summary}."
    elif short:
        verdict.verdict, verdict.reason = "contradicted", f"{other} the target: {summary}."
    else:
        verdict.reason = f"the interval contains the target: {summary}."


EVALUATORS = {"compare": _two_sides, "extreme": _extreme, "trend": _trend, "near": _near, "bound": _bound}
"""How each kind of relation (``Relation.evaluator``) is decided."""


def _plain(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
