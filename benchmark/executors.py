"""Built-in executors, registered through the same hook as third-party ones.

``local`` runs cells one after another in this process and streams every unit result to the
driver as soon as it exists. ``dask`` sends each cell to a Dask distributed cluster (an existing
scheduler address, or a local cluster bound to 127.0.0.1 with one GPU per worker where there are
GPUs); workers return rows, and the driver writes them, so workers need no shared disk.

An executor owns the per-process state of the cells it runs: one :class:`xbench.obtain.Worker`
(the plugin registry and the dataset cache) per process, passed to ``work(job, deliver, worker)``.
In process that is the driver's registry (``options["registry"]``); a remote worker loads its own.
"""

from __future__ import annotations

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


def _collect(work: Callable, job: Any) -> list:
    """Runs on a worker: the messages a cell produces, returned to the driver in one piece."""
    messages: list = []
    work(job, messages.append, _process_worker())
    return messages


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
        from distributed import as_completed

        futures = {self.client.submit(_collect, work, job, key=f"xbench-cell-{job.cell.key}", pure=False): job
                   for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                messages = future.result()
            except Exception as exc:  # the worker died or the task could not run at all
                from .cell import _error
                from .messages import UnitResult

                messages = [UnitResult(t.key, error=_error(job, t, "executor", exc)) for t in job.units]
            for message in messages:
                deliver(message)
            future.release()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        for key, value in self._environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _spawn_environ() -> dict[str, str | None]:
    """The driver's current values of the variables Dask's nanny sets before spawning workers."""
    import dask

    keys = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    return {key: os.environ.get(key) for key in keys}


def _local_cluster(workers: int, device: str):
    """A cluster on loopback only, no dashboard; one worker per GPU, pinned, when running on CUDA."""
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
                                                  "dashboard_address": None}}
        for i, env in enumerate(env_per_worker)
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=40)


@hookimpl
def xbench_executors():
    yield ExecutorSpec(name="local", create=LocalExecutor, description="Run cells one by one in this process.")
    yield ExecutorSpec(name="dask", create=DaskExecutor,
                       description="Send each cell to a Dask distributed cluster (local on 127.0.0.1, or --scheduler).")
