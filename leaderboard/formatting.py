"""How numbers and plugin-provided text are written on the leaderboard, in every format.

One module that the HTML pages (as Jinja filters), the Markdown export and the CSV exports share,
so a number reads the same everywhere and every escaping rule lives in one place:

- :func:`md_escape` for Markdown (raw HTML neutralised, since GitHub renders it; table and emphasis
  syntax escaped); HTML is escaped by Jinja's autoescape and figures by ``draw.text``;
- :func:`csv_safe` for CSV: text cells that a spreadsheet would read as a formula (starting with
  ``=``, ``+``, ``-``, ``@``, tab or carriage return) get a leading ``'`` (OWASP, "CSV Injection");
  numeric columns are left as numbers; :func:`write_csv` also quotes every text cell, so a line
  break inside a label cannot split a row;
- :func:`natural_key`, the order of labels in tables and figures (degree 2 before 10).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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


def fmt_seconds(value) -> str:
    """An explanation time per sample: ``0.42 ms``, ``3.1 ms``, ``1.25 s``."""
    value = finite(value)
    if value is None:
        return "—"
    if value < 1:
        ms = value * 1000
        return f"{ms:.2g} ms" if ms < 10 else f"{ms:.0f} ms"
    return f"{value:.3g} s"


def fmt_bytes(value) -> str:
    """A peak memory: ``512 KiB``, ``1.5 GiB`` (binary units)."""
    value = finite(value)
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" or abs(value) >= 100 else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"  # pragma: no cover - the loop returns


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


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'``; anything else
    as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells cannot start a formula (:func:`csv_cell`); numeric
    and boolean columns are untouched, so numbers stay numbers."""
    out = frame.copy()
    for column in out.columns:
        col = out[column]
        if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            continue
        out[column] = col.astype(object).map(csv_cell)
    return out


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as CSV at ``path``: text made safe (:func:`csv_safe`) and quoted, numbers bare."""
    csv_safe(frame).to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)


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
