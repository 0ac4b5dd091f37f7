"""The driver of a run: plan, skip what is done, hand cells to an executor, write what comes back.

Only the driver writes to the run directory, so every executor (in process or a cluster) gets the
same resume guarantees: a unit's part exists whole or not at all, and exists at most once. The
manifest's ``status`` says truthfully how the run ended: ``complete`` (every planned unit has its
part), ``failed units`` (the run went through, some units failed), ``interrupted`` (Ctrl-C or
SIGTERM) or ``crashed`` (xbench itself failed, or a file could not be written: a full disk), with
the counts of what is done and missing. A run that dies without a word (SIGKILL, a segfault in a
plugin) cannot write its end; its manifest still says ``running`` while no process holds the run's
lock, and every reader (:meth:`RunStore.read_manifest`) reports it as ``stopped``; the next run
says so, with the Python stack of a crash from ``crash.log`` (``faulthandler`` writes it there).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .cell import work
from .config import Config
from .devices import describe_device, resolve_device
from .errors import RunInterrupted, XbenchError
from .messages import CellJob, CellReport, GalleryItem, Status, UnitResult, UnitTask
from .plan import Plan, make_plan
from .registry import Registry
from .atomic import CannotWrite
from .store import DamagedManifest, RunStore

CRASH_LOG = "crash.log"


class RunStopped(XbenchError):
    """The run could not go on (a file it must write could not be written): the message says what
    is kept and what to do."""


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
    status: str = "running"
    missing: int = 0
    skipped_combinations: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.status != "complete" else 0


def default_out(config: Config) -> Path:
    if config.run.out:
        return Path(config.run.out)
    stem = config.source.split(":", 1)[1] if config.source.startswith("preset:") else Path(config.source).stem
    return Path("xbench-runs") / stem


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`RunInterrupted` (a ``KeyboardInterrupt``),
    so the run records itself as interrupted; a plugin's own ``KeyboardInterrupt`` stays a unit's
    failure. Outside the main thread (signals cannot be handled there) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise RunInterrupted(f"interrupted by {signal.Signals(signum).name}")

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(
    config: Config,
    registry: Registry,
    *,
    out: Path | None = None,
    on_event: Callable[[str, Any], None] = lambda kind, payload: None,
) -> RunSummary:
    """Run every unit of the plan that has no valid part yet. ``on_event(kind, payload)`` reports
    progress: ``start`` (units to compute), ``unit`` (a UnitResult), ``status`` (a Status), ``cell``."""
    started = time.perf_counter()
    out = Path(out or default_out(config))
    store = RunStore(out)
    with store.lock():
        return _run_locked(config, registry, store, started, on_event)


def _run_locked(config: Config, registry: Registry, store: RunStore, started: float,
                on_event: Callable[[str, Any], None]) -> RunSummary:
    out = store.root
    store.prepare()
    plan = make_plan(config, registry)
    device = resolve_device(config.run.device)
    cache_dir = Path(config.run.cache) if config.run.cache else out / "cache"
    planned_keys = [u.key for u in plan.all_units]
    done = store.done(planned_keys)
    previous = _previous_manifest(store, on_event)
    manifest = _manifest(config, registry, plan, device, previous)
    options = config.run.model_copy(update={"threads": config.run.threads or _default_threads(config)})
    manifest["threads"] = options.threads
    manifest["status"] = "running"
    store.write_manifest(manifest)

    executor_name = config.run.executor
    job_device = _job_device(executor_name, config.run.device, device)
    jobs = []
    for cell in plan.cells:
        todo = tuple(UnitTask(u.key, u.method, u.metric) for u in plan.units[cell.key] if u.key not in done)
        if todo:
            jobs.append(CellJob(cell, todo, options, str(cache_dir), job_device))
    summary = RunSummary(out=out, planned=len(planned_keys), skipped_done=sum(k in done for k in planned_keys),
                         skipped_combinations=len(plan.skipped))
    on_event("start", {"units": sum(len(j.units) for j in jobs), "cells": len(jobs), "done": summary.skipped_done,
                       "skipped": len(plan.skipped)})

    cells: dict[str, Any] = dict(previous.get("cells", {}))
    datasets = {c.key: c.dataset for c in plan.cells}  # for each cell's data provenance
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
                                  "device": message.device, "threads": options.threads, "costs": message.costs,
                                  "metric_seconds": message.metric_seconds}
            summary.warnings += [f"{message.title}: {w}" for w in message.fit.get("warnings", [])]
            for name, seconds in message.timings.items():
                timings[name] += seconds
            cells[message.key]["data"] = _cell_data(datasets.get(message.key), message.dataset_info)
            on_event("cell", message)
        elif isinstance(message, GalleryItem):
            store.write_gallery(message.cell_key, message.name, message.arrays, message.meta)
        elif isinstance(message, Status):
            on_event("status", message)

    status = "crashed"
    executor = None
    stopped: CannotWrite | None = None
    ending: CannotWrite | None = None
    try:
        with interruptible(), _crash_log(out):
            executor = registry.get("executors", executor_name).spec.create(
                {"scheduler": config.run.scheduler, "workers": config.run.workers, "device": str(device),
                 "registry": registry, "out": str(out), "settings": config.executors.get(executor_name, {})})
            executor.run(jobs, work, deliver)
        status = "running"
    except KeyboardInterrupt:  # RunInterrupted (Ctrl-C, SIGTERM) or one the signal handler could not see
        status = "interrupted"
        raise
    except CannotWrite as exc:  # a full disk: not a plugin's failure, and no traceback
        stopped = exc
    finally:
        if executor is not None:
            executor.close()
        summary.wall_seconds = time.perf_counter() - started
        plugin = sum(v for k, v in timings.items() if k != "total")
        summary.plugin_seconds = plugin
        present = store.done(planned_keys)
        summary.missing = sum(k not in present for k in planned_keys)
        if status == "running":
            status = "complete" if not summary.missing else "failed units"
        summary.status = status
        manifest.update(
            status=status,
            finished=_now(),
            cells=cells,
            timings={"wall_seconds": summary.wall_seconds, "plugin_seconds": dict(timings),
                     "plugin_total_seconds": plugin,
                     "overhead_fraction": (summary.wall_seconds - plugin) / summary.wall_seconds
                     if summary.wall_seconds and jobs else None},
            failed=[{k: v for k, v in e.items() if k != "traceback"} for e in summary.failed],
            warnings=summary.warnings,
            counts={"planned": summary.planned, "already_done": summary.skipped_done,
                    "computed": summary.computed, "failed": len(summary.failed), "missing": summary.missing,
                    "skipped_combinations": len(plan.skipped)},
            error=str(stopped) if stopped is not None else None,
        )
        try:
            store.write_manifest(manifest)
        except CannotWrite as exc:
            ending = exc
    if stopped is not None or ending is not None:
        raise RunStopped(_stopped_message(summary, stopped, ending)) from None
    return summary


def _stopped_message(summary: RunSummary, stopped: CannotWrite | None, ending: CannotWrite | None) -> str:
    first = stopped or ending
    cause = "The disk is full: " if first.full else ""
    kept = summary.planned - summary.missing
    text = (f"{cause}{first} The run stopped: {kept} of {summary.planned} planned units have whole results "
            f"(never a half-written one), {summary.missing} are missing. ")
    if ending is not None:
        text += (f"Its manifest could not be updated either ({ending.reason}): it says 'running' until the next run, "
                 "and readers report the run as stopped. ")
    else:
        text += "Its manifest says 'crashed', with this error. "
    fix = "Free some space" if first.full else "Make it writable"
    return text + f"{fix} (or choose another --out or run.cache), then run the same command again to compute the rest."


def _previous_manifest(store: RunStore, on_event: Callable[[str, Any], None]) -> dict[str, Any]:
    """The last run's manifest, for what this run keeps of it; a damaged one is set aside (the run
    rebuilds it from the config and the parts on disk), and a run that died without recording how
    it ended is reported, with the stack of a crash when ``crash.log`` holds one."""
    try:
        previous = store.read_manifest()
    except DamagedManifest:
        kept = store.set_aside_manifest()
        on_event("status", Status(
            f"warning: {store.manifest_path} was damaged; it is kept as {kept} and rebuilt from the config and the "
            "results on disk (earlier cells' training reports and timings are not in the new one).", "warning"))
        return {}
    if previous.get("status") == "running":  # we hold the lock, so the run that wrote this is gone
        log = store.root / CRASH_LOG
        frames = _crash_frames(log.read_text(errors="replace")) if log.exists() else []
        crash = (f" It crashed; the Python stack at the crash, innermost first (all of it in {log}):\n  "
                 + "\n  ".join(frames)) if frames else ""
        on_event("status", Status(
            "warning: the last run into this folder stopped without recording how it ended (killed, a crash such as "
            f"a segfault in a plugin, or a full disk); its whole results are kept and the rest is computed now.{crash}",
            "warning"))
    return previous


def _crash_frames(log: str, count: int = 6) -> list[str]:
    """The innermost frames of the crashing thread in a faulthandler log (its first block)."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if "(most recent call first)" in line), None)
    if start is None:
        return []
    frames = []
    for line in lines[start + 1:]:
        if not line.strip().startswith("File "):
            break
        frames.append(line.strip())
    return frames[:count]


