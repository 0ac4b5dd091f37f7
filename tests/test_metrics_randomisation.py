"""Randomisation sanity checks (MPRT, sMPRT, eMPRT, random logit): the similarity measures against
scipy/skimage/numpy on small maps, the layer randomisation itself (order, modes, seeds, the trained
model untouched), the oracles (a model-free edge map fails, the gradient of a trained CNN passes,
a constant map has no random-logit difference) and one run through the real runner. (Against Quantus
0.6: plugins/verifications/metrics_sanity.py.)"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from xbench import TrainedModel, load_results, testing
from xbench.attribution import run_method
from xbench.config import load_config
from xbench.obtain import fingerprint
from xbench.plugins.methods import baselines as bm
from xbench.plugins.methods import cam as camm
from xbench.plugins.methods import captum as cm
from xbench.plugins.metrics import randomisation as rm
from xbench.plugins.models.small_cnn import SmallCNN
from xbench.registry import load_registry
from xbench.runner import run

SPECS = {s.name: s for s in rm.xbench_metrics()}
METHODS = {s.name: s for s in (*cm.xbench_methods(), *bm.xbench_methods(), *camm.xbench_methods())}
N = 16


def explainer(name: str):
    spec = METHODS[name]
    params = {k: getattr(v, "default", v) for k, v in spec.params.items()}
    return lambda model, x, t: run_method(spec, model, x, t, params)


@pytest.fixture(scope="module")
def trained():
    data = testing.planted_dataset(n_train=256, n_val=64, n_test=64, size=32, seed=0)
    return data, testing.train_small_cnn(data, epochs=4, width=8)


def context(trained, method="saliency", n=N, explain=None, **kw):
    data, model = trained
    fn = explain or explainer(method)
    raw = fn(model, data.test.images[:n], data.test.labels[:n])
    return testing.metric_context(model, data.test, attribution=raw, explain=fn, n=n, **kw)


# ----------------------------------------------------------------------------- similarity measures

def test_spearman_hand_computed_and_against_scipy():
    from scipy.stats import spearmanr

    # ranks of a = [1, 2.5, 2.5, 4] (a tie), of b = [4, 3, 2, 1]: ρ = −Σ(dev products)/… = −0.9486833
    a, b = torch.tensor([[1.0, 2.0, 2.0, 3.0]]), torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert rm.average_ranks(a).tolist() == [[1.0, 2.5, 2.5, 4.0]]
    assert rm.spearman(a, b).item() == pytest.approx(-3 / np.sqrt(10), abs=1e-12)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (6, 7, 9), generator=g).float()  # many ties
    y = torch.rand(6, 7, 9, generator=g) + x * 0.3
    ours = rm.spearman(x, y).numpy()
    theirs = [spearmanr(x[i].flatten(), y[i].flatten())[0] for i in range(6)]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert np.isnan(rm.spearman(torch.ones(1, 3, 3), y[:1, :3, :3]).item())


def test_ssim_hand_computed_and_against_skimage():
    from skimage.metrics import structural_similarity

    # One 7×7 window: x = 1 everywhere but one pixel 0 (max 1), y = x/2 → after max-normalisation
    # x and y are equal: SSIM 1. Against y = 1 − x + … the formula is evaluated by hand.
    x = torch.ones(1, 7, 7)
    x[0, 3, 3] = 0
    assert rm.ssim(x, x / 2).item() == pytest.approx(1.0, abs=1e-12)
    y = torch.zeros(1, 7, 7)
    y[0, 0, 0] = 1
    xn, yn = x.double().flatten().numpy(), y.double().flatten().numpy()
    mx, my = xn.mean(), yn.mean()
    vx, vy = xn.var(ddof=1), yn.var(ddof=1)
    cxy = ((xn - mx) * (yn - my)).sum() / 48
    c1, c2 = 0.01**2, 0.03**2
    hand = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert rm.ssim(x, y).item() == pytest.approx(hand, abs=1e-12)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 16, 20, generator=g)
    b = a + torch.randn(5, 16, 20, generator=g) * 3  # different scales and signs: |·| / max first
    for p, q, win in ((a, b, 7), (a[:, :5, :6], b[:, :5, :6], 5)):
        ours = rm.ssim(p, q).numpy()
        theirs = [structural_similarity(rm.max_normalised(p)[i].numpy(), rm.max_normalised(q)[i].numpy(),
                                        data_range=1, win_size=win) for i in range(5)]
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert rm.ssim(torch.full((2, 8, 8), 3.0), torch.full((2, 8, 8), 0.5)).tolist() == [1.0, 1.0]


def test_histogram_entropy_against_numpy_and_scipy():
    from scipy.stats import entropy

    assert rm.histogram_entropy(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 2).item() == pytest.approx(np.log(2))
    assert rm.histogram_entropy(torch.full((1, 4, 4), 2.5), 100).item() == 0.0
    g = torch.Generator().manual_seed(2)
    maps = torch.cat([torch.rand(4, 9, 11, generator=g) ** 3,
                      torch.randint(0, 20, (4, 9, 11), generator=g).double() / 7])  # values on bin edges
    for bins in (1, 7, 100):
        ours = rm.histogram_entropy(maps, bins).numpy()
        theirs = [entropy(np.histogram(m.numpy().ravel(), bins=bins)[0]) for m in maps.double()]
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


# ----------------------------------------------------------------------------- randomisation

class HeadFirst(nn.Module):
    """Registers its output layer before its body: the depth order must follow the forward pass."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU())
        self.unused = nn.Linear(2, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        h = self.body(x)
        return self.head(torch.cat([self.pool(h).flatten(1), self.pool(-h).flatten(1)], 1))

    def explain(self, x):
        return self.body(x).sum(1)


def _changed(copy_module: nn.Module, original: nn.Module, names) -> list[str]:
    return [n for n in names
            if not all(torch.equal(p, q) for p, q in zip(copy_module.get_submodule(n).state_dict().values(),
                                                          original.get_submodule(n).state_dict().values()))]


def test_layers_follow_the_forward_pass_and_modes_randomise_the_right_layers():
    torch.manual_seed(0)
    module = HeadFirst().eval()
    with torch.no_grad():  # as if trained: BN's reset (weight 1, bias 0, fresh statistics) changes it
        module.body[1].weight.fill_(2.0)
        module.body[1].running_var.fill_(3.0)
    x = torch.rand(2, 1, 6, 6)
    assert rm.forward_order(module, x) == ["body.0", "body.1", "head"]
    model = TrainedModel(module=module, info=None, target_layers={"conv": module.body[0]}, explain=module.explain)
    before, rng = fingerprint(module), torch.get_rng_state()
    names = ["body.0", "body.1", "head"]
    seen = {}
    for mode in rm.MODES:
        seen[mode] = []
        for depth, copy in rm.randomisations(model, x, mode, seed=3):
            seen[mode].append((depth, _changed(copy.module, module, names)))
            assert copy.target_layers["conv"] is copy.module.body[0] and copy.module is not module
            assert copy.explain.__self__ is copy.module
            if (mode, depth) == ("cascade", 1):
                full = {k: v.clone() for k, v in copy.module.state_dict().items()}
            if (mode, depth) == ("independent", 2):
                assert torch.equal(copy.module.body[1].running_var, torch.ones(2))  # BN reset, as Quantus
    assert seen["cascade"] == [(3, ["head"]), (2, ["body.1", "head"]), (1, names)]
    assert seen["bottom-up"] == [(1, ["body.0"]), (2, ["body.0", "body.1"]), (3, names)]
    assert seen["independent"] == [(1, ["body.0"]), (2, ["body.1"]), (3, ["head"])]
    # one random network per seed, whatever the mode; a different seed, another network
    ((_, last),) = list(rm.randomisations(model, x, "bottom-up", seed=3, curve=False))
    assert all(torch.equal(v, full[k]) for k, v in last.module.state_dict().items())
    ((_, other),) = list(rm.randomisations(model, x, "bottom-up", seed=4, curve=False))
    assert not torch.equal(other.module.head.weight, last.module.head.weight)
    assert torch.equal(fingerprint(module), before) and torch.equal(torch.get_rng_state(), rng)


def test_parameters_without_reset_are_redrawn_at_their_scale():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.full((1000,), 5.0) + torch.randn(1000))

        def forward(self, x):
            return x * self.w[:1]

    m = Scale()
    rm.reinitialise_(m, 0)
    assert abs(m.w.mean().item()) < 0.2 and m.w.std().item() == pytest.approx(1.0, rel=0.15)


