"""Render the static leaderboard: an index, one page per dataset, a provenance page, figures,
CSV exports and a Markdown summary.

Every string that comes from a plugin or from data is escaped (Jinja2 autoescape for HTML,
:func:`xbench.leaderboard.formatting.md_escape` for Markdown, :func:`draw.text` in figures).
The site needs no server: relative links, one small script, figures as files.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from ..hashing import content_hash
from . import figure_plan
from .aggregate import Aggregates, aggregate, facets_of, family_kinds, family_of, summaries_of
from .formatting import data_value, fmt_number, fmt_p, fmt_rank, natural_key, slug
from .load import load_frame
from .markdown import summary_markdown

CATEGORY_ORDER = ["localisation", "faithfulness", "robustness", "sanity", "complexity", "classification"]


def _env() -> Environment:
    env = Environment(loader=PackageLoader("xbench.leaderboard", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(num=fmt_number, p=fmt_p, rank=fmt_rank, dv=data_value, slug=slug)
    return env


# ----------------------------------------------------------------------------- provenance

def provenance(manifest: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What produced these numbers: shown in every page's footer and on provenance.html."""
    config = manifest.get("config") or {}
    device = manifest.get("device") or {}
    git = manifest.get("git") or {}
    specs = manifest.get("specs") or {}
    return {
        "run": (config.get("run") or {}).get("name") or run_dir.name,
        "xbench": manifest.get("xbench_version"),
        "versions": manifest.get("versions") or {},
        "torch": (manifest.get("versions") or {}).get("torch"),
        "device": device.get("gpu") or device.get("name") or device.get("device"),
        "device_info": device,
        "date": manifest.get("finished") or manifest.get("started"),
        "git": git.get("xbench") or git.get("cwd"),
        "git_info": git,
        "config_source": config.get("source"),
        "config_json": json.dumps(config, indent=2, sort_keys=True, default=str),
        "plugins": [{"name": p.get("name"), "version": p.get("version"), "distribution": p.get("distribution"),
                     "status": p.get("status")} for p in manifest.get("plugins", [])],
        "specs": [{"kind": kind, **entry} for kind, entries in sorted(specs.items()) for entry in entries],
        "status": manifest.get("status"),
        "counts": manifest.get("counts") or {},
        "timings": manifest.get("timings") or {},
        "failed": manifest.get("failed") or [],
        "skipped": manifest.get("skipped") or [],
    }


# ----------------------------------------------------------------------------- tables

def display_name(value: str, facets: dict[tuple[str, str], int], metric: str) -> str:
    """``rmse/contrast/*`` → "rmse/contrast (mean over 5 facets)"."""
    if value.endswith("/*"):
        n = facets.get((metric, value[:-2]), 0)
        return f"{value[:-2]} (mean over {n} facets)" if n else f"{value[:-2]} (mean over facets)"
    return value


def facet_counts(per_seed: pd.DataFrame, model_per_seed: pd.DataFrame) -> dict[tuple[str, str], int]:
    """How many member values each summary covers, per metric (for the tables' titles)."""
    counts: dict[tuple[str, str], int] = {}
    for frame in (per_seed, model_per_seed):
        if frame.empty:
            continue
        names = frame[["metric_label", "value_name"]].astype(str).drop_duplicates()
        kinds = family_kinds(names["value_name"].unique())
        for metric, value in zip(names["metric_label"], names["value_name"]):
            for summary in summaries_of(value, kinds):
                counts[(metric, summary[:-2])] = counts.get((metric, summary[:-2]), 0) + 1
    return counts


def _ordered_models(models, params: dict[str, dict]) -> list[str]:
    return sorted(models, key=lambda m: (bool(params.get(m, {}).get("untrained")), natural_key(m)))


