"""Verification as data: run the cross-checks (:class:`~xbench.specs.VerificationSpec`) of the
installed methods and metrics against independent implementations, and keep what they found.

Why: a number on the leaderboard is only as good as the code that computed it, and users of the
field keep finding metrics that do not match their papers. Every check compares a plugin with a
reference (Quantus, pytorch-grad-cam, scipy, a re-implementation from the paper) on small inputs
and reports the largest absolute difference; the record says, per check, the reference and its
version, the inputs, the difference, the tolerance, the verdict and the definition differences
that were adjusted for. ``xbench verify`` writes it; the leaderboard shows it beside each method
and metric; ``tests/test_verification.py`` runs every registered check through :func:`run_check`,
so the record and the test suite cannot drift apart.

A check whose reference is not installed is *skipped* (``pip install "xbench[verify]"`` installs
them), never failed; one that raises is an *error*, shown as failing.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import json
import math
import platform
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import naming
from .errors import UsageError
from .specs import VERIFIABLE, VerificationSpec

RECORD_FILE = "verification.json"
"""The record's file name, in ``xbench verify --out DIR``; the leaderboard of a run reads
``RUN_DIR/verification/verification.json``."""
DEFAULT_DIR = "verification"
VERDICTS = ("pass", "fail", "error", "skipped")


def max_abs_difference(ours: Any, theirs: Any) -> float:
    """The largest absolute difference between two arrays (tensors, arrays, lists or numbers) of
    the same shape, in float64. NaN where both are NaN counts as agreement; NaN in one only, or
    different shapes, is a disagreement (inf for NaN; a ValueError naming the shapes)."""
    import numpy as np

    a, b = (np.asarray(v.detach().cpu().double() if hasattr(v, "detach") else v, dtype=np.float64)
            for v in (ours, theirs))
    if a.shape != b.shape:
        raise ValueError(f"the outputs have different shapes: ours {a.shape}, the reference's {b.shape}")
    if a.size == 0:
        return 0.0
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return math.inf
    both = ~nan_a
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


@dataclass
class Outcome:
    """One check's row of the record."""

    name: str
    kind: str
    plugin: str
    reference: str
    library: str
    library_version: str | None
    inputs: str
    tolerance: float
    difference: float | None
    verdict: str                 # pass | fail | error | skipped
    reason: str                  # why it failed, errored or was skipped ("" when it passed)
    differences: str
    seconds: float
    plugin_version: str | None = None       # the checked spec's version
    distribution: str | None = None          # the package that provides the checked plugin
    distribution_version: str | None = None
    check_version: str = "1"
    check_from: str | None = None            # the plugin package that ships the check

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.difference is not None and not math.isfinite(self.difference):
            out["difference"] = str(self.difference)  # JSON has no inf/nan
        return out