def test_explainer_that_cannot_follow_the_copy_is_refused():
    module = SmallCNN(1, 2, 4).eval()
    model = TrainedModel(module=module, info=None, target_layers={}, explain=lambda x: x[:, 0])
    with pytest.raises(Exception, match="bound method"):
        next(rm.randomisations(model, torch.rand(1, 1, 8, 8), "cascade", 0))


# ----------------------------------------------------------------------------- oracles

def test_edge_filter_is_model_independent_and_fails_every_check(trained):
    for spec, params in ((SPECS["mprt"], {}), (SPECS["mprt"], {"mode": "independent"}),
                         (SPECS["smprt"], {"samples": 3}), (SPECS["random-logit"], {})):
        out = testing.score(spec, context(trained, "sobel"), **params)
        for key in ("spearman", "ssim"):
            np.testing.assert_allclose(out[key].numpy(), 1.0, atol=1e-9, err_msg=f"{spec.name} {params} {key}")
    out = testing.score(SPECS["emprt"], context(trained, "sobel"))
    np.testing.assert_allclose(out["emprt"].numpy(), 0.0, atol=1e-12)


def test_gradient_of_a_trained_cnn_passes_and_cascade_decreases(trained):
    data, model = trained
    before = fingerprint(model.module)
    ctx = context(trained, "saliency")
    out = testing.score(SPECS["mprt"], ctx)
    assert torch.equal(fingerprint(model.module), before)
    layers = [f"spearman/{d}" for d in range(1, 5)]
    assert set(layers) | {"spearman", "ssim", "ssim/1", "ssim/4"} <= set(out)
    means = [float(out[k].nanmean()) for k in layers]  # depth 1 = fully random … 4 = output layer only
    assert float(out["spearman"].nanmean()) == means[0] < 0.3 and float(out["ssim"].nanmean()) < 0.3
    # randomising more layers (from depth 4 down to 1) never raises the mean similarity by more than
    # noise, and the fully randomised network is far from the output-layer-only one
    assert all(means[i] <= means[i + 1] + 0.05 for i in range(3)) and means[0] < means[3] - 0.2
    assert float(out["ssim/1"].nanmean()) < float(out["ssim/4"].nanmean()) - 0.1
    emprt = testing.score(SPECS["emprt"], context(trained, "saliency"))
    assert float(emprt["emprt"].nanmean()) > 0.2
    assert torch.allclose(emprt["ratio"], emprt["emprt"] + 1, equal_nan=True)
    smooth = testing.score(SPECS["smprt"], context(trained, "saliency"), samples=4)
    assert float(smooth["spearman"].nanmean()) < 0.6 and set(smooth) == {"spearman", "ssim"}
    # one sample is the clean input alone: sMPRT is then MPRT against the fully randomised network
    single = testing.score(SPECS["smprt"], context(trained, "saliency"), samples=1)
    assert torch.allclose(single["ssim"], out["ssim"], equal_nan=True)
    # explaining several noisy copies per call draws the same noise: only the summation order differs
    chunked = testing.score(SPECS["smprt"], context(trained, "saliency"), samples=4, chunk=3)
    assert torch.allclose(chunked["spearman"], smooth["spearman"], atol=1e-5, equal_nan=True)
    assert torch.equal(fingerprint(model.module), before)


