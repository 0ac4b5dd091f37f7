"""What explaining costs: wall time per sample, and the memory the method itself adds.

The memory is the peak of tensor memory allocated while the method runs, above what was allocated
when it started: what the method needs, not what the process already holds (the dataset, the
model, what earlier cells left). A baseline that only writes its maps reads as the size of its
maps; integrated gradients reads as its interpolated batch and the activations and gradients of
the passes it runs at once. How it is counted (:data:`MEASURES`, recorded with every cost):

- ``cuda-allocator``: on a GPU, the CUDA caching allocator's own counters
  (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, less
  ``memory_allocated`` before).
- ``cpu-allocator``: on a CPU, torch's CPU allocator, through torch's profiler
  (``profile_memory=True`` reports every allocation and free with its size, in order); the peak of
  their running sum.

Why the profiler (measured for issue 24, one process, CPU time, a small CNN on 32 images of
105 × 135): it sees every allocation, the buffers inside kernels too (saliency: 69 MiB, against
44 MiB counted from the outputs of ops with a ``TorchDispatchMode``), and costs less per op (× 1.40
against × 1.74 in a loop of 2000 element-wise ops; within noise for saliency and integrated
gradients). The process's resident size, the earlier measure, could not tell methods apart: it
held the dataset and the training (1.4–2.5 GiB for every method, 1.42 GiB for the ``centre``
baseline), and glibc keeps freed memory. The time per sample is wall time around the method's call,
on CPU with the profiler running (its cost per op is in the numbers above).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a cost is measured: the leaderboard reads MEASURES without it
    import torch

MEASURES = {
    "cuda-allocator": "on a GPU: the CUDA allocator's peak of allocated memory while the method ran, less what was "
                      "allocated when it started",
    "cpu-allocator": "on a CPU: every allocation and free of torch's CPU allocator while the method ran, as torch's "
                     "profiler reports them; the peak of their running sum",
}
"""How the memory a method adds was counted, by the key recorded with each cost."""


class _CudaProbe:
    measure = "cuda-allocator"

    def __init__(self, device: torch.device):
        import torch

        self.device = device
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        self.before = int(torch.cuda.memory_allocated(device))

    def settle(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)

    def added(self) -> int:
        import torch

        return max(0, int(torch.cuda.max_memory_allocated(self.device)) - self.before)


class _CpuProbe:
    measure = "cpu-allocator"

    def __init__(self):
        from torch.profiler import ProfilerActivity, profile

        _prime()
        self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.profiler.__enter__()

    def settle(self) -> None:
        pass

    def added(self) -> int:
        import torch

        self.profiler.__exit__(None, None, None)
        events = sorted((e.start_ns(), e.nbytes()) for e in self.profiler.profiler.kineto_results.events()
                        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
        live = peak = 0
        for _, size in events:
            live += size
            peak = max(peak, live)
        return peak


_PRIMED = False


def _prime() -> None:
    """The first profiler session of a process, with nothing to measure, so that a run's output
    stays clean: Kineto (torch's profiling library) starts up and logs every later start and stop
    unless ``KINETO_LOG_LEVEL`` says otherwise at that moment (it is set for that moment only,
    unless the user set it), and torch warns once per process when a block allocated before any
    session is freed during one (here, silenced)."""
    global _PRIMED
    if _PRIMED:
        return
    _PRIMED = True
    import torch
    from torch.profiler import ProfilerActivity, profile

    block = torch.empty(256)
    user_level = os.environ.get("KINETO_LOG_LEVEL")
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    try:
        with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True):
            del block
    finally:
        if user_level is None:
            os.environ.pop("KINETO_LOG_LEVEL", None)


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null inside the block (torch's C++ warnings bypass ``sys.stderr``)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _probe(device: torch.device):
    """The memory probe for ``device``, or None where none can run (a profiler is active already)."""
    if device.type == "cuda":
        return _CudaProbe(device)
    if device.type == "cpu":
        import torch

        # one profiler at a time: under the user's own, the memory is left unknown
        return None if torch.autograd._profiler_enabled() else _CpuProbe()
    return None


@dataclass
class Cost:
    """The explanation cost of one method in one cell, accumulated over its batches."""

    device: torch.device
    seconds: float = 0.0
    samples: int = 0
    added_bytes: int | None = None
    memory: str | None = None  # how the memory was counted: a key of MEASURES

    @contextmanager
    def measure(self, samples: int) -> Iterator[None]:
        """Time the block and count the memory it adds; ``samples`` explained in it."""
        probe = _probe(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if probe is not None:
                probe.settle()
            seconds = time.perf_counter() - start
            added = probe.added() if probe is not None else None
            self.add(seconds, samples, added, probe.measure if probe is not None else None)

    def add(self, seconds: float | None, samples: int, added: int | None, memory: str | None) -> None:
        """Add a batch's recorded cost (e.g. one read back from the attribution cache; a cache entry
        from before costs were recorded has ``seconds`` None and is left out)."""
        if seconds is None:
            return
        self.seconds += float(seconds)
        self.samples += int(samples)
        if added is not None:
            self.added_bytes = max(self.added_bytes or 0, int(added))
            self.memory = memory

    def as_dict(self) -> dict:
        return {"seconds_per_sample": self.seconds / self.samples if self.samples else None,
                "added_bytes": self.added_bytes, "memory": self.memory, "samples": self.samples,
                "seconds": self.seconds}
