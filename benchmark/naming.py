"""How a config, the registry and a claim find plugins and rows: by name, label or glob; and how a
stand-in dataset's label says what it stands in for.

One rule everywhere, so that a claim validated when the config is read selects the same rows when
it is evaluated: a pattern selects the texts (names, labels) equal to it when there are any, and
otherwise the texts it matches as a glob (``fnmatch.fnmatchcase``). Exact first, because labels
hold brackets (``small-cnn[untrained=true]``), which a glob reads as a set of characters.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

GLOB_CHARS = "*?["


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in GLOB_CHARS)


def select(pattern: str, texts: Iterable[str]) -> set[str]:
    """The texts ``pattern`` selects: those equal to it when there are any, else its glob matches."""
    texts = list(texts)
    exact = {t for t in texts if t == pattern}
    return exact or {t for t in texts if fnmatch.fnmatchcase(t, pattern)}


def select_any(patterns: str | Iterable[str], texts: Iterable[str]) -> set[str]:
    """The union of what each pattern selects (a single string is one pattern)."""
    texts = list(texts)
    out: set[str] = set()
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        out |= select(pattern, texts)
    return out


STAND_IN = re.compile(r"^(?P<stand_in>.*) \(stand-in for (?P<original>.*)\)$", re.S)


def stand_in_label(stand_in: str, original: str) -> str:
    """The label of a dataset variant that stands in for another whose real data is not here."""
    return f"{stand_in} (stand-in for {original})"


def stand_in_of(label: str) -> tuple[str, str] | None:
    """(stand-in, original) when ``label`` is a stand-in's label, else None."""
    m = STAND_IN.match(str(label))
    return (m["stand_in"], m["original"]) if m else None
