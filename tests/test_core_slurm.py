"""The slurm executor, run for real through submitit's local executor (``cluster = "local"``: the
array's tasks are processes on this machine): the same rows as the local executor, a killed task
resubmitted or resumed, a pre-empted task requeued, and never a duplicate row. The sbatch script a
cluster would get is checked through submitit's own SLURM executor with a stand-in ``sbatch``."""

from __future__ import annotations

import json
import os
import stat

import pandas as pd
import pytest

from helpers import TINY, write_config
from xbench import load_results
from xbench.config import load_config
from xbench.errors import UsageError
from xbench.registry import load_registry
from xbench.results import MEASUREMENTS
from xbench.runner import run

pytest.importorskip("submitit")

ORDER = ["unit", "value_name", "sample"]
CONFIG = TINY.replace("seeds = [0]", "seeds = [0, 1]\nthreads = 1").replace(
    "[methods.saliency]", "[methods.saliency]\n[methods.\"crash.gradient\"]")


def _slurm(retries: int) -> str:
    return f"""
[executor.slurm]
cluster = "local"
parallel = 2
poll = 0.2
retries = {retries}
"""


def _rows(out):
    rows = load_results(out).sort_values(ORDER).reset_index(drop=True)
    assert not rows.duplicated(ORDER).any()
    return rows.drop(columns=list(MEASUREMENTS))


def _local_rows(tmp_path, config_path, cache):
    """The local executor's rows of the config (computed once for the module's tests)."""
    if "rows" not in cache:
        registry = load_registry()
        summary = run(load_config(str(config_path), registry), registry, out=tmp_path / "local")
        # 2 cells × (3 methods × 2 metrics + classification + model-fit)
        assert not summary.failed and summary.computed == 16
        cache["rows"] = _rows(tmp_path / "local")
    return cache["rows"]


_REFERENCE: dict = {}


def _setup(tmp_path, use_sites, retries: int):
    use_sites("acme", "crash")  # on PYTHONPATH too, so the task processes find the plugins
    config_path = write_config(tmp_path / "c.toml", CONFIG + _slurm(retries))
    return config_path, _local_rows(tmp_path, config_path, _REFERENCE)


def _slurm_run(config_path, out, marker=None, monkeypatch=None):
    if marker is not None:
        monkeypatch.setenv("XBENCH_CRASH_MARKER", str(marker))
    registry = load_registry()
    return run(load_config(str(config_path), registry, overrides={"executor": "slurm"}), registry, out=out)


def test_a_killed_task_is_submitted_again_for_its_missing_units(tmp_path, use_sites, monkeypatch):
    config_path, want = _setup(tmp_path, use_sites, retries=1)
    marker = tmp_path / "crash"
    marker.write_text("KILL")
    out = tmp_path / "slurm"
    summary = _slurm_run(config_path, out, marker, monkeypatch)
    assert not marker.exists()  # a task did kill itself
    assert not summary.failed and summary.status == "complete" and summary.computed == 16
    pd.testing.assert_frame_equal(_rows(out), want)
    assert len(list((out / "results").glob("*.parquet"))) == 16


def test_a_killed_task_without_retries_fails_its_units_and_the_next_run_resumes_them(tmp_path, use_sites,
                                                                                     monkeypatch):
    config_path, want = _setup(tmp_path, use_sites, retries=0)
    marker = tmp_path / "crash"
    marker.write_text("KILL")
    out = tmp_path / "slurm"
    first = _slurm_run(config_path, out, marker, monkeypatch)
    assert first.status == "failed units" and first.failed
    assert {e["phase"] for e in first.failed} <= {"explain", "executor"}
    assert any(e["method"] == "crash.gradient" and e["phase"] == "explain" for e in first.failed)
    done = len(list((out / "results").glob("*.parquet")))
    assert 0 < done < 16  # the units the task finished before it died were written
    second = _slurm_run(config_path, out)
    assert second.status == "complete" and second.skipped_done == done and second.computed == 16 - done
    pd.testing.assert_frame_equal(_rows(out), want)
    assert not list((out / "errors").glob("*.json"))