def _tables(series: pd.DataFrame, models: list[str], accuracy: dict[str, float], facets, model_params) -> list[dict]:
    """One table per (metric, value): rows = methods, columns = models, cells = mean, CI, rank."""
    tables = []
    if series.empty:
        return tables
    for (metric, value), group in series.groupby(["metric_label", "value_name"], observed=True, sort=True):
        metric, value = str(metric), str(value)
        cols = [m for m in models if m in set(group["model_label"].astype(object))]
        hib = group["higher_is_better"].iloc[0]
        hib = None if hib is pd.NA or hib is None else bool(hib)
        rows = []
        for method, mrows in group.groupby("method_label", observed=True, sort=True):
            by_model = {str(r["model_label"]): r for r in mrows.to_dict("records")}
            cells = [by_model.get(m) for m in cols]
            ranks = [c["rank"] for c in cells if c and math.isfinite(c["rank"])
                     and not model_params.get(str(c["model_label"]), {}).get("untrained")]
            rows.append({"method": str(method), "baseline": bool(mrows["method_baseline"].any()), "cells": cells,
                         "mean_rank": float(np.mean(ranks)) if ranks else float("nan")})
        rows.sort(key=lambda r: (r["baseline"], r["mean_rank"] if math.isfinite(r["mean_rank"]) else 1e9, r["method"]))
        first = group.iloc[0]
        tables.append({
            "id": slug(f"{metric}-{value}"), "metric": metric, "value": value,
            "name": display_name(value, facets, metric), "models": cols,
            "model_baseline": [bool(model_params.get(m, {}).get("untrained")) for m in cols],
            "accuracy": [accuracy.get(m) for m in cols], "rows": rows, "hib": hib,
            "direction": "↑" if hib is True else ("↓" if hib is False else ""),
            "category": str(first["category"]), "ci_over": sorted(set(group["ci_over"].astype(str))),
            "seeds": int(group["seeds"].max()),
        })
    return tables


def _sections(tables: list[dict]) -> list[dict]:
    """Tables grouped by category (ranked values first, descriptive counts last)."""
    out = []
    cats = sorted({t["category"] for t in tables}, key=lambda c: (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER
                                                                  else len(CATEGORY_ORDER), c))
    for cat in cats:
        ts = [t for t in tables if t["category"] == cat]
        out.append({"category": cat, "ranked": [t for t in ts if t["hib"] is not None],
                    "descriptive": [t for t in ts if t["hib"] is None]})
    return out


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if v is pd.NA else v) for k, v in r.items()} for r in frame.to_dict("records")]


# ----------------------------------------------------------------------------- build

