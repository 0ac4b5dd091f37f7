"""Every method on a real model: finite maps of the right shape, the planted signal found by the
gradient methods far above chance, and every method through the real runner on cardiac data,
trained and untrained."""

import pytest
import torch

from xbench import testing
from xbench.attribution import reduce_attribution, run_method
from xbench.config import load_config
from xbench.plan import make_plan
from xbench.registry import load_registry
from xbench.runner import run as run_benchmark
from xbench.store import load_results
from xbench.specs import defaults

MODULES = ("captum", "zennit", "cam", "in_model", "baselines", "superpixel", "rise")
GRADIENT_METHODS = ["saliency", "input-x-gradient", "integrated-gradients", "gradient-shap", "deeplift",
                    "guided-backprop", "deconvolution"]
CAMS = {"grad-cam", "hires-cam", "grad-cam-pp", "layer-cam", "xgrad-cam", "score-cam"}
# test-sized settings of the costliest expanding methods (their defaults are the papers')
CHEAP = {"rise": {"masks": 500}, "lime": {"samples": 64}, "kernel-shap": {"samples": 64}, "smoothgrad": {"samples": 10},
         "vargrad": {"samples": 10}}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def ours(registry):
    names = [n for n in registry.names("methods")
             if registry.get("methods", n).spec.explain.__module__.rsplit(".", 1)[-1] in MODULES]
    assert len(names) == 32, names
    return names


@pytest.fixture(scope="module")
def planted():
    data = testing.planted_dataset(n_train=256, n_val=128, n_test=64)
    model = testing.train_small_cnn(data)
    assert model.report.metrics["val_accuracy"] > 0.95  # the model really uses the planted patch
    return data, model


@pytest.fixture(scope="module")
def masses(registry, ours, planted):
    """Per method: the raw maps and the share of |attribution| inside the planted patch."""
    data, model = planted
    x, y, mask = data.test.images[:32], data.test.labels[:32], data.test.masks[:32]
    out = {}
    for name in ours:
        if name == "in-model":
            continue
        spec = registry.get("methods", name).spec
        torch.manual_seed(0)
        raw = run_method(spec, model, x, y, {**defaults(spec.params), **CHEAP.get(name, {})})
        reduced = reduce_attribution(raw, (32, 32), "abs-luminance", name)
        out[name] = raw, (reduced * mask).flatten(1).sum(1) / reduced.flatten(1).sum(1).clamp(min=1e-12)
    return out


def test_every_method_gives_finite_maps_of_the_right_shape(masses, planted):
    _, model = planted
    for name, (raw, _) in masses.items():
        assert torch.isfinite(raw).all(), name
        assert raw.abs().sum() > 0, name
        # CAMs at the deepest conv layer's resolution (8×8 in small-cnn), the rest at the input's
        assert raw.shape == ((32, 8, 8) if name in CAMS else (32, 1, 32, 32)), name
    assert all(p.grad is None for p in model.module.parameters())


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_methods_put_clearly_more_mass_in_the_planted_region_than_random(masses, method):
    chance = masses["random"][1]
    assert abs(chance.mean().item() - 64 / 1024) < 0.01  # random spreads mass by area: 8×8 of 32×32
    mass = masses[method][1]
    # measured: 0.13 (deconvolution, the weakest, as in Oliveira et al.) to 0.91 (gradient-shap)
    assert mass.mean() > 1.5 * chance.mean(), (method, mass.mean().item())
    assert (mass > chance).float().mean() >= 0.9, method


def test_lrp_and_cams_also_beat_random(masses):
    chance = masses["random"][1].mean()
    for name in ("lrp-epsilon", "lrp-epsilon-plus-flat", "lrp-epsilon-gamma-box", "lrp-epsilon-alpha2-beta1",
                 "lrp-alpha1-beta0", "grad-cam", "hires-cam", "grad-cam-pp", "guided-grad-cam"):
        assert masses[name][1].mean() > 2 * chance, name


@pytest.mark.parametrize("method", ["smoothgrad", "vargrad", "deeplift-shap", "lime", "kernel-shap",
                                    "feature-ablation", "layer-cam", "xgrad-cam", "score-cam"])
def test_new_methods_point_at_the_planted_patch(masses, method):
    # measured (chance 0.062): 0.12 (deeplift-shap, the weakest) to 0.51 (feature-ablation)
    chance = masses["random"][1].mean()
    assert masses[method][1].mean() > 1.5 * chance, (method, masses[method][1].mean().item())


def test_rise_is_higher_on_the_planted_patch_than_off_it(planted, masses):
    # RISE's map carries the mean probability everywhere (Σ_i p_i M_i / (N p) ≈ E[p]), so its share
    # of the total is near the area share; the evidence is the excess on the patch (measured: every
    # image, by 7 % on average with 500 masks)
    data, _ = planted
    mask = data.test.masks[:32]
    r = reduce_attribution(masses["rise"][0], (32, 32), "abs-luminance")
    inside = (r * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
    outside = (r * ~mask).flatten(1).sum(1) / (~mask).flatten(1).sum(1)
    assert (inside > outside).float().mean() >= 0.9


CONFIG = """
[run]
name = "methods"
seeds = [0]
batch_size = 8
samples = 8
gallery = 0
leaderboard = false

[datasets.synthetic-cardiac]
mode = "sex_marker"
n_train = 64
n_val = 32
n_test = 16

[models.small-cnn]
width = 4
epochs = 1
sweep = { untrained = [false, true] }

[methods."*"]

[methods.integrated-gradients]
steps = 16

[methods.occlusion]
window = 16
stride = 16

[methods.grad-cam]
sweep = { layer = ["features.0", "#1", "features.6"] }

[methods.rise]
masks = 100

[methods.lime]
samples = 16

[methods.kernel-shap]
samples = 16

[methods.smoothgrad]
samples = 4

[methods.vargrad]
samples = 4

[metrics.tpr-tnr]
"""


def test_every_method_runs_through_the_runner_trained_and_untrained(tmp_path, registry, ours):
    path = tmp_path / "methods.toml"
    path.write_text(CONFIG, encoding="utf-8")
    config = load_config(str(path), registry, overrides={"out": str(tmp_path / "run")})
    plan = make_plan(config, registry)
    skipped = {s.method: s.reason for s in plan.skipped if s.method}
    assert "in_model_explainer" in skipped["in-model"]  # skipped with its reason, not crashed into

    summary = run_benchmark(config, registry, out=tmp_path / "run")
    assert summary.failed == [], [f["error"] for f in summary.failed]
    rows = load_results(tmp_path / "run")
    rows = rows[rows.value_name == "tpr"]
    expected = (set(ours) - {"in-model"})
    untrained = rows.model_params.str.contains('"untrained":true')
    for part, is_untrained in ((rows[~untrained], False), (rows[untrained], True)):
        assert set(part.method) == expected
        assert (part.groupby("method_label").size() == 8).all()
        assert part.value.notna().all()
        assert (part.model_untrained == is_untrained).all()  # the untrained architecture: a null baseline model
        assert set(part[part.method_baseline].method) == {"random", "sobel", "laplace", "centre"}
    labels = set(rows.method_label)
    assert {"grad-cam[layer=features.0]", "grad-cam[layer=#1]", "grad-cam[layer=features.6]"} <= labels
