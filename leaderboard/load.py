"""Read a run's results for the leaderboard: only the columns it needs, strings as categoricals.

Why not ``xbench.store.load_results``: that returns every column as strings, which costs tens of
seconds and gigabytes on a run of millions of rows. Parquet already stores these columns
dictionary-encoded, so reading them as dictionaries keeps the frame small and grouping fast. The
same rule drops stale parts: only units of the run's current plan (``manifest.json`` ``units``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import DataError
from ..results import SCHEMA
from ..store import RunStore

COLUMNS = ["dataset_label", "model_label", "model_params", "model_untrained", "seed", "method_label", "method_params",
           "method_baseline", "metric_label", "value_name", "category", "higher_is_better", "scope", "sample",
           "correct", "value"]
TEXT = [c for c in COLUMNS if SCHEMA.field(c).type == pa.string()]


def result_files(run_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    files = sorted((run_dir / "results").glob("*.parquet"))
    planned = manifest.get("units")
    if planned is not None:
        keep = set(planned)
        files = [f for f in files if f.stem in keep]
    return files


def _check(path: Path) -> None:
    """Name the part that cannot be read, and say what to do about it."""
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # a foreign or damaged file in results/
        raise DataError(f"Cannot read result part {path}: {exc}. Every file in results/ must be a Parquet part "
                        "written by xbench (schema xbench.store.SCHEMA); move other files out of that folder, "
                        "or delete a damaged part so that `xbench run` recomputes it.") from exc
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(f"Result part {path} lacks the columns {missing}; it was not written by this version of "
                        "xbench. Re-run the run directory with the current xbench to rewrite it.")


def load_frame(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The run's rows (columns ``COLUMNS``; text as categoricals) and its manifest."""
    run_dir = Path(run_dir)
    manifest = RunStore(run_dir).read_manifest()
    files = result_files(run_dir, manifest)
    if not files:
        return SCHEMA.empty_table().select(COLUMNS).to_pandas(), manifest
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=TEXT))
    schema = pa.schema([pa.field(c, pa.dictionary(pa.int32(), pa.string()) if c in TEXT else SCHEMA.field(c).type)
                        for c in COLUMNS])
    try:
        table = ds.dataset([str(f) for f in files], format=fmt, schema=schema).to_table(columns=COLUMNS)
    except (pa.ArrowException, OSError):
        for f in files:
            _check(f)
        raise
    # text stays categorical (parts hold only values they use, so no empty categories); booleans
    # with nulls become pandas' nullable booleans straight from Arrow
    frame = table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    return frame, manifest


def parse_params(text: Any) -> dict[str, Any]:
    """A ``*_params`` column value (canonical JSON) as a dict; {} when missing or not JSON."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA:
        return {}
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
