"""Render the static leaderboard: an index (the run's status and findings first), one page per
dataset, a provenance page, figures, CSV exports and a Markdown summary.

The tables come from :mod:`xbench.leaderboard.tables` (built once, read by the templates and the
Markdown renderer alike), the figures from :mod:`xbench.leaderboard.figure_plan` (planned) and
:mod:`xbench.leaderboard.draw` (drawn), the findings from :mod:`xbench.leaderboard.findings`.

Every string that comes from a plugin or from data is escaped (Jinja2 autoescape for HTML,
:func:`~xbench.leaderboard.formatting.md_escape` for Markdown, ``draw.text`` in figures, and
:func:`~xbench.leaderboard.formatting.write_csv` against spreadsheet formulas in CSV). The site
needs no server: relative links, one small script, figures as files.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from ..hashing import content_hash
from . import figure_plan, tables
from .aggregate import Aggregates, aggregate
from .findings import evaluate
from .formatting import data_value, fmt_bytes, fmt_number, fmt_p, fmt_rank, fmt_seconds, slug, write_csv
from .load import load_run
from .markdown import summary_markdown
from .verification import Verification, load_record, record_path, verification


def _env() -> Environment:
    env = Environment(loader=PackageLoader("xbench.leaderboard", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(num=fmt_number, p=fmt_p, rank=fmt_rank, dv=data_value, slug=slug, seconds=fmt_seconds,
                       bytes=fmt_bytes)
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
        "about": (config.get("run") or {}).get("about") or "",
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
        "costs": tables.cost_note(manifest),
        "data": [vars(r) for r in tables.data_rows(manifest)],
    }


# ----------------------------------------------------------------------------- build

def build(run_dir: str | Path, out: str | Path | None = None, *, resamples: int | None = None,
          workers: int | None = None, record: str | Path | None = None) -> Path:
    """Build the site for ``run_dir`` into ``out`` (default ``run_dir/leaderboard``); return ``out``.
    ``workers``: processes that draw the figures (default: one per core on large runs). ``record``:
    the verification record (default ``run_dir/verification/verification.json``, where
    ``xbench verify --out RUN_DIR/verification`` writes it), shown beside every method and metric.
    A UsageError when ``run_dir`` is not a run directory."""
    started = time.perf_counter()
    run = load_run(run_dir)
    run_dir = Path(run_dir)
    frame, manifest, status = run.frame, run.manifest, run.status
    site = Path(out) if out else run_dir / "leaderboard"
    site.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {"load": time.perf_counter() - started}
    agg = aggregate(frame) if resamples is None else aggregate(frame, resamples=resamples)
    timings["aggregate"] = time.perf_counter() - started - timings["load"]
    t = time.perf_counter()
    claims = manifest.get("claims") or []
    verdicts = evaluate(frame, claims) if claims else []
    findings = tables.findings(verdicts)
    timings["findings"] = time.perf_counter() - t
    prov = provenance(manifest, run_dir)
    record_file = Path(record) if record else record_path(run_dir)
    verified = verification(load_record(record_file), _labels(frame), _spec_versions(manifest),
                            source=str(record_file))
    env = _env()
    _copy_static(site)
    fig_dir = site / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    for old in site.glob("dataset-*.html"):
        old.unlink()

    datasets = sorted({str(d) for d in agg.series["dataset_label"].astype(object)} |
                      {str(d) for d in agg.models["dataset_label"].astype(object)}) if len(frame) else []
    names = tables.Names.of(agg, manifest)
    page_of = _page_names(datasets)
    nav = [{"name": n, "page": page_of[n]} for n in datasets]
    common = {"provenance": prov, "nav": nav, "status": status, "verified": verified}
    pages, planned = [], []
    for name in datasets:
        page = tables.dataset_page(agg, name, page_of[name], names)
        jobs = figure_plan.plan(agg, name, fig_dir, run_dir, [m.label for m in page.models], page.method_order,
                                page.baselines, names)
        panel = figure_plan.glance_panel(page, verified)
        if panel:
            jobs.insert(0, figure_plan.glance_job([panel], fig_dir, [name, "glance"], verified))
        pages.append(page)
        planned.append((page, jobs))
    t = time.perf_counter()
    panels = [p for p in (figure_plan.glance_panel(page, verified) for page in pages) if p]
    index_jobs = [figure_plan.glance_job(panels, fig_dir, ["index", "glance"], verified)] if panels else []
    all_jobs = [j for _, jobs in planned for j in jobs] + index_jobs
    results = figure_plan.run(all_jobs, figure_plan.workers_for(len(frame), len(all_jobs), workers))
    timings["figures"] = time.perf_counter() - t
    index_figures = figure_plan.assemble(index_jobs, results[len(results) - len(index_jobs):], fig_dir)
    results = results[:len(results) - len(index_jobs)]
    glances = {"": index_figures["glance"]}
    for page, jobs in planned:
        figures = figure_plan.assemble(jobs, results[:len(jobs)], fig_dir)
        results = results[len(jobs):]
        glances[page.name] = figures["glance"]
        (site / page.page).write_text(env.get_template("dataset.html").render(p=page, figures=figures, **common),
                                      encoding="utf-8")
    (site / "index.html").write_text(env.get_template("index.html").render(
        pages=pages, rows=len(frame), run=prov["run"], about=prov["about"], findings=findings, claims=bool(claims),
        glance=glances[""], **common), encoding="utf-8")
    (site / "provenance.html").write_text(env.get_template("provenance.html").render(**common), encoding="utf-8")
    (site / "verification.html").write_text(env.get_template("verification.html").render(**common), encoding="utf-8")
    _copy_record(site, verified)
    (site / "leaderboard.md").write_text(summary_markdown(pages, prov, len(frame), status,
                                                          findings, verified, glances),
                                         encoding="utf-8")
    _exports(site, agg, findings)
    (site / "provenance.json").write_text(json.dumps({k: v for k, v in prov.items() if k != "config_json"}
                                                     | {"config": json.loads(prov["config_json"]),
                                                        "rows": len(frame),
                                                        "run_status": {"status": status.status,
                                                                       "complete": status.complete,
                                                                       "planned": status.planned,
                                                                       "present": status.present,
                                                                       "missing": status.missing,
                                                                       "failed": status.failed},
                                                        "findings": [v.to_dict() for v in verdicts],
                                                        "build_seconds": timings | {
                                                            "total": time.perf_counter() - started}},
                                                     indent=2, default=str), encoding="utf-8")
    return site


def _labels(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
    """kind → {label: plugin name} of the run's methods and metrics, from the rows."""
    out: dict[str, dict[str, str]] = {"methods": {}, "metrics": {}}
    if not len(frame):
        return out
    for kind, label, name in (("methods", "method_label", "method"), ("metrics", "metric_label", "metric")):
        pairs = frame[[label, name]].astype(object).dropna().drop_duplicates()
        out[kind] = {str(a): str(b) for a, b in pairs.itertuples(index=False)}
    return out


def _spec_versions(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """kind → {plugin name: spec version} that the run used (from the manifest)."""
    return {kind: {str(e.get("name")): str(e.get("version")) for e in entries if e.get("version") is not None}
            for kind, entries in (manifest.get("specs") or {}).items()}


def _copy_record(site: Path, verified: Verification) -> None:
    """The record beside the pages (the site links it), or no stale copy of an older one."""
    target = site / "verification.json"
    if verified.record is None:
        target.unlink(missing_ok=True)
    else:
        target.write_text(json.dumps(verified.record, indent=2), encoding="utf-8")


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


def _exports(site: Path, agg: Aggregates, findings: tables.Findings) -> None:
    """The numbers behind the pages, for citation and re-analysis; text cells made safe for
    spreadsheets (no formulas), numbers left as numbers."""
    frames = {"summary.csv": agg.series, "models.csv": agg.models, "paired_tests.csv": agg.paired,
              "group_tests.csv": agg.groups, "costs.csv": agg.costs, "reliability.csv": agg.reliability,
              "findings.csv": pd.DataFrame([vars(r) for r in findings.rows],
                                           columns=list(tables.Finding.__dataclass_fields__))}
    for name, frame in frames.items():
        write_csv(frame, site / name)
