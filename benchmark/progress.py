"""Progress while a run goes: a bar over units on a terminal, plain lines elsewhere.

On a terminal: a bar over units with the current cell's status, and a line per finished cell.
Elsewhere (CI logs, ``nohup``): a line per finished cell and, at most every ``interval`` seconds, a
plain line saying what is being done (phase, epoch, method and batch), so a long job never looks
stuck. ``verbosity`` 0 (``-q``) prints only warnings and failures, 2 (``-v``) every status line.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .messages import CellReport, Status, UnitResult


class RunProgress:
    """Receives the runner's events and shows them."""

    def __init__(self, console: Console, verbosity: int = 1, interval: float = 10.0):
        self.console = console
        self.verbosity = verbosity
        self.interval = interval
        self.live = console.is_terminal and verbosity > 0
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            # plugin- and config-provided text (labels) is shown as it is, never read as markup
            TextColumn("{task.fields[status]}", markup=False, style="dim"), console=console, transient=False,
            disable=not self.live,
        )
        self.task = None
        self.failed = 0
        self.done = 0
        self.total = 0
        self.last_line = 0.0
        self.started = time.monotonic()

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def event(self, kind: str, payload: Any) -> None:
        if kind == "start":
            self.total = payload["units"]
            if payload["done"] and self.verbosity:
                self._line(f"{payload['done']} units already done; computing {self.total} in {payload['cells']} cells.")
            elif self.verbosity:
                self._line(f"Computing {self.total} units in {payload['cells']} cells.")
            self.task = self.progress.add_task("units", total=self.total, status="")
        elif kind == "unit":
            assert isinstance(payload, UnitResult)
            self.done += 1
            if payload.error is not None:
                self.failed += 1
            self.progress.update(self.task, advance=1,
                                 description=f"units ([red]{self.failed} failed[/])" if self.failed else "units")
        elif kind == "status":
            text = payload.text if isinstance(payload, Status) else str(payload)
            phase = payload.phase if isinstance(payload, Status) else ""
            if phase == "warning":
                self._line(text)
                if not self.live:
                    return
            if self.live:
                self.progress.update(self.task, status=text[-80:])
                return
            now = time.monotonic()
            if self.verbosity >= 2 or (self.verbosity and now - self.last_line >= self.interval):
                self.last_line = now
                self._line(f"[{now - self.started:7.0f} s] {self.done}/{self.total} units: {text}")
        elif kind == "cell":
            assert isinstance(payload, CellReport)
            if not self.verbosity:
                return
            seconds = payload.timings.get("total", 0.0)
            cached = " (model from cache)" if payload.model_cached else ""
            self._line(f"  done: {payload.title} in {seconds:.1f} s{cached}")
