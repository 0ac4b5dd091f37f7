"""The leaderboard's tables as typed objects, built once from the aggregates, independent of how
they are rendered: the HTML templates (``templates/*.html``) and the Markdown export
(:mod:`xbench.leaderboard.markdown`) both read these objects and compute nothing of their own, so
changing a table means this builder and its test (``tests/test_leaderboard_tables.py``).

A dataset page (:class:`DatasetPage`) holds, per view (all test samples / correctly classified
ones), the score tables grouped by category (:class:`Section` of :class:`ScoreTable`: methods ×
models, mean, CI and rank per cell, what explaining costs per method), the model-level tables
(:class:`Classification`, :class:`GridTable` per corruption × severity), the statistical tests
(:class:`TestBlock`) and the metric-reliability panel (:class:`Reliability`). The index page adds
the run's findings (:class:`Findings`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..claims import VERDICTS
from ..costs import MEASURES
from ..naming import stand_in_of
from ..specs import CATEGORIES
from .aggregate import Aggregates, facet_counts, family_kind
from .formatting import finite, fmt_number, fmt_p, natural_key, slug
from .load import FamilyAxes, family_axes
from .reliability import POOLED

VIEWS = ("all", "correct")


# ----------------------------------------------------------------------------- objects

@dataclass(frozen=True)
class Score:
    """One table cell: the mean over seeds, its 95% interval and the rank in its column."""

    mean: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    rank: float = math.nan
    rank_low: float = math.nan
    rank_high: float = math.nan

    @property
    def best(self) -> bool:
        return self.rank == 1

    @property
    def has_ci(self) -> bool:
        return finite(self.ci_low) is not None

    @property
    def has_rank(self) -> bool:
        return finite(self.rank) is not None

    @property
    def rank_interval(self) -> bool:
        """Whether the rank has an interval wider than one rank."""
        return finite(self.rank_low) is not None and self.rank_low != self.rank_high


@dataclass(frozen=True)
class Cost:
    """What explaining cost a method on this dataset: medians over its cells (model × seed)."""

    seconds: float | None
    peak_bytes: float | None
    cells: int


@dataclass(frozen=True)
class ModelColumn:
    label: str
    untrained: bool
    accuracy: float | None = None


@dataclass
class MethodRow:
    method: str
    baseline: bool
    cells: list[Score | None]
    mean_rank: float
    cost: Cost | None = None


@dataclass
class ScoreTable:
    """Methods × models for one (metric, value)."""

    id: str
    metric: str
    value: str
    name: str                  # the value as shown: "rmse/contrast (mean over 3 facets)"
    over: str                  # what a summary averages over ("corruption × severity"), else ""
    category: str
    hib: bool | None
    ci_over: list[str]
    seeds: int
    columns: list[ModelColumn]
    rows: list[MethodRow]
    costs: bool = False        # whether any row has a cost to show

    @property
    def direction(self) -> str:
        return "↑" if self.hib is True else ("↓" if self.hib is False else "")

    @property
    def ranked(self) -> bool:
        return self.hib is not None


@dataclass
class Section:
    category: str
    ranked: list[ScoreTable]
    descriptive: list[ScoreTable]


@dataclass
class ModelValue:
    """A column of the model-level table: one (metric, value)."""

    metric: str
    value: str
    name: str
    hib: bool | None

    @property
    def heading(self) -> str:
        return f"{self.metric} / {self.name}"


@dataclass
class ModelRow:
    model: str
    untrained: bool
    cells: list[Score | None]


@dataclass
class ModelTable:
    columns: list[ModelValue]
    rows: list[ModelRow]


@dataclass
class Classification:
    """Model-level values (accuracy, AUROC, ΔAUC summaries): rows = models; ``detail`` holds the
    members of categorical families (per-class values)."""

    main: ModelTable
    detail: ModelTable


@dataclass
class GridRow:
    facet: str
    cells: list[float | None]


@dataclass
class GridTable:
    """A model-level grid family on one model (Treyer's tables): facet × level, mean over seeds."""

    id: str
    title: str
    facet_name: str
    level_name: str
    levels: list[str]
    rows: list[GridRow]
    hib: bool | None


@dataclass
class TestBlock:
    """The statistical tests of one (view, metric): one record per comparison."""

    view: str
    id: str
    title: str
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Agreement:
    tau: float
    low: float
    high: float
    methods: int
    models: int

    @property
    def shade(self) -> int:
        """−3..3: the colour class of the cell (sign and strength of τ)."""
        return int(np.clip(round(self.tau * 3), -3, 3)) if finite(self.tau) is not None else 0


@dataclass
class VariantAgreement:
    value: str
    a: str
    b: str
    agreement: Agreement


@dataclass
class Reliability:
    """Kendall τ between the methods' rankings by every two headline series (pooled over the
    trained models), and between the hyper-parameter variants of one metric."""

    series: list[str]
    matrix: list[list[Agreement | None]]
    variants: list[VariantAgreement]
    seeds: int


@dataclass
class OverviewRow:
    method: str
    baseline: bool
    ranks: list[float | None]  # per category: mean of the method's mean ranks over its ranked tables
    cost: Cost | None = None


@dataclass
class Overview:
    """Methods × categories at a glance: a method that localises well but fails the sanity checks
    (Adebayo et al. 2018: its map ignores the model) shows it in one row."""

    categories: list[str]
    rows: list[OverviewRow]
    costs: bool = False

    def best(self, j: int) -> float | None:
        ranks = [r.ranks[j] for r in self.rows if r.ranks[j] is not None and not r.baseline]
        return min(ranks) if ranks else None

    def cost_ranks(self) -> list[float | None]:
        """Per row, the rank of its time per sample among the non-baseline methods (1 = fastest,
        ties share the mean rank); None for baselines and methods without a recorded cost."""
        timed = [(r.cost.seconds, i) for i, r in enumerate(self.rows)
                 if not r.baseline and r.cost is not None and r.cost.seconds is not None]
        ranks = pd.Series([t for t, _ in timed], dtype=float).rank(method="average").tolist()
        out: list[float | None] = [None] * len(self.rows)
        for (_, i), rank in zip(timed, ranks):
            out[i] = float(rank)
        return out

    @property
    def ranked_methods(self) -> int:
        """How many methods are ranked in at least one category (the worst possible mean rank)."""
        return sum(1 for r in self.rows if not r.baseline and any(v is not None for v in r.ranks))


@dataclass
class ModelInfo:
    label: str
    params: dict[str, Any]
    untrained: bool


@dataclass
class DatasetPage:
    name: str
    page: str
    models: list[ModelInfo]
    n_methods: int
    seeds: int
    views: dict[str, list[Section]]
    classification: Classification | None
    grids: list[GridTable]
    paired: list[TestBlock]
    groups: list[TestBlock]
    reliability: Reliability
    method_order: list[str] = field(default_factory=list)
    baselines: set[str] = field(default_factory=set)
    overview: Overview | None = None

    @property
    def tables(self) -> int:
        return sum(len(s.ranked) + len(s.descriptive) for s in self.views["all"])

    @property
    def leaders(self) -> list[dict[str, Any]]:
        """For the index: the method with the best mean rank in each ranked table."""
        out = []
        for s in self.views["all"]:
            for t in s.ranked:
                ranked = [r for r in t.rows if not r.baseline and math.isfinite(r.mean_rank)]
                if ranked:
                    out.append({"table": f"{t.metric} / {t.name} {t.direction}", "method": ranked[0].method,
                                "mean_rank": ranked[0].mean_rank, "id": t.id})
        return out


@dataclass
class Finding:
    """One claim's verdict as every format shows it: numbers as short text, and the data its rows
    ran on (``stand_in``: "X for Y" for each stand-in dataset among them)."""

    id: str
    claim: str
    source: str
    relation: str
    verdict: str
    measured: str
    published: str
    statistic: str
    n: int
    reason: str
    data: str = ""
    stand_in: str = ""

    @property
    def verdict_text(self) -> str:
        """"reproduced", or "reproduced (on a stand-in: X for Y)" where the rows ran on a stand-in."""
        return f"{self.verdict} (on a stand-in: {self.stand_in})" if self.stand_in else self.verdict


@dataclass
class Findings:
    """The run's claims, evaluated (``xbench.leaderboard.findings``); empty when it states none."""

    rows: list[Finding]

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(r.verdict == k for r in self.rows) for k in VERDICTS}


