"""Render the static leaderboard: an index, one page per dataset, and a Markdown summary.

Every string that comes from a plugin or from data is escaped (Jinja2 autoescape for HTML,
:func:`md_escape` for Markdown). The site needs no server and works from ``file://``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from ..store import RunStore, load_results
from .aggregate import summarise, summarise_models


def _env() -> Environment:
    env = Environment(loader=PackageLoader("xbench.leaderboard", "templates"),
                      autoescape=select_autoescape(["html"], default=True))
    env.filters["num"] = fmt_number
    return env


def fmt_number(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(value):
        return "—"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def md_escape(text) -> str:
    """Escape a string for a Markdown table cell (and neutralise raw HTML)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\|`*_\[\]])", r"\\\1", s).replace("\n", " ")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "dataset"


def _tables(summary: pd.DataFrame) -> list[dict]:
    """One table per (metric, value): rows = methods, columns = models."""
    tables = []
    if summary.empty:
        return tables
    for (metric, value), group in summary.groupby(["metric_label", "value_name"], sort=True):
        models = sorted(group["model_label"].unique())
        hib = group["higher_is_better"].iloc[0]
        rows = []
        for method, mrows in group.groupby("method_label", sort=True):
            cells = {r.model_label: r for r in mrows.itertuples()}
            rows.append({"method": method, "baseline": bool(mrows["baseline"].any()),
                         "cells": [cells.get(m) for m in models]})
        tables.append({"metric": metric, "value": value, "models": models, "rows": rows,
                       "direction": "↑" if hib is True else ("↓" if hib is False else ""),
                       "category": group["category"].iloc[0], "ci_over": group["ci_over"].iloc[0]})
    return tables


def build_leaderboard(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Build the site for ``run_dir`` into ``out`` (default ``run_dir/leaderboard``); return ``out``."""
    run_dir = Path(run_dir)
    site = Path(out) if out else run_dir / "leaderboard"
    site.mkdir(parents=True, exist_ok=True)
    df = load_results(run_dir)
    manifest = RunStore(run_dir).read_manifest()
    env = _env()
    provenance = {
        "xbench": manifest.get("xbench_version"), "torch": manifest.get("versions", {}).get("torch"),
        "device": manifest.get("device", {}).get("gpu") or manifest.get("device", {}).get("device"),
        "date": manifest.get("finished") or manifest.get("started"), "git": (manifest.get("git") or {}).get("cwd"),
        "config": (manifest.get("config") or {}).get("source"),
        "plugins": [(p["name"], p.get("version"), p.get("distribution")) for p in manifest.get("plugins", [])],
    }
    datasets = sorted(df["dataset_label"].dropna().unique()) if not df.empty else []
    pages, md = [], [f"# xbench leaderboard: {md_escape(provenance['config'] or run_dir.name)}", ""]
    all_summary = summarise(df)
    correct_summary = summarise(df, correct_only=True)
    model_summary = summarise_models(df)
    for name in datasets:
        page = f"dataset-{slug(name)}.html"
        pick = lambda s: s[s["dataset_label"] == name] if not s.empty else s  # noqa: E731
        tables = _tables(pick(all_summary))
        context = {"dataset": name, "tables": tables, "correct_tables": _tables(pick(correct_summary)),
                   "models": pick(model_summary).to_dict("records"), "provenance": provenance}
        (site / page).write_text(env.get_template("dataset.html").render(**context), encoding="utf-8")
        pages.append({"name": name, "page": page, "tables": len(tables)})
        md += [f"## {md_escape(name)}", ""]
        for t in tables:
            md += [f"### {md_escape(t['metric'])} / {md_escape(t['value'])} {t['direction']}", "",
                   "| method | " + " | ".join(md_escape(m) for m in t["models"]) + " |",
                   "|---|" + "---|" * len(t["models"])]
            for r in t["rows"]:
                label = md_escape(r["method"]) + (" *(baseline)*" if r["baseline"] else "")
                cells = [f"{fmt_number(c.mean)} [{fmt_number(c.ci_low)}, {fmt_number(c.ci_high)}]" if c else "—"
                         for c in r["cells"]]
                md.append(f"| {label} | " + " | ".join(cells) + " |")
            md.append("")
    (site / "index.html").write_text(env.get_template("index.html").render(
        pages=pages, provenance=provenance, rows=len(df), run=run_dir.name), encoding="utf-8")
    md += ["", f"*{len(df)} result rows; xbench {md_escape(provenance['xbench'])}, torch {md_escape(provenance['torch'])}, "
               f"device {md_escape(provenance['device'])}, {md_escape(provenance['date'])}.*", ""]
    (site / "leaderboard.md").write_text("\n".join(md), encoding="utf-8")
    (site / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str), encoding="utf-8")
    return site
