"""Which result rows a claim looks at (for :mod:`xbench.leaderboard.findings`), from the rows alone.

1. **Rows.** Rows of the claim's metric and value (name, label or glob, :mod:`xbench.naming`; a
   value also matches its family), narrowed by the claim-level selectors and, with
   ``samples = "correct"``, to correctly classified samples (model-level rows are kept). No rows:
   inconclusive, with the closest metric or value that exists.
2. **Sides.** A selector (side ``a`` or ``b``) narrows those rows further; a side without rows is
   inconclusive, naming the selector and the closest names present.
3. **Accuracy floor.** Every *trained* model instance (dataset, model, seed with ``model_untrained``
   false) needs its ``model-fit`` accuracy (``test_accuracy`` or ``val_accuracy``) strictly above
   the floor (``chance + above_chance``, or ``absolute``). Instances below it, or without
   accuracy, are left out (and listed), as Callanan's inclusion filter. If no accuracy is recorded
   at all, or every instance of a model variant falls below the floor, the claim is inconclusive
   and names the model and its accuracy against chance.
4. **Per-seed means.** Per-sample values become the mean over samples of each (dataset, model,
   method, metric, value, seed), NaN (undefined) values left out; a model instance's observation
   on a side is the mean of its per-seed means there (so several methods or values on one side
   weigh equally). Fewer than ``min_seeds`` instances: inconclusive, "too few seeds". A model
   instance left with no defined value at all (for some method, value, facet or level) is not
   dropped silently: :func:`undefined` lists it with the reason its rows' ``note`` gives, and the
   verdict's reason names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..claims import Claim, Selector, position_key
from ..errors import did_you_mean
from ..naming import select_any
from ..specs import MODEL_FIT
from .formatting import fmt_number
from .load import parse_params

INSTANCE = ["dataset_label", "model_label", "seed"]
SEED_KEY = ["dataset_label", "model_label", "method_label", "metric_label", "value_name", "seed"]
NAMES = {"dataset": ("dataset", "dataset_label"), "model": ("model", "model_label"),
         "method": ("method", "method_label"), "facet": ("facet",)}
"""The columns a name selector reads: the plugin's name and its variant's label."""


class Inconclusive(Exception):
    """A claim decided inconclusive before its test: the reason, and whether the accuracy floor
    decided it (then the reason already names the models left out, and ``excluded`` lists them)."""

    def __init__(self, reason: str, *, floor: bool = False, excluded: list[dict[str, Any]] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.floor = floor
        self.excluded = excluded or []


class Rows:
    """The result rows with the lookups every claim shares (distinct texts, parsed params, accuracy)."""

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

    def uniques(self, *names: str, mask: np.ndarray | None = None) -> list[str]:
        """The distinct texts of the columns (under ``mask`` when given)."""
        out: set[str] = set()
        for name in names:
            if mask is not None:
                out |= {v for v in distinct(self.col(name)[mask]) if isinstance(v, str)}
                continue
            if name not in self._uniques:
                self._uniques[name] = {v for v in distinct(self.col(name)) if isinstance(v, str)}
            out |= self._uniques[name]
        return sorted(out)

    def names_mask(self, columns: Sequence[str], patterns: str | list[str]) -> np.ndarray:
        chosen = select_any(patterns, self.uniques(*columns))
        mask = np.zeros(self.n, bool)
        for c in columns:
            mask |= self.col(c).isin(chosen).to_numpy(bool)
        return mask

    def bool_mask(self, name: str, wanted: bool) -> np.ndarray:
        return (as_bool(self.col(name)) == wanted).fillna(False).to_numpy(bool)

    def params(self, name: str) -> dict[str, dict[str, Any]]:
        """Parsed ``<kind>_params`` per distinct text."""
        if name not in self._params:
            self._params[name] = {t: parse_params(t) for t in distinct(self.col(name)) if isinstance(t, str)}
        return self._params[name]

    def params_mask(self, name: str, wanted: Mapping[str, Any]) -> np.ndarray:
        keep = [t for t, p in self.params(name).items()
                if all(k in p and position_key(p[k]) == position_key(v) for k, v in wanted.items())]
        return self.col(name).isin(keep).to_numpy(bool)

    def select(self, sel: Selector) -> np.ndarray:
        mask = np.ones(self.n, bool)
        for key, columns in NAMES.items():
            if getattr(sel, key) is not None:
                mask &= self.names_mask(columns, getattr(sel, key))
        if sel.level is not None:
            levels = [sel.level] if isinstance(sel.level, (int, float)) else sel.level
            lv = pd.to_numeric(self.col("level"), errors="coerce").to_numpy(float)
            mask &= np.isclose(lv[:, None], np.asarray(levels, float)[None, :]).any(1)
        if sel.untrained is not None:
            mask &= self.bool_mask("model_untrained", sel.untrained)
        if sel.baseline is not None:
            mask &= self.bool_mask("method_baseline", sel.baseline)
        for key in ("model_params", "method_params"):
            if getattr(sel, key) is not None:
                mask &= self.params_mask(key, getattr(sel, key))
        return mask

    def accuracy(self, split: str) -> dict[tuple, tuple[float, float]]:
        """(dataset_label, model_label, seed) → (accuracy, chance) from the model-fit rows."""
        if split not in self._accuracy:
            fit = self.col("metric").isin([MODEL_FIT]).to_numpy(bool)
            wanted = f"{split}_accuracy"
            part = pd.DataFrame({c: self.col(c)[fit].astype(object) for c in INSTANCE + ["value_name"]})
            part["value"] = pd.to_numeric(self.col("value")[fit], errors="coerce").to_numpy(float)
            part = part[self.col("value_name")[fit].isin([wanted, "chance"]).to_numpy(bool)]
            out = {}
            if not part.empty:
                table = part.pivot_table(index=INSTANCE, columns="value_name", values="value", aggfunc="mean")
                for key, rec in table.iterrows():
                    acc, chance = rec.get(wanted, np.nan), rec.get("chance", np.nan)
                    if np.isfinite(acc):
                        out[(key[0], key[1], int(key[2]))] = (float(acc), float(chance))
            self._accuracy[split] = out
        return self._accuracy[split]


# ── column helpers ───────────────────────────────────────────────────────────────────────────────


def distinct(series: pd.Series) -> list[Any]:
    """The distinct non-null values (a categorical's used categories, without a scan of the rows
    when every category is used)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = np.unique(series.cat.codes.to_numpy())
        return list(series.cat.categories[codes[codes >= 0]])
    return list(pd.unique(series.dropna()))


