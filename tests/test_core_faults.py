"""A plugin that fails in any phase (import, load, fit, explain, score) costs only its own units."""

from __future__ import annotations

import json

from helpers import run_cli, write_config
from xbench import load_results

CONFIG = """
[run]
seeds = [0]
batch_size = 16
samples = 32

[datasets."acme.planted"]
n_train = 256
n_test = 48
size = 20
[datasets."faulty.data"]

[models.small-cnn]
width = 8
epochs = 6
lr = 0.005
[models."faulty.model"]

[methods.saliency]
[methods."faulty.method"]

[metrics."acme.mass"]
[metrics."faulty.metric"]
[metrics.classification]
"""


def test_every_phase_fails_in_isolation(tmp_path, use_sites):
    use_sites("acme", "faulty")
    out = tmp_path / "run"
    result = run_cli("run", str(write_config(tmp_path / "faulty.toml", CONFIG)), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Plugin broken was left out" in result.stderr  # import phase, reported by name

    errors = [json.loads(p.read_text()) for p in (out / "errors").glob("*.json")]
    by_phase: dict[str, set] = {}
    for e in errors:
        by_phase.setdefault(e["phase"], set()).add((e["dataset"], e["model"], e["method"], e["metric"]))
    assert by_phase["load"] == {
        ("faulty.data", "small-cnn", None, "classification"),
        ("faulty.data", "small-cnn", None, "model-fit"),
        ("faulty.data", "faulty.model", None, "model-fit"),
        ("faulty.data", "small-cnn", "saliency", "faulty.metric"),
        ("faulty.data", "small-cnn", "faulty.method", "faulty.metric"),
        ("faulty.data", "faulty.model", None, "classification"),
        ("faulty.data", "faulty.model", "faulty.method", "faulty.metric"),
    }  # faulty.data has no mask, so acme.mass is planned only for acme.planted
    assert by_phase["fit"] == {
        ("acme.planted", "faulty.model", None, "classification"),
        ("acme.planted", "faulty.model", None, "model-fit"),
        ("acme.planted", "faulty.model", "faulty.method", "acme.mass"),
        ("acme.planted", "faulty.model", "faulty.method", "faulty.metric"),
    }  # faulty.model lacks the gradients tag, so saliency is skipped for it
    assert by_phase["explain"] == {
        ("acme.planted", "small-cnn", "faulty.method", "acme.mass"),
        ("acme.planted", "small-cnn", "faulty.method", "faulty.metric"),
    }
    assert by_phase["score"] == {("acme.planted", "small-cnn", "saliency", "faulty.metric")}
    assert all("Boom" in e["error"] and "Traceback" in e["traceback"] for e in errors)

    # everything else completed
    df = load_results(out)
    done = set(zip(df["model"], df["method"].fillna("-"), df["metric"]))
    assert done == {("small-cnn", "saliency", "acme.mass"), ("small-cnn", "-", "classification"),
                    ("small-cnn", "-", "model-fit")}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed units" and manifest["counts"]["failed"] == len(errors)
    assert next(p for p in manifest["plugins"] if p["name"] == "broken")["status"] == "error"
    assert "unit(s) failed" in result.stdout and "faulty model cannot fit" in result.stdout

    # a re-run retries only the failed units and keeps the good parts
    again = run_cli("run", str(tmp_path / "faulty.toml"), "--out", str(out))
    assert again.returncode == 1
    assert "0 units computed" in " ".join(again.stdout.split())
    assert len(load_results(out)) == len(df)
