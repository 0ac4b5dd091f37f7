"""Run integrity: a plugin that changes what it is handed, exits or returns nonsense costs only its
own units, and never another plugin's numbers; a run's status says truthfully how it ended; damaged
parts are recomputed; files respect the umask; one run per directory at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from helpers import TINY, run_cli, write_config
from xbench import load_results
from xbench.config import load_config
from xbench.errors import UsageError
from xbench.plan import make_plan
from xbench.registry import load_registry
from xbench.results import MEASUREMENTS
from xbench.runner import run
from xbench.store import RunStore

# the tiny benchmark of the other core tests, without its sample plugin's method and the model-level metric
BASE = (TINY.replace('name = "tiny"\n', "").replace("gallery = 2", "gallery = 0")
        .replace('[methods."acme.x-sign-grad"]\n', "").replace("[metrics.classification]\n", ""))

HOSTILE = BASE + """
[datasets."hostile.empty-test"]
[models."hostile.one-logit"]
[methods."hostile.weights"]
[metrics."hostile.clamp"]
[metrics."hostile.exit"]
[metrics."hostile.interrupt"]
[metrics."hostile.empty"]
[metrics."hostile.complex"]
[metrics."hostile.nan"]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same benchmark with and without the hostile plugins (one run each, shared by the tests)."""
    root = tmp_path_factory.mktemp("integrity")
    mp = pytest.MonkeyPatch()
    from helpers import SITES

    for name in ("acme", "hostile"):
        mp.syspath_prepend(str(SITES[name]))
    registry = load_registry()
    clean = run(load_config(str(write_config(root / "clean.toml", BASE)), registry), registry, out=root / "clean")
    hostile_cfg = load_config(str(write_config(root / "hostile.toml", HOSTILE)), registry)
    hostile = run(hostile_cfg, registry, out=root / "hostile")
    yield {"clean": clean, "hostile": hostile, "root": root, "registry": registry}
    mp.undo()


def _errors(summary) -> dict[tuple, dict]:
    return {(e["dataset"], e["model"], e["method"], e["metric"]): e for e in summary.failed}


def _values(out, **where) -> pd.Series:
    df = load_results(out)
    for k, v in where.items():
        df = df[df[k] == v]
    return df.sort_values(["value_name", "sample"])["value"].reset_index(drop=True)


def test_a_metric_that_edits_the_attribution_fails_alone(runs):
    errors = _errors(runs["hostile"])
    clamp = errors[("acme.planted", "small-cnn", "saliency", "hostile.clamp")]
    assert clamp["phase"] == "score"
    assert "metric 'hostile.clamp' changed ctx.attribution in place" in clamp["error"]
    # tpr-tnr runs after hostile.clamp on the same shared maps, and scores exactly what it scores alone
    hostile = _values(runs["hostile"].out, method="saliency", metric="tpr-tnr")
    clean = _values(runs["clean"].out, method="saliency", metric="tpr-tnr")
    assert len(clean) and hostile.equals(clean)


def test_a_method_that_changes_the_weights_fails_alone_and_is_not_cached(runs):
    errors = _errors(runs["hostile"])
    for metric in ("tpr-tnr", "acme.mass"):
        e = errors[("acme.planted", "small-cnn", "hostile.weights", metric)]
        assert e["phase"] == "explain" and "changed the model's weights" in e["error"]
    # saliency runs after it on the same model and equals the run without it
    for metric in ("tpr-tnr", "acme.mass"):
        assert _values(runs["hostile"].out, method="saliency", metric=metric).equals(
            _values(runs["clean"].out, method="saliency", metric=metric))
    # only saliency's two batches (32 samples in batches of 16) were cached: the corrupted maps never
    cached = list((runs["hostile"].out / "cache" / "attributions").rglob("*.pt"))
    assert len(cached) == 2


def test_bad_metric_outputs_and_exits_are_unit_errors(runs):
    errors = _errors(runs["hostile"])
    cell = ("acme.planted", "small-cnn", "saliency")
    assert "returned no values" in errors[(*cell, "hostile.empty")]["error"]
    assert "complex values" in errors[(*cell, "hostile.complex")]["error"]
    assert errors[(*cell, "hostile.exit")]["error"].startswith("SystemExit")
    assert errors[(*cell, "hostile.interrupt")]["error"].startswith("KeyboardInterrupt")
    df = load_results(runs["hostile"].out)
    nan = df[(df["metric"] == "hostile.nan") & (df["method"] == "saliency")]
    assert len(nan) == 32 and nan["value"].isna().all()
    assert nan["note"].str.contains("returned NaN or Inf without a reason").all()
    assert runs["hostile"].status == "failed units"  # the run went on after the plugin's SystemExit


def test_empty_test_split_and_missing_logits_fail_only_their_cell(runs):
    errors = _errors(runs["hostile"])
    empty = [e for k, e in errors.items() if k[0] == "hostile.empty-test"]
    assert empty and all(e["phase"] == "load" and "empty test split" in e["error"] for e in empty)
    narrow = [e for k, e in errors.items() if k[:2] == ("acme.planted", "hostile.one-logit")]
    assert narrow and all(e["phase"] == "predict" and "logits of shape (48, 1)" in e["error"] for e in narrow)
    df = load_results(runs["hostile"].out)
    good = df[(df["dataset"] == "acme.planted") & (df["model"] == "small-cnn")]
    assert set(good["metric"]) >= {"tpr-tnr", "acme.mass", "model-fit", "hostile.nan"}


def test_model_fit_says_whether_the_model_learned(runs):
    df = load_results(runs["clean"].out)
    fit = df[df["metric"] == "model-fit"].set_index("value_name")["value"]
    assert fit["test_accuracy"] > 0.8 and fit["chance"] == pytest.approx(0.5, abs=0.1)
    assert fit["above_chance"] == pytest.approx(fit["test_accuracy"] - fit["chance"])
    assert 0.5 < fit["val_accuracy"] <= 1


def test_a_model_written_from_the_hookspec_example_gets_gradient_methods(runs, tmp_path):
    """ModelSpec's default tags are what a plain differentiable nn.Module supports."""
    from xbench import FitReport, ModelSpec
    from torch import nn

    class Tiny:
        @staticmethod
        def xbench_models():
            yield ModelSpec(name="example.tiny", fit=lambda m, d, p, ctx: FitReport(),
                            build=lambda info, params: nn.Sequential(
                                nn.Conv2d(info.channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(4, info.num_classes)))

    registry = load_registry(extra=[("example", Tiny())])
    config = load_config(str(write_config(tmp_path / "t.toml", BASE.replace("[models.small-cnn]", "[models.\"example.tiny\"]\n[models.small-cnn]"))), registry)
    plan = make_plan(config, registry)
    methods = {(u.cell.model.name, u.method.name) for u in plan.all_units if u.method is not None}
    assert ("example.tiny", "saliency") in methods


def test_a_damaged_part_is_computed_again(runs, tmp_path):
    out = runs["root"] / "clean"
    parts = sorted((out / "results").glob("*.parquet"))
    victim = parts[0]
    before = load_results(out).drop(columns=list(MEASUREMENTS)).sort_values(["unit", "value_name", "sample"])
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # a torn or damaged file
    assert victim.stem not in RunStore(out).done()
    registry = runs["registry"]
    again = run(load_config(str(runs["root"] / "clean.toml"), registry), registry, out=out)
    assert again.computed == 1 and again.status == "complete"
    after = load_results(out).drop(columns=list(MEASUREMENTS)).sort_values(["unit", "value_name", "sample"])
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))


