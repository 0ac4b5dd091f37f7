"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

THIRDPARTY = Path(__file__).parent / "thirdparty"
SITES = {name: THIRDPARTY / f"{name}_site" for name in ("acme", "faulty", "clash", "hostile", "crash")}


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


def metric_ctx(module, x, attribution, labels=None, seed: int = 0, mask=None):
    """A metric context for a plain module on ``x`` with ``attribution`` (N, H, W) as the reduced map
    (reduction ``sum``), targets = labels (default all class 1), a generator seeded with ``seed`` on
    the inputs' device and an optional ground-truth ``mask``."""
    import torch

    from xbench import TrainedModel, results

    labels = torch.ones(len(x), dtype=torch.long, device=x.device) if labels is None else labels
    with torch.no_grad():
        logits = module(x).float()
    a = attribution.float()
    return results.metric_context(
        model=TrainedModel(module=module, info=None, target_layers={}), inputs=x, labels=labels, logits=logits,
        targets=labels, target_mode="label", params={}, generator=torch.Generator(x.device).manual_seed(seed),
        predict=module, attribution=results.prepare_attribution(a, tuple(a.shape[-2:]), "sum"), reduction="sum",
        device=x.device, mask=mask)


def __getattr__(name):
    # PatchSum subclasses torch's nn.Module: built on first use so that importing helpers stays light
    if name == "PatchSum":
        from torch import nn

        class PatchSum(nn.Module):
            """logits = [0, Σ_pixels weight·x]; records every batch it sees."""

            def __init__(self, weight):
                super().__init__()
                self.weight = weight
                self.seen = []

            def forward(self, x):
                import torch

                self.seen.append(x.clone())
                z = (x * self.weight.to(x.dtype)).flatten(1).sum(1)
                return torch.stack([torch.zeros_like(z), z], 1)

        globals()["PatchSum"] = PatchSum
        return PatchSum
    raise AttributeError(name)
