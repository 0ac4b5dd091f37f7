"""What explaining costs: wall time per sample and peak memory, measured around a method's calls.

Peak memory is the device's allocator peak on a GPU (``torch.cuda.max_memory_allocated`` after a
reset) and the process's peak resident set on a CPU. On Linux the resident peak is reset before
each method (writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM``), so each method gets its
own peak; where that is not possible the process's lifetime peak is reported and ``peak_scope``
says so.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def _read_hwm() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _lifetime_peak() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux/macOS
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if os.uname().sysname == "Darwin" else 1024)


@dataclass
class Cost:
    """The explanation cost of one method in one cell, accumulated over its batches."""

    device: torch.device
    seconds: float = 0.0
    samples: int = 0
    peak_bytes: int | None = None
    peak_scope: str = "method"

    @contextmanager
    def measure(self, samples: int):
        """Time the block and record its peak memory; ``samples`` explained in it."""
        gpu = self.device.type == "cuda"
        if gpu:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_hwm():
            self.peak_scope = "process"
        start = time.perf_counter()
        try:
            yield
        finally:
            if gpu:
                torch.cuda.synchronize(self.device)
                peak = int(torch.cuda.max_memory_allocated(self.device))
            else:
                peak = _read_hwm() if self.peak_scope == "method" else _lifetime_peak()
            self.add(time.perf_counter() - start, samples, peak)

    def add(self, seconds: float | None, samples: int, peak: int | None) -> None:
        """Add a batch's recorded cost (e.g. one read back from the attribution cache; a cache entry
        from before costs were recorded has ``seconds`` None and is left out)."""
        if seconds is None:
            return
        self.seconds += float(seconds)
        self.samples += int(samples)
        if peak is not None:
            self.peak_bytes = max(self.peak_bytes or 0, int(peak))

    def as_dict(self) -> dict:
        return {"seconds_per_sample": self.seconds / self.samples if self.samples else None,
                "peak_bytes": self.peak_bytes, "peak_scope": self.peak_scope, "samples": self.samples,
                "seconds": self.seconds}
