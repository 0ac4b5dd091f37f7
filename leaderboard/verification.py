"""What the verification record (``xbench verify --out RUN_DIR/verification``) says about each
method and metric of a run, read from its JSON file alone (the leaderboard never imports a plugin
or runs a check).

A plugin is *verified* when at least one of its checks passed and none failed, *failed* when one
failed or raised, and *not verified* when it has no check or every check was skipped (its reference
was not installed). A check made for another version of the plugin than the run used is named as
such beside the mark.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..verification import DEFAULT_DIR, RECORD_FILE

SYMBOLS = {"verified": "✓", "failed": "✗", "not verified": "–"}


@dataclass(frozen=True)
class Check:
    """One row of the record, as the pages show it."""

    name: str
    reference: str
    inputs: str
    difference: float | None
    tolerance: float
    verdict: str
    reason: str
    differences: str
    plugin_version: str | None


@dataclass(frozen=True)
class Mark:
    """The verification state of one method or metric of the run."""

    kind: str            # methods | metrics
    name: str            # the plugin's name (a label's variants share it)
    state: str           # verified | failed | not verified
    checks: tuple[Check, ...] = ()
    note: str = ""       # e.g. "checked version 1; this run used 2"
    covered: bool = True  # False: the record ran a subset of the checks and none of this plugin's

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.state]

    @property
    def anchor(self) -> str:
        return f"{self.kind}-{self.name}"

    @property
    def against(self) -> str:
        """The references it passed against (verified), failed against (failed), or why it is not
        verified."""
        if self.state == "verified":
            refs = [c.reference for c in self.checks if c.verdict == "pass"]
            return "verified against " + "; ".join(dict.fromkeys(refs))
        if self.state == "failed":
            return "failed verification against " + "; ".join(
                dict.fromkeys(c.reference for c in self.checks if c.verdict in ("fail", "error")))
        skipped = [c.reason for c in self.checks if c.verdict == "skipped"]
        if skipped:
            return f"not verified (check skipped: {'; '.join(dict.fromkeys(skipped))})"
        if not self.covered:
            return "not verified in this record (it ran a subset of the checks: run `xbench verify` without patterns)"
        return "not verified (no cross-check against an independent implementation)"

    @property
    def title(self) -> str:
        return self.against + (f" — {self.note}" if self.note else "")


@dataclass
class Verification:
    """The record (None when the run has none) and the mark of every method and metric label."""

    record: dict[str, Any] | None
    marks: dict[tuple[str, str], Mark] = field(default_factory=dict)  # (kind, label) → mark
    source: str = ""

    def method(self, label: str) -> Mark | None:
        return self.marks.get(("methods", label))

    def metric(self, label: str) -> Mark | None:
        return self.marks.get(("metrics", label))

    @property
    def plugins(self) -> list[Mark]:
        """One mark per plugin of the run (not per label), methods then metrics, by name."""
        unique = {(m.kind, m.name): m for m in self.marks.values()}
        return [unique[k] for k in sorted(unique)]

    @property
    def counts(self) -> dict[str, int]:
        return {state: sum(m.state == state for m in self.plugins) for state in SYMBOLS}

    @property
    def checks(self) -> list[dict[str, Any]]:
        return list((self.record or {}).get("checks", []))


def record_path(run_dir: Path) -> Path:
    return Path(run_dir) / DEFAULT_DIR / RECORD_FILE


def load_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when there is none; a DataError naming a damaged file."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read the verification record {path}: {exc}. Write it again with "
                        f"`xbench verify --out {path.parent}`, or delete it.") from exc
    if not isinstance(record, dict) or not isinstance(record.get("checks"), list):
        raise DataError(f"{path} is not a verification record written by `xbench verify` (no list of checks). "
                        f"Write it again with `xbench verify --out {path.parent}`.")
    return record


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return math.nan


def _reference(c: dict[str, Any]) -> str:
    library = c.get("library") or ""
    return f"{library} {c.get('library_version') or ''}: {c.get('reference', '')}".replace("  ", " ") if library \
        else str(c.get("reference", ""))


def verification(record: dict[str, Any] | None, labels: dict[str, dict[str, str]],
                 versions: dict[str, dict[str, str]] | None = None, source: str = "") -> Verification:
    """The marks of a run's labels. ``labels``: kind → {label: plugin name}, from the rows;
    ``versions``: kind → {plugin name: spec version} from the manifest (to name stale checks)."""
    out = Verification(record, source=source)
    if record is None:
        return out
    by_plugin: dict[tuple[str, str], list[Check]] = {}
    for c in record.get("checks", []):
        check = Check(str(c.get("name", "")), _reference(c), str(c.get("inputs", "")), _number(c.get("difference")),
                      _number(c.get("tolerance")) or 0.0, str(c.get("verdict", "")), str(c.get("reason", "")),
                      str(c.get("differences", "")), c.get("plugin_version"))
        by_plugin.setdefault((str(c.get("kind")), str(c.get("plugin"))), []).append(check)
    versions = versions or {}
    unchecked = record.get("unverified") or {}
    for kind, names in labels.items():
        for label, name in names.items():
            checks = tuple(by_plugin.get((kind, name), ()))
            verdicts = {c.verdict for c in checks}
            state = "failed" if verdicts & {"fail", "error"} else ("verified" if "pass" in verdicts else "not verified")
            used = versions.get(kind, {}).get(name)
            checked = sorted({str(c.plugin_version) for c in checks if c.verdict != "skipped" and c.plugin_version})
            note = (f"checked version {', '.join(checked)} of {name}; this run used version {used}"
                    if used and checked and checked != [str(used)] else "")
            covered = bool(checks) or name in unchecked.get(kind, ()) or kind not in unchecked
            out.marks[(kind, label)] = Mark(kind, name, state, checks, note, covered)
    return out