def findings(verdicts: Sequence[Any]) -> Findings:
    """From the verdicts of :func:`xbench.leaderboard.findings.evaluate`."""
    rows = []
    for v in verdicts:
        stand_ins = [f"{s} for {o}" for s, o in filter(None, (stand_in_of(d) for d in v.data))]
        rows.append(Finding(v.id, v.claim, v.source, v.relation, v.verdict, short_numbers(v.measured, v.published),
                            short_numbers(v.published, v.published) if v.published else "—", v.statistic, int(v.n),
                            v.reason, ", ".join(v.data) or "—", "; ".join(stand_ins)))
    return Findings(rows)


SHORT_KEYS = ("a", "b", "diff", "d", "U", "r", "rho", "ci_low", "ci_high", "p", "n_a", "n_b", "means")


def short_numbers(numbers: Mapping[str, Any], published: Mapping[str, Any]) -> str:
    """``a 0.796, b 0.260, d -11.880, p 3.2e-09``: the published keys first, then the test's own."""
    keys = [k for k in published if k in numbers] + [k for k in SHORT_KEYS if k in numbers and k not in published]
    parts = []
    for key in keys:
        value = numbers[key]
        if value is None:
            continue
        if key == "means" and isinstance(value, Mapping):
            parts.append("means " + ", ".join(f"{k}: {fmt_number(v)}" for k, v in value.items()))
        elif key == "p":
            parts.append(f"p {fmt_p(value)}")
        elif key in ("n_a", "n_b", "U") and isinstance(value, (int, float)) and float(value).is_integer():
            parts.append(f"{key} {int(value)}")
        else:
            parts.append(f"{key} {fmt_number(value)}")
    return ", ".join(parts) or "—"


