"""The run directory: one Parquet part per unit of work, written atomically, plus the manifest.

Layout of a run directory::

    manifest.json            resolved config, versions, plan, device, timings, status
    results/<unit>.parquet   one part per (cell, method, metric); the unit key names the file
    errors/<unit>.json       units that failed, with phase, error and traceback
    gallery/<cell>/*.npz     the first test samples of each cell and every method's maps on them
    cache/                   trained models and attributions, by content hash
    leaderboard/             the static site

A part is written to a temporary file in the same folder, flushed to disk and renamed over its
final name, so a run killed at any point (SIGKILL included) leaves either a whole part or none,
and never two parts for one unit. Resuming skips every unit whose part is valid: readable, of the
current results schema, with the row count it recorded; anything else is computed again. Files
get the permissions the umask allows (a shared run directory stays readable by the team). What a
row means is :mod:`xbench.results`; this module only persists it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import CannotWrite, atomic_write_bytes, atomic_write_json
from .errors import UsageError, XbenchError
from .results import RESULTS_SCHEMA, ROWS_KEY, SCHEMA, schema_version, stamp, upgrade


class DamagedManifest(UsageError):
    """``manifest.json`` cannot be read as a run's manifest (cut short, edited, overwritten)."""


def check_writable(root: Path) -> None:
    """A usage error (exit 2) when ``root`` cannot be a run directory: it or a parent is a file,
    or it cannot be created or written."""
    root = Path(root)
    for parent in [root, *root.parents]:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"The run directory {str(root)!r} cannot be created: {str(parent)!r} is a file, not a "
                             "folder. Choose another --out (or run.out), or move that file away.")
        if parent.exists():
            break
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".xbench-write-check.", delete=True)
        probe.close()
    except OSError as exc:
        reason = "the file system is read-only" if exc.errno == errno.EROFS else exc.strerror or str(exc)
        raise UsageError(f"Cannot write the run directory {str(root)!r}: {reason}. Choose a writable --out "
                         "(or run.out).") from None


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.results = self.root / "results"
        self.errors = self.root / "errors"
        self.gallery = self.root / "gallery"
        self.manifest_path = self.root / "manifest.json"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for one run: a second ``xbench run`` on it at the same time would
        compute everything twice, so it is a usage error instead."""
        import fcntl

        check_writable(self.root)
        handle = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise UsageError(f"Another xbench run is writing to {str(self.root)!r} right now. Wait for it to finish "
                             "(it resumes the same units), or pass another --out.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def held(self) -> bool:
        """Whether a run holds this directory's lock right now (in this process or another). The
        kernel drops a dead process's lock, so a manifest that says ``running`` while nobody holds
        the lock belongs to a run that was killed, crashed (a segfault) or could not write its end."""
        import fcntl

        try:
            fd = os.open(self.root / ".lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: believe the manifest
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def prepare(self) -> None:
        for folder in (self.results, self.errors):
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):  # left by a killed writer; never a result
                stale.unlink(missing_ok=True)

    def done(self, units: Iterable[str] | None = None) -> set[str]:
        """Unit keys (of ``units``, default all) whose part is valid: readable, of the current results
        schema, and holding the row count it recorded. A damaged or outdated part does not count, so
        a resumed run computes it again."""
        wanted = None if units is None else set(units)
        out = set()
        for path in self.results.glob("*.parquet"):
            if wanted is not None and path.stem not in wanted:
                continue
            if part_is_valid(path):
                out.add(path.stem)
        return out

    def write_part(self, unit: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(stamp(table.cast(SCHEMA)), sink, compression="zstd")
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
        """The manifest (``{}`` when there is none). A ``running`` status whose run no longer holds
        the lock reads as ``stopped``: the run ended without recording how (see :meth:`held`).
        A manifest that is not a JSON object is a :class:`DamagedManifest` error saying what to do."""
        if not self.manifest_path.exists():
            return {}
        try:
            manifest = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise self._damaged(f"it is not valid JSON ({exc})") from None
        except OSError as exc:
            raise UsageError(f"Cannot read {str(self.manifest_path)!r}: {exc.strerror or exc}.") from None
        if not isinstance(manifest, dict):
            raise self._damaged(f"it holds a JSON {type(manifest).__name__}, not an object")
        if manifest.get("status") == "running" and not self.held():
            manifest["status"] = "stopped"
        return manifest

    def _damaged(self, reason: str) -> DamagedManifest:
        path = str(self.manifest_path)
        return DamagedManifest(
            f"The manifest of run {str(self.root)!r} is damaged: {reason}. The results in {str(self.results)!r} are "
            f"intact. To rebuild it, run the run's config into the same folder again (xbench run CONFIG --out "
            f"{str(self.root)!r}): it computes nothing that is already done and writes a new manifest (the damaged "
            f"one is kept as manifest.json.damaged). To read the results without it (no claims, no run status), "
            f"delete {path!r}.")

    def set_aside_manifest(self) -> Path:
        """Move a damaged manifest out of the way (``manifest.json.damaged``), for a run that rebuilds it."""
        target = self.manifest_path.with_name("manifest.json.damaged")
        os.replace(self.manifest_path, target)
        return target


def part_is_valid(path: Path) -> bool:
    """Whether a part can be read whole, was written by this results schema, and holds the rows its
    metadata recorded."""
    try:
        meta = pq.read_metadata(path)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a valid part
        return False
    kv = meta.metadata or {}
    if schema_version(kv) != RESULTS_SCHEMA:
        return False
    try:
        return ROWS_KEY in kv and int(kv[ROWS_KEY].decode()) == meta.num_rows
    except ValueError:
        return False


def read_part(path: Path) -> pa.Table:
    """A part in the current schema (parts of an older results schema are upgraded on reading)."""
    table = pq.read_table(path)
    if schema_version(table.schema.metadata) < RESULTS_SCHEMA:
        return upgrade(table)
    return table.select(SCHEMA.names).cast(SCHEMA).replace_schema_metadata(None)


def load_results(run_dir: str | os.PathLike, *, current_only: bool = True):
    """All result rows of a run as a pandas DataFrame (columns :data:`xbench.results.SCHEMA`).

    With ``current_only`` (default), rows of units that the run's latest plan no longer contains
    (e.g. after a config change in the same directory) are left out. Runs written by an older
    results schema are read and upgraded (resuming them recomputes their parts).
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
    table = pa.concat_tables([read_part(f) for f in files])
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
