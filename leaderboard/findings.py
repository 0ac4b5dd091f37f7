"""Findings: a study's claims (``xbench.claims``) evaluated from the result rows alone.

``evaluate(rows, claims)`` turns each claim into a ``Verdict``: *reproduced*, *contradicted* or
*inconclusive*, always with a one-sentence ``reason`` and the measured numbers under the same
names as the published ones. It reads the rows only (never a plugin).

How a claim is evaluated
========================

1. **Rows.** Rows of the claim's metric and value (name or label, exact first, then glob; a value
   also matches its family), narrowed by the claim-level selectors and, with
   ``samples = "correct"``, to correctly classified samples (model-level rows are kept). No rows:
   inconclusive, with the closest metric or value that exists.
2. **Sides.** ``a`` and ``b`` (greater/less), the candidates and each competitor along ``among``
   (largest/smallest), the positions along ``along`` (trends) or the whole selection (near). A side
   without rows: inconclusive, naming the selector.
3. **Accuracy floor.** Every *trained* model instance (dataset, model, seed with ``model_untrained``
   false) in the sides needs its ``model-fit`` accuracy (``test_accuracy`` or ``val_accuracy``)
   strictly above the floor (``chance + above_chance``, or ``absolute``). Instances below it, or
   without accuracy, are left out (listed in ``Verdict.excluded``), as Callanan's inclusion
   filter. If no accuracy is recorded at all, or every instance of a model variant falls below the
   floor, the claim is inconclusive and names the model and its accuracy against chance.
4. **Per-seed means.** Per-sample values become the mean over samples of each (dataset, model,
   method, metric, value, seed), NaN (undefined) values left out; a model instance's observation
   on a side is the mean of its per-seed means there (so several methods or values on one side
   weigh equally). Fewer than ``min_seeds`` instances on a side (per position for trends):
   inconclusive, "too few seeds".
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
     equivalence test at alpha).

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

``findings_table`` gives display rows, ``findings_markdown`` a Markdown section (every
claim-provided string escaped), ``exit_status`` 1 when any claim is contradicted.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from ..claims import Claim, Selector, parse_claims, position_key
from ..errors import did_you_mean
from .formatting import md_escape
from .stats import bootstrap_means, cohens_d, holm, mann_whitney, paired_wilcoxon

VERDICTS = ("reproduced", "contradicted", "inconclusive")
ACCURACY_METRIC = "model-fit"
INSTANCE = ["dataset_label", "model_label", "seed"]
SEED_KEY = ["dataset_label", "model_label", "method_label", "metric_label", "value_name", "seed"]
AMONG_COLUMN = {"method": "method_label", "model": "model_label", "facet": "facet", "level": "level"}
RESAMPLES = 4000


@dataclass
class Verdict:
    """One claim's outcome. ``to_dict`` gives plain JSON types (NaN as None)."""

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

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