# ----------------------------------------------------------------------------- data provenance

DATA_KINDS = {"real": "real data", "sample": "real sample (package data)", "generated": "generated",
              "stand-in": "stand-in", "unknown": "not stated by its plugin"}


@dataclass(frozen=True)
class DataRow:
    """Which data the cells of one dataset read, from the manifest's ``cells[*].data``
    (:func:`xbench.sources.cell_data`): what kind of data, its source and version, the checksums of
    the files read (or a folder's fingerprint) and whether they are the published ones."""

    dataset: str
    kind: str
    kind_text: str
    source: str
    version: str
    licence: str
    checksums: tuple[str, ...]
    verified: str
    detail: str
    cells: int


def data_rows(manifest: dict[str, Any]) -> list[DataRow]:
    """One row per dataset label and distinct data record, in dataset order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell in (manifest.get("cells") or {}).values():
        record = cell.get("data") if isinstance(cell, dict) else None
        if not isinstance(record, dict):
            continue
        files = record.get("files") or []
        checks = tuple(f"{f.get('file', '?')}: {f.get('checksum', '?')}" for f in files if isinstance(f, dict))
        if not checks and record.get("fingerprint"):
            checks = (f"{record.get('folder', '')} ({record['fingerprint']})".strip(),)
        key = (str(record.get("dataset", "?")), str(record.get("kind", "unknown")), str(record.get("source", "")),
               checks, str(record.get("stand_in_for", "")))
        groups.setdefault(key, []).append(record)
    rows = []
    for (dataset, kind, source, checks, stand_in_for), records in sorted(groups.items(),
                                                                         key=lambda kv: natural_key(kv[0][0])):
        r = records[0]
        verified = {None: "no published checksum", True: "the published checksum", False: "differs from the published"}
        state = verified.get(r.get("verified"), "") if checks and "verified" in r else ""
        text = DATA_KINDS.get(kind, kind)
        if stand_in_for:
            inner = DATA_KINDS.get(str(r.get("data_kind", "unknown")), r.get("data_kind"))
            text = f"stand-in for {stand_in_for} ({inner})"
        detail = "; ".join(str(x) for x in (r.get("description"), r.get("detail"), r.get("note")) if x)
        rows.append(DataRow(dataset, kind, text, source or "—", str(r.get("version") or "—"),
                            str(r.get("licence") or "—"), checks, state, detail, len(records)))
    return rows


# ----------------------------------------------------------------------------- names

class Names:
    """How values are named on the pages: summaries with the number of members they average and
    what they average over, in the words of the metric's declaration (``corruption × severity``)."""

    def __init__(self, facets: dict[tuple[str, str], int], axes: dict[tuple[str, str], FamilyAxes],
                 metric_names: dict[str, str], kinds: dict[tuple[str, str], str] | None = None):
        self.facets, self.axes, self.metric_names = facets, axes, metric_names
        self.kinds = kinds or {}

    @classmethod
    def of(cls, agg: Aggregates, manifest: dict[str, Any]) -> Names:
        """From the aggregates (member counts, family kinds, metric names) and the manifest (the
        facets' names)."""
        return cls(facet_counts(agg.per_seed, agg.model_per_seed), family_axes(manifest), agg.metric_names,
                   family_kinds(agg.per_seed, agg.model_per_seed))

    def axes_of(self, metric_label: str, family: str) -> FamilyAxes:
        return self.axes.get((self.metric_names.get(metric_label, metric_label), family), FamilyAxes())

    def kind(self, metric_label: str, family: Any) -> str | None:
        """``curve``, ``grid`` or ``categorical`` for a family of this metric; None otherwise."""
        return self.kinds.get((metric_label, str(family))) if _present(family) else None

    def display(self, metric: str, value: str, family: Any, facet: Any, summary: bool) -> str:
        """``rmse/contrast/*`` → "rmse/contrast (mean over 5 facets)"; other values as they are."""
        if not summary:
            return value
        base = str(family) + (f"/{facet}" if _present(facet) else "")
        n = self.facets.get((metric, base), 0)
        return f"{base} (mean over {n} facets)" if n else f"{base} (mean over facets)"

    def over(self, metric: str, family: Any, facet: Any, summary: bool) -> str:
        """What a summary averages over: "corruption × severity", "severity", "step"."""
        if not summary or not _present(family):
            return ""
        axes = self.axes_of(metric, str(family))
        return axes.over("per-facet" if _present(facet) else self.kind(metric, family))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def _bool(value: Any) -> bool | None:
    return None if not _present(value) else bool(value)


