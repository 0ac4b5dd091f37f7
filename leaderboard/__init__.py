"""The leaderboard: aggregates, statistics and the static site, built from a run's Parquet results alone.

Never imports a plugin: everything it shows (names, directions, categories) is in the rows.
"""

from .site import build_leaderboard

__all__ = ["build_leaderboard"]
