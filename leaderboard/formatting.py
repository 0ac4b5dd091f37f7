"""How numbers and plugin-provided text are written on the leaderboard, in every format.

One module that the HTML pages (as Jinja filters) and the Markdown export share, so a number reads
the same everywhere and every escaping rule lives in one place:

- :func:`md_escape` for Markdown (raw HTML neutralised, since GitHub renders it; table and emphasis
  syntax escaped); HTML is escaped by Jinja's autoescape and figures by ``draw.text``;
- :func:`natural_key`, the order of labels in tables and figures (degree 2 before 10).
"""

from __future__ import annotations

import math
import re
from typing import Any

def finite(value) -> float | None:
    """``value`` as a finite float, or None (missing, NaN, infinite, not a number)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt_number(value) -> str:
    value = finite(value)
    if value is None:
        return "—"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.1f}"
    if a != 0 and a < 0.001:
        return f"{value:.2e}"
    return f"{value:.3f}"


def fmt_p(value) -> str:
    value = finite(value)
    if value is None:
        return "—"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def fmt_rank(value) -> str:
    value = finite(value)
    return "" if value is None else f"{value:g}"


def data_value(value) -> str:
    """The ``data-v`` attribute the sorting script reads ("" for missing)."""
    value = finite(value)
    return "" if value is None else repr(value)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def md_escape(text: Any) -> str:
    """Escape a string for a Markdown table cell (and neutralise raw HTML)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\|`*_\[\]#!~])", r"\\\1", s).replace("\r", " ").replace("\n", " ")


def natural_key(value) -> tuple:
    """Sort 1, 2, 10, "all" and layer1.0.conv2 < layer2.0.conv2 the way people expect; layer
    positions shallow to deep: "#0" < "#1" < … < "#-2" < "#-1" (counted from the deep end) < ""
    (the deepest by default)."""
    position = re.fullmatch(r"#(-?\d+)", str(value))
    if position:
        k = int(position.group(1))
        return ((-1, 0 if k >= 0 else 1, k, ""),)
    if str(value) == "":
        return ((-1, 2, 0, ""),)
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return tuple((0, float(p), "") if re.fullmatch(r"\d+(?:\.\d+)?", p) else (1, 0.0, p) for p in parts if p)