def _score(r: dict[str, Any]) -> Score:
    return Score(*(float(r.get(k, math.nan)) if _present(r.get(k)) else math.nan
                   for k in ("mean", "ci_low", "ci_high", "rank", "rank_low", "rank_high")))


# ----------------------------------------------------------------------------- builders

def ordered_models(models, untrained: set[str]) -> list[str]:
    """Trained models first, in natural order (``degree=2`` before ``degree=10``)."""
    return sorted(models, key=lambda m: (m in untrained, natural_key(m)))


def score_tables(series: pd.DataFrame, models: list[str], accuracy: dict[str, float], untrained: set[str],
                 names: Names, costs: dict[str, Cost] | None = None) -> list[ScoreTable]:
    """One table per (metric, value) of one dataset and view: rows = methods (baselines last, then
    by mean rank over the trained models), columns = models, cells = mean, CI, rank; each row with
    its method's cost when the run recorded one."""
    tables: list[ScoreTable] = []
    if series.empty:
        return tables
    costs = costs or {}
    for (metric, value), group in series.groupby(["metric_label", "value_name"], observed=True, sort=True):
        metric, value = str(metric), str(value)
        present = set(group["model_label"].astype(object))
        cols = [m for m in models if m in present]
        first = group.iloc[0]
        hib = _bool(first["higher_is_better"])
        rows = []
        for method, mrows in group.groupby("method_label", observed=True, sort=True):
            by_model = {str(r["model_label"]): r for r in mrows.to_dict("records")}
            cells = [_score(by_model[m]) if m in by_model else None for m in cols]
            ranks = [c.rank for m, c in zip(cols, cells) if c is not None and c.has_rank and m not in untrained]
            rows.append(MethodRow(str(method), bool(mrows["method_baseline"].any()), cells,
                                  float(np.mean(ranks)) if ranks else math.nan, costs.get(str(method))))
        rows.sort(key=lambda r: (r.baseline, r.mean_rank if math.isfinite(r.mean_rank) else 1e9, r.method))
        family, facet, summary = first["family"], first["facet"], bool(first["summary"])
        tables.append(ScoreTable(
            id=slug(f"{metric}-{value}"), metric=metric, value=value,
            name=names.display(metric, value, family, facet, summary),
            over=names.over(metric, family, facet, summary),
            category=str(first["category"]), hib=hib, ci_over=sorted(set(group["ci_over"].astype(str))),
            seeds=int(group["seeds"].max()),
            columns=[ModelColumn(m, m in untrained, accuracy.get(m)) for m in cols], rows=rows,
            costs=any(r.cost is not None for r in rows)))
    return tables


