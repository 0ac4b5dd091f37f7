"""Built-in executors, registered through the same hook as third-party ones.

``local`` runs cells one after another in this process and streams every unit result to the
driver as soon as it exists. ``dask`` sends each cell to a Dask distributed cluster (an existing
scheduler address, or a local cluster bound to 127.0.0.1 with one GPU per worker where there are
GPUs); workers return rows, and the driver writes them, so workers need no shared disk. ``slurm``
(:mod:`xbench.slurm`) sends them to a SLURM cluster as one job array.

An executor owns the per-process state of the cells it runs: one :class:`xbench.obtain.Worker`
(the plugin registry and the dataset cache) per process, passed to ``work(job, deliver, worker)``.
In process that is the driver's registry (``options["registry"]``); a remote worker loads its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from .errors import UsageError
from .hookspecs import hookimpl
from .specs import ExecutorSpec


class LocalExecutor:
    def __init__(self, options: Mapping[str, Any]):
        from .obtain import Worker
        from .registry import load_registry

        self.options = options
        self.worker = Worker(options.get("registry") or load_registry())

    def run(self, jobs: list, work: Callable, deliver: Callable) -> None:
        for job in jobs:
            work(job, deliver, self.worker)

    def close(self) -> None:
        pass


def _process_worker():
    """This Dask worker process's xbench state, created on its first cell and kept on the Dask
    worker object (so it lives exactly as long as the process that uses it)."""
    from distributed import get_worker

    host = get_worker()
    state = getattr(host, "_xbench_worker", None)
    if state is None:
        from .obtain import Worker
        from .registry import load_registry

        state = Worker(load_registry())
        host._xbench_worker = state
    return state


def local_cache(job: Any, deliver: Callable) -> Any:
    """The job with a cache this worker can write: the driver's folder when it is reachable and
    writable here (a shared disk), else a folder in this machine's temporary directory (models trained
    here are then cached on this worker only, and the driver's cache does not grow)."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from .hashing import content_hash
    from .messages import Status

    folder = Path(job.cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=folder, prefix=".xbench-write-check.").close()
        return job
    except OSError:
        local = Path(tempfile.gettempdir()) / "xbench-cache" / content_hash(str(folder))
        deliver(Status(f"{job.cell.title}: warning: the run's cache {str(folder)!r} is not writable on this worker; "
                       f"caching in {str(local)!r} on the worker instead", "warning"))
        return dataclasses.replace(job, cache_dir=str(local))


def _stream(work: Callable, job: Any, queue_name: str) -> int:
    """Runs on a worker: sends every message to the driver as soon as the cell produces it, so the
    units a cell finished reach the driver (and are written) even if the worker dies later."""
    from distributed import Queue

    queue = Queue(queue_name)
    sent = 0

    def deliver(message: Any) -> None:
        nonlocal sent
        queue.put((job.cell.key, message))
        sent += 1

    work(local_cache(job, deliver), deliver, _process_worker())
    return sent


