"""The ``slurm`` executor: one SLURM job array per run, through submitit.

Every cell is one task of the array (``--array=0-N%K``: at most K tasks at a time, fewer where a GPU
cap says so), with the resources of the config's ``[executor.slurm]`` table. A task runs its cell as
the local executor would and writes what the cell delivers into its own spool folder on the shared
disk: each unit's part atomically, in the run directory's own format (checked the same way), its
errors, gallery and cell report, and an append-only log of progress lines. The driver polls the
spools and writes every row into the run directory itself, so the resume guarantees are those of
every executor: a unit's part is whole or absent, and there is at most one per unit.

A task that is pre-empted or reaches its time limit gets SIGUSR2 from SLURM; submitit then requeues
it (``checkpoint``), and the requeued task computes only the units its spool does not hold yet. A
task that fails outright (killed, node lost) is submitted again for its missing units, ``retries``
times; after that its missing units fail with the phase the task was in, and the next
``xbench run`` computes them.

``cluster = "local"`` runs the same tasks through submitit's local executor (one process per task
on this machine, at most ``parallel`` at once): how the tests run it, and a way to try a cluster
config on a workstation.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import RunInterrupted, UsageError
from .executors import local_cache, report_lost_units
from .hookspecs import hookimpl
from .messages import CellJob, CellReport, GalleryItem, Status, UnitResult
from .specs import ExecutorSpec, Param
from .store import RunStore, atomic_write_json, part_is_valid


def _sbatch_options(value: list) -> str | None:
    bad = [v for v in value if not isinstance(v, str) or not re.fullmatch(r"--[a-z][a-z0-9-]*(=.+)?", v)]
    return (f"each item must be one sbatch option written '--name=value' or '--flag' (bad: {bad!r})"
            if bad else None)


def _memory(value: str) -> str | None:
    return None if not value or re.fullmatch(r"\d+[KMGT]?", value) else "must be '' or a SLURM size such as '16G'"


PARAMS = {
    "cluster": Param("slurm", "'slurm' submits with sbatch; 'local' runs the tasks as processes on this machine "
                              "(submitit's local executor: tests, trying a config)", choices=("slurm", "local")),
    "folder": Param("", "submitit's folder (job scripts, logs, the tasks' spools), on a disk the nodes share; "
                        "'' = <run directory>/slurm"),
    "partition": Param("", "sbatch --partition ('' = the cluster's default)"),
    "account": Param("", "sbatch --account"),
    "qos": Param("", "sbatch --qos"),
    "time": Param(60, "time limit of each task in minutes (sbatch --time); a task that reaches it is requeued "
                      "and goes on with its missing units", ge=1),
    "mem": Param("", "memory of each task, e.g. '16G' (sbatch --mem; '' = the partition's default)", check=_memory),
    "cpus": Param(1, "CPUs of each task (sbatch --cpus-per-task)", ge=1),
    "gpus": Param(0, "GPUs of each task (sbatch --gpus-per-node)", ge=0),
    "max_gpus": Param(0, "at most this many GPUs in use at once over the whole array (0 = no cap): "
                         "lowers the array's throttle to max_gpus // gpus", ge=0),
    "parallel": Param(32, "at most this many tasks running at once (the array's throttle, --array=0-N%K)", ge=1),
    "sbatch": Param([], "further sbatch options, e.g. ['--constraint=a100', '--exclusive']", check=_sbatch_options),
    "setup": Param([], "shell lines run before each task, e.g. ['module load cuda/12.4', "
                       "'source ~/venvs/xbench/bin/activate']"),
    "retries": Param(1, "how often a task that failed (killed, node lost) is submitted again for its missing units",
                     ge=0),
    "poll": Param(5.0, "seconds between two looks at the tasks' spools and states", gt=0),
    "job_name": Param("xbench", "sbatch --job-name"),
}


def throttle(settings: Mapping[str, Any]) -> int:
    """How many tasks may run at once: ``parallel``, lowered to ``max_gpus // gpus`` under a GPU cap."""
    parallel = int(settings["parallel"])
    gpus, cap = int(settings["gpus"]), int(settings["max_gpus"])
    if gpus and cap:
        if cap < gpus:
            raise ValueError(f"max_gpus = {cap} is fewer than the {gpus} GPUs one task asks for (gpus), so no task "
                             "could ever run. Raise max_gpus or lower gpus.")
        parallel = min(parallel, cap // gpus)
    return parallel


def sbatch_parameters(settings: Mapping[str, Any]) -> dict[str, Any]:
    """submitit's ``SlurmExecutor`` parameters for the settings (the array's throttle included)."""
    extra: dict[str, Any] = {}
    for option in settings["sbatch"]:
        name, _, value = option[2:].partition("=")
        extra[name] = value if value else True
    params: dict[str, Any] = {"job_name": settings["job_name"], "time": int(settings["time"]),
                              "cpus_per_task": int(settings["cpus"]), "array_parallelism": throttle(settings),
                              "setup": list(settings["setup"]), "additional_parameters": extra}
    for key, name in (("partition", "partition"), ("account", "account"), ("qos", "qos"), ("mem", "mem")):
        if settings[key]:
            params[name] = settings[key]
    if settings["gpus"]:
        params["gpus_per_node"] = int(settings["gpus"])
    return params


# ----------------------------------------------------------------------------- the task's side

class Spool:
    """One task's folder: ``results/`` and ``errors/`` (a :class:`RunStore`'s format), ``gallery/``,
    ``report.json`` and ``log.jsonl`` (the progress lines, appended)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.store = RunStore(self.root)
        self.report = self.root / "report.json"
        self.log = self.root / "log.jsonl"

    def deliver(self, message: Any) -> None:
        """What the cell delivers, written where the driver reads it."""
        if isinstance(message, UnitResult):
            if message.error is not None:
                self.store.write_error(message.key, message.error)
            else:
                self.store.write_part(message.key, message.table)
        elif isinstance(message, CellReport):
            atomic_write_json(self.report, dataclasses.asdict(message))
        elif isinstance(message, GalleryItem):
            self.store.write_gallery(message.cell_key, message.name, message.arrays, message.meta)
        elif isinstance(message, Status):
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"text": message.text, "phase": message.phase}) + "\n")

    def finished(self) -> set[str]:
        """Units with a valid part or an error here."""
        errors = {p.stem for p in self.store.errors.glob("*.json")} if self.store.errors.exists() else set()
        return (self.store.done() if self.store.results.exists() else set()) | errors


class CellTask:
    """One array task: the cell's units that its spool does not hold yet. Submitit calls
    ``checkpoint`` when SLURM pre-empts the task or its time runs out, and requeues it as it is."""

    def __init__(self, job: CellJob, spool: str, work: Callable):
        self.job, self.spool, self.work = job, spool, work

    def __call__(self) -> int:
        from .obtain import Worker
        from .registry import load_registry

        spool = Spool(self.spool)
        spool.store.prepare()
        done = spool.finished()
        todo = tuple(u for u in self.job.units if u.key not in done)
        if todo:
            job = dataclasses.replace(self.job, units=todo)
            with _preemptible():
                self.work(local_cache(job, spool.deliver), spool.deliver, Worker(load_registry()))
        return len(todo)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


@contextmanager
def _preemptible() -> Iterator[None]:
    """Within the block, submitit's pre-emption signal stops the cell as an interruption does (the
    cell re-raises it, where a plugin's own exit would only fail that plugin's units and be written
    as errors); then submitit's handler checkpoints and requeues the task."""
    import signal

    from submitit import JobEnvironment

    number = JobEnvironment._usr_sig()
    requeue = signal.getsignal(number)
    if not callable(requeue):  # not running under submitit's handler
        yield
        return

    def preempted(signum, frame):
        raise RunInterrupted(f"pre-empted ({signal.Signals(signum).name})")

    signal.signal(number, preempted)
    try:
        yield
    except RunInterrupted:
        signal.signal(number, requeue)
        requeue(number, None)
        raise
    finally:
        signal.signal(number, requeue)