def test_cam_follows_the_randomised_copy(trained):
    out = testing.score(SPECS["mprt"], context(trained, "grad-cam"), curve=False)
    assert set(out) == {"spearman", "ssim"} and float(out["ssim"].nanmean()) < 0.9


def test_random_logit_constant_map_and_class_dependent_map(trained):
    data, model = trained
    ctx = context(trained, explain=lambda m, x, t: torch.ones(len(x), 1, *x.shape[-2:]))
    out = testing.score(SPECS["random-logit"], ctx)
    assert out["ssim"].tolist() == [1.0] * N and out["spearman"].isnan().all()
    assert any("Spearman undefined" in reason for _, reason in ctx.notes)
    assert torch.equal(out["other_class"].long(), 1 - data.test.labels[:N])  # two classes: the other one
    # a map that moves with the class (the planted mask for class 0, its complement for class 1)
    mask = data.test.masks[:N].float()[:, None]
    by_class = lambda m, x, t: torch.where(t.view(-1, 1, 1, 1) == data.test.labels[:N].view(-1, 1, 1, 1), mask,
                                           1 - mask)  # noqa: E731
    out = testing.score(SPECS["random-logit"], context(trained, explain=by_class))
    assert out["spearman"].tolist() == pytest.approx([-1.0] * N) and (out["ssim"] < 0.2).all()