@contextmanager
def _crash_log(out: Path) -> Iterator[None]:
    """Within the block, a fatal signal (a segfault in a plugin's C code) writes the Python stack of
    every thread to ``out/crash.log`` (:mod:`faulthandler`: the one thing that still runs then); an
    empty log is removed at the end. Where faulthandler is already on (pytest, ``-X faulthandler``)
    it stays as it is."""
    import faulthandler

    if faulthandler.is_enabled():
        yield
        return
    path = out / CRASH_LOG
    try:
        handle = open(path, "w")
    except OSError:  # e.g. a full disk: the run itself will say so
        yield
        return
    with handle:
        faulthandler.enable(handle, all_threads=True)
        try:
            yield
        finally:
            faulthandler.disable()
    if path.stat().st_size == 0:
        path.unlink(missing_ok=True)


def _job_device(executor: str, configured: str, device) -> str:
    """The device a cell runs on. In process it is the driver's. Elsewhere a worker has its own GPUs:
    ``cuda`` (whichever the worker sees) when the run asks for or found one, and ``auto`` stays
    ``auto`` for the worker to resolve (a SLURM login node without a GPU would otherwise send every
    cell to the CPU)."""
    if executor == "local":
        return str(device)
    if device.type == "cuda" or configured.startswith("cuda"):
        return "cuda"
    return "auto" if configured == "auto" else str(device)


