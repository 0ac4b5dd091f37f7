"""SIGKILL a running `xbench run` twice, resume: the results equal an uninterrupted run's, no duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from helpers import TINY, write_config
from xbench import load_results
from xbench.results import MEASUREMENTS
from xbench.config import load_config
from xbench.registry import load_registry
from xbench.runner import run
from xbench.store import RunStore

CONFIG = TINY.replace("seeds = [0]", "seeds = [0, 1, 2]") + """
[methods.integrated-gradients]
steps = 16
"""
ORDER = ["unit", "value_name", "sample"]


def _start(config, out):
    return subprocess.Popen([sys.executable, "-m", "xbench.cli", "run", str(config), "--out", str(out),
                             "--no-leaderboard"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after(proc, out, parts: int, timeout: float = 300) -> int:
    """SIGKILL ``proc`` as soon as ``out`` holds at least ``parts`` result parts; return how many it held."""
    results = out / "results"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(list(results.glob("*.parquet"))) if results.exists() else 0
        if count >= parts:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return count
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read()}"
        time.sleep(0.02)
    raise AssertionError("the run made no progress")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, use_sites):
    use_sites("acme")
    config = write_config(tmp_path / "resume.toml", CONFIG)
    registry = load_registry()
    reference_dir = tmp_path / "reference"
    reference = run(load_config(str(config), registry), registry, out=reference_dir)
    total = reference.planned
    assert total == 3 * 8 and not reference.failed  # 7 selected units + model-fit per cell

    out = tmp_path / "interrupted"
    first = _kill_after(_start(config, out), out, parts=2)
    second = _kill_after(_start(config, out), out, parts=first + 6)
    assert 0 < first < second < total, (first, second, total)
    # what a killed run leaves is readable: whole parts only (a torn temp file is never a result)
    assert len(load_results(out)) > 0
    # the killed run could not record its end; nobody holds its lock, so readers say it stopped
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert RunStore(out).read_manifest()["status"] == "stopped"

    finish = subprocess.run([sys.executable, "-m", "xbench.cli", "run", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    assert f"{second} already done" in " ".join(finish.stdout.split())
    assert not list((out / "results").glob(".*.tmp"))

    got = load_results(out).sort_values(ORDER).reset_index(drop=True).drop(columns=list(MEASUREMENTS))
    want = load_results(reference_dir).sort_values(ORDER).reset_index(drop=True).drop(columns=list(MEASUREMENTS))
    assert not got.duplicated(ORDER).any()
    assert len(list((out / "results").glob("*.parquet"))) == total
    pd.testing.assert_frame_equal(got, want)