def objects(series: pd.Series) -> np.ndarray:
    """A column as an object array (None for missing), fast for categoricals."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = np.asarray(series.cat.categories, dtype=object)
        codes = series.cat.codes.to_numpy()
        if cats.size == 0:
            return np.full(codes.shape, None, dtype=object)
        return np.where(codes >= 0, cats[np.maximum(codes, 0)], None)
    out = series.astype(object).to_numpy()
    return np.where(pd.isna(out), None, out)


def keys(values: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    """``fn`` applied once per distinct value (None for missing values or where fn gives None)."""
    codes, uniq = pd.factorize(values, use_na_sentinel=True)
    table = np.array([fn(u) for u in uniq] + [None], dtype=object)
    return pd.Series(table[codes], index=values.index, dtype=object)


def as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool or str(series.dtype) == "boolean":
        return series.astype("boolean")
    return series.astype(object).map(lambda v: v if isinstance(v, (bool, np.bool_)) else pd.NA).astype("boolean")


# ── a claim's rows ───────────────────────────────────────────────────────────────────────────────


def claim_rows(frame: Rows, c: Claim) -> np.ndarray:
    """The rows of the claim's metric and value, narrowed by its own selectors and ``samples``."""
    metric = frame.names_mask(("metric", "metric_label"), c.metric)
    if not metric.any():
        raise Inconclusive(f"no matching rows: no metric {c.metric!r} in the results"
                           f"{did_you_mean(c.metric, frame.uniques('metric', 'metric_label'))}.")
    chosen = select_any(c.value, frame.uniques("value_name", "family"))
    mask = metric & (frame.col("value_name").isin(chosen) | frame.col("family").isin(chosen)).to_numpy(bool)
    if not mask.any():
        raise Inconclusive(f"no matching rows: metric {c.metric!r} has no value {c.value!r}"
                           f"{did_you_mean(c.value, frame.uniques('value_name', mask=metric))}.")
    for key, wanted in c.where().given().items():
        narrowed = mask & frame.select(Selector(**{key: wanted}))
        if not narrowed.any():
            raise Inconclusive(f"no matching rows: no rows of metric {c.metric!r}, value {c.value!r} have "
                               f"{key} = {wanted!r}{hint(frame, key, wanted, mask)}.")
        mask = narrowed
    if c.samples == "correct":
        sample_rows = ~frame.col("scope").isin(["model"]).to_numpy(bool)
        mask &= ~sample_rows | frame.bool_mask("correct", True)
        if not mask.any():
            raise Inconclusive("no matching rows: no correctly classified samples in the claim's rows.")
    return mask


