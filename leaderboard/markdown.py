"""The leaderboard as Markdown, for a README or a pull request: one table per ranked value.

Every plugin- or data-provided string goes through :func:`xbench.leaderboard.formatting.md_escape`:
HTML is neutralised (GitHub renders raw HTML in Markdown) and table and emphasis syntax is escaped.
"""

from __future__ import annotations

import math
from typing import Any

from .formatting import fmt_number, md_escape


def _num(value) -> str:
    return fmt_number(value)


def _cell(c: dict | None) -> str:
    if not c:
        return "—"
    text = _num(c["mean"])
    if math.isfinite(c.get("ci_low", float("nan"))):
        text += f" [{_num(c['ci_low'])}, {_num(c['ci_high'])}]"
    rank = c.get("rank")
    if rank is not None and math.isfinite(rank):
        text = f"**{text}**" if rank == 1 else text
        text += f" ({rank:g})"
    return text


def summary_markdown(pages: list[tuple[str, list[dict], dict | None]], prov: dict[str, Any], rows: int) -> str:
    """Per dataset: model-level values, then each ranked value's methods × models table on all
    test samples: mean [95% CI] (rank), the best in bold, baselines marked."""
    md = [f"# xbench leaderboard: {md_escape(prov.get('run'))}", "",
          "Mean over seeds [95% bootstrap CI] (rank among non-baseline methods; 1 = best, in bold). "
          "All test samples; the site also shows correctly classified samples only, statistics and figures.", ""]
    for name, sections, classification in pages:
        md += [f"## {md_escape(name)}", ""]
        if classification and classification["rows"]:
            cols = classification["columns"]
            names = [c["name"] for c in cols]
            heads = [c["name"] if names.count(c["name"]) == 1 else f"{c['metric']} / {c['name']}" for c in cols]
            md += ["| model | " + " | ".join(md_escape(h) for h in heads) + " |",
                   "|---|" + "---|" * len(cols)]
            for r in classification["rows"]:
                label = md_escape(r["model"]) + (" *(untrained)*" if r["baseline"] else "")
                md.append(f"| {label} | " + " | ".join(
                    (_num(c["mean"]) + (f" [{_num(c['ci_low'])}, {_num(c['ci_high'])}]"
                                        if math.isfinite(c["ci_low"]) else "")) if c else "—"
                    for c in r["cells"]) + " |")
            md.append("")
        for section in sections:
            for t in section["ranked"]:
                md += [f"### {md_escape(t['metric'])} / {md_escape(t['name'])} {t['direction']}", "",
                       "| method | " + " | ".join(md_escape(m) + (" *(untrained)*" if b else "")
                                                  for m, b in zip(t["models"], t["model_baseline"])) + " |",
                       "|---|" + "---|" * len(t["models"])]
                for r in t["rows"]:
                    label = md_escape(r["method"]) + (" *(baseline)*" if r["baseline"] else "")
                    md.append(f"| {label} | " + " | ".join(_cell(c) for c in r["cells"]) + " |")
                md.append("")
    md += ["", f"*{rows} result rows; xbench {md_escape(prov.get('xbench'))}, torch {md_escape(prov.get('torch'))}, "
               f"device {md_escape(prov.get('device'))}, {md_escape(prov.get('date'))}, "
               f"git {md_escape((prov.get('git') or '')[:12])}, config {md_escape(prov.get('config_source'))}.*", ""]
    return "\n".join(md)