def sections(tables: list[ScoreTable]) -> list[Section]:
    """Tables grouped by category (ranked values first, descriptive counts last)."""
    out = []
    cats = sorted({t.category for t in tables}, key=lambda c: (CATEGORIES.index(c) if c in CATEGORIES
                                                               else len(CATEGORIES), c))
    for cat in cats:
        ts = [t for t in tables if t.category == cat]
        out.append(Section(cat, [t for t in ts if t.ranked], [t for t in ts if not t.ranked]))
    return out


def overview(secs: list[Section]) -> Overview | None:
    """Per method, its mean rank in each category (over that category's ranked tables, trained
    models only); rows ordered as the first category's. None when nothing is ranked."""
    cats = [s for s in secs if s.ranked]
    if not cats:
        return None
    per: dict[str, dict[str, list[float]]] = {}
    info: dict[str, MethodRow] = {}
    for s in cats:
        for t in s.ranked:
            for r in t.rows:
                info.setdefault(r.method, r)
                if math.isfinite(r.mean_rank):
                    per.setdefault(r.method, {}).setdefault(s.category, []).append(r.mean_rank)
    rows = [OverviewRow(m, info[m].baseline,
                        [float(np.mean(per[m][s.category])) if s.category in per.get(m, {}) else None for s in cats],
                        info[m].cost) for m in info]
    rows.sort(key=lambda r: (r.baseline, r.ranks[0] if r.ranks[0] is not None else 1e9, r.method))
    return Overview([s.category for s in cats], rows, any(r.cost is not None for r in rows))


def classification(ds_models: pd.DataFrame, models: list[str], untrained: set[str], names: Names
                   ) -> Classification | None:
    """Model-level values: rows = models, columns = values; categorical family members (per-class
    values) apart, in ``detail``."""
    if ds_models.empty:
        return None
    cols = []
    for (metric, value), g in ds_models.groupby(["metric_label", "value_name"], observed=True, sort=True):
        first = g.iloc[0]
        col = ModelValue(str(metric), str(value),
                         names.display(str(metric), str(value), first["family"], first["facet"], bool(first["summary"])),
                         _bool(first["higher_is_better"]))
        categorical = family_kind(first["facet"], first["level"]) == "categorical" and not bool(first["summary"])
        cols.append((col, categorical, {str(r["model_label"]): _score(r) for r in g.to_dict("records")}))
    cols.sort(key=lambda c: (c[0].value != "accuracy", c[0].metric, c[0].value))

    def table(chosen) -> ModelTable:
        rows = [ModelRow(m, m in untrained, [cells.get(m) for _, _, cells in chosen]) for m in models
                if any(m in cells for _, _, cells in chosen)]
        return ModelTable([c for c, _, _ in chosen], rows)

    return Classification(table([c for c in cols if not c[1]]), table([c for c in cols if c[1]]))