def hint(frame: Rows, key: str, wanted: Any, mask: np.ndarray) -> str:
    """" (did you mean ...?)" among the names present under ``mask``, for a name selector."""
    if key not in NAMES or not isinstance(wanted, str):
        return ""
    return did_you_mean(wanted, frame.uniques(*NAMES[key], mask=mask))


def side(frame: Rows, base: np.ndarray, sel: Selector | None, name: str) -> np.ndarray:
    """The rows of ``base`` that side ``name`` selects (all of them without a selector)."""
    if sel is None:
        return base
    mask = base & frame.select(sel)
    if not mask.any():
        detail = ", ".join(f"{k} = {v!r}" for k, v in sel.given().items())
        hints = "".join(hint(frame, k, v, base) for k, v in sel.given().items())
        raise Inconclusive(f"no matching rows: side {name} ({detail}) matches none of the claim's rows{hints}.")
    return mask


def table(frame: Rows, mask: np.ndarray, extra: Sequence[str] = ()) -> pd.DataFrame:
    """The rows under ``mask`` as a small plain frame (text as objects, seed int, value float)."""
    cols = list(dict.fromkeys(SEED_KEY + ["facet", "note", *extra]))
    # object columns on purpose: pandas ≥ 3 would infer its string dtype, slower to build and group
    out = pd.DataFrame({c: pd.Series(objects(frame.col(c)[mask]), dtype=object) for c in cols})
    out["seed"] = pd.to_numeric(frame.col("seed")[mask]).to_numpy(np.int64)
    for c in ("sample", "level", "value"):
        out[c] = pd.to_numeric(frame.col(c)[mask], errors="coerce").to_numpy(float)
    out["model_untrained"] = as_bool(frame.col("model_untrained")[mask]).fillna(False).to_numpy(bool)
    return out


