"""Errors that xbench reports to people, with the exit status each one means."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class XbenchError(Exception):
    """An error with a message written for the user. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(XbenchError):
    """Bad usage or configuration: nothing ran. Exit status 2."""

    exit_code = 2


class PluginConflictError(UsageError):
    """Two plugins provide the same name."""


class RunInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, SIGTERM): raised by the driver's signal handler, so a real
    interruption is told apart from a plugin that raises ``KeyboardInterrupt`` itself."""


class DataError(XbenchError):
    """Real data is missing or malformed: says which path, what layout was expected, and where to get it."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' when a close match exists, else ''."""
    matches = difflib.get_close_matches(str(word), sorted(set(choices)), n=3, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(f'"{m}"' for m in matches) + "?)"
