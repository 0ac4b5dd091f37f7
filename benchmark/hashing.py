"""Content hashes: the identity of everything that determines a cached artefact or a result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

SCHEMA_VERSION = 1
"""Bumped whenever the meaning of a cached artefact or a result row changes."""


def content_hash(value: Any, length: int = 16) -> str:
    """A short, stable hash of a JSON-able value (dict keys sorted)."""
    text = json.dumps({"schema": SCHEMA_VERSION, "value": value}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