def test_files_respect_the_umask(tmp_path):
    from xbench.store import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "part.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "part.bin").stat().st_mode & 0o777 == 0o644


def test_one_run_per_directory_at_a_time(tmp_path, use_sites):
    use_sites("acme")
    config = write_config(tmp_path / "c.toml", BASE)
    with RunStore(tmp_path / "busy").lock():
        result = run_cli("run", str(config), "--out", str(tmp_path / "busy"))
    assert result.returncode == 2 and "Another xbench run is writing" in result.stderr
    assert "Traceback" not in result.stderr


def test_out_that_cannot_be_a_directory_is_a_usage_error(tmp_path, use_sites):
    use_sites("acme")
    config = write_config(tmp_path / "c.toml", BASE)
    (tmp_path / "file").write_text("x")
    result = run_cli("run", str(config), "--out", str(tmp_path / "file" / "run"))
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr and "Traceback" not in result.stderr


def test_a_crash_is_recorded_as_crashed_with_the_missing_units(tmp_path, use_sites):
    use_sites("acme", "hostile")
    registry = load_registry()
    config = load_config(str(write_config(tmp_path / "c.toml", BASE.replace("seeds = [0]", "seeds = [0, 1]"))),
                         registry, overrides={"executor": "hostile.crash"})
    with pytest.raises(RuntimeError, match="the executor crashed"):
        run(config, registry, out=tmp_path / "crash")
    manifest = RunStore(tmp_path / "crash").read_manifest()
    assert manifest["status"] == "crashed"
    assert manifest["counts"]["missing"] == 3 and manifest["counts"]["computed"] == 3  # one of two cells done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_so(tmp_path, use_sites, sig):
    use_sites("acme")
    config = write_config(tmp_path / "c.toml", BASE.replace("seeds = [0]", "seeds = [0, 1, 2, 3]"))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "xbench.cli", "run", str(config), "--out", str(out),
                             "--no-leaderboard"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list((out / "results").glob("*.parquet")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Interrupted" in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["counts"]["missing"] > 0 and manifest["counts"]["planned"] == 12


def test_config_mistakes_are_usage_errors(tmp_path, use_sites):
    use_sites("acme")
    registry = load_registry()
    bad = {
        "latin1.toml": ("[run]\nname = 'caf\xe9'\n".encode("latin-1"), "is not UTF-8"),
        "runs.toml": (b"[[run]]\nseeds = [0]\n", "must be one table"),
    }
    for name, (data, message) in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UsageError, match=message):
            load_config(str(tmp_path / name), registry)
    (tmp_path / "bom.toml").write_bytes("\ufeff".encode() + BASE.encode())
    assert load_config(str(tmp_path / "bom.toml"), registry).run.seeds == [0]
    (tmp_path / "folder").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        load_config(str(tmp_path / "folder"), registry)
    with pytest.raises(UsageError, match=r"seeds.*less than 9223372036854775808"):
        load_config(str(write_config(tmp_path / "s.toml", BASE.replace("seeds = [0]", f"seeds = [{2**64}]"))),
                    registry)
    with pytest.raises(UsageError, match=r"param 'fill' of metric 'aopc'.*must be one of 'black'.*got 'grey'.*gray"):
        load_config(str(write_config(tmp_path / "f.toml", BASE + '[metrics.aopc]\nfill = "grey"\n')), registry)
    with pytest.raises(UsageError, match=r"param 'ties' of metric 'tpr-tnr'.*did you mean \"random\""):
        load_config(str(write_config(tmp_path / "t.toml", BASE.replace("[metrics.tpr-tnr]", '[metrics.tpr-tnr]\nties = "randm"'))), registry)