def grid_tables(mps: pd.DataFrame, models: list[str], names: Names) -> list[GridTable]:
    """Model-level grid families (ΔAUC, AUC …) as Treyer's tables: per model, facet × level, mean
    over seeds."""
    if mps.empty:
        return []
    grid = mps[(mps["facet"].notna() & mps["level"].notna()).to_numpy()]
    if grid.empty:
        return []
    data = pd.DataFrame({"metric": grid["metric_label"].astype(object).to_numpy(),
                         "family": grid["family"].astype(object).to_numpy(),
                         "model": grid["model_label"].astype(object).to_numpy(),
                         "facet": grid["facet"].astype(object).to_numpy(),
                         "level": grid["level"].to_numpy(float), "mean": grid["mean"].to_numpy(float),
                         "hib": grid["higher_is_better"].to_numpy(object)})
    out = []
    for (metric, family), g in data.groupby(["metric", "family"], sort=True):
        axes = names.axes_of(metric, family)
        means = g.groupby(["model", "facet", "level"])["mean"].mean()
        levels = sorted(g["level"].unique())
        hib = _bool(g["hib"].iloc[0])
        for model in [m for m in models if m in set(g["model"])]:
            sub = means.loc[model]
            rows = [GridRow(str(c), [finite(sub.get((c, lv))) for lv in levels])
                    for c in sorted(sub.index.get_level_values(0).unique())]
            out.append(GridTable(slug(f"{metric}-{family}-{model}"), f"{metric} / {family} on {model}", axes.facet,
                                 axes.level, [f"{lv:g}" for lv in levels], rows, hib))
    return out


def comparison_blocks(tests: pd.DataFrame, display: Callable[[str, str], str]) -> list[TestBlock]:
    """Statistical tests for display: one block per (view, metric), a row per comparison."""
    blocks: list[TestBlock] = []
    if tests.empty:
        return blocks
    for (view, metric), g in tests.groupby(["view", "metric_label"], sort=True, observed=True):
        rows = [{k: (None if v is pd.NA else v) for k, v in r.items()} for r in g.to_dict("records")]
        for r in rows:
            r["value_display"] = display(str(metric), str(r["value_name"]))
        values = sorted({r["value_display"] for r in rows})
        blocks.append(TestBlock(str(view), slug(f"{view}-{metric}"),
                                f"{metric} ({len(values)} value{'s' if len(values) > 1 else ''}: "
                                f"{', '.join(values[:6])}{', …' if len(values) > 6 else ''})", rows))
    return blocks


def reliability(frame: pd.DataFrame, display: Callable[[str, str], str]) -> Reliability:
    """The panel of one dataset from ``aggregate.Aggregates.reliability`` (pooled rows)."""
    pooled = frame[frame["model_label"] == POOLED] if len(frame) else frame
    if pooled.empty:
        return Reliability([], [], [], 0)
    keys = sorted(set(zip(pooled["metric_a"], pooled["value_a"])) | set(zip(pooled["metric_b"], pooled["value_b"])))
    index = {k: i for i, k in enumerate(keys)}
    matrix: list[list[Agreement | None]] = [[None] * len(keys) for _ in keys]
    for r in pooled.to_dict("records"):
        a, b = index[(r["metric_a"], r["value_a"])], index[(r["metric_b"], r["value_b"])]
        matrix[a][b] = matrix[b][a] = Agreement(r["tau"], r["tau_low"], r["tau_high"], int(r["methods"]),
                                                int(r["models"]))
    variants = [VariantAgreement(display(r["metric_a"], r["value_a"]), r["metric_a"], r["metric_b"],
                                 Agreement(r["tau"], r["tau_low"], r["tau_high"], int(r["methods"]), int(r["models"])))
                for r in pooled[pooled["kind"] == "variants"].to_dict("records")]
    return Reliability([f"{m} / {display(m, v)}" for m, v in keys], matrix, variants, int(pooled["seeds"].min()))


