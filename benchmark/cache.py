"""Content-addressed caches for trained models and attribution maps.

Keys are hashes of everything that determines the artefact (spec name, version, params, seed,
dataset identity), so a cache never serves a stale result and can be shared between runs.
Checkpoints are plain state dicts, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from .specs import FitReport
from .atomic import atomic_write_bytes


class Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # models ---------------------------------------------------------------
    def _model_paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / "models"
        return folder / f"{key}.pt", folder / f"{key}.json"

    def load_model(self, key: str) -> tuple[dict[str, Any], FitReport] | None:
        import torch

        weights, report = self._model_paths(key)
        if not (weights.exists() and report.exists()):
            return None
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            info = json.loads(report.read_text())
        except Exception:  # a damaged entry is recomputed, never trusted
            return None
        return state, FitReport(history=info.get("history", []), metrics=info.get("metrics", {}))

    def save_model(self, key: str, state: dict[str, Any], report: FitReport, meta: dict[str, Any]) -> None:
        import torch

        weights, info = self._model_paths(key)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
        atomic_write_bytes(weights, buffer.getvalue())
        body = {"history": report.history, "metrics": report.metrics, **meta}
        atomic_write_bytes(info, json.dumps(body, indent=2, default=str).encode("utf-8"))

    # attributions ------------------------------------------------------------
    def _attribution_path(self, key: str) -> Path:
        return self.root / "attributions" / key[:2] / f"{key}.pt"

    def load_attribution(self, key: str) -> dict[str, Any] | None:
        """``{"maps": tensor, "seconds": float, "added_bytes": int | None, "memory": str | None}`` (what
        computing them cost, :mod:`xbench.costs`), or None. Entries from before costs were recorded
        read as costing nothing known, and those from before the memory was the method's own as
        adding nothing known."""
        import torch

        path = self._attribution_path(key)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None
        if isinstance(entry, torch.Tensor):
            return {"maps": entry, "seconds": None, "added_bytes": None}
        if not isinstance(entry, dict) or not isinstance(entry.get("maps"), torch.Tensor):
            return None
        return entry

    def save_attribution(self, key: str, tensor, cost: dict[str, Any] | None = None) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save({"maps": tensor.detach().cpu().contiguous(), **(cost or {})}, buffer)
        atomic_write_bytes(self._attribution_path(key), buffer.getvalue())

    # plugins' own artefacts ------------------------------------------------------
    def plugin_dir(self, name: str) -> Path:
        """Where a plugin may keep expensive intermediate artefacts across runs (``FitContext.cache_dir``)."""
        return self.root / "plugins" / name