def apply_floor(frame: Rows, c: Claim, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """``rows`` without the trained model instances at or below the accuracy floor (or without
    accuracy), and those instances."""
    trained = rows.loc[~rows["model_untrained"], INSTANCE].drop_duplicates()
    if trained.empty:
        return rows, []
    floor = c.accuracy_floor
    acc = frame.accuracy(floor.split)
    if not acc:
        raise Inconclusive(f"no accuracy recorded: no model-fit {floor.split}_accuracy rows for the claim's trained "
                           f"models, so the accuracy floor ({floor.describe()}) cannot be checked.", floor=True)
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
    if not drop:
        return rows, drop
    gone = pd.DataFrame(drop)[["dataset", "model", "seed"]].set_axis(INSTANCE, axis=1)
    per_variant = trained.groupby(["dataset_label", "model_label"]).size()
    for (ds, model), k in gone.groupby(["dataset_label", "model_label"]).size().items():
        if k == per_variant.get((ds, model), 0):
            entries = [d for d in drop if d["dataset"] == ds and d["model"] == model]
            if all(d["accuracy"] is None for d in entries):
                raise Inconclusive(f"no accuracy recorded for model {model} on {ds}, so the accuracy floor "
                                   f"({floor.describe()}) cannot be checked.", floor=True, excluded=drop)
            accs = ", ".join(fmt_number(d["accuracy"]) for d in entries)
            raise Inconclusive(f"model {model} on {ds} did not learn: its {floor.split} accuracy ({accs} against "
                               f"chance {fmt_number(entries[0]['chance'])}) is not above the floor "
                               f"({floor.describe()}) in any of its {k} seeds, and an explanation of a model that did "
                               f"not learn measures nothing.", floor=True, excluded=drop)
    keep = ~pd.MultiIndex.from_frame(rows[INSTANCE]).isin(pd.MultiIndex.from_frame(gone))
    return rows[keep], drop


def observations(rows: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per-seed means, then one observation per model instance (and ``by`` group): columns
    INSTANCE + by + ["value"]."""
    finite = rows[np.isfinite(rows["value"])]
    cols = list(dict.fromkeys(SEED_KEY + list(by)))
    seed_means = finite.groupby(cols, dropna=False, sort=False)["value"].mean().reset_index()
    return seed_means.groupby(INSTANCE + list(by), dropna=False, sort=True)["value"].mean().reset_index()


UNDEFINED_KEY = SEED_KEY + ["facet", "level"]


def undefined(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The model instances that have no defined (finite) value in some group of ``rows`` (one method,
    value, facet and level), so :func:`observations` leaves them out there: each with the group, how
    many rows it has, and why (the rows' most frequent ``note``, the metric's own reason)."""
    finite = np.isfinite(rows["value"].to_numpy(float))
    if finite.all():
        return []
    frame = rows.assign(_finite=finite)
    empty = frame[~frame.groupby(UNDEFINED_KEY, dropna=False)["_finite"].transform("any").to_numpy(bool)]
    out = []
    for key, group in empty.groupby(UNDEFINED_KEY, dropna=False, sort=True):
        notes = group["note"].dropna() if "note" in group else pd.Series(dtype=object)
        why = str(notes.value_counts().index[0]) if len(notes) else "no reason recorded on its rows"
        ds, model, method, _, value, seed, facet, level = key
        out.append({"dataset": ds, "model": model, "seed": int(seed), "method": method, "value": value,
                    "facet": None if pd.isna(facet) else facet, "level": None if pd.isna(level) else float(level),
                    "rows": len(group), "why": why})
    return out


def undefined_note(entries: Sequence[Mapping[str, Any]]) -> str:
    """"left out with no defined value: model x seed 2 (hires-cam, mass/marker, all 200 rows: why)", the
    first three."""
    parts = []
    for e in entries[:3]:
        where = ", ".join(str(v) for v in (e["method"], e["value"], e["facet"]) if v)
        level = f" level {fmt_number(e['level'])}" if e["level"] is not None else ""
        parts.append(f"{e['model']} seed {e['seed']} on {e['dataset']} ({where}{level}, all {e['rows']} rows "
                     f"undefined: {e['why']})")
    more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
    return "left out with no defined value: " + "; ".join(parts) + more


def enough(obs: pd.DataFrame, c: Claim, what: str) -> None:
    n = len(obs)
    if n < c.min_seeds:
        raise Inconclusive(f"too few seeds: {what} has {n} model instance{'s' if n != 1 else ''} with a defined "
                           f"value, and the claim needs min_seeds = {c.min_seeds}.")