def build(run_dir: str | Path, out: str | Path | None = None, *, resamples: int | None = None,
          workers: int | None = None) -> Path:
    """Build the site for ``run_dir`` into ``out`` (default ``run_dir/leaderboard``); return ``out``.
    ``workers``: processes that draw the figures (default: one per core on large runs)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    site = Path(out) if out else run_dir / "leaderboard"
    site.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    frame, manifest = load_frame(run_dir)
    timings["load"] = time.perf_counter() - started
    agg = aggregate(frame) if resamples is None else aggregate(frame, resamples=resamples)
    timings["aggregate"] = time.perf_counter() - started - timings["load"]
    prov = provenance(manifest, run_dir)
    env = _env()
    _copy_static(site)
    fig_dir = site / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    for old in site.glob("dataset-*.html"):
        old.unlink()

    series, models_summary = agg.series, agg.models
    datasets = sorted({str(d) for d in series["dataset_label"].astype(object)} |
                      {str(d) for d in models_summary["dataset_label"].astype(object)}) if len(frame) else []
    facets = facet_counts(agg.per_seed, agg.model_per_seed)
    pages, md_pages, planned = [], [], []
    page_of = _page_names(datasets)
    nav = [{"name": n, "page": page_of[n]} for n in datasets]
    for name in datasets:
        page = page_of[name]
        ds_series = series[series["dataset_label"].astype(object) == name]
        ds_models = models_summary[models_summary["dataset_label"].astype(object) == name]
        model_labels = _ordered_models({str(m) for m in ds_series["model_label"].astype(object)} |
                                       {str(m) for m in ds_models["model_label"].astype(object)}, agg.model_params)
        accuracy = {str(r["model_label"]): r["mean"] for r in ds_models.to_dict("records")
                    if str(r["value_name"]) == "accuracy"}
        views = {}
        for view in ("all", "correct"):
            tables = _tables(ds_series[ds_series["view"] == view], model_labels, accuracy, facets, agg.model_params)
            views[view] = _sections(tables)
        method_order = [r["method"] for s in views["all"] for t in s["ranked"][:1] for r in t["rows"]]
        baselines = set(ds_series.loc[ds_series["method_baseline"].to_numpy(bool), "method_label"].astype(object))
        jobs = figure_plan.plan(agg, name, fig_dir, run_dir, model_labels, method_order, baselines, facets, display_name)
        classification = _classification(ds_models, model_labels, agg.model_params, facets)
        corruption_tables = _corruption_tables(
            agg.model_per_seed[agg.model_per_seed["dataset_label"].astype(object) == name], model_labels)
        paired = agg.paired[agg.paired["dataset_label"].astype(object) == name]
        groups = agg.groups[agg.groups["dataset_label"].astype(object) == name]
        context = {
            "dataset": name, "views": views, "classification": classification, "corruption_tables": corruption_tables,
            "paired": _test_blocks(paired, facets),
            "groups": _test_blocks(groups, facets),
            "provenance": prov, "models": [
                {"label": m, "params": agg.model_params.get(m, {}),
                 "untrained": bool(agg.model_params.get(m, {}).get("untrained"))} for m in model_labels],
            "n_methods": int(ds_series["method_label"].nunique()),
            "seeds": int(ds_series["seeds"].max()) if len(ds_series) else int(ds_models["seeds"].max() or 0),
            "nav": nav,
        }
        pages.append({"name": name, "page": page, "methods": context["n_methods"], "models": len(model_labels),
                      "tables": sum(len(s["ranked"]) + len(s["descriptive"]) for s in views["all"]),
                      "leaders": _leaders(views["all"])})
        md_pages.append((name, views["all"], classification))
        planned.append((page, context, jobs))
    t = time.perf_counter()
    all_jobs = [j for _, _, jobs in planned for j in jobs]
    results = figure_plan.run(all_jobs, figure_plan.workers_for(len(frame), len(all_jobs), workers))
    timings["figures"] = time.perf_counter() - t
    for page, context, jobs in planned:
        context["figures"] = figure_plan.assemble(jobs, results[:len(jobs)], fig_dir)
        results = results[len(jobs):]
        (site / page).write_text(env.get_template("dataset.html").render(**context), encoding="utf-8")
    (site / "index.html").write_text(env.get_template("index.html").render(
        pages=pages, provenance=prov, rows=len(frame), run=prov["run"], nav=nav), encoding="utf-8")
    (site / "provenance.html").write_text(env.get_template("provenance.html").render(provenance=prov, nav=nav),
                                          encoding="utf-8")
    (site / "leaderboard.md").write_text(summary_markdown(md_pages, prov, len(frame)), encoding="utf-8")
    _exports(site, agg)
    (site / "provenance.json").write_text(json.dumps({k: v for k, v in prov.items() if k != "config_json"}
                                                     | {"config": json.loads(prov["config_json"]),
                                                        "rows": len(frame),
                                                        "build_seconds": timings | {
                                                            "total": time.perf_counter() - started}},
                                                     indent=2, default=str), encoding="utf-8")
    return site


def _page_names(datasets: list[str]) -> dict[str, str]:
    """``dataset-<slug>.html``, with a hash where two names share a slug."""
    slugs = [slug(d) for d in datasets]
    return {d: f"dataset-{s}.html" if slugs.count(s) == 1 else f"dataset-{s}-{content_hash(d)[:6]}.html"
            for d, s in zip(datasets, slugs)}


def _copy_static(site: Path) -> None:
    static = site / "static"
    static.mkdir(exist_ok=True)
    for name in ("style.css", "sort.js"):
        data = resources.files("xbench.leaderboard").joinpath("static", name).read_bytes()
        (static / name).write_bytes(data)


def _classification(ds_models: pd.DataFrame, models: list[str], params, facets) -> dict | None:
    """Model-level values (accuracy, AUROC, ΔAUC summaries …): rows = models, columns = values."""
    if ds_models.empty:
        return None
    cols = []
    for (metric, value), g in ds_models.groupby(["metric_label", "value_name"], observed=True, sort=True):
        hib = g["higher_is_better"].iloc[0]
        cols.append({"metric": str(metric), "value": str(value), "name": display_name(str(value), facets, str(metric)),
                     "hib": None if hib is pd.NA or hib is None else bool(hib),
                     "cells": {str(r["model_label"]): r for r in g.to_dict("records")}})
    cols.sort(key=lambda c: (c["value"] != "accuracy", c["metric"], c["value"]))
    kinds = family_kinds([c["value"] for c in cols])
    main = [c for c in cols if kinds.get(family_of(c["value"]) or "") != "categorical"]
    detail = [c for c in cols if kinds.get(family_of(c["value"]) or "") == "categorical"]

    def rows(columns):
        return [{"model": m, "baseline": bool(params.get(m, {}).get("untrained")),
                 "cells": [c["cells"].get(m) for c in columns]} for m in models if any(m in c["cells"] for c in columns)]

    return {"columns": main, "rows": rows(main), "detail_columns": detail, "detail_rows": rows(detail)}


def _corruption_tables(mps: pd.DataFrame, models: list[str]) -> list[dict]:
    """Model-level corruption families (ΔAUC, AUC …) as Treyer's tables: per model, corruption ×
    severity, mean over seeds."""
    if mps.empty:
        return []
    names = mps["value_name"].astype(str)
    kinds = family_kinds(names.unique())
    fam = names.map(family_of)
    keep = fam.map(lambda f: kinds.get(f) == "corruption" if isinstance(f, str) else False).to_numpy(bool)
    data = mps[keep].assign(family=fam[keep].to_numpy(),
                            corruption=[facets_of(v)[0] for v in names[keep]],
                            severity=[facets_of(v)[1] for v in names[keep]],
                            model=mps.loc[keep, "model_label"].astype(object).to_numpy(),
                            metric=mps.loc[keep, "metric_label"].astype(object).to_numpy())
    out = []
    for (metric, family), g in data.groupby(["metric", "family"], sort=True):
        means = g.groupby(["model", "corruption", "severity"])["mean"].mean()
        severities = sorted(g["severity"].unique(), key=natural_key)
        hib = g["higher_is_better"].iloc[0]
        for model in [m for m in models if m in set(g["model"])]:
            sub = means.loc[model]
            rows = [{"corruption": c, "cells": [sub.get((c, sv)) for sv in severities]}
                    for c in sorted(sub.index.get_level_values(0).unique())]
            out.append({"title": f"{metric} / {family} on {model}", "severities": severities, "rows": rows,
                        "hib": None if hib is pd.NA or hib is None else bool(hib),
                        "id": slug(f"{metric}-{family}-{model}")})
    return out


def _test_blocks(tests: pd.DataFrame, facets) -> list[dict]:
    """Statistical tests for display: one block per (view, metric), a row per comparison."""
    blocks = []
    if tests.empty:
        return blocks
    for (view, metric), g in tests.groupby(["view", "metric_label"], sort=True, observed=True):
        rows = _records(g)
        for r in rows:
            r["value_display"] = display_name(str(r["value_name"]), facets, str(metric))
        values = sorted({r["value_display"] for r in rows})
        blocks.append({"view": view, "title": f"{metric} ({len(values)} value{'s' if len(values) > 1 else ''}: "
                                              f"{', '.join(values[:6])}{', …' if len(values) > 6 else ''})",
                       "rows": rows, "id": slug(f"{view}-{metric}")})
    return blocks


def _leaders(sections: list[dict]) -> list[dict]:
    """For the index: the method with the best mean rank in each ranked table."""
    out = []
    for s in sections:
        for t in s["ranked"]:
            ranked = [r for r in t["rows"] if not r["baseline"] and math.isfinite(r["mean_rank"])]
            if ranked:
                out.append({"table": f"{t['metric']} / {t['name']} {t['direction']}", "method": ranked[0]["method"],
                            "mean_rank": ranked[0]["mean_rank"], "id": t["id"]})
    return out


def _exports(site: Path, agg: Aggregates) -> None:
    """The numbers behind the pages, for citation and re-analysis."""
    agg.series.to_csv(site / "summary.csv", index=False)
    agg.models.drop(columns=["row_baseline"], errors="ignore").to_csv(site / "models.csv", index=False)
    agg.paired.to_csv(site / "paired_tests.csv", index=False)
    agg.groups.to_csv(site / "group_tests.csv", index=False)