def test_other_class_is_uniform_over_the_others():
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (4000,), generator=g)
    other = rm.other_classes(targets, 5, g)
    assert not (other == targets).any()
    counts = torch.bincount((other - targets) % 5, minlength=5)
    assert counts[0] == 0 and ((counts[1:] - 1000).abs() < 120).all()


def test_independent_mode_needs_the_curve(trained):
    with pytest.raises(ValueError, match="curve = true"):
        testing.score(SPECS["mprt"], context(trained, "sobel", n=2), mode="independent", curve=False)


# ----------------------------------------------------------------------------- through the runner

CONFIG = """
[run]
name = "sanity"
seeds = [0]
batch_size = 8
samples = 12

[datasets.polygons]
size = 32
n_train = 8
n_val = 4
n_test = 12
rad_min = 4
rad_max = 8

[models.small-cnn]
width = 4
untrained = true

[methods.saliency]
[methods.sobel]
[methods.grad-cam]

[metrics.mprt]
sweep = { mode = ["cascade", "independent"] }
[metrics.smprt]
samples = 3
[metrics.emprt]
[metrics.random-logit]
"""


def test_every_randomisation_metric_through_the_runner(tmp_path):
    registry = load_registry()
    path = tmp_path / "sanity.toml"
    path.write_text(textwrap.dedent(CONFIG))
    summary = run(load_config(str(path), registry), registry, out=tmp_path / "run")
    assert summary.exit_code == 0 and not summary.failed
    df = load_results(tmp_path / "run")
    df = df[df["scope"] == "sample"]  # (every cell also records its model-fit)
    assert set(df["metric"]) >= {"mprt", "smprt", "emprt", "random-logit"} and set(df["category"]) == {"sanity"}
    assert df.groupby(["method", "metric_label", "value_name"]).size().eq(12).all()
    mprt = df[df["metric"] == "mprt"]
    assert {"spearman", "ssim", "spearman/1", "spearman/4", "ssim/4"} <= set(mprt["value_name"])
    curve = mprt[mprt["family"] == "spearman"]
    assert set(curve["level"]) == {1.0, 2.0, 3.0, 4.0} and not curve["higher_is_better"].any()
    headline = df[df["value_name"].isin(["spearman", "ssim"])]
    assert not headline["higher_is_better"].any()
    assert df.loc[df["value_name"] == "emprt", "higher_is_better"].all()
    sobel = headline[headline["method"] == "sobel"]["value"]
    assert np.allclose(sobel, 1.0)  # model-free: fails every similarity check
    saliency = df[(df["method"] == "saliency") & (df["metric_label"] == "mprt[mode=cascade]")
                  & (df["value_name"] == "spearman")]["value"]
    assert saliency.mean() < 0.9