@dataclass
class Record:
    """Every check's outcome, and which installed methods and metrics have no check."""

    outcomes: list[Outcome]
    unverified: dict[str, list[str]]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str | None] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(o.verdict == v for o in self.outcomes) for v in VERDICTS}

    @property
    def ok(self) -> bool:
        """No check failed or raised (skipped checks do not count against it)."""
        return not any(o.verdict in ("fail", "error") for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "versions": self.versions, "counts": self.counts,
                "checks": [o.to_dict() for o in self.outcomes], "unverified": self.unverified}

    def write(self, folder: str | Path) -> list[Path]:
        """``verification.json`` (what the leaderboard reads) and ``verification.md`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / RECORD_FILE, folder / "verification.md"]
        paths[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        paths[1].write_text(markdown(self), encoding="utf-8")
        return paths


def _version(distribution: str) -> str | None:
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None


def missing(spec: VerificationSpec) -> list[str]:
    """The distributions a check needs that are not installed."""
    return [d for d in ((spec.library,) if spec.library else ()) + tuple(spec.needs) if _version(d) is None]


@contextlib.contextmanager
def _isolated():
    """Checks start from seeded, restored random states and print nothing (Quantus prints its
    warnings; ``xbench verify --json`` prints the record on stdout)."""
    import numpy as np
    import torch

    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        np.random.seed(0)
        try:
            yield
        finally:
            np.random.set_state(state)


def run_check(registry, spec: VerificationSpec, check_from: str | None = None) -> Outcome:
    """Run one check against the installed plugin it names and judge it."""
    started = time.perf_counter()
    entry = registry.entries.get(spec.kind, {}).get(spec.plugin)
    row = dict(name=spec.name, kind=spec.kind, plugin=spec.plugin, reference=spec.reference, library=spec.library,
               library_version=_version(spec.library) if spec.library else None, inputs=spec.inputs,
               tolerance=float(spec.tolerance), differences=spec.differences, check_version=spec.version,
               check_from=check_from)
    if entry is not None:
        row.update(plugin_version=entry.version, distribution=entry.plugin.distribution,
                   distribution_version=entry.plugin.version)

    def done(verdict: str, reason: str = "", difference: float | None = None) -> Outcome:
        return Outcome(**row, difference=difference, verdict=verdict, reason=reason,
                       seconds=round(time.perf_counter() - started, 3))

    if entry is None:
        return done("skipped", f"{spec.kind[:-1]} {spec.plugin!r} is not installed")
    absent = missing(spec)
    if absent:
        return done("skipped", f"{', '.join(absent)} not installed")
    try:
        with _isolated():
            difference = float(spec.check(entry.spec))
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return done("error", f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})")
    if math.isnan(difference):
        return done("fail", "the difference is NaN", difference)
    if difference > spec.tolerance:
        return done("fail", f"max |difference| {difference:.3g} exceeds the tolerance {spec.tolerance:.3g}",
                    difference)
    return done("pass", "", difference)


def select(registry, patterns: tuple[str, ...] = ()) -> list[VerificationSpec]:
    """The registered checks whose name or plugin matches one of ``patterns`` (names or globs;
    all when none), in (kind, plugin, name) order; a UsageError for a pattern that matches none."""
    checks = [registry.get("verifications", n).spec for n in registry.names("verifications")]
    chosen = set()
    for pattern in patterns:
        hits = {c.name for c in checks if naming.select(pattern, (c.name, c.plugin))}
        if not hits:
            plugins = sorted({c.plugin for c in checks})
            raise UsageError(f"No check of a method or metric matches {pattern!r}. Plugins with checks: "
                             f"{', '.join(plugins) or 'none'} (`xbench list verifications` names every check).")
        chosen |= hits
    if patterns:
        checks = [c for c in checks if c.name in chosen]
    return sorted(checks, key=lambda c: (c.kind, c.plugin, c.name))


def verify(registry, patterns: tuple[str, ...] = (), progress=None) -> Record:
    """Run the chosen checks (all by default) and make the record. ``progress(spec)`` is called
    before each check."""
    from . import __version__

    outcomes = []
    for spec in select(registry, patterns):
        if progress is not None:
            progress(spec)
        entry = registry.get("verifications", spec.name)
        outcomes.append(run_check(registry, spec, entry.plugin.name))
    checked = {(c.kind, c.plugin) for c in (registry.get("verifications", n).spec
                                            for n in registry.names("verifications"))}
    unverified = {kind: [n for n in registry.names(kind) if (kind, n) not in checked] for kind in VERIFIABLE}
    versions = {"xbench": __version__, "python": platform.python_version()} | {
        d: _version(d) for d in ("torch", "numpy")}
    return Record(outcomes, unverified, versions=versions)


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return "0" if value == 0 else f"{value:.2g}"


def reference_text(o: Outcome) -> str:
    """"quantus 0.6.0: RegionPerturbation", or the reference alone for a re-implementation."""
    if not o.library:
        return o.reference
    return f"{o.library} {o.library_version or '(not installed)'}: {o.reference}"


def markdown(record: Record) -> str:
    """The record as a Markdown table (plugin-provided text escaped for tables)."""
    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")

    c = record.counts
    lines = ["# xbench verification record", "",
             f"{c['pass']} passed, {c['fail']} failed, {c['error']} errors, {c['skipped']} skipped "
             f"(xbench {esc(record.versions.get('xbench'))}, torch {esc(record.versions.get('torch'))}, "
             f"{esc(record.created)}).", "",
             "| plugin | reference | inputs | max abs difference | tolerance | verdict | definition differences "
             "adjusted for |", "|---|---|---|---|---|---|---|"]
    for o in record.outcomes:
        verdict = o.verdict + (f": {o.reason}" if o.reason else "")
        lines.append(f"| {esc(o.kind[:-1])} {esc(o.plugin)} | {esc(reference_text(o))} | {esc(o.inputs)} | "
                     f"{_fmt(o.difference)} | {_fmt(o.tolerance)} | {esc(verdict)} | {esc(o.differences) or '—'} |")
    for kind, names in record.unverified.items():
        if names:
            lines += ["", f"Not verified ({kind}, no check installed): {esc(', '.join(names))}."]
    return "\n".join(lines) + "\n"
