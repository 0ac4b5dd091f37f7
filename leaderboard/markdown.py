"""The leaderboard as Markdown, for a README or a pull request: the run's status and findings
first, then per dataset its model-level values and one table per ranked value.

It renders the typed tables of :mod:`xbench.leaderboard.tables` and computes nothing of its own.
Every plugin- or data-provided string goes through :func:`~xbench.leaderboard.formatting.md_escape`:
HTML is neutralised (GitHub renders raw HTML in Markdown) and table and emphasis syntax is escaped.
"""

from __future__ import annotations

from typing import Any

from .formatting import fmt_bytes, fmt_number, fmt_seconds, md_escape
from .load import RunStatus
from .tables import DatasetPage, Findings, Score, ScoreTable
from .verification import Verification


def _interval(c: Score) -> str:
    return f" [{fmt_number(c.ci_low)}, {fmt_number(c.ci_high)}]" if c.has_ci else ""


def _cell(c: Score | None) -> str:
    if c is None:
        return "—"
    text = fmt_number(c.mean) + _interval(c)
    if c.has_rank:
        text = f"**{text}**" if c.best else text
        text += f" ({c.rank:g})"
    return text


def _mark(verified: Verification | None, kind: str, label: str) -> str:
    """" ✓" / " ✗" / " –" after a method or metric (nothing without a record)."""
    m = verified.marks.get((kind, label)) if verified else None
    return f" {m.symbol}" if m else ""


def _score_table(t: ScoreTable, verified: Verification | None = None) -> list[str]:
    heads = [md_escape(c.label) + (" *(untrained)*" if c.untrained else "") for c in t.columns]
    extra = ["time / sample", "memory added"] if t.costs else []
    metric = verified.metric(t.metric) if verified else None
    md = [f"### {md_escape(t.metric)}{_mark(verified, 'metrics', t.metric)} / {md_escape(t.name)} {t.direction}", "",
          *([f"*{md_escape(metric.title)}.*", ""] if metric else []),
          "| method | " + " | ".join(extra + heads) + " |", "|---|" + "---|" * (len(heads) + len(extra))]
    for r in t.rows:
        label = md_escape(r.method) + _mark(verified, "methods", r.method) + (" *(baseline)*" if r.baseline else "")
        costs = [fmt_seconds(r.cost.seconds if r.cost else None), fmt_bytes(r.cost.peak_bytes if r.cost else None)] \
            if t.costs else []
        md.append(f"| {label} | " + " | ".join(costs + [_cell(c) for c in r.cells]) + " |")
    return md + [""]


def _data_table(rows: list[dict[str, Any]]) -> list[str]:
    """What each dataset's cells read (``tables.DataRow`` as dicts): the Data table of the site."""
    if not rows:
        return []
    md = ["## Data", "", "| dataset | data | source | version | files read (checksum) | checksum is | licence |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| " + " | ".join(md_escape(x) for x in (r["dataset"], r["kind_text"], r["source"], r["version"],
                                                             "; ".join(r["checksums"]) or "—", r["verified"] or "—",
                                                             r["licence"])) + " |")
    return md + [""]


def findings_markdown(findings: Findings) -> str:
    """The run's findings as a Markdown section: a count line and one table row per claim ("" when
    the run states none)."""
    if not findings.rows:
        return ""
    counts = findings.counts
    md = ["## Findings", "", " · ".join(f"{n} {k}" for k, n in counts.items()), "",
          "| Claim | Data | Verdict | Measured | Published | Statistic | n | Reason |", "|---|---|---|---|---|---|---|---|"]
    for f in findings.rows:
        claim = f"**{md_escape(f.id)}**: {md_escape(f.claim)} ({md_escape(f.source)})"
        verdict = md_escape(f.verdict_text)
        verdict = f"**{verdict}**" if f.verdict != "inconclusive" else verdict
        md.append("| " + " | ".join([claim, md_escape(f.data), verdict, md_escape(f.measured), md_escape(f.published),
                                     md_escape(f.statistic), str(f.n), md_escape(f.reason)]) + " |")
    return "\n".join(md) + "\n"