def test_the_array_gives_the_local_executors_rows_through_a_preempted_and_requeued_task(tmp_path, use_sites,
                                                                                       monkeypatch):
    """SLURM's pre-emption signal (SIGUSR2) in the middle of a task: submitit requeues it, the
    requeued task computes only the units its spool lacks, and the run equals the local one."""
    from submitit.core.utils import pickle_load

    config_path, want = _setup(tmp_path, use_sites, retries=0)  # requeued by submitit, not resubmitted
    marker = tmp_path / "crash"
    marker.write_text("USR2")
    out = tmp_path / "slurm"
    summary = _slurm_run(config_path, out, marker, monkeypatch)
    assert not marker.exists()
    assert not summary.failed and summary.status == "complete" and summary.computed == 16
    pd.testing.assert_frame_equal(_rows(out), want)
    jobs = out / "slurm" / "jobs"
    requeued = [p for p in jobs.glob("*_log.out") if "this job is preempted" in p.read_text()]
    assert len(requeued) == 1 and "Requeued job" in requeued[0].read_text()
    assert requeued[0].read_text().count("Loading pickle") == 2  # one task, started again
    outcome, computed = pickle_load(jobs / requeued[0].name.replace("_log.out", "_result.pkl"))
    assert outcome == "success" and 0 < computed < 8  # of its cell's 8 units, only those not spooled before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["executor"]["slurm"]["cluster"] == "local"
    assert len(manifest["cells"]) == 2 and all(c["timings"]["explain"] > 0 for c in manifest["cells"].values())
    assert len(list((out / "gallery").glob("*/inputs.npz"))) == 2  # the tasks' gallery, written by the driver
    assert not list((out / "slurm" / "spool").glob("*"))  # every spool written and removed


def _fake_sbatch(folder):
    """A stand-in ``sbatch`` (and ``srun``, which submitit looks for) that keeps the script it is
    given and answers as SLURM does."""
    folder.mkdir()
    for name, body in (("sbatch", f'cp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"\n'),
                       ("srun", "exit 0\n")):
        path = folder / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def test_the_sbatch_script_holds_the_array_throttle_gpu_cap_and_resources(tmp_path, monkeypatch, use_sites):
    import submitit

    from xbench.runner import _default_threads
    from xbench.slurm import CellTask, sbatch_parameters, throttle

    use_sites("acme")
    bin_dir = _fake_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    registry = load_registry()
    config_path = write_config(tmp_path / "c.toml", TINY + """
[executor.slurm]
partition = "gpu"
account = "lab"
qos = "normal"
time = 90
mem = "16G"
cpus = 4
gpus = 2
max_gpus = 6
parallel = 10
sbatch = ["--constraint=a100", "--exclusive"]
setup = ["module load cuda/12.4"]
""")
    config = load_config(str(config_path), registry, overrides={"executor": "slurm"})
    settings = config.executors["slurm"]
    assert throttle(settings) == 3  # 6 GPUs at most, 2 per task
    assert _default_threads(config) == 4  # every cell computes with the task's CPUs
    executor = submitit.SlurmExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(**sbatch_parameters(settings))
    executor.submit_array([CellTask(None, str(tmp_path / f"spool{i}"), print) for i in range(7)])
    script = (bin_dir / "submitted.sh").read_text().splitlines()
    for line in ("#SBATCH --array=0-6%3", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=normal",
                 "#SBATCH --time=90", "#SBATCH --mem=16G", "#SBATCH --cpus-per-task=4", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --constraint=a100", "#SBATCH --exclusive", "#SBATCH --job-name=xbench",
                 "module load cuda/12.4"):
        assert line in script, (line, script)


def test_slurm_settings_are_checked_before_anything_runs(tmp_path, use_sites):
    use_sites("acme")
    registry = load_registry()
    for table, expected in (('mem = "lots"', "SLURM size"), ("gpus = -1", "≥ 0"), ('partion = "gpu"', "partition"),
                            ('sbatch = ["constraint=a100"]', "one sbatch option")):
        path = write_config(tmp_path / "c.toml", TINY + f"\n[executor.slurm]\n{table}\n")
        with pytest.raises(UsageError) as err:
            load_config(str(path), registry)
        assert "[executor.slurm]" in str(err.value) and expected in str(err.value)
    path = write_config(tmp_path / "c.toml", TINY + "\n[executor.slurmm]\n")
    with pytest.raises(UsageError, match="names no installed executor.*slurm"):
        load_config(str(path), registry)
    path = write_config(tmp_path / "c.toml", TINY + "\n[executor.slurm]\ngpus = 4\nmax_gpus = 2\n")
    with pytest.raises(UsageError, match="max_gpus = 2 is fewer than the 4 GPUs"):
        load_config(str(path), registry)
