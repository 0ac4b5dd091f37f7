"""The leaderboard: aggregates, statistics, figures and the static site, built from a run's
Parquet results alone.

Never imports a plugin: everything it shows (names, directions, categories, params) is in the rows.
"""

from __future__ import annotations

from pathlib import Path


def build_leaderboard(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Build the site for ``run_dir`` into ``out`` (default ``run_dir/leaderboard``); return ``out``."""
    from .site import build

    return build(run_dir, out)


__all__ = ["build_leaderboard"]