def _glance(items: list[dict]) -> list[str]:
    """The rank heatmap as an image the Markdown links (a file beside it), with its caption."""
    return [line for f in items for line in (f"![{md_escape(f['title'])}]({f['src']})", "",
                                               f"*{md_escape(f['caption'])}*", "")]


def _verification(verified: Verification) -> list[str]:
    """Every method and metric of the run with its verification state and what it was checked against."""
    if verified.record is None:
        return ["## Verification", "", "No verification record for this run: `xbench verify --out "
                "RUN_DIR/verification` makes one.", ""]
    c = verified.counts
    md = ["## Verification", "", f"{c['verified']} verified (✓), {c['failed']} failed (✗), {c['not verified']} not "
          "verified (–) against independent implementations; the full record is `verification.json` and "
          "`verification.html` beside this file.", "", "| kind | plugin | state | against |", "|---|---|---|---|"]
    for m in verified.plugins:
        md.append(f"| {m.kind[:-1]} | {md_escape(m.name)} | {m.symbol} {m.state} | {md_escape(m.title)} |")
    return md + [""]


def summary_markdown(pages: list[DatasetPage], prov: dict[str, Any], rows: int, status: RunStatus,
                     findings: Findings, verified: Verification | None = None,
                     glances: dict[str, list[dict]] | None = None) -> str:
    """The run's status, the rank heatmap of every dataset (``glances``: dataset → figure items, ""
    → the index's), its findings (:func:`findings_markdown`),
    then per dataset: its heatmap, model-level values, and each ranked value's methods × models
    table on all test samples: mean [95% CI] (rank), the best in bold, baselines marked, with what
    explaining cost per method where the run recorded it and each method's and metric's
    verification mark; last, the verification of every method and metric."""
    glances = glances or {}
    md = [f"# xbench leaderboard: {md_escape(prov.get('run'))}", ""]
    md += [f"**{md_escape(status.headline)}**" if status.complete else f"> **Warning:** {md_escape(status.headline)}",
           ""]
    md += _glance(glances.get("", []))
    md += [md_escape(prov["about"]), ""] if prov.get("about") else []
    md += [findings_markdown(findings).rstrip("\n"), ""] if findings.rows else ["This run states no claims.", ""]
    md += ["Mean over seeds [95% bootstrap CI] (rank among non-baseline methods; 1 = best, in bold). "
           "All test samples; the site also shows correctly classified samples only, statistics, the agreement "
           "between metrics and figures.", ""]
    md += [md_escape(prov["costs"]), ""] if prov.get("costs") and any(
        t.costs for page in pages for section in page.views["all"] for t in section.ranked) else []
    md += _data_table(prov.get("data") or [])
    for page in pages:
        md += [f"## {md_escape(page.name)}", ""]
        md += _glance(glances.get(page.name, [])) if len(pages) > 1 else []
        table = page.classification.main if page.classification else None
        if table and table.rows:
            names = [c.name for c in table.columns]
            heads = [c.name if names.count(c.name) == 1 else c.heading for c in table.columns]
            md += ["| model | " + " | ".join(md_escape(h) for h in heads) + " |",
                   "|---|" + "---|" * len(table.columns)]
            for r in table.rows:
                label = md_escape(r.model) + (" *(untrained)*" if r.untrained else "")
                md.append(f"| {label} | " + " | ".join((fmt_number(c.mean) + _interval(c)) if c else "—"
                                                       for c in r.cells) + " |")
            md.append("")
        for section in page.views["all"]:
            for t in section.ranked:
                md += _score_table(t, verified)
    md += _verification(verified) if verified is not None else []
    md += ["", f"*{rows} result rows; xbench {md_escape(prov.get('xbench'))}, torch {md_escape(prov.get('torch'))}, "
               f"device {md_escape(prov.get('device'))}, {md_escape(prov.get('date'))}, "
               f"git {md_escape((prov.get('git') or '')[:12])}, config {md_escape(prov.get('config_source'))}.*", ""]
    return "\n".join(md)
