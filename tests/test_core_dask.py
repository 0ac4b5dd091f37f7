"""The dask executor, on a LocalCluster bound to 127.0.0.1, gives the same rows as the local one."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from helpers import TINY, run_cli, write_config
from xbench import load_results
from xbench.results import MEASUREMENTS
from xbench.config import load_config
from xbench.registry import load_registry
from xbench.runner import run

pytest.importorskip("distributed")

ORDER = ["unit", "value_name", "sample"]


def test_dask_local_cluster_matches_local_executor(tmp_path, use_sites):
    use_sites("acme")  # on PYTHONPATH too, so the worker processes find the plugin through its entry point
    config_path = write_config(tmp_path / "c.toml", TINY.replace("seeds = [0]", "seeds = [0, 1]"))
    registry = load_registry()
    local = run(load_config(str(config_path), registry), registry, out=tmp_path / "local")
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    dask = run(load_config(str(config_path), registry, overrides={"executor": "dask", "workers": 2}), registry,
               out=tmp_path / "dask")
    assert not local.failed and not dask.failed
    # the nanny's OMP_NUM_THREADS=1 did not stay in the driver (later subprocesses would use 1 thread)
    assert {k: os.environ.get(k) for k in threads} == threads
    assert dask.computed == local.computed == 12  # 2 cells × (5 selected units + model-fit)
    a = load_results(tmp_path / "local").sort_values(ORDER).reset_index(drop=True).drop(columns=list(MEASUREMENTS))
    b = load_results(tmp_path / "dask").sort_values(ORDER).reset_index(drop=True).drop(columns=list(MEASUREMENTS))
    pd.testing.assert_frame_equal(a, b)
    manifest = json.loads((tmp_path / "dask" / "manifest.json").read_text())
    assert manifest["config"]["run"]["executor"] == "dask"
    assert len(manifest["cells"]) == 2 and all(c["timings"]["fit"] > 0 for c in manifest["cells"].values())
    # the driver wrote the gallery that the workers returned
    assert len(list((tmp_path / "dask" / "gallery").glob("*/inputs.npz"))) == 2


def test_unreachable_scheduler_is_a_usage_error(tmp_path, use_sites):
    from click.testing import CliRunner

    from xbench.cli import main

    use_sites("acme")
    config_path = write_config(tmp_path / "c.toml", TINY)
    result = CliRunner().invoke(main, ["run", str(config_path), "--out", str(tmp_path / "x"), "--executor", "dask",
                                       "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert "Could not reach the Dask scheduler at 'tcp://127.0.0.1:9'" in " ".join(result.output.split())


def test_cluster_logs_stay_quiet(tiny_config, tmp_path):
    """The scheduler's and the worker processes' INFO lines would bury the progress bar; only the run's
    own lines reach stderr."""
    result = run_cli("run", str(tiny_config()), "--out", str(tmp_path / "out"), "--executor", "dask",
                     "--workers", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "distributed." not in result.stderr, result.stderr[:2000]
    assert "Done in" in result.stdout