def _default_threads(config: Config) -> int:
    """Torch's CPU threads in every cell when ``[run] threads`` is 0: the CPUs each task gets where
    the executor's settings say so (``cpus``: a SLURM task), else torch's default on the driver."""
    cpus = int((config.executors.get(config.run.executor) or {}).get("cpus") or 0)
    return cpus or _torch_threads()


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
    chosen = {kind: list(variants) for kind, variants in config.variants.items()}
    for extra in plan.implicit:
        chosen[extra.kind].append(extra)
    for kind, variants in chosen.items():
        for name in sorted({v.name for v in variants}):
            entry = registry.get(kind, name)
            item = {"name": name, "version": entry.version, "plugin": entry.plugin.name,
                    "distribution": entry.plugin.distribution,
                    "distribution_version": entry.plugin.version,
                    "description": getattr(entry.spec, "description", "")}
            if kind == "metrics":
                item["families"] = {v: d.describe() for v, d in entry.spec.values.items() if hasattr(d, "describe")}
            used[kind].append(item)
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
        "claims": [c.to_dict() for c in config.claims],
        "cells": previous.get("cells", {}),
    }


def _cell_data(dataset, info: dict[str, Any]) -> dict[str, Any]:
    """The data a cell used (source, checksum, real / sample / generated / stand-in): see xbench.sources."""
    from .sources import cell_data

    return cell_data(dataset.label if dataset else "?", info, dataset.stand_in_for if dataset else "")
