"""Progress while a run goes: a bar over units, the current cell, and a line per finished cell."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .messages import CellReport, Status, UnitResult


class RunProgress:
    """Receives the runner's events. On a terminal it draws bars; elsewhere (CI logs) it prints a
    line per finished cell, so logs stay readable."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[status]}"), console=console, transient=False, disable=not self.live,
        )
        self.task = None
        self.failed = 0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def event(self, kind: str, payload: Any) -> None:
        if kind == "start":
            total = payload["units"]
            if payload["done"]:
                self.console.print(f"{payload['done']} units already done; computing {total} in {payload['cells']} cells.")
            self.task = self.progress.add_task("units", total=total, status="")
        elif kind == "unit":
            assert isinstance(payload, UnitResult)
            if payload.error is not None:
                self.failed += 1
            self.progress.update(self.task, advance=1,
                                 description=f"units ([red]{self.failed} failed[/])" if self.failed else "units")
        elif kind == "status":
            text = payload.text if isinstance(payload, Status) else str(payload)
            self.progress.update(self.task, status=escape(text)[-80:])
        elif kind == "cell":
            assert isinstance(payload, CellReport)
            seconds = payload.timings.get("total", 0.0)
            cached = " (model from cache)" if payload.model_cached else ""
            self.console.print(f"  done: {escape(payload.title)} in {seconds:.1f} s{cached}")
