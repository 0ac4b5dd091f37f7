"""The driver of a run: plan, skip what is done, hand cells to an executor, write what comes back.

Only the driver writes to the run directory, so every executor (in process or a cluster) gets the
same resume guarantees: a unit's part exists whole or not at all, and exists at most once.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .cell import CellJob, CellReport, GalleryItem, Status, UnitResult, UnitTask, use_registry, work
from .config import Config
from .devices import describe_device, resolve_device
from .plan import Plan, make_plan
from .registry import Registry
from .store import RunStore


@dataclass
class RunSummary:
    out: Path
    planned: int
    skipped_done: int
    computed: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    wall_seconds: float = 0.0
    plugin_seconds: float = 0.0
    leaderboard: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def default_out(config: Config) -> Path:
    if config.run.out:
        return Path(config.run.out)
    stem = config.source.split(":", 1)[1] if config.source.startswith("preset:") else Path(config.source).stem
    return Path("xbench-runs") / stem


def run(
    config: Config,
    registry: Registry,
    *,
    out: Path | None = None,
    on_event: Callable[[str, Any], None] = lambda kind, payload: None,
) -> RunSummary:
    """Run every unit of the plan that has no part yet. ``on_event(kind, payload)`` reports
    progress: ``start`` (units to compute), ``unit`` (a UnitResult), ``status`` (text), ``cell``."""
    started = time.perf_counter()
    out = Path(out or default_out(config))
    store = RunStore(out)
    store.prepare()
    plan = make_plan(config, registry)
    device = resolve_device(config.run.device)
    cache_dir = Path(config.run.cache) if config.run.cache else out / "cache"
    done = store.done()
    planned_keys = [u.key for u in plan.all_units]
    previous = store.read_manifest()
    manifest = _manifest(config, registry, plan, device, previous)
    manifest["threads"] = config.run.threads or _torch_threads()
    manifest["status"] = "running"
    store.write_manifest(manifest)

    executor_name = config.run.executor
    job_device = "cuda" if executor_name != "local" and device.type == "cuda" else str(device)
    options = config.run.model_dump()
    options["threads"] = config.run.threads or _torch_threads()
    jobs = []
    for cell in plan.cells:
        todo = tuple(UnitTask(u.key, u.method, u.metric) for u in plan.units[cell.key] if u.key not in done)
        if todo:
            jobs.append(CellJob(cell, todo, options, str(cache_dir), job_device))
    summary = RunSummary(out=out, planned=len(planned_keys), skipped_done=sum(k in done for k in planned_keys))
    on_event("start", {"units": sum(len(j.units) for j in jobs), "cells": len(jobs), "done": summary.skipped_done})

    cells: dict[str, Any] = dict(previous.get("cells", {}))
    timings: dict[str, float] = defaultdict(float)

    def deliver(message: Any) -> None:
        if isinstance(message, UnitResult):
            if message.error is not None:
                store.write_error(message.key, message.error)
                summary.failed.append(message.error)
            else:
                store.write_part(message.key, message.table)
                summary.rows += message.table.num_rows
                summary.computed += 1
            on_event("unit", message)
        elif isinstance(message, CellReport):
            cells[message.key] = {"title": message.title, "dataset_info": message.dataset_info, "fit": message.fit,
                                  "model_cached": message.model_cached, "timings": message.timings,
                                  "device": message.device}
            for name, seconds in message.timings.items():
                timings[name] += seconds
            on_event("cell", message)
        elif isinstance(message, GalleryItem):
            store.write_gallery(message.cell_key, message.name, message.arrays, message.meta)
        elif isinstance(message, Status):
            on_event("status", message.text)

    executor = registry.get("executors", executor_name).spec.create(
        {"scheduler": config.run.scheduler, "workers": config.run.workers, "device": str(device)})
    use_registry(registry)
    try:
        executor.run(jobs, work, deliver)
    finally:
        use_registry(None)
        executor.close()
        summary.wall_seconds = time.perf_counter() - started
        plugin = sum(v for k, v in timings.items() if k != "total")
        summary.plugin_seconds = plugin
        manifest.update(
            status="complete" if not summary.failed else "failed units",
            finished=_now(),
            cells=cells,
            timings={"wall_seconds": summary.wall_seconds, "plugin_seconds": dict(timings),
                     "plugin_total_seconds": plugin,
                     "overhead_fraction": (summary.wall_seconds - plugin) / summary.wall_seconds
                     if summary.wall_seconds and jobs else None},
            failed=[{k: v for k, v in e.items() if k != "traceback"} for e in summary.failed],
            counts={"planned": summary.planned, "already_done": summary.skipped_done,
                    "computed": summary.computed, "failed": len(summary.failed)},
        )
        store.write_manifest(manifest)
    return summary


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_hash(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _manifest(config: Config, registry: Registry, plan: Plan, device, previous: dict[str, Any]) -> dict[str, Any]:
    from . import __version__

    used = defaultdict(list)
    for kind, variants in config.variants.items():
        for name in sorted({v.name for v in variants}):
            entry = registry.get(kind, name)
            used[kind].append({"name": name, "version": entry.version, "plugin": entry.plugin.name,
                               "distribution": entry.plugin.distribution,
                               "distribution_version": entry.plugin.version,
                               "description": getattr(entry.spec, "description", "")})
    return {
        "xbench_version": __version__,
        "started": _now(),
        "first_started": previous.get("first_started") or previous.get("started") or _now(),
        "config": config.as_dict(),
        "versions": {name: _version(name) for name in
                     ("torch", "torchvision", "numpy", "captum", "zennit", "pandas", "pyarrow", "pluggy")}
        | {"python": platform.python_version()},
        "plugins": [p.as_dict() for p in registry.plugins],
        "specs": dict(used),
        "device": describe_device(device),
        "git": {"cwd": _git_hash(Path.cwd()), "xbench": _git_hash(Path(__file__).resolve().parent)},
        "argv": sys.argv,
        "host": platform.node() if os.environ.get("XBENCH_RECORD_HOST") else None,
        "units": [u.key for u in plan.all_units],
        "skipped": [s.__dict__ for s in plan.skipped],
        "cells": previous.get("cells", {}),
    }
