"""Running a real (tiny) benchmark: tidy rows, model rows, manifest, resume, caches, leaderboard."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from xbench import load_results
from xbench.cli import main
from xbench.config import load_config
from xbench.registry import load_registry
from xbench.runner import run


@pytest.fixture
def tiny_run(tiny_config, tmp_path):
    registry = load_registry()
    config = load_config(str(tiny_config()), registry)
    out = tmp_path / "run"
    summary = run(config, registry, out=out)
    return summary, out, registry


def test_rows_are_tidy_and_consistent(tiny_run):
    summary, out, _ = tiny_run
    assert summary.exit_code == 0 and not summary.failed
    df = load_results(out)
    samples = df[df["scope"] == "sample"]
    # 2 methods × (tpr-tnr: 6 values + acme.mass: 1 value) × 32 explained samples
    assert len(samples) == 2 * 7 * 32
    assert set(samples["method"]) == {"saliency", "acme.x-sign-grad"}
    assert samples.groupby(["method", "metric", "value_name"]).size().eq(32).all()
    assert (samples["correct"] == (samples["label"] == samples["prediction"])).all()
    assert (samples["target"] == samples["label"]).all()  # target mode "label"
    assert set(samples["reduction"]) == {"abs-luminance"}
    tpr = samples[samples["value_name"] == "tpr"]["value"]
    assert tpr.between(0, 1).all()
    assert samples.loc[samples["value_name"] == "tpr", "higher_is_better"].all()
    assert samples.loc[samples["value_name"] == "tp", "higher_is_better"].isna().all()
    # every row carries what produced it
    params = json.loads(samples["model_params"].iloc[0])
    assert params["width"] == 8 and params["untrained"] is False
    assert samples["dataset_version"].iloc[0] == "1"
    model_rows = df[df["scope"] == "model"]
    assert set(model_rows["value_name"]) >= {"accuracy", "auroc", "sensitivity", "specificity"}
    assert model_rows["method"].isna().all() and model_rows["sample"].isna().all()
    accuracy = model_rows.loc[model_rows["value_name"] == "accuracy", "value"].item()
    assert accuracy > 0.8  # the planted task is easy: a real model learned it


def test_manifest_records_provenance(tiny_run):
    summary, out, _ = tiny_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["versions"]["torch"] == torch.__version__.split("+")[0] or manifest["versions"]["torch"]
    assert manifest["device"]["device"] == "cpu"
    assert {p["name"] for p in manifest["plugins"]} >= {"acme", "xbench.plugins.models.small_cnn"}
    acme = next(s for s in manifest["specs"]["datasets"] if s["name"] == "acme.planted")
    assert acme["distribution"] == "xbench-acme" and acme["distribution_version"] == "0.1.0"
    assert len(manifest["units"]) == summary.planned == 6  # 5 selected + the model-fit every cell records
    cell = next(iter(manifest["cells"].values()))
    assert cell["fit"]["history"] and cell["timings"]["fit"] > 0
    assert manifest["timings"]["wall_seconds"] >= manifest["timings"]["plugin_total_seconds"] > 0


def test_rerun_computes_nothing_and_new_metric_reuses_model_and_attributions(tiny_run, tiny_config, monkeypatch):
    summary, out, registry = tiny_run
    before = load_results(out)
    again = run(load_config(str(tiny_config()), registry), registry, out=out)
    assert (again.computed, again.skipped_done) == (0, 6)
    pd.testing.assert_frame_equal(load_results(out), before)

    # a new metric: only its units run, the model comes from the cache and so do the attributions
    calls = {"fit": 0, "explain": 0}
    import xbench.plugins.methods.captum as cm
    import xbench.plugins.models.small_cnn as sc

    real_fit, real_saliency = sc.fit, cm.saliency

    def counting(name, real):
        def wrapper(*args):
            calls[name] += 1
            return real(*args)
        return wrapper

    monkeypatch.setattr(sc, "fit", counting("fit", real_fit))
    monkeypatch.setattr(cm, "saliency", counting("explain", real_saliency))
    registry = load_registry()  # the hooks read the patched functions when they build the specs
    config = load_config(str(tiny_config("[metrics.pompom]\n")), registry)
    third = run(config, registry, out=out)
    assert (third.computed, third.skipped_done) == (2, 6)
    assert calls == {"fit": 0, "explain": 0}
    df = load_results(out)
    assert set(df["metric"]) == {"tpr-tnr", "acme.mass", "classification", "pompom", "model-fit"}
    assert not df.duplicated(["unit", "value_name", "sample"]).any()

    # positive control: a new seed means a new model and new attributions, so both run
    config = load_config(str(tiny_config("[metrics.pompom]\n")), registry,
                         overrides={"seeds": [1]}, filters={"methods": ["saliency"]})
    run(config, registry, out=out)
    # 32 samples in batches of 16, after the one-sample warm-up call that keeps the method's imports
    # out of its measured time (once per method and worker)
    assert calls["fit"] == 1 and calls["explain"] == 3


def test_target_mode_predicted_is_recorded(tiny_config, tmp_path):
    registry = load_registry()
    config = load_config(str(tiny_config()), registry, overrides={"seeds": [0]},
                         filters={"metrics": ["acme.mass"], "methods": ["saliency"]})
    config.run.target = "predicted"
    run(config, registry, out=tmp_path / "pred")
    df = load_results(tmp_path / "pred")
    assert (df["target_mode"] == "predicted").all()
    samples = df[df["scope"] == "sample"]
    assert len(samples) and (samples["target"] == samples["prediction"]).all()


def test_nonfinite_attributions_and_bad_metric_output_are_handled(tiny_config, use_sites, tmp_path):
    use_sites("acme", "faulty")
    registry = load_registry()
    config = load_config(str(tiny_config("""
        [methods."faulty.nan"]
        [metrics."faulty.shape"]
        """)), registry, filters={"methods": ["faulty.nan"], "metrics": ["acme.mass", "faulty.shape"]})
    summary = run(config, registry, out=tmp_path / "nan")
    df = load_results(tmp_path / "nan")
    mass = df[(df["metric"] == "acme.mass")]
    nan_rows = mass[mass["value"].isna()]
    assert len(nan_rows) == 16  # even-indexed samples of each batch of 16 had NaN maps
    assert (nan_rows["sample"] % 2 == 0).all()
    assert nan_rows["note"].str.contains("attribution contains NaN or Inf").all()
    assert mass.loc[mass["value"].notna(), "note"].isna().all()
    (shape_error,) = summary.failed
    assert shape_error["metric"] == "faulty.shape" and shape_error["phase"] == "score"
    assert "expected one value per sample (16,)" in shape_error["error"]


def test_cli_run_prints_where_results_and_leaderboard_are(tiny_config, tmp_path):
    out = tmp_path / "cli-run"
    result = CliRunner().invoke(main, ["run", str(tiny_config()), "--out", str(out), "-a", "saliency"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"results: {out / 'results'}" in text
    assert f"leaderboard: {out / 'leaderboard' / 'index.html'}" in text
    assert (out / "leaderboard" / "index.html").exists()
    md = (out / "leaderboard" / "leaderboard.md").read_text()
    assert "| saliency |" in md
    df = load_results(out)
    tpr = df[(df["value_name"] == "tpr")]["value"].mean()
    assert f"{tpr:.3f}" in md  # one seed: the table's mean is the mean over samples


def test_plan_cli_lists_cells_and_skips(tiny_config, use_sites):
    use_sites("acme", "faulty")
    result = CliRunner().invoke(main, ["plan", str(tiny_config("[models.\"faulty.model\"]\n")), "--json"])
    data = json.loads(result.output[result.output.index("{"):])
    units = {c["model"]: len(c["units"]) for c in data["cells"]}
    # the faulty model keeps only model-level metrics (classification and the model-fit of every cell)
    assert units == {"small-cnn": 6, "faulty.model": 2}
    # the faulty model provides only conv_layer, so the gradient methods are skipped for it, with a reason
    skipped = [s for s in data["skipped"] if s["model"] == "faulty.model"]
    assert skipped and all("needs gradients" in s["reason"] for s in skipped)


def test_untrained_variant_is_a_null_baseline(tiny_config, tmp_path):
    registry = load_registry()
    text = (tiny_config().read_text()).replace("[models.small-cnn]\n", "[models.small-cnn]\nsweep = { untrained = [false, true] }\n")
    path = tmp_path / "untrained.toml"
    path.write_text(text)
    config = load_config(str(path), registry, filters={"methods": ["saliency"], "metrics": ["tpr-tnr", "classification"]})
    run(config, registry, out=tmp_path / "u")
    df = load_results(tmp_path / "u")
    acc = df[df["value_name"] == "accuracy"].set_index("model_label")["value"]
    assert acc["small-cnn[untrained=false]"] > 0.8 > acc["small-cnn[untrained=true]"] - 0.2
    flags = df[df["scope"] == "sample"].groupby("model_label")["model_untrained"].first()
    assert bool(flags["small-cnn[untrained=true]"]) and not bool(flags["small-cnn[untrained=false]"])
    assert not df.loc[df["scope"] == "sample", "method_baseline"].any()  # saliency is not a baseline method
    tpr = df[df["value_name"] == "tpr"].groupby("model_label")["value"].mean()
    assert tpr["small-cnn[untrained=false]"] > tpr["small-cnn[untrained=true]"]
    assert not math.isnan(tpr.sum()) and np.isfinite(tpr).all()


@pytest.mark.gpu
def test_a_run_on_the_gpu_scores_like_the_cpu(tiny_config, tmp_path):
    """The same tiny benchmark end to end on cuda (training included) and on the CPU: the same units,
    models that learn on both, and localisation scores that agree to within training noise."""
    registry = load_registry()
    runs = {}
    for device in ("cpu", "cuda"):
        config = load_config(str(tiny_config()), registry, overrides={"device": device})
        summary = run(config, registry, out=tmp_path / device)
        assert not summary.failed, summary.failed
        runs[device] = load_results(tmp_path / device)
    assert set(runs["cpu"]["unit"]) == set(runs["cuda"]["unit"])
    for df in runs.values():
        assert df.loc[df["value_name"] == "accuracy", "value"].item() > 0.8
    tpr = {d: df.loc[(df["value_name"] == "tpr") & (df["method"] == "saliency"), "value"].mean()
           for d, df in runs.items()}
    assert abs(tpr["cpu"] - tpr["cuda"]) < 0.1, tpr
    manifest = json.loads((tmp_path / "cuda" / "manifest.json").read_text())
    assert manifest["device"]["device"].startswith("cuda") and manifest["device"]["gpu"]


def test_progress_shows_labels_with_markup_as_they_are():
    """A label such as ``x[/x]`` once crashed the terminal display (the run exited 1 without its
    summary): escaping and then cutting to 80 characters could cut off the escape's backslash."""
    import io

    from rich.console import Console

    from xbench.messages import Status
    from xbench.progress import RunProgress

    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=200)
    text = "cell × m" + "a" * 30 + "[/x]" + "b" * 76  # the last 80 characters start with the bare tag
    with RunProgress(console) as progress:
        progress.event("start", {"units": 2, "cells": 1, "done": 0, "skipped": 0})
        progress.event("status", Status("[bold]not markup[/bold] \\", "explain"))
        progress.progress.refresh()
        progress.event("status", Status(f"{text} warning", "warning"))
        progress.event("status", Status(text, "explain"))  # still shown when the display stops
    assert "[/x]" + "b" * 76 in sink.getvalue() and "[bold]not markup[/bold]" in sink.getvalue()
