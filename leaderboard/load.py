"""Read a run for the leaderboard: its manifest, and only the result columns it needs, with text
as categoricals.

Why not ``xbench.store.load_results``: that returns every column as strings, which costs tens of
seconds and gigabytes on a run of millions of rows. Parquet already stores these columns
dictionary-encoded, so reading them as dictionaries keeps the frame small and grouping fast. The
same rule drops stale parts: only units of the run's current plan (``manifest.json`` ``units``).
Parts of an older results schema are upgraded by the core's own rule (``xbench.store.read_part``).

Also here: what the manifest says about the run that the rows cannot (:class:`RunStatus`: how it
ended, what is missing; :func:`family_axes`: what a family's facets are called).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import DataError, UsageError
from ..results import RESULTS_SCHEMA, SCHEMA, schema_version
from ..store import RunStore, read_part

NOT_READ = ("unit", "dataset_version", "model_version", "method_version", "metric_version", "dataset_params",
            "metric_params", "target_mode", "reduction", "label", "prediction", "target", "note")
"""Result columns the site never shows (provenance and per-sample details); it reads every other
column of :data:`xbench.results.SCHEMA`, so a new column reaches it without an edit here."""
COLUMNS = [name for name in SCHEMA.names if name not in NOT_READ]
TEXT = [c for c in COLUMNS if SCHEMA.field(c).type == pa.string()]


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or a UsageError saying why it is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UsageError(f"{run_dir} does not exist. Pass the run directory that `xbench run` wrote "
                         "(its --out, or [run] out in the config).")
    if not run_dir.is_dir() or not ((run_dir / "manifest.json").is_file() or (run_dir / "results").is_dir()):
        raise UsageError(f"{run_dir} is not an xbench run directory: it has no manifest.json and no results/ "
                         "folder. Pass the directory that `xbench run` wrote (its --out, or [run] out in the "
                         "config).")
    return run_dir


def result_files(run_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    files = sorted((run_dir / "results").glob("*.parquet"))
    planned = manifest.get("units")
    if planned is not None:
        keep = set(planned)
        files = [f for f in files if f.stem in keep]
    return files


def _part_schema(path: Path) -> int:
    """The results schema a part was written with; a DataError naming a part that cannot be read."""
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # a foreign or damaged file in results/
        raise DataError(f"Cannot read result part {path}: {exc}. Every file in results/ must be a Parquet part "
                        "written by xbench (schema xbench.results.SCHEMA); move other files out of that folder, "
                        "or delete a damaged part so that `xbench run` recomputes it.") from exc
    version = schema_version(schema.metadata)
    missing = [c for c in COLUMNS if c not in schema.names]
    if version >= RESULTS_SCHEMA and missing:
        raise DataError(f"Result part {path} lacks the columns {missing}; it was not written by this version of "
                        "xbench. Re-run the run directory with the current xbench to rewrite it.")
    return version


@dataclass
class Run:
    """A run as the leaderboard reads it: its rows, its manifest, and how it ended."""

    frame: pd.DataFrame
    manifest: dict[str, Any]
    status: RunStatus


SCHEMA_READ = pa.schema([pa.field(c, pa.dictionary(pa.int32(), pa.string()) if c in TEXT else SCHEMA.field(c).type)
                         for c in COLUMNS])


def _read(files: list[Path]) -> pa.Table:
    """The parts' ``COLUMNS`` as one table (text dictionary-encoded). Parts of an older results
    schema lack ``model_untrained``, which every current row has, so they show up as its nulls: only
    then are the parts' own schemas read, to upgrade those (and to name a damaged part)."""
    if not files:
        return SCHEMA_READ.empty_table()
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=TEXT))
    try:
        table = ds.dataset([str(f) for f in files], format=fmt, schema=SCHEMA_READ).to_table(columns=COLUMNS)
    except (pa.ArrowException, OSError):
        for f in files:
            _part_schema(f)  # raises a DataError naming the part that cannot be read
        raise
    if not table.column("model_untrained").null_count:
        return table
    versions = [_part_schema(f) for f in files]
    current = [f for f, v in zip(files, versions) if v >= RESULTS_SCHEMA]
    tables = [ds.dataset([str(f) for f in current], format=fmt, schema=SCHEMA_READ).to_table(columns=COLUMNS)] \
        if current else []
    tables += [read_part(f).select(COLUMNS).cast(SCHEMA_READ) for f, v in zip(files, versions) if v < RESULTS_SCHEMA]
    return pa.concat_tables(tables)