# ----------------------------------------------------------------------------- the driver's side

@dataclasses.dataclass
class _Tracked:
    """A cell on its way through the array: its spool, what of it the driver has written, its attempts."""

    job: CellJob
    spool: Spool
    attempts: int = 0
    handle: Any = None
    seen: set[str] = dataclasses.field(default_factory=set)
    gallery: set[str] = dataclasses.field(default_factory=set)
    log_offset: int = 0
    doing: Status | None = None

    def collect(self, deliver: Callable) -> None:
        """Deliver what the task has written since the last look: new parts and errors, gallery
        files and whole progress lines."""
        store = self.spool.store
        if store.results.exists():
            for path in sorted(store.results.glob("*.parquet")):
                if path.stem not in self.seen and part_is_valid(path):
                    deliver(UnitResult(path.stem, table=_read_part(path)))
                    self.seen.add(path.stem)
        if store.errors.exists():
            for path in sorted(store.errors.glob("*.json")):
                if path.stem not in self.seen:
                    deliver(UnitResult(path.stem, error=json.loads(path.read_text())))
                    self.seen.add(path.stem)
        if store.gallery.exists():
            for path in sorted(store.gallery.glob("*/*.npz")):
                if path.name not in self.gallery:
                    deliver(_read_gallery(path))
                    self.gallery.add(path.name)
        if self.spool.log.exists():
            with open(self.spool.log, "rb") as fh:
                fh.seek(self.log_offset)
                chunk = fh.read()
            whole = chunk[:chunk.rfind(b"\n") + 1]
            self.log_offset += len(whole)
            for line in whole.decode("utf-8", errors="replace").splitlines():
                try:  # a task killed in mid-line leaves a torn line, which its next attempt ends
                    status = Status(**json.loads(line))
                except (ValueError, TypeError):
                    continue
                if status.phase != "warning":
                    self.doing = status
                deliver(status)

    def missing(self) -> list:
        return [u for u in self.job.units if u.key not in self.seen]

    def close(self, deliver: Callable) -> None:
        """The cell is over: deliver its report (the last attempt's) and remove the spool, whose
        parts the driver has written."""
        import shutil

        if self.spool.report.exists():
            deliver(CellReport(**json.loads(self.spool.report.read_text())))
        shutil.rmtree(self.spool.root, ignore_errors=True)


