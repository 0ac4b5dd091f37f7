"""Shared by the loaders of real data: where the data lives, and how to say that it is not there.

A loader's ``root`` param wins; an empty ``root`` falls back to an environment variable, then to
the loader's source in the data root (:func:`xbench.sources.source_dir`), so a config can stay the
same on every machine. Errors always name the path, the expected layout and where to get the data
(the ``xbench data fetch`` command), in one paragraph.
"""

from __future__ import annotations

import os
from pathlib import Path

from xbench.errors import DataError


def resolve_root(root: str, env: str) -> Path | None:
    """``root`` if given, else ``$env`` if set, else None (the loader then reads its data source's folder)."""
    text = str(root or "").strip() or os.environ.get(env, "").strip()
    return Path(text).expanduser() if text else None


def data_error(dataset: str, path: Path | str, problem: str, layout: str, source: str) -> DataError:
    """A :class:`DataError` in the house style: what is wrong, where, what was expected, how to fix."""
    return DataError(
        f"{dataset}: {problem} (at {str(path)!r}). Expected layout: {layout}. {source}"
    )