class DaskExecutor:
    def __init__(self, options: Mapping[str, Any]):
        try:
            from distributed import Client
        except ImportError:
            raise UsageError(
                "The dask executor needs Dask distributed, which is not installed. "
                "Install it with `pip install 'xbench[dask]'`, or use --executor local."
            ) from None
        self.cluster = None
        self._environ: dict[str, str | None] = {}
        scheduler = str(options.get("scheduler") or "")
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="10s")
            except (OSError, ValueError, TypeError) as exc:
                raise UsageError(f"Could not reach the Dask scheduler at {scheduler!r}: {exc}. "
                                 "Check the address, or leave --scheduler out to start a local cluster.") from None
        else:
            # Dask's nanny sets OMP_NUM_THREADS=1 (and kin) in *this* process's environment before it
            # spawns a worker; left there, every later subprocess of the caller would compute with
            # one thread (different numerics). close() puts the driver's environment back.
            self._environ = _spawn_environ()
            self.cluster = _local_cluster(int(options.get("workers", 2)), str(options.get("device", "cpu")))
            self.client = Client(self.cluster)

    def run(self, jobs: list, work: Callable, deliver: Callable) -> None:
        import uuid

        from distributed import Queue, as_completed

        from .messages import Status, UnitResult

        name = f"xbench-messages-{uuid.uuid4().hex}"
        queue = Queue(name, client=self.client)
        by_key = {job.cell.key: job for job in jobs}
        delivered: dict[str, set[str]] = {key: set() for key in by_key}
        doing: dict[str, Status] = {}

        def drain(timeout: float | None = None) -> None:
            while True:
                try:
                    items = queue.get(timeout=timeout, batch=True) if timeout else queue.get(batch=True)
                except TimeoutError:
                    return
                if not items:
                    return
                for key, message in items:
                    if isinstance(message, UnitResult):
                        delivered[key].add(message.key)
                    elif isinstance(message, Status) and message.phase != "warning":
                        doing[key] = message
                    deliver(message)
                timeout = None

        futures = [self.client.submit(_stream, work, job, name, key=f"xbench-cell-{job.cell.key}", pure=False)
                   for job in jobs]
        job_of = {f.key: by_key[f.key.removeprefix("xbench-cell-")] for f in futures}
        pending = as_completed(futures)
        for future in pending:
            drain()
            job = job_of[future.key]
            try:
                future.result()
            except Exception as exc:  # the worker died or the task could not run at all
                drain(timeout=1.0)
                report_lost_units(job, exc, delivered[job.cell.key], doing.get(job.cell.key), deliver)
            future.release()
        drain()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        for key, value in self._environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def report_lost_units(job, exc: BaseException, done: set[str], doing, deliver: Callable) -> None:
    """Every unit of a cell whose worker (or array task) died that did not reach the driver fails: the
    units of the method (or the phase) the cell was in when it died with that phase, the rest as not
    started."""
    from .cell import _error
    from .messages import UnitResult

    where = doing.text if doing is not None else "before its first step"
    phase = doing.phase if doing is not None and doing.phase else "executor"
    in_progress = {t.key for t in job.units if phase in ("load", "fit")
                   or (t.method is not None and doing is not None and f": {t.method.label} " in doing.text)}
    for task in job.units:
        if task.key in done:
            continue
        if task.key in in_progress:
            error = _error(job, task, phase, RuntimeError(f"the worker died while {where}: {exc}"))
        else:
            error = _error(job, task, "executor", RuntimeError(
                f"not computed: the worker died in this cell (while {where}) before this unit: {exc}"))
        deliver(UnitResult(task.key, error=error))


def _spawn_environ() -> dict[str, str | None]:
    """The driver's current values of the variables Dask's nanny sets before spawning workers."""
    import dask

    keys = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    return {key: os.environ.get(key) for key in keys}


def _local_cluster(workers: int, device: str):
    """A cluster on loopback only, no dashboard, whose scheduler and worker processes log errors only
    (their INFO lines would bury the progress bar); one worker per GPU, pinned, when running on CUDA."""
    from distributed import Nanny, Scheduler, SpecCluster

    env_per_worker: list[dict[str, str]] = [{} for _ in range(workers)]
    if device.startswith("cuda") or device == "auto":
        import torch

        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            workers = min(workers, gpus) if device != "auto" or gpus else workers
            env_per_worker = [{"CUDA_VISIBLE_DEVICES": str(i % gpus)} for i in range(workers)]
    specs = {
        f"xbench-{i}": {"cls": Nanny, "options": {"nthreads": 1, "host": "127.0.0.1", "env": env,
                                                  "dashboard_address": None, "silence_logs": logging.ERROR}}
        for i, env in enumerate(env_per_worker)
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR)


@hookimpl
def xbench_executors():
    yield ExecutorSpec(name="local", create=LocalExecutor, description="Run cells one by one in this process.")
    yield ExecutorSpec(name="dask", create=DaskExecutor,
                       description="Send each cell to a Dask distributed cluster (local on 127.0.0.1, or --scheduler).")
