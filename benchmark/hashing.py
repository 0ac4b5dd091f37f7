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


def array_digest(*arrays: Any, length: int = 16) -> str:
    """A short hash of the values, dtypes and shapes of tensors or arrays (``None`` allowed), for
    identities that depend on data rather than on the params that made it."""
    import numpy as np

    digest = hashlib.sha256()
    for a in arrays:
        if a is None:
            digest.update(b"none")
            continue
        values = np.ascontiguousarray(a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a))
        digest.update(f"{values.dtype}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()[:length]
