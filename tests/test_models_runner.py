"""The model plugins through the real runner: a trained model is cached by content hash and reused
on a second run (pre-training too), and the untrained null baseline skips training."""

from __future__ import annotations

import json

from xbench import load_results
from xbench.config import load_config
from xbench.registry import load_registry
from xbench.runner import run

CONFIG = """
[run]
name = "models-cache"
seeds = [0]
batch_size = 16
samples = 8
gallery = 0
cache = "{cache}"

[datasets.synthetic-cardiac]
n_train = 64
n_val = 16
n_test = 16

[models.cifar-resnet18]
width = 4
epochs = 1
sweep = {{ untrained = [false, true] }}

[models.vgg16-finetune]
width = 0.0625
pretrain = "synthetic-ood"
pretrain_images = 64
pretrain_epochs = 1
epochs = 1
degree = "2"

[methods.saliency]
[metrics.classification]
"""


def _run(tmp_path, name):
    registry = load_registry()
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(cache=tmp_path / "cache"))
    summary = run(load_config(str(path), registry), registry, out=tmp_path / name)
    assert summary.exit_code == 0, summary.failed
    manifest = json.loads((tmp_path / name / "manifest.json").read_text())
    cells = {c["title"].split(" × ")[1]: c for c in manifest["cells"].values()}
    return cells, load_results(tmp_path / name)


def test_a_cached_model_is_reused_on_the_second_run(tmp_path):
    first, rows1 = _run(tmp_path, "first")
    second, rows2 = _run(tmp_path, "second")
    vgg = "vgg16-finetune[degree=2,pretrain=synthetic-ood]"  # degree and pretrain label a variant
    trained = ["cifar-resnet18[untrained=false]", vgg]
    assert set(first) == set(trained) | {"cifar-resnet18[untrained=true]"}
    for name in trained:
        assert first[name]["model_cached"] is False and second[name]["model_cached"] is True
        assert first[name]["fit"] == second[name]["fit"] and first[name]["fit"]["history"]
        assert second[name]["timings"].get("fit", 0.0) == 0.0
    # the untrained null baseline is never trained, so there is nothing to cache
    baseline = first["cifar-resnet18[untrained=true]"]
    assert baseline["model_cached"] is False and baseline["fit"]["history"] == []
    assert first[vgg]["fit"]["metrics"]["pretrain_cached"] == 0.0
    assert list((tmp_path / "cache" / "plugins" / "vgg16-finetune" / "models").glob("pretrain-synthetic-ood-*.pt"))
    key = ["model_label", "method", "metric", "value_name", "sample"]
    a = rows1.sort_values(key, na_position="first").reset_index(drop=True)["value"]
    b = rows2.sort_values(key, na_position="first").reset_index(drop=True)["value"]
    assert a.equals(b)  # the restored weights give the same predictions and attributions
