"""What travels between the driver and the cells: the jobs it hands out and the messages a cell
delivers back. Plain, picklable data, so an executor can send them to another process or machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .config import RunOptions, Variant
from .plan import Cell
from .results import GalleryItem

__all__ = ["CellJob", "CellReport", "GalleryItem", "Status", "UnitResult", "UnitTask"]


@dataclass(frozen=True)
class UnitTask:
    """One unit to compute in a cell: a method (None for model-level metrics) and a metric."""

    key: str
    method: Variant | None
    metric: Variant


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run a cell."""

    cell: Cell
    units: tuple[UnitTask, ...]
    run: RunOptions
    cache_dir: str
    device: str


@dataclass
class UnitResult:
    """A unit's rows, or its error (a dict with phase, error and traceback)."""

    key: str
    table: pa.Table | None = None
    error: dict[str, Any] | None = None


@dataclass
class CellReport:
    """Facts about a finished cell for the manifest: data facts, training report, timings, costs, and
    the seconds each metric took (over every method): which metrics a preset spends its time on."""

    key: str
    title: str
    dataset_info: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    model_cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    device: str = ""
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Status:
    """A progress note from inside a cell: ``phase`` (load, fit, explain …) and a line of text."""

    text: str
    phase: str = ""
