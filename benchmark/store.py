"""The run directory: one Parquet part per unit of work, written atomically, plus the manifest.

Layout of a run directory::

    manifest.json            resolved config, versions, plan, device, timings
    results/<unit>.parquet   one part per (cell, method, metric); the unit key names the file
    errors/<unit>.json       units that failed, with phase, error and traceback
    gallery/<cell>/*.npz     the first test samples of each cell and every method's maps on them
    cache/                   trained models and attributions, by content hash
    leaderboard/             the static site

A part is written to a temporary file in the same folder, flushed to disk and renamed over its
final name, so a run killed at any point (SIGKILL included) leaves either a whole part or none,
and never two parts for one unit. Resuming skips every unit whose part exists.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("unit", pa.string()),
        ("dataset", pa.string()),
        ("dataset_label", pa.string()),
        ("dataset_version", pa.string()),
        ("dataset_params", pa.string()),
        ("model", pa.string()),
        ("model_label", pa.string()),
        ("model_version", pa.string()),
        ("model_params", pa.string()),
        ("seed", pa.int64()),
        ("method", pa.string()),
        ("method_label", pa.string()),
        ("method_version", pa.string()),
        ("method_params", pa.string()),
        ("metric", pa.string()),
        ("metric_label", pa.string()),
        ("metric_version", pa.string()),
        ("metric_params", pa.string()),
        ("value_name", pa.string()),
        ("category", pa.string()),
        ("higher_is_better", pa.bool_()),
        ("scope", pa.string()),
        ("baseline", pa.bool_()),
        ("target_mode", pa.string()),
        ("reduction", pa.string()),
        ("sample", pa.int64()),
        ("label", pa.int64()),
        ("prediction", pa.int64()),
        ("correct", pa.bool_()),
        ("target", pa.int64()),
        ("value", pa.float64()),
        ("note", pa.string()),
    ]
)
"""One row per (cell, method, metric value, sample); model-level rows have null method and sample."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.results = self.root / "results"
        self.errors = self.root / "errors"
        self.gallery = self.root / "gallery"
        self.manifest_path = self.root / "manifest.json"

    def prepare(self) -> None:
        for folder in (self.results, self.errors):
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):  # left by a killed writer; never a result
                stale.unlink(missing_ok=True)

    def done(self) -> set[str]:
        """Unit keys that already have a part."""
        return {p.stem for p in self.results.glob("*.parquet")}

    def write_part(self, unit: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table.cast(SCHEMA), sink, compression="zstd")
        atomic_write_bytes(self.results / f"{unit}.parquet", sink.getvalue().to_pybytes())
        (self.errors / f"{unit}.json").unlink(missing_ok=True)

    def write_gallery(self, cell_key: str, name: str, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        """``gallery/<cell>/<name>.npz``: numpy arrays plus a ``meta`` JSON string (no pickles)."""
        import numpy as np

        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(json.dumps(meta, default=str)), **arrays)
        atomic_write_bytes(self.gallery / cell_key / f"{name}.npz", buffer.getvalue())

    def write_error(self, unit: str, error: dict[str, Any]) -> None:
        atomic_write_json(self.errors / f"{unit}.json", error)

    def read_errors(self, units: Iterable[str] | None = None) -> list[dict[str, Any]]:
        wanted = set(units) if units is not None else None
        out = []
        for path in sorted(self.errors.glob("*.json")):
            if wanted is None or path.stem in wanted:
                out.append(json.loads(path.read_text()))
        return out

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text())


def load_results(run_dir: str | os.PathLike, *, current_only: bool = True):
    """All result rows of a run as a pandas DataFrame.

    With ``current_only`` (default), rows of units that the run's latest plan no longer contains
    (e.g. after a config change in the same directory) are left out.
    """
    import pandas as pd

    store = RunStore(run_dir)
    files = sorted(store.results.glob("*.parquet"))
    if current_only:
        planned = store.read_manifest().get("units")
        if planned is not None:
            keep = set(planned)
            files = [f for f in files if f.stem in keep]
    if not files:
        return SCHEMA.empty_table().to_pandas()
    table = pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
