"""The 2026 metrics (sensitivity, sparseness, complexity, faithfulness correlation, agreement)
through the real runner on a trained model, beside a stochastic method (SmoothGrad), a CAM and a
null baseline: TOML params, value families, a sweep over the agreement's reference."""

from __future__ import annotations

import textwrap

import numpy as np

from xbench import load_results
from xbench.config import load_config
from xbench.registry import load_registry
from xbench.runner import run

CONFIG = """
[run]
name = "metrics-2026"
seeds = [0]
batch_size = 8
samples = 8
gallery = 0
leaderboard = false

[datasets.synthetic-cardiac]
mode = "sex_marker"
channels = 1
n_train = 64
n_val = 16
n_test = 16

[models.small-cnn]
width = 4
epochs = 2

[methods.saliency]
[methods.grad-cam]
[methods.smoothgrad]
samples = 4
[methods.random]

[metrics.sensitivity]
samples = 3
[metrics.sparseness]
[metrics.complexity]
[metrics.faithfulness-correlation]
runs = 10
subset = 300
[metrics.agreement]
sweep = { reference = ["saliency", "grad-cam"] }
top = [0.1, 0.5]
"""


def test_added_metrics_through_the_runner(tmp_path):
    registry = load_registry()
    path = tmp_path / "metrics.toml"
    path.write_text(textwrap.dedent(CONFIG))
    summary = run(load_config(str(path), registry), registry, out=tmp_path / "run")
    assert summary.exit_code == 0 and not summary.failed, summary.failed
    df = load_results(tmp_path / "run")
    assert set(df.method.dropna()) == {"saliency", "grad-cam", "smoothgrad", "random"}
    expected = {"max_sensitivity", "avg_sensitivity", "sparseness", "complexity", "faithfulness_correlation",
                "feature_agreement/0.1", "rank_agreement/0.5", "sign_agreement/0.1", "signed_rank_agreement/0.5"}
    assert expected <= set(df.value_name)
    assert df.groupby(["method", "metric_label", "value_name"]).size().eq(8).all()
    agree = df[df.metric == "agreement"]
    assert set(agree.metric_label) == {"agreement[reference=saliency]", "agreement[reference=grad-cam]"}
    own = agree[(agree.method == "saliency") & (agree.metric_label == "agreement[reference=saliency]")]
    assert np.allclose(own.value, 1.0)  # a method agrees fully with itself
    sens = df[df.value_name == "max_sensitivity"].groupby("method").value.mean()
    assert sens["random"] == 0  # re-explained with the same seed: the random map does not move
    sparse = df[df.value_name == "sparseness"]
    defined = sparse.value.notna()
    assert defined.sum() >= 16 and sparse.value[defined].between(0, 1).all()
    # an all-zero map (a CAM of this 2-epoch CNN may be one, depending on the thread count) is NaN and says why
    assert sparse.note[~defined].fillna("").str.contains("zero everywhere").all()
