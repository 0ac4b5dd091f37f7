"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

THIRDPARTY = Path(__file__).parent / "thirdparty"
SITES = {name: THIRDPARTY / f"{name}_site" for name in ("acme", "faulty", "clash", "hostile")}


def write_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body).lstrip())
    return path


TINY = """
[run]
name = "tiny"
seeds = [0]
batch_size = 16
samples = 32
gallery = 2

[datasets."acme.planted"]
n_train = 256
n_test = 48
size = 20

[models.small-cnn]
width = 8
epochs = 6
lr = 0.005

[methods.saliency]
[methods."acme.x-sign-grad"]

[metrics.tpr-tnr]
[metrics."acme.mass"]
[metrics.classification]
"""


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the installed ``xbench`` command in a subprocess."""
    cmd = [sys.executable, "-m", "xbench.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


@contextmanager
def torch_threads(n: int = 1):
    """Train with ``n`` torch threads inside the block (then restore): a test that trains a model gets
    the same numbers whatever OMP_NUM_THREADS the caller set, so its thresholds cannot flip."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