class _Stop(Exception):
    """An inconclusive verdict decided before the test: its reason, and whether the accuracy
    floor decided it (then the reason already names the excluded models)."""

    def __init__(self, reason: str, *, floor: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.floor = floor


# ── public functions ─────────────────────────────────────────────────────────────────────────────


def evaluate(rows: pd.DataFrame, claims: Iterable[Claim | Mapping[str, Any]]) -> list[Verdict]:
    """Each claim's verdict from the result rows alone (columns of the results schema; text columns
    may be categoricals or strings). ``claims``: parsed claims, or their tables (from the manifest)."""
    claims = list(claims)
    parsed = [c if isinstance(c, Claim) else None for c in claims]
    tables = [c for c in claims if not isinstance(c, Claim)]
    fresh = iter(parse_claims(tables, "the claims") if tables else [])
    parsed = [c if c is not None else next(fresh) for c in parsed]
    frame = _Frame(rows)
    return [_evaluate_one(frame, c) for c in parsed]


def findings_table(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """Display rows: id, claim, source, verdict, measured and published as short strings,
    statistic, n, reason."""
    out = []
    for v in verdicts:
        out.append({"id": v.id, "claim": v.claim, "source": v.source, "relation": v.relation,
                    "verdict": v.verdict, "measured": _short(v.measured, v.published),
                    "published": _short(v.published, v.published) if v.published else "—",
                    "statistic": v.statistic, "n": int(v.n), "reason": v.reason})
    return out


def findings_markdown(verdicts: Sequence[Verdict]) -> str:
    """A Markdown section of the verdicts: a count line and one table row per claim."""
    if not verdicts:
        return ""
    counts = {k: sum(v.verdict == k for v in verdicts) for k in VERDICTS}
    lines = ["## Findings", "", " · ".join(f"{counts[k]} {k}" for k in VERDICTS), "",
             "| Claim | Verdict | Measured | Published | Statistic | n | Reason |",
             "|---|---|---|---|---|---|---|"]
    for row in findings_table(verdicts):
        claim = f"**{md_escape(row['id'])}**: {md_escape(row['claim'])} ({md_escape(row['source'])})"
        verdict = f"**{row['verdict']}**" if row["verdict"] != "inconclusive" else row["verdict"]
        lines.append("| " + " | ".join([claim, verdict, md_escape(row["measured"]), md_escape(row["published"]),
                                         md_escape(row["statistic"]), str(row["n"]), md_escape(row["reason"])])
                     + " |")
    return "\n".join(lines) + "\n"


def exit_status(verdicts: Iterable[Verdict]) -> int:
    """1 when any claim is contradicted, else 0 (inconclusive claims do not fail a run)."""
    return int(any(v.verdict == "contradicted" for v in verdicts))


# ── the rows ─────────────────────────────────────────────────────────────────────────────────────


class _Frame:
    """The result rows with the lookups every claim shares (uniques of the text columns, accuracy)."""

    def __init__(self, rows: pd.DataFrame):
        self.rows = rows.reset_index(drop=True)
        self.n = len(self.rows)
        self._accuracy: dict[str, dict[tuple, tuple[float, float]]] = {}
        self._params: dict[str, dict[str, dict[str, Any]]] = {}
        self._uniques: dict[str, set[str]] = {}

    def col(self, name: str) -> pd.Series:
        if name in self.rows:
            return self.rows[name]
        return pd.Series([None] * self.n, index=self.rows.index, dtype=object)

    def uniques(self, *names: str) -> list[str]:
        out: set[str] = set()
        for name in names:
            if name not in self._uniques:
                self._uniques[name] = {v for v in _distinct(self.col(name)) if isinstance(v, str)}
            out |= self._uniques[name]
        return sorted(out)

    def names_mask(self, name_col: str, label_col: str | None, patterns: str | list[str]) -> np.ndarray:
        cols = [name_col] + ([label_col] if label_col else [])
        chosen = set()
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            chosen |= match_names(self.uniques(*cols), pattern)
        mask = np.zeros(self.n, bool)
        for c in cols:
            mask |= self.col(c).isin(chosen).to_numpy(bool)
        return mask

    def bool_mask(self, name: str, wanted: bool) -> np.ndarray:
        values = _as_bool(self.col(name))
        return (values == wanted).fillna(False).to_numpy(bool)

    def params(self, name: str) -> dict[str, dict[str, Any]]:
        """Parsed ``<kind>_params`` JSON per distinct text."""
        if name not in self._params:
            self._params[name] = {t: _parse_json(t) for t in _distinct(self.col(name)) if isinstance(t, str)}
        return self._params[name]

    def params_mask(self, name: str, wanted: Mapping[str, Any]) -> np.ndarray:
        keep = [t for t, p in self.params(name).items()
                if all(k in p and position_key(p[k]) == position_key(v) for k, v in wanted.items())]
        return self.col(name).isin(keep).to_numpy(bool)

    def select(self, sel: Selector) -> np.ndarray:
        mask = np.ones(self.n, bool)
        if sel.dataset is not None:
            mask &= self.names_mask("dataset", "dataset_label", sel.dataset)
        if sel.model is not None:
            mask &= self.names_mask("model", "model_label", sel.model)
        if sel.method is not None:
            mask &= self.names_mask("method", "method_label", sel.method)
        if sel.facet is not None:
            mask &= self.names_mask("facet", None, sel.facet)
        if sel.level is not None:
            levels = [sel.level] if isinstance(sel.level, (int, float)) else sel.level
            lv = pd.to_numeric(self.col("level"), errors="coerce").to_numpy(float)
            mask &= np.isclose(lv[:, None], np.asarray(levels, float)[None, :]).any(1)
        if sel.untrained is not None:
            mask &= self.bool_mask("model_untrained", sel.untrained)
        if sel.baseline is not None:
            mask &= self.bool_mask("method_baseline", sel.baseline)
        if sel.model_params is not None:
            mask &= self.params_mask("model_params", sel.model_params)
        if sel.method_params is not None:
            mask &= self.params_mask("method_params", sel.method_params)
        return mask

    def accuracy(self, split: str) -> dict[tuple, tuple[float, float]]:
        """(dataset_label, model_label, seed) → (accuracy, chance) from the model-fit rows."""
        if split not in self._accuracy:
            fit = self.col("metric").isin([ACCURACY_METRIC]).to_numpy(bool)
            names = self.col("value_name")
            wanted = f"{split}_accuracy"
            part = pd.DataFrame({c: self.col(c)[fit].astype(object) for c in INSTANCE + ["value_name"]})
            part["value"] = pd.to_numeric(self.col("value")[fit], errors="coerce").to_numpy(float)
            part = part[names[fit].isin([wanted, "chance"]).to_numpy(bool)]
            if part.empty:
                self._accuracy[split] = {}
                return {}
            table = part.pivot_table(index=INSTANCE, columns="value_name", values="value", aggfunc="mean")
            out = {}
            for key, rec in table.iterrows():
                acc = rec.get(wanted, np.nan)
                chance = rec.get("chance", np.nan)
                if np.isfinite(acc):
                    out[(key[0], key[1], int(key[2]))] = (float(acc), float(chance))
            self._accuracy[split] = out
        return self._accuracy[split]


def match_names(values: Iterable[str], pattern: str) -> set[str]:
    """The values a name, label or glob selects: exact matches when there are any (labels hold
    brackets such as ``small-cnn[untrained=true]``, which fnmatch reads as a set), else
    ``fnmatch.fnmatchcase`` matches."""
    values = list(values)
    exact = {v for v in values if v == pattern}
    return exact or {v for v in values if fnmatch.fnmatchcase(v, pattern)}


def _distinct(series: pd.Series) -> list[Any]:
    """The distinct non-null values (a categorical's used categories, without a scan of the rows
    when every category is used)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = np.unique(series.cat.codes.to_numpy())
        return list(series.cat.categories[codes[codes >= 0]])
    return list(pd.unique(series.dropna()))


def _objects(series: pd.Series) -> np.ndarray:
    """A column as an object array (None for missing), fast for categoricals."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = np.asarray(series.cat.categories, dtype=object)
        codes = series.cat.codes.to_numpy()
        if cats.size == 0:
            return np.full(codes.shape, None, dtype=object)
        return np.where(codes >= 0, cats[np.maximum(codes, 0)], None)
    out = series.astype(object).to_numpy()
    return np.where(pd.isna(out), None, out)


def _keys(values: pd.Series, fn) -> pd.Series:
    """``fn`` applied once per distinct value (None for missing values or where fn gives None)."""
    codes, uniq = pd.factorize(values, use_na_sentinel=True)
    table = np.array([fn(u) for u in uniq] + [None], dtype=object)
    return pd.Series(table[codes], index=values.index, dtype=object)


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool or str(series.dtype) == "boolean":
        return series.astype("boolean")
    return series.astype(object).map(lambda v: v if isinstance(v, (bool, np.bool_)) else pd.NA).astype("boolean")


def _parse_json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ── evaluation ───────────────────────────────────────────────────────────────────────────────────


def _evaluate_one(frame: _Frame, c: Claim) -> Verdict:
    test = c.statistic_test
    verdict = Verdict(id=c.id, claim=c.claim, source=c.source, relation=c.relation, verdict="inconclusive",
                      reason="", published=dict(c.published), statistic=_statistic_name(c), test=test,
                      alpha=c.alpha)
    try:
        base = _claim_rows(frame, c)
        if c.relation in ("greater", "less"):
            _two_sides(frame, c, base, verdict)
        elif c.relation in ("largest", "smallest"):
            _extreme(frame, c, base, verdict)
        elif c.relation in ("increasing", "decreasing"):
            _trend(frame, c, base, verdict)
        else:
            _near(frame, c, base, verdict)
    except _Stop as stop:
        verdict.verdict = "inconclusive"
        verdict.reason = stop.reason
        if stop.floor:
            verdict.measured = _plain(verdict.measured)
            return verdict
    if verdict.excluded:
        verdict.reason = verdict.reason.rstrip(".") + "; " + _excluded_note(verdict.excluded) + "."
    verdict.measured = _plain(verdict.measured)
    return verdict


def _excluded_note(excluded: Sequence[Mapping[str, Any]]) -> str:
    """"left out: model x seed 0 (accuracy 0.5 against chance 0.5), ..." (the first three)."""
    parts = []
    for e in excluded[:3]:
        what = (f"accuracy {_fmt(e['accuracy'])} against chance {_fmt(e['chance'])}" if e["accuracy"] is not None
                else "no accuracy recorded")
        parts.append(f"{e['model']} seed {e['seed']} ({what})")
    more = f" and {len(excluded) - 3} more" if len(excluded) > 3 else ""
    return "left out below the accuracy floor: " + ", ".join(parts) + more


def _statistic_name(c: Claim) -> str:
    test = c.statistic_test
    if c.relation == "near":
        return f"bootstrap {100 * (1 - 2 * c.alpha):g}% CI of the mean within target ± tolerance"
    name = {"mann-whitney": "Mann–Whitney U, two-sided, over model seeds",
            "wilcoxon": "Wilcoxon signed-rank, two-sided, paired per sample",
            "bootstrap": f"bootstrap {100 * (1 - c.alpha):g}% CI of the mean difference over model seeds",
            "spearman": "Spearman ρ over per-seed means"}[test]
    if c.relation in ("largest", "smallest"):
        name += ", Holm-corrected over every competitor"
    return name


def _claim_rows(frame: _Frame, c: Claim) -> np.ndarray:
    metric = frame.names_mask("metric", "metric_label", c.metric)
    if not metric.any():
        raise _Stop(f"no matching rows: no metric {c.metric!r} in the results"
                    f"{did_you_mean(c.metric, frame.uniques('metric', 'metric_label'))}.")
    names = frame.uniques("value_name", "family")
    chosen = match_names(names, c.value)
    value = (frame.col("value_name").isin(chosen) | frame.col("family").isin(chosen)).to_numpy(bool)
    mask = metric & value
    if not mask.any():
        present = sorted(set(pd.unique(frame.col("value_name")[metric].dropna().astype(object))))
        raise _Stop(f"no matching rows: metric {c.metric!r} has no value {c.value!r}"
                    f"{did_you_mean(c.value, present)}.")
    where = c.where()
    for key, wanted in where.given().items():
        narrowed = mask & frame.select(Selector(**{key: wanted}))
        if not narrowed.any():
            raise _Stop(f"no matching rows: no rows of metric {c.metric!r}, value {c.value!r} have "
                        f"{key} = {wanted!r}{_hint(frame, key, wanted, mask)}.")
        mask = narrowed
    if c.samples == "correct":
        sample_rows = ~frame.col("scope").isin(["model"]).to_numpy(bool)
        correct = frame.bool_mask("correct", True)
        mask &= ~sample_rows | correct
        if not mask.any():
            raise _Stop("no matching rows: no correctly classified samples in the claim's rows.")
    return mask


def _hint(frame: _Frame, key: str, wanted: Any, mask: np.ndarray) -> str:
    cols = {"dataset": ("dataset", "dataset_label"), "model": ("model", "model_label"),
            "method": ("method", "method_label"), "facet": ("facet",)}.get(key)
    if not cols or not isinstance(wanted, str):
        return ""
    present = set()
    for col in cols:
        present.update(v for v in pd.unique(frame.col(col)[mask].dropna().astype(object)) if isinstance(v, str))
    return did_you_mean(wanted, present)


def _side(frame: _Frame, base: np.ndarray, sel: Selector | None, name: str) -> np.ndarray:
    if sel is None:
        return base
    mask = base & frame.select(sel)
    if not mask.any():
        detail = ", ".join(f"{k} = {v!r}" for k, v in sel.given().items())
        hints = "".join(_hint(frame, k, v, base) for k, v in sel.given().items())
        raise _Stop(f"no matching rows: side {name} ({detail}) matches none of the claim's rows{hints}.")
    return mask


def _table(frame: _Frame, mask: np.ndarray, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The rows under ``mask`` as a small plain frame (text as objects, seed int, value float)."""
    cols = list(dict.fromkeys(SEED_KEY + ["facet", *extra]))
    # object columns on purpose: pandas ≥ 3 would infer its string dtype, slower to build and group
    out = pd.DataFrame({c: pd.Series(_objects(frame.col(c)[mask]), dtype=object) for c in cols})
    out["seed"] = pd.to_numeric(frame.col("seed")[mask]).to_numpy(np.int64)
    out["sample"] = pd.to_numeric(frame.col("sample")[mask], errors="coerce").to_numpy(float)
    out["level"] = pd.to_numeric(frame.col("level")[mask], errors="coerce").to_numpy(float)
    out["value"] = pd.to_numeric(frame.col("value")[mask], errors="coerce").to_numpy(float)
    out["model_untrained"] = _as_bool(frame.col("model_untrained")[mask]).fillna(False).to_numpy(bool)
    return out


def _apply_floor(frame: _Frame, c: Claim, table: pd.DataFrame, verdict: Verdict) -> pd.DataFrame:
    """Leave out trained model instances at or below the accuracy floor (or without accuracy)."""
    trained = table.loc[~table["model_untrained"], INSTANCE].drop_duplicates()
    if trained.empty:
        return table
    floor = c.accuracy_floor
    acc = frame.accuracy(floor.split)
    if not acc:
        raise _Stop(f"no accuracy recorded: no model-fit {floor.split}_accuracy rows for the claim's trained models, "
                    f"so the accuracy floor ({floor.describe()}) cannot be checked.", floor=True)
    drop: list[dict[str, Any]] = []
    for ds, model, seed in trained.itertuples(index=False):
        got = acc.get((ds, model, int(seed)))
        if got is None:
            drop.append({"dataset": ds, "model": model, "seed": int(seed), "accuracy": None, "chance": None,
                         "floor": None, "why": "no accuracy recorded"})
            continue
        a, chance = got
        limit = floor.floor(chance if np.isfinite(chance) else np.nan)
        if not (np.isfinite(limit) and a > limit):
            why = "below the accuracy floor" if np.isfinite(limit) else "no chance recorded"
            drop.append({"dataset": ds, "model": model, "seed": int(seed), "accuracy": a, "chance": chance,
                         "floor": limit, "why": why})
    verdict.excluded = drop
    if not drop:
        return table
    gone = pd.DataFrame(drop)[["dataset", "model", "seed"]].set_axis(INSTANCE, axis=1)
    per_variant = trained.groupby(["dataset_label", "model_label"]).size()
    lost = gone.groupby(["dataset_label", "model_label"]).size()
    for (ds, model), k in lost.items():
        if k == per_variant.get((ds, model), 0):
            entries = [d for d in drop if d["dataset"] == ds and d["model"] == model]
            if all(d["accuracy"] is None for d in entries):
                raise _Stop(f"no accuracy recorded for model {model} on {ds}, so the accuracy floor "
                            f"({floor.describe()}) cannot be checked.", floor=True)
            accs = ", ".join(_fmt(d["accuracy"]) for d in entries)
            chance = entries[0]["chance"]
            raise _Stop(f"model {model} on {ds} did not learn: its {floor.split} accuracy ({accs} against chance "
                        f"{_fmt(chance)}) is not above the floor ({floor.describe()}) in any of its {k} seeds, and "
                        f"an explanation of a model that did not learn measures nothing.", floor=True)
    keys = pd.MultiIndex.from_frame(gone)
    keep = ~pd.MultiIndex.from_frame(table[INSTANCE]).isin(keys)
    return table[keep]


def _observations(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per-seed means, then one observation per model instance (and ``by`` group): columns
    INSTANCE + by + ["value"]."""
    finite = table[np.isfinite(table["value"])]
    keys = list(dict.fromkeys(SEED_KEY + list(by)))
    seed_means = finite.groupby(keys, dropna=False, sort=False)["value"].mean().reset_index()
    return seed_means.groupby(INSTANCE + list(by), dropna=False, sort=True)["value"].mean().reset_index()


def _enough(obs: pd.DataFrame, c: Claim, what: str) -> None:
    n = len(obs)
    if n < c.min_seeds:
        raise _Stop(f"too few seeds: {what} has {n} model instance{'s' if n != 1 else ''} with a defined value, "
                    f"and the claim needs min_seeds = {c.min_seeds}.")


# ── greater / less ───────────────────────────────────────────────────────────────────────────────


def _two_sides(frame: _Frame, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    ma = _side(frame, base, c.a, "a")
    mb = _side(frame, base, c.b, "b")
    if (ma & mb).any():
        raise _Stop("sides a and b select some of the same rows; make their selectors exclusive.")
    table = _apply_floor(frame, c, _table(frame, ma | mb), verdict)
    table["_side"] = _side_labels(frame, ma, mb, table)
    a_rows, b_rows = table[table["_side"] == "a"], table[table["_side"] == "b"]
    sign = 1 if c.relation == "greater" else -1
    res = _compare(c, a_rows, b_rows, comparisons=1)
    verdict.measured.update(res)
    verdict.n = int(res.get("n", 0))
    p = res["p"]
    eff = res["effect"]
    word = ">" if sign > 0 else "<"
    summary = f"a {_fmt(res['a'])} vs b {_fmt(res['b'])}"
    if np.isfinite(p) and p < c.alpha and eff * sign > 0:
        verdict.verdict = "reproduced"
        verdict.reason = f"a {word} b as published: {summary}, {_p_eq(p)} < {c.alpha:g}{_sizes(res)}."
    elif np.isfinite(p) and p < c.alpha and eff * sign < 0:
        verdict.verdict = "contradicted"
        verdict.reason = (f"the opposite holds: a {'<' if sign > 0 else '>'} b significantly, {summary}, "
                          f"{_p_eq(p)} < {c.alpha:g}{_sizes(res)}.")
    else:
        verdict.reason = f"not significant: {summary}, {_p_eq(p)} ≥ {c.alpha:g}{_sizes(res)}."
    verdict.measured.pop("effect", None)


def _side_labels(frame: _Frame, ma: np.ndarray, mb: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """'a' or 'b' for each row of ``table`` (built from ``ma | mb`` in row order, then filtered)."""
    both = np.flatnonzero(ma | mb)
    labels = np.where(ma[both], "a", "b")
    return pd.Series(labels, index=np.arange(both.size)).loc[table.index].to_numpy()


def _sizes(res: Mapping[str, Any]) -> str:
    if "n_pairs" in res:
        return f" ({res['n_pairs']} paired samples from {res['n_a']} vs {res['n_b']} model instances)"
    return f" ({res['n_a']} vs {res['n_b']} model instances)"


def _compare(c: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame, comparisons: int,
             label_a: str = "a", label_b: str = "b") -> dict[str, Any]:
    """One two-sided comparison of two sides: the measured numbers, with ``effect`` (> 0 when a is
    larger) and ``p``. Raises _Stop when it cannot decide at this n."""
    test = c.statistic_test
    oa, ob = _observations(a_rows), _observations(b_rows)
    _enough(oa, c, f"side {label_a}")
    _enough(ob, c, f"side {label_b}")
    xa, xb = oa["value"].to_numpy(float), ob["value"].to_numpy(float)
    res: dict[str, Any] = {"a": float(xa.mean()), "b": float(xb.mean()), "diff": float(xa.mean() - xb.mean()),
                           "n_a": int(xa.size), "n_b": int(xb.size)}
    target = c.alpha / comparisons
    if test == "mann-whitney":
        best = 2.0 / math.comb(xa.size + xb.size, xa.size)
        if best >= target:
            raise _Stop(_too_few_mw(xa.size, xb.size, c.alpha, comparisons, best))
        mw = mann_whitney(xa[None], xb[None])
        res.update({"U": float(mw["U"][0]), "p": float(mw["p"][0]), "r": float(mw["r"][0]),
                    "cles": float(mw["cles"][0]), "d": float(cohens_d(xa[None], xb[None])[0]),
                    "n": int(xa.size + xb.size)})
        res["effect"] = res["r"]
    elif test == "wilcoxon":
        x, y = _pairs(a_rows, b_rows, label_a, label_b)
        nonzero = int(np.count_nonzero(np.isfinite(x - y) & (x != y)))
        best = 2.0 ** (1 - nonzero) if nonzero else 1.0
        if best >= target:
            need = next(k for k in itertools.count(1) if 2.0 ** (1 - k) < target)
            raise _Stop(f"too few samples: with {nonzero} non-zero paired differences a two-sided Wilcoxon test "
                        f"cannot reach p < {_fmt_p(target)} (its smallest p is {_fmt_p(best)}); need ≥ {need}.")
        w = paired_wilcoxon(x[None], y[None])
        res.update({"W": float(w["statistic"][0]), "p": float(w["p"][0]), "r": float(w["r"][0]),
                    "median_diff": float(w["median_diff"][0]), "n_pairs": int(w["n"][0]), "n": int(w["n"][0]),
                    "d": float(cohens_d(xa[None], xb[None])[0])})
        res["effect"] = res["r"]
    else:  # bootstrap over model instances
        paired = _paired_instances(oa, ob)
        level = 1 - c.alpha / comparisons
        if paired is not None:
            diff = bootstrap_means(paired[None], resamples=RESAMPLES, seed=0)[0]
            res["paired"] = True
        else:
            diff = (bootstrap_means(xa[None], resamples=RESAMPLES, seed=0)[0]
                    - bootstrap_means(xb[None], resamples=RESAMPLES, seed=1)[0])
            res["paired"] = False
        lo, hi = np.quantile(diff, [(1 - level) / 2, 1 - (1 - level) / 2])
        # (k + 1) / (B + 1): a bootstrap p is never 0
        tail = min(np.count_nonzero(diff <= 0), np.count_nonzero(diff >= 0))
        p = min(1.0, 2 * (tail + 1) / (diff.size + 1))
        res.update({"ci_low": float(lo), "ci_high": float(hi), "p": p, "n": int(xa.size + xb.size),
                    "d": float(cohens_d(xa[None], xb[None])[0])})
        res["effect"] = res["diff"]
    return res


def _too_few_mw(na: int, nb: int, alpha: float, comparisons: int, best: float) -> str:
    need = next(k for k in itertools.count(2) if comparisons * 2.0 / math.comb(2 * k, k) < alpha)
    holm_note = f" after Holm over {comparisons} comparisons" if comparisons > 1 else ""
    return (f"too few seeds: with {na} vs {nb} models a two-sided Mann–Whitney test cannot reach "
            f"p < {alpha:g}{holm_note} (its smallest {'Holm-adjusted ' if comparisons > 1 else ''}p is "
            f"{_fmt_p(min(1.0, best * comparisons))}); need ≥ {need} per group.")


def _shared(a_rows: pd.DataFrame, b_rows: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """The columns whose values the two sides share (so they belong in a pairing key)."""
    return [col for col in candidates
            if set(a_rows[col].dropna().unique()) == set(b_rows[col].dropna().unique())
            and a_rows[col].isna().all() == b_rows[col].isna().all()]


def _pairs(a_rows: pd.DataFrame, b_rows: pd.DataFrame, label_a: str, label_b: str) -> tuple[np.ndarray, np.ndarray]:
    if a_rows["sample"].isna().all() or b_rows["sample"].isna().all():
        raise _Stop("the Wilcoxon test pairs per-sample values, and these are model-level values; use "
                    "test = \"mann-whitney\" or \"bootstrap\".")
    key = ["seed", "sample"] + _shared(a_rows, b_rows, ["dataset_label", "model_label", "method_label", "value_name"])
    fa = a_rows[np.isfinite(a_rows["value"]) & a_rows["sample"].notna()]
    fb = b_rows[np.isfinite(b_rows["value"]) & b_rows["sample"].notna()]
    ga = fa.groupby(key, dropna=False)["value"].mean()
    gb = fb.groupby(key, dropna=False)["value"].mean()
    joined = pd.concat([ga.rename("a"), gb.rename("b")], axis=1, join="inner")
    if joined.empty:
        raise _Stop(f"no paired samples: sides {label_a} and {label_b} share no ({', '.join(key)}) key.")
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


def _extreme(frame: _Frame, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    column = AMONG_COLUMN[c.among]
    ma = _side(frame, base, c.a, "a")
    pool = _side(frame, base, c.b, "b")
    table = _apply_floor(frame, c, _table(frame, ma | pool), verdict)
    both = np.flatnonzero(ma | pool)
    is_a = pd.Series(ma[both], index=np.arange(both.size)).loc[table.index].to_numpy()
    table["_pos"] = _keys(table[column], position_key)
    cands = table[is_a & table["_pos"].notna()]
    cand_values = sorted(cands["_pos"].unique(), key=_natural)
    comp = table[~is_a & table["_pos"].notna() & ~table["_pos"].isin(cand_values)]
    comp_values = sorted(comp["_pos"].unique(), key=_natural)
    if not cand_values:
        raise _Stop(f"no matching rows: side a has no {c.among} values.")
    if not comp_values:
        raise _Stop(f"no competitors: the claim's rows hold no other {c.among} than {', '.join(cand_values)}.")
    m = len(cand_values) * len(comp_values)
    sign = 1 if c.relation == "largest" else -1
    results = []
    for cv in cand_values:
        for kv in comp_values:
            res = _compare(c, cands[cands["_pos"] == cv], comp[comp["_pos"] == kv], comparisons=m,
                           label_a=f"a ({cv})", label_b=f"competitor {kv}")
            results.append((cv, kv, res))
    p_holm = holm([r["p"] for _, _, r in results])
    means = {cv: float(_observations(cands[cands["_pos"] == cv])["value"].mean()) for cv in cand_values}
    means.update({kv: float(_observations(comp[comp["_pos"] == kv])["value"].mean()) for kv in comp_values})
    weakest = min(cand_values, key=lambda v: means[v] * sign)
    strongest = max(comp_values, key=lambda v: means[v] * sign)
    verdict.measured.update({"a": means[weakest], "b": means[strongest], "diff": means[weakest] - means[strongest],
                             "means": means, "candidate": weakest, "closest": strongest,
                             "p": float(np.nanmax(p_holm)) if np.isfinite(p_holm).any() else float("nan"),
                             "comparisons": [{"a": cv, "b": kv, "p": r["p"], "p_holm": float(ph),
                                              "diff": r["diff"], **({"d": r["d"]} if "d" in r else {})}
                                             for (cv, kv, r), ph in zip(results, p_holm)],
                             "n": int(sum(r["n"] for _, _, r in results))})
    verdict.n = int(len(_observations(table[table["_pos"].notna()], ["_pos"])))
    word = "largest" if sign > 0 else "smallest"
    wins = [np.isfinite(ph) and ph < c.alpha and r["effect"] * sign > 0 for (_, _, r), ph in zip(results, p_holm)]
    losses = [(cv, kv, ph) for (cv, kv, r), ph in zip(results, p_holm)
              if np.isfinite(ph) and ph < c.alpha and r["effect"] * sign < 0]
    if all(wins):
        verdict.verdict = "reproduced"
        verdict.reason = (f"{', '.join(cand_values)} is the {word} {c.among} as published: {_fmt(means[weakest])} "
                          f"against at best {_fmt(means[strongest])} ({strongest}), every one of {m} comparisons "
                          f"significant after Holm (largest {_p_eq(np.nanmax(p_holm))} < {c.alpha:g}).")
    elif losses:
        cv, kv, ph = min(losses, key=lambda t: t[2])
        verdict.verdict = "contradicted"
        verdict.reason = (f"{kv} is significantly {'larger' if sign > 0 else 'smaller'} than {cv}: {_fmt(means[kv])} "
                          f"vs {_fmt(means[cv])}, Holm {_p_eq(ph)} < {c.alpha:g}.")
    else:
        undecided = [(cv, kv, ph) for (cv, kv, _), ph, won in zip(results, p_holm, wins) if not won]
        cv, kv, ph = max(undecided, key=lambda t: 2.0 if not np.isfinite(t[2]) else t[2])
        verdict.reason = (f"not significant against every competitor: {cv} {_fmt(means[cv])} vs {kv} "
                          f"{_fmt(means[kv])}, Holm {_p_eq(ph)} ≥ {c.alpha:g}.")


# ── increasing / decreasing ──────────────────────────────────────────────────────────────────────


def _trend(frame: _Frame, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    mask = _side(frame, base, c.a, "a")
    along = c.along or ""
    extra: list[str] = []
    if along.startswith(("model:", "method:")):
        kind, param = along.split(":", 1)
        extra = [f"{kind}_params"]
    table = _table(frame, mask, extra)
    if along in ("level", "facet"):
        table["_pos"] = _keys(table[along], position_key)
        if table["_pos"].isna().all():
            raise _Stop(f"no positions: the claim's rows have no {along} (is the value a family with a {along}?).")
    else:
        parsed = frame.params(extra[0])
        table["_pos"] = _keys(table[extra[0]], lambda t: position_key(parsed[t][param])
                              if param in parsed.get(t, {}) else None)
        if table["_pos"].isna().all():
            known = sorted({k for t in _distinct(table[extra[0]]) for k in parsed.get(t, {})})
            raise _Stop(f"no positions: no row has {kind} parameter {param!r}{did_you_mean(param, known)} "
                        f"(parameters present: {', '.join(known) or 'none'}).")
    table = table[table["_pos"].notna()]
    present = sorted(table["_pos"].unique(), key=_natural)
    if c.order is not None:
        order = [position_key(v) for v in c.order]
        missing = [p for p in order if p not in present]
        if missing:
            raise _Stop(f"no rows at position {', '.join(missing)} of along = {along!r} "
                        f"(positions present: {', '.join(present)}).")
        table = table[table["_pos"].isin(order)]
    else:
        order = present
    if len(order) < 2:
        raise _Stop(f"a trend needs at least two positions along {along!r}; the rows have {', '.join(order)}.")
    table = _apply_floor(frame, c, table, verdict)
    obs = _observations(table, ["_pos"])
    means: dict[str, float] = {}
    counts = []
    for pos in order:
        at = obs[obs["_pos"] == pos]
        _enough(at, c, f"position {pos}")
        means[pos] = float(at["value"].mean())
        counts.append(len(at))
    rank = {p: i for i, p in enumerate(order)}
    x = obs["_pos"].map(rank).to_numpy(float)
    y = obs["value"].to_numpy(float)
    best_x = np.repeat(np.arange(len(order), dtype=float), counts)
    best = float(st.spearmanr(best_x, np.arange(best_x.size)).pvalue)
    if not best < c.alpha:
        raise _Stop(f"too few seeds: with {len(order)} positions × {min(counts)} seeds a Spearman test cannot reach "
                    f"p < {c.alpha:g} (its smallest p is {_fmt_p(best)}); add seeds or positions.")
    with np.errstate(all="ignore"):
        test = st.spearmanr(x, y)
    rho, p = float(test.statistic), float(test.pvalue)
    steps = np.diff([means[pos] for pos in order])
    sign = 1 if c.relation == "increasing" else -1
    verdict.measured.update({"rho": rho, "p": p, "means": means, "monotone": bool(np.all(steps * sign > 0)),
                             "n": int(y.size), "positions": len(order)})
    verdict.n = int(y.size)
    path = " → ".join(f"{pos}: {_fmt(means[pos])}" for pos in order)
    if np.isfinite(p) and p < c.alpha and rho * sign > 0:
        verdict.verdict = "reproduced"
        verdict.reason = f"{c.relation} along {along} as published: {path}; ρ = {rho:.2f}, {_p_eq(p)} < {c.alpha:g}."
    elif np.isfinite(p) and p < c.alpha and rho * sign < 0:
        verdict.verdict = "contradicted"
        verdict.reason = (f"the opposite trend holds along {along}: {path}; ρ = {rho:.2f}, "
                          f"{_p_eq(p)} < {c.alpha:g}.")
    else:
        verdict.reason = f"no significant trend along {along}: {path}; ρ = {_fmt(rho)}, {_p_eq(p)} ≥ {c.alpha:g}."


# ── near ─────────────────────────────────────────────────────────────────────────────────────────


def _near(frame: _Frame, c: Claim, base: np.ndarray, verdict: Verdict) -> None:
    mask = _side(frame, base, c.a, "a")
    table = _apply_floor(frame, c, _table(frame, mask), verdict)
    obs = _observations(table)
    _enough(obs, c, "the selection")
    x = obs["value"].to_numpy(float)
    means = bootstrap_means(x[None], resamples=RESAMPLES, seed=0)[0]
    lo, hi = (float(q) for q in np.quantile(means, [c.alpha, 1 - c.alpha]))
    mean = float(x.mean())
    low, high = c.target - c.tolerance, c.target + c.tolerance
    verdict.measured.update({"a": mean, "ci_low": lo, "ci_high": hi, "target": c.target, "tolerance": c.tolerance,
                             "diff": mean - c.target, "n": int(x.size)})
    rel = ""
    if c.chance is not None:
        verdict.measured.update({"chance": c.chance, "a_over_chance": mean / c.chance})
        rel = f", {mean / c.chance:.1f}× chance ({_fmt(c.chance)})"
    verdict.n = int(x.size)
    summary = (f"mean {_fmt(mean)}{rel}, {100 * (1 - 2 * c.alpha):g}% CI [{_fmt(lo)}, {_fmt(hi)}] against "
               f"{_fmt(c.target)} ± {_fmt(c.tolerance)} over {x.size} model instances")
    if lo >= low and hi <= high:
        verdict.verdict = "reproduced"
        verdict.reason = f"within tolerance as published: {summary}."
    elif lo > high or hi < low:
        verdict.verdict = "contradicted"
        verdict.reason = f"outside the tolerance: {summary}."
    else:
        verdict.reason = f"the interval straddles the tolerance band: {summary}."


# ── formatting ───────────────────────────────────────────────────────────────────────────────────


def _natural(text: str) -> tuple:
    """Numbers first (by value), then text in natural order (``layer2`` before ``layer10``)."""
    try:
        return (0, float(text), "")
    except ValueError:
        parts = tuple((0, float(t), "") if t.isdigit() else (1, 0.0, t) for t in re.split(r"(\d+)", text) if t)
        return (1, 0.0, parts)


def _fmt(value: Any) -> str:
    if value is None or not isinstance(value, (int, float, np.floating, np.integer)) or not np.isfinite(value):
        return "—"
    v = float(value)
    if abs(v) < 1e-12:
        v = 0.0
    if v != 0 and abs(v) < 0.001:
        return f"{v:.2e}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v - round(v)) < 1e-12 else f"{v:.3f}"


def _p_eq(value: Any) -> str:
    """``p = 0.0043`` or ``p < 1e-16``."""
    text = _fmt_p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _fmt_p(value: Any) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    if value < 1e-16:
        return "< 1e-16"
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


SHORT_KEYS = ("a", "b", "diff", "d", "U", "r", "rho", "ci_low", "ci_high", "p", "n_a", "n_b", "means")


def _short(numbers: Mapping[str, Any], published: Mapping[str, Any]) -> str:
    """``a 0.796, b 0.260, d -11.88, p 3.2e-09``: the published keys first, then the test's own."""
    keys = [k for k in published if k in numbers] + [k for k in SHORT_KEYS if k in numbers and k not in published]
    parts = []
    for key in keys:
        value = numbers[key]
        if value is None:
            continue
        if key == "means" and isinstance(value, Mapping):
            parts.append("means " + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()))
        elif key == "p":
            parts.append(f"p {_fmt_p(value)}")
        elif key in ("n_a", "n_b", "U") and isinstance(value, (int, float)) and float(value).is_integer():
            parts.append(f"{key} {int(value)}")
        else:
            parts.append(f"{key} {_fmt(value)}")
    return ", ".join(parts) or "—"


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
