"""The dataset plugins through the real runner: lazy splits, info in the manifest, corruptions in metrics."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from xbench import load_results
from xbench.cli import main

CONFIG = """
[run]
name = "datasets"
seeds = [0]
samples = 8
batch_size = 8
gallery = 0
leaderboard = false
cache = "{cache}"

[datasets.hcp-lesions]
size = 32
canvas = 128
lesion_upscale = 1
n_train = 16
n_val = 8
n_test = 8

[datasets.medmnist]
root = "{medmnist}"
flag = "pneumoniamnist"
size = 28
legacy_normalisation = true

[models.small-cnn]
width = 4
epochs = 1

[methods.saliency]

[metrics.tpr-tnr]
[metrics.corruption-classification]
severities = [1, 5]
"""


def test_run_with_lazy_generated_and_real_format_data(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 16), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    (tmp_path / "mm").mkdir()
    np.savez(tmp_path / "mm" / "pneumoniamnist.npz", **arrays)
    config = tmp_path / "cfg.toml"
    config.write_text(CONFIG.format(cache=tmp_path / "cache", medmnist=tmp_path / "mm"))
    result = CliRunner().invoke(main, ["run", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = load_results(tmp_path / "out")
    hcp = rows[rows["dataset"] == "hcp-lesions"]
    assert set(hcp["metric"]) == {"tpr-tnr", "corruption-classification", "model-fit"}
    assert len(hcp[(hcp["metric"] == "tpr-tnr") & (hcp["value_name"] == "tpr")]) == 8
    mm = rows[rows["dataset"] == "medmnist"]
    assert set(mm["metric"]) == {"corruption-classification", "model-fit"}  # no mask: TPR is skipped
    assert any(v.startswith("auc/gaussian_noise/5") for v in mm["value_name"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    infos = {c["title"].split(" ×")[0].split("[")[0]: c["dataset_info"] for c in manifest["cells"].values()}
    assert infos["hcp-lesions"]["background"].startswith("mni152")
    assert infos["medmnist"]["corruption_options"] == {"legacy_minmax": True}
