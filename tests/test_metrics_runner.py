"""Every metric of this family through the real runner: TOML params (lists, a class index as a
string, sweeps), value families, native-resolution CAMs, model-level metrics on the test split."""

from __future__ import annotations

import textwrap

from xbench import load_results
from xbench.config import load_config
from xbench.registry import load_registry
from xbench.runner import run

CONFIG = """
[run]
name = "metrics"
seeds = [0]
batch_size = 8
samples = 8

[datasets.synthetic-cardiac]
mode = "sex_marker"
n_train = 16
n_val = 8
n_test = 16

[models.small-cnn]
width = 4
untrained = true

[methods.saliency]
[methods.grad-cam]

[metrics.tpr-tnr]
[metrics.pompom]
[metrics.mass-in-region]
[metrics.emd]
[metrics.classification]
[metrics.aopc]
sweep = { fill = ["black", "uniform"] }
patch = 32
class = "1"
[metrics.road]
percentages = [30, 70]
[metrics.deletion]
steps = 4
[metrics.insertion]
steps = 4
patch = 5
[metrics.pointing-game]
[metrics.relevance-mass-accuracy]
[metrics.saliency-rmse]
corruptions = ["contrast"]
severities = [1, 5]
[metrics.corruption-classification]
corruptions = ["gaussian_noise"]
severities = [3]
batch_size = 5
"""


def test_all_metrics_through_the_runner(tmp_path):
    registry = load_registry()
    path = tmp_path / "metrics.toml"
    path.write_text(textwrap.dedent(CONFIG))
    summary = run(load_config(str(path), registry), registry, out=tmp_path / "run")
    assert summary.exit_code == 0 and not summary.failed
    df = load_results(tmp_path / "run")
    sample = df[df["scope"] == "sample"]
    names = set(sample["value_name"])
    assert {"tpr", "tnr", "pompom", "emd", "aopc", "mass/heart", "area/fat", "mass/marker",
            "rmse/contrast/1", "rmse/contrast/5", "morf/0", "morf/20", "road", "morf/30", "lerf/70", "deletion",
            "deletion/0", "deletion/4", "insertion", "insertion/4", "pointing_game", "relevance_mass_accuracy"} <= names  # 105×135 → 4×5 patches of 32
    assert sample.groupby(["method", "metric_label", "value_name"]).size().eq(8).all()
    assert set(sample.loc[sample["metric"] == "aopc", "metric_label"]) == {"aopc[fill=black]", "aopc[fill=uniform]"}
    assert '"class":"1"' in sample.loc[sample["metric"] == "aopc", "metric_params"].iloc[0]
    model = df[df["scope"] == "model"]
    assert {"auc", "acc", "auc/gaussian_noise/3", "delta_acc/gaussian_noise/3", "sensitivity/DCM",
            "auroc/NOR"} <= set(model["value_name"])
    heart = sample[sample["value_name"] == "area/heart"]["value"]
    assert heart.between(0, 1).all() and heart.gt(0).all()