def cost_note(manifest: Mapping[str, Any]) -> str:
    """How the run's costs were measured, in a sentence for the pages: the time, and each way the
    memory was counted on the devices its cells ran on (from the manifest's per-cell costs)."""
    measures = {c.get("memory") for cell in (manifest.get("cells") or {}).values()
                for c in (cell.get("costs") or {}).values()}
    described = [MEASURES[m] for m in sorted(m for m in measures if m in MEASURES)]
    if any("peak_scope" in c for cell in (manifest.get("cells") or {}).values()
           for c in (cell.get("costs") or {}).values()):
        described.append("in cells recorded by an older xbench: the process's peak memory, not the method's own")
    memory = "; ".join(described) if described else "not recorded in this run"
    return ("Time per sample: wall time of the method's calls over the samples it explained. Memory added: the peak "
            f"of the memory the method allocated while explaining, above what was allocated before it ({memory}). "
            "Both are medians over the dataset's cells (model × seed).")


def costs_of(frame: pd.DataFrame) -> dict[str, Cost]:
    """Method label → its cost on one dataset (rows of ``Aggregates.costs``)."""
    return {str(r["method_label"]): Cost(finite(r["seconds"]), finite(r["peak_bytes"]), int(r["cells"]))
            for r in frame.to_dict("records")}


def dataset_page(agg: Aggregates, name: str, page: str, names: Names) -> DatasetPage:
    """Every table of one dataset's page."""
    def of(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["dataset_label"].astype(object) == name).to_numpy()] if len(frame) else frame

    ds_series, ds_models = of(agg.series), of(agg.models)
    untrained = agg.untrained
    models = ordered_models({str(m) for m in ds_series["model_label"].astype(object)}
                            | {str(m) for m in ds_models["model_label"].astype(object)}, untrained)
    accuracy = {str(r["model_label"]): r["mean"] for r in ds_models.to_dict("records")
                if str(r["value_name"]) == "accuracy"}
    costs = costs_of(of(agg.costs))
    views = {view: sections(score_tables(ds_series[(ds_series["view"] == view).to_numpy()], models, accuracy,
                                         untrained, names, costs)) for view in VIEWS}
    method_order = [r.method for s in views["all"] for t in s.ranked[:1] for r in t.rows]
    baselines = set(ds_series.loc[ds_series["method_baseline"].to_numpy(bool), "method_label"].astype(object))
    lookup = _display_lookup(agg, names)

    def display(metric: str, value: str) -> str:
        return lookup.get((metric, value), value)

    return DatasetPage(
        name=name, page=page,
        models=[ModelInfo(m, agg.model_params.get(m, {}), m in untrained) for m in models],
        n_methods=int(ds_series["method_label"].nunique()),
        seeds=int(ds_series["seeds"].max()) if len(ds_series) else int(ds_models["seeds"].max() or 0),
        views=views, classification=classification(ds_models, models, untrained, names),
        grids=grid_tables(of(agg.model_per_seed), models, names),
        paired=comparison_blocks(of(agg.paired), display), groups=comparison_blocks(of(agg.groups), display),
        reliability=reliability(of(agg.reliability), display), method_order=method_order, baselines=baselines,
        overview=overview(views["all"]))


def family_kinds(*frames: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(metric label, family) → ``curve`` / ``grid`` / ``categorical``, from the facet columns of
    the members in per-seed frames."""
    out: dict[tuple[str, str], str] = {}
    for frame in frames:
        if frame.empty:
            continue
        members = frame[frame["family"].notna().to_numpy() & ~frame["summary"].fillna(False).to_numpy(bool)]
        first = members.astype({"metric_label": object, "family": object}).drop_duplicates(["metric_label", "family"])
        for metric, fam, facet, level in first[["metric_label", "family", "facet", "level"]].itertuples(index=False):
            out[(metric, fam)] = family_kind(facet, level) or ""
    return out


def _display_lookup(agg: Aggregates, names: Names) -> dict[tuple[str, str], str]:
    """(metric, value) → its display name, for the tests' tables."""
    out = {}
    for frame in (agg.series, agg.models):
        if frame.empty:
            continue
        distinct = frame[["metric_label", "value_name", "family", "facet", "summary"]].astype(
            {"metric_label": object, "value_name": object}).drop_duplicates(["metric_label", "value_name"])
        for metric, value, fam, facet, summary in distinct.itertuples(index=False):
            out[(metric, value)] = names.display(metric, value, fam, facet, bool(summary))
    return out