def load_run(run_dir: str | Path) -> Run:
    """The run's rows (columns ``COLUMNS``; text as categoricals), manifest and status. A
    UsageError when ``run_dir`` is not a run directory."""
    run_dir = check_run_dir(run_dir)
    manifest = RunStore(run_dir).read_manifest()
    files = result_files(run_dir, manifest)
    table = _read(files)
    # text stays categorical (parts hold only values they use, so no empty categories); booleans
    # with nulls become pandas' nullable booleans straight from Arrow
    frame = table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    return Run(frame, manifest, run_status(manifest, len(files)))


def load_frame(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The run's rows (columns ``COLUMNS``; text as categoricals) and its manifest."""
    run = load_run(run_dir)
    return run.frame, run.manifest


def parse_params(text: Any) -> dict[str, Any]:
    """A ``*_params`` column value (canonical JSON) as a dict; {} when missing or not JSON."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA:
        return {}
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ----------------------------------------------------------------------------- the manifest

@dataclass(frozen=True)
class FamilyAxes:
    """What a family's facets are called (``corruption``, ``severity``, ``step``, ``region``), from
    the metric's declaration in the manifest; generic names where the manifest does not say."""

    facet: str = "facet"
    level: str = "level"

    def over(self, kind: str | None) -> str:
        """What a summary of this kind averages over: "corruption × severity", "step"."""
        return {"grid": f"{self.facet} × {self.level}", "curve": self.level, "categorical": self.facet,
                "per-facet": self.level}.get(kind or "", "")


def family_axes(manifest: dict[str, Any]) -> dict[tuple[str, str], FamilyAxes]:
    """(metric name, family name as in the rows) → its facet names, from ``specs.metrics[*].families``."""
    out = {}
    for entry in (manifest.get("specs") or {}).get("metrics") or []:
        for key, fam in (entry.get("families") or {}).items():
            if isinstance(fam, dict):
                out[(str(entry.get("name")), str(fam.get("name") or key))] = FamilyAxes(
                    str(fam.get("facet") or "facet"), str(fam.get("level") or "level"))
    return out


STATUS_TEXT = {
    "complete": "complete",
    "failed units": "incomplete: some units failed",
    "interrupted": "interrupted before it finished",
    "crashed": "crashed before it finished",
    "running": "still running",
    "stopped": "stopped without recording how it ended (killed, crashed or out of disk space)",
}


@dataclass
class RunStatus:
    """How the run ended and what is missing, as every page states it: a run that is not complete
    must not look complete. ``missing`` counts the planned units whose part is not on disk."""

    status: str
    planned: int | None
    present: int
    missing: int
    failed: int
    counts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status == "complete" and self.missing == 0

    @property
    def level(self) -> str:
        """``ok`` or ``warning`` (for styling)."""
        return "ok" if self.complete else "warning"

    @property
    def headline(self) -> str:
        """One sentence: "Run complete: all 120 planned units have results." or what is wrong."""
        state = STATUS_TEXT.get(self.status, f"status {self.status!r}") if self.status else "status not recorded"
        planned = f"{self.planned}" if self.planned is not None else "?"
        if self.complete:
            return f"Run complete: all {planned} planned units have results."
        parts = [f"{self.present} of {planned} planned units have results"]
        if self.missing:
            parts.append(f"{self.missing} missing")
        if self.failed:
            parts.append(f"{self.failed} failed")
        return (f"Run {state}: " + ", ".join(parts) + ". The numbers below cover only the units that finished; "
                "comparisons may be missing methods, models or seeds.")


def run_status(manifest: dict[str, Any], present: int) -> RunStatus:
    counts = dict(manifest.get("counts") or {})
    units = manifest.get("units")
    planned = len(units) if units is not None else counts.get("planned")
    # what is on disk decides: a unit is missing when its part is (the manifest's count may be stale)
    missing = int(planned) - present if planned is not None else int(counts.get("missing") or 0)
    failed = int(counts.get("failed") or len(manifest.get("failed") or []))
    status = manifest.get("status")
    if status == "complete" and missing:
        status = "failed units"  # the manifest says complete, but parts are gone: say so
    return RunStatus(status=str(status) if status else "", planned=planned, present=present, missing=missing,
                     failed=failed, counts=counts, warnings=[str(w) for w in manifest.get("warnings") or []])