def _read_part(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _read_gallery(path: Path) -> GalleryItem:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    return GalleryItem(path.parent.name, path.stem, arrays, meta)


class SlurmExecutor:
    """Sends the run's cells to SLURM as one job array (or to local processes) and writes what the
    tasks spool, as they spool it."""

    def __init__(self, options: Mapping[str, Any]):
        try:
            import submitit
        except ImportError:
            raise UsageError("The slurm executor needs submitit, which is not installed. Install it with "
                             "`pip install 'xbench[slurm]'`, or use --executor local or dask.") from None
        from .specs import defaults

        self.settings = {**defaults(PARAMS), **dict(options.get("settings") or {})}
        self.parallel = throttle(self.settings)
        self.poll = float(self.settings["poll"])
        self.folder = Path(self.settings["folder"] or Path(options["out"]) / "slurm").resolve()
        self.local = self.settings["cluster"] == "local"
        if self.local:
            self.executor = submitit.LocalExecutor(folder=self.folder / "jobs")
            self.executor.update_parameters(timeout_min=int(self.settings["time"]),
                                            gpus_per_node=int(self.settings["gpus"]),
                                            setup=list(self.settings["setup"]))
        else:
            try:
                self.executor = submitit.SlurmExecutor(folder=self.folder / "jobs")
            except RuntimeError as exc:
                raise UsageError(f"The slurm executor cannot submit from this machine: {exc} Run xbench on the "
                                 "cluster's login node, or set cluster = \"local\" in [executor.slurm] to run the "
                                 "tasks as local processes.") from None
            self.executor.update_parameters(**sbatch_parameters(self.settings))
        self.running: list[_Tracked] = []

    def run(self, jobs: list, work: Callable, deliver: Callable) -> None:
        tracked = [_Tracked(job, Spool(self.folder / "spool" / job.cell.key)) for job in jobs]
        for t in tracked:  # what an earlier driver's tasks spooled and it did not write yet
            t.collect(deliver)
            if not t.missing():
                t.close(deliver)
        waiting = deque(t for t in tracked if t.missing())
        while waiting or self.running:
            if waiting:
                self._submit(waiting, work)
            time.sleep(self.poll)
            for t in list(self.running):
                t.collect(deliver)
                if t.handle.done():
                    self.running.remove(t)
                    self._finish(t, waiting, deliver)

    def _submit(self, waiting: deque, work: Callable) -> None:
        """The waiting cells as tasks: on SLURM all of them as one array (its throttle keeps K
        running); locally as many as free slots allow."""
        count = len(waiting) if not self.local else max(0, self.parallel - len(self.running))
        batch = [waiting.popleft() for _ in range(min(count, len(waiting)))]
        if not batch:
            return
        tasks = [CellTask(dataclasses.replace(t.job, units=tuple(t.missing())), str(t.spool.root), work) for t in batch]
        handles = self.executor.submit_array(tasks)
        for t, handle in zip(batch, handles):
            if self.local:
                handle._results_timeout_s = 1  # a local task's result is on this disk at once, or never
            t.handle, t.attempts = handle, t.attempts + 1
            self.running.append(t)

    def _finish(self, t: _Tracked, waiting: deque, deliver: Callable) -> None:
        t.collect(deliver)
        problem = None
        try:
            t.handle.result()
        except Exception as exc:  # noqa: BLE001 - the task died, or xbench failed in it
            problem = exc
        missing = t.missing()
        if missing and t.attempts <= int(self.settings["retries"]):
            deliver(Status(f"{t.job.cell.title}: task {t.handle.job_id} ended with {len(missing)} units missing; "
                           f"submitting it again ({t.attempts}/{self.settings['retries']} retries)", "warning"))
            waiting.append(t)
            return
        if missing:
            cause = problem or RuntimeError("the task ended without delivering these units")
            report_lost_units(dataclasses.replace(t.job, units=tuple(missing)), _summary(cause), set(), t.doing,
                              deliver)
        t.close(deliver)

    def close(self) -> None:
        """Cancel the tasks still running (an interrupted run): the next run resumes what they spooled."""
        for t in self.running:
            try:
                t.handle.cancel(check=False)
            except Exception:  # noqa: BLE001 - a task that ended meanwhile
                pass
        self.running = []


def _summary(exc: BaseException) -> RuntimeError:
    """The first lines of what submitit says about a failed task (its full log is in the folder)."""
    text = str(exc).strip().splitlines()
    return RuntimeError(" ".join(text[:3]) + (" …" if len(text) > 3 else ""))


@hookimpl
def xbench_executors():
    yield ExecutorSpec(name="slurm", create=SlurmExecutor, params=PARAMS, validate=throttle,
                       description="Send the cells to SLURM as one job array through submitit ([executor.slurm]: "
                                   "partition, time, mem, cpus, gpus, throttle, GPU cap, retries).")
