"""Run integrity: a plugin that changes what it is handed, exits or returns nonsense costs only its
own units, and never another plugin's numbers; a run's status says truthfully how it ended; damaged
parts are recomputed; files respect the umask; one run per directory at a time."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import TINY, run_cli, write_config
from xbench import load_results
from xbench.cli import main
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
[datasets."hostile.nan-test"]
[datasets."hostile.nan-lazy-test"]
[datasets."hostile.coarse"]
[models."hostile.one-logit"]
[models."hostile.diverges"]
[models."hostile.edits-data"]
[methods."hostile.weights"]
[methods."hostile.negate"]
[methods."hostile.permute"]
[methods."hostile.hook"]
[metrics."hostile.shuffle"]
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
    # only saliency's maps were cached (two batches of 16 on acme.planted, one of 8 on hostile.coarse): the
    # maps of the methods that changed the model never were
    cached = list((runs["hostile"].out / "cache" / "attributions").rglob("*.pt"))
    assert len(cached) == 3


@pytest.mark.parametrize("method, changed", [
    ("hostile.negate", "the model's weights ('"),          # every norm kept: a checksum of norms passed it
    ("hostile.permute", "the model's weights ('"),         # the first layer's filters reversed
    ("hostile.hook", "a forward hook on the model (left registered: xbench_hostile.swap_logits)"),
])
def test_norm_keeping_edits_and_left_hooks_are_caught_named_and_not_cached(runs, method, changed):
    errors = _errors(runs["hostile"])
    for metric in ("tpr-tnr", "acme.mass"):
        e = errors[("acme.planted", "small-cnn", method, metric)]
        assert e["phase"] == "explain" and e["error"].startswith(f"PluginMisbehaved: Method '{method}' changed ")
        assert changed in e["error"] and "discarded and not cached" in e["error"]
    # saliency runs after all of them on the same model: its numbers are the clean run's (a logit-swapping
    # hook left behind changed them), and only its own maps are cached (see the weights test above)
    for metric in ("tpr-tnr", "acme.mass"):
        assert _values(runs["hostile"].out, method="saliency", metric=metric).equals(
            _values(runs["clean"].out, method="saliency", metric=metric))


def test_a_metric_that_reorders_the_test_images_is_caught_and_later_units_see_the_split(runs):
    errors = _errors(runs["hostile"])
    for dataset in ("hostile.coarse", "acme.planted"):  # 8-bit images: every sum is exact, whatever the order
        e = errors[(dataset, "small-cnn", None, "hostile.shuffle")]
        assert e["phase"] == "score" and "The metric 'hostile.shuffle' changed ctx.inputs in place" in e["error"]
    # the sample units after it pair each image with its own label again: their rows are the clean run's
    for metric in ("tpr-tnr", "acme.mass"):
        assert _values(runs["hostile"].out, method="saliency", metric=metric).equals(
            _values(runs["clean"].out, method="saliency", metric=metric))


def test_a_fit_that_changes_the_dataset_fails_its_cell_and_the_next_model_trains_on_the_real_data(runs):
    errors = _errors(runs["hostile"])
    e = errors[("acme.planted", "hostile.edits-data", None, "model-fit")]
    assert e["phase"] == "fit" and e["error"].startswith(
        "PluginMisbehaved: Model 'hostile.edits-data': its fit changed the dataset in place (train.images)")
    # small-cnn trains after it on the same dataset: its model and rows are the clean run's
    df, clean = load_results(runs["hostile"].out), load_results(runs["clean"].out)
    fit = lambda d: d[(d["metric"] == "model-fit") & (d["dataset"] == "acme.planted") & (d["model"] == "small-cnn")]  # noqa: E731
    assert fit(df).set_index("value_name")["value"].equals(fit(clean).set_index("value_name")["value"])


def test_nan_in_data_or_weights_is_named_and_blamed_on_no_other_plugin(runs):
    errors = _errors(runs["hostile"])
    where = "its test split's images hold 8 NaN values in 2 of 6 samples (1, 3)"
    data = [e for k, e in errors.items() if k[0] == "hostile.nan-test"]
    assert data and all(e["phase"] == "load" and e["error"].startswith(
        f"NotFinite: Dataset 'hostile.nan-test' (seed 0): {where}") for e in data)
    # a lazy test split is read batch by batch: its NaN is found when the cell predicts it
    lazy = [e for k, e in errors.items() if k[0] == "hostile.nan-lazy-test" and k[1] == "small-cnn"]
    assert lazy and all(e["phase"] == "predict" and e["error"].startswith(
        f"NotFinite: Dataset 'hostile.nan-lazy-test' (seed 0): {where}") for e in lazy)
    weights = [e for k, e in errors.items() if k[:2] == ("acme.planted", "hostile.diverges")]
    assert weights and all(e["phase"] == "fit" and e["error"].startswith(
        "NotFinite: Model 'hostile.diverges' after training holds NaN or Inf in its weights: "
        "'head.bias' (2 NaN of 2 values)") for e in weights)
    nan_cells = [e for k, e in errors.items() if ("nan" in k[0] or k[1] == "hostile.diverges")
                 and k[1] != "hostile.edits-data"]  # (that one's fit does change the data it is handed)
    assert not any("PluginMisbehaved" in e["error"] for e in nan_cells)  # never blamed on model-fit or a metric
    cached = [json.loads(p.read_text())["model"] for p in (runs["hostile"].out / "cache" / "models").glob("*.json")]
    assert "small-cnn" in cached and "hostile.diverges" not in cached  # NaN weights are never cached


def test_bad_metric_outputs_and_exits_are_unit_errors(runs):
    errors = _errors(runs["hostile"])
    cell = ("acme.planted", "small-cnn", "saliency")
    assert "returned no values" in errors[(*cell, "hostile.empty")]["error"]
    assert "complex values" in errors[(*cell, "hostile.complex")]["error"]
    assert errors[(*cell, "hostile.exit")]["error"].startswith("SystemExit")
    assert errors[(*cell, "hostile.interrupt")]["error"].startswith("KeyboardInterrupt")
    df = load_results(runs["hostile"].out)
    nan = df[(df["metric"] == "hostile.nan") & (df["method"] == "saliency") & (df["dataset"] == "acme.planted")]
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
    from xbench.atomic import atomic_write_bytes

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


def test_a_damaged_manifest_is_rebuilt_by_run_and_explained_by_findings_and_leaderboard(runs, use_sites):
    use_sites("acme")
    config, out = runs["root"] / "clean.toml", runs["root"] / "clean"  # (the last test to use the clean run)
    manifest = out / "manifest.json"
    for damage, reason in ((manifest.read_bytes()[: manifest.stat().st_size // 2], "is not valid JSON"),
                           (b"[]", "holds a JSON list, not an object")):
        manifest.write_bytes(damage)
        for command in (["findings", str(out)], ["leaderboard", str(out)]):
            result = CliRunner().invoke(main, command)
            text = " ".join(result.output.split())
            assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (command, result.output)
            assert f"The manifest of run '{out}' is damaged: it {reason}" in text
            assert f"delete '{manifest}'" in text and "xbench run CONFIG --out" in text
        with pytest.raises(UsageError, match="is damaged"):
            load_results(out)
    again = CliRunner().invoke(main, ["run", str(config), "--out", str(out), "--no-leaderboard"])
    text = " ".join(again.output.split())
    assert again.exit_code == 0, again.output
    assert f"0 units computed, {runs['clean'].planned} already done" in text and "was damaged; it is kept as" in text
    assert RunStore(out).read_manifest()["status"] == "complete"
    assert (out / "manifest.json.damaged").read_bytes() == b"[]"


def test_a_full_disk_stops_the_run_with_a_clear_message_and_an_honest_status(tmp_path, use_sites, monkeypatch):
    use_sites("acme")
    config = write_config(tmp_path / "c.toml", BASE.replace("seeds = [0]", "seeds = [0, 1]"))
    out = tmp_path / "run"
    real, parts = tempfile.mkstemp, []

    def mkstemp(*args, dir=None, **kwargs):  # the disk fills up after two result parts
        if dir is not None and str(dir).startswith(str(out)):
            if len(parts) >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            if str(dir).endswith("results"):
                parts.append(dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    result = CliRunner().invoke(main, ["run", str(config), "--out", str(out), "--no-leaderboard"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert "The disk is full: Could not write" in text and "No space left on device" in text
    assert "2 of 6 planned units have whole results" in text and "run the same command again" in text
    assert "manifest could not be updated either" in text
    assert not list((out / "errors").glob("*.json"))  # no plugin was blamed for the disk
    assert RunStore(out).read_manifest()["status"] == "stopped"  # it said "running", and nobody runs it
    monkeypatch.setattr(tempfile, "mkstemp", real)  # space freed: the same command finishes the run
    again = CliRunner().invoke(main, ["run", str(config), "--out", str(out), "--no-leaderboard"])
    assert again.exit_code == 0 and "4 units computed, 2 already done" in " ".join(again.output.split())
    assert "stopped without recording how it ended" in " ".join(again.output.split())


def test_a_segfaulting_method_leaves_a_run_that_reads_as_stopped(tmp_path, use_sites):
    use_sites("acme", "hostile")
    config = write_config(tmp_path / "c.toml", BASE + '[methods."hostile.segfault"]\n')
    out = tmp_path / "run"
    crashed = subprocess.run(
        [sys.executable, "-m", "xbench.cli", "run", str(config), "--out", str(out), "--no-leaderboard"],
        capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))  # no core file
    assert crashed.returncode == -signal.SIGSEGV, crashed.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # it could not say more
    assert RunStore(out).read_manifest()["status"] == "stopped"
    assert "in segfaults" in (out / "crash.log").read_text()  # faulthandler's stack names the plugin's function
    findings = run_cli("findings", str(out))
    assert "Run stopped without recording how it ended" in " ".join(findings.stderr.split())
    again = run_cli("run", str(config), "--out", str(out), "-a", "saliency", "--no-leaderboard")
    text = " ".join(again.stderr.split())
    assert again.returncode == 0, again.stderr
    assert "the last run into this folder stopped without recording how it ended" in text
    assert "It crashed; the Python stack at the crash" in text and "segfaults" in text
    assert RunStore(out).read_manifest()["status"] == "complete"
