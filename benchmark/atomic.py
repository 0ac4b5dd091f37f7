"""Atomic file writes: readers see the old file or the whole new one, never a part.

Its own module, below everything that writes files (the result store, the caches, the data
sources' stamps), so that none of them has to import another to write safely.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import XbenchError


class CannotWrite(XbenchError):
    """A file of the run (a part, the manifest, a cache entry) could not be written, e.g. the disk is
    full: the run stops (it is not a plugin's failure), and what was written whole stays."""

    def __init__(self, path: Path, exc: OSError):
        self.path, self.reason = Path(path), exc.strerror or str(exc)
        self.full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        super().__init__(f"Could not write {str(self.path)!r}: {self.reason}.")



def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never part.
    The file gets mode 0666 less the umask, as an ordinary ``open`` would give it."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CannotWrite(path, exc) from exc
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))
