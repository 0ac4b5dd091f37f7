"""AOPC / MoRF: a hand-computed curve on a model whose output is known in closed form, every fill,
the class choices and chunking (memory bound). (Against Quantus' RegionPerturbation:
plugins/verifications/metrics_faithfulness.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xbench import MetricContext, TrainedModel, testing
from xbench.plugins.metrics import faithfulness as fm
from xbench import results
from xbench.results import NONFINITE

from helpers import PatchSum

SPEC = next(iter(fm.xbench_metrics()))


def make_ctx(module, x, attribution, labels=None, seed=0):
    n = len(x)
    with torch.no_grad():
        logits = module(x).float()
    if hasattr(module, "seen"):
        module.seen.clear()
    labels = torch.ones(n, dtype=torch.long) if labels is None else labels
    a = attribution.float()
    return results.metric_context(
        model=TrainedModel(module=module, info=None, target_layers={}), inputs=x, labels=labels, logits=logits,
        targets=labels, target_mode="label", params={}, generator=torch.Generator().manual_seed(seed),
        predict=lambda v: module(v), attribution=results.prepare_attribution(a, tuple(a.shape[-2:]), "sum"),
        reduction="sum",
    )


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_morf_curve_hand_computed():
    # 1×4×4 image of ones, 2×2 patches 0..3 (row-major). Patch p contributes c_p·4 to the logit of
    # class 1; relevance order is 3, 0, 2, 1. Black fill removes the contributions in that order.
    c = torch.tensor([0.5, 0.25, -0.25, 0.75])
    weight = c.view(2, 2).repeat_interleave(2, 0).repeat_interleave(2, 1).view(1, 1, 4, 4)
    model = PatchSum(weight)
    relevance = torch.tensor([3.0, 0.0, 1.0, 9.0]).view(2, 2).repeat_interleave(2, 0).repeat_interleave(2, 1)
    ctx = make_ctx(model, torch.ones(1, 1, 4, 4), relevance[None])
    out = testing.score(SPEC, ctx, patch=2, fill="black")
    logits = [4.0 * c.sum().item()]
    for p in (3, 0, 2, 1):
        logits.append(logits[-1] - 4 * c[p].item())
    expected = [sigmoid(v) for v in logits]  # softmax of [0, z] for class 1
    assert sorted(k for k in out if k.startswith("morf/")) == [f"morf/{k}" for k in range(5)]
    assert [out[f"morf/{k}"].item() for k in range(5)] == pytest.approx(expected, rel=1e-6)
    assert out["aopc"].item() == pytest.approx(np.mean([expected[0] - e for e in expected]), rel=1e-6)
    assert model.seen[-1][-1, 0].eq(0).all()  # after L = 4 steps every pixel is filled


def test_steps_bound_the_curve_and_partial_border_patches():
    # 1×5×5 with patch 2 → a 3×3 grid whose right/bottom patches are partial; relevance is their mean.
    a = torch.arange(25.0).view(1, 5, 5)
    rel = fm.patch_relevance(a, 2)
    assert rel[0, 2].item() == pytest.approx((4 + 9) / 2) and rel[0, 8].item() == 24
    model = PatchSum(torch.ones(1, 1, 5, 5) * 0.1)
    out = testing.score(SPEC, make_ctx(model, torch.ones(1, 1, 5, 5), a), patch=2, steps=3)
    assert max(int(k.split("/")[1]) for k in out if k.startswith("morf/")) == 3
    first = model.seen[0]  # step 1 perturbs the most relevant patch: the single pixel (4, 4)
    assert first[0, 0].eq(0).sum() == 1 and first[0, 0, 4, 4] == 0


@pytest.mark.parametrize("fill,value", [("black", 0.0), ("white", 1.0), ("gray", 0.5)])
def test_constant_fills(fill, value):
    model = PatchSum(torch.ones(1, 1, 4, 4))
    x = torch.full((1, 1, 4, 4), 0.25)
    a = torch.zeros(1, 4, 4)
    a[0, :2, :2] = 1
    testing.score(SPEC, make_ctx(model, x, a), patch=2, fill=fill, steps=1)
    step1 = model.seen[0][0, 0]
    assert step1[:2, :2].eq(value).all() and step1[2:, :].eq(0.25).all()


def test_blur_fill_matches_scipy():
    from scipy.ndimage import gaussian_filter

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 12, generator=g)
    model = PatchSum(torch.ones(1, 3, 12, 12))
    a = torch.rand(2, 12, 12, generator=g)
    testing.score(SPEC, make_ctx(model, x, a, labels=torch.ones(2, dtype=torch.long)), patch=4, fill="blur",
                  steps=9, chunk=1000)
    last = model.seen[0].view(2, 9, 3, 12, 12)[:, -1]  # sample-major: every patch perturbed
    for i in range(2):
        # σ = 0.5 · patch = 2 px; scipy's 'nearest' = replicate padding, truncate 3σ = the same radius 6
        want = np.stack([gaussian_filter(x[i, ch].double().numpy(), 2.0, mode="nearest", truncate=3.0)
                         for ch in range(3)])
        np.testing.assert_allclose(last[i].numpy(), want, atol=1e-5)


def test_uniform_fill_is_seeded_and_persistent():
    x = torch.zeros(2, 1, 8, 8)
    a = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))

    def run(seed):
        model = PatchSum(torch.ones(1, 1, 8, 8))
        out = testing.score(SPEC, make_ctx(model, x, a, labels=torch.ones(2, dtype=torch.long), seed=seed),
                            patch=4, fill="uniform", chunk=3)
        return out, torch.cat(model.seen).view(2, 4, 1, 8, 8)

    out0, seen0 = run(0)
    out0b, _ = run(0)
    out1, seen1 = run(1)
    assert torch.equal(out0["aopc"], out0b["aopc"]) and not torch.equal(out0["aopc"], out1["aopc"])
    full = seen0[:, -1]
    assert (full > 0).all() and (full < 1).all()  # U(0, 1) everywhere after the last step
    filled = seen0[:, 0] != 0  # a patch keeps its noise at later steps
    assert torch.equal(seen0[:, 1][filled], seen0[:, 0][filled])


def test_chunk_bounds_memory_without_changing_values():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 1, 16, 16, generator=g)
    a = torch.rand(5, 16, 16, generator=g)
    weight = torch.randn(1, 1, 16, 16, generator=g) * 0.1
    small, large = PatchSum(weight), PatchSum(weight)
    out_small = testing.score(SPEC, make_ctx(small, x, a), patch=4, chunk=7)
    out_large = testing.score(SPEC, make_ctx(large, x, a), patch=4, chunk=100_000)
    assert max(len(b) for b in small.seen) == 7 and len(large.seen) == 1 and len(large.seen[0]) == 5 * 16
    default = PatchSum(weight)
    out_default = testing.score(SPEC, make_ctx(default, x, a), patch=4)
    assert {len(b) for b in default.seen} == {5}  # chunk 0: the batch size the runner gives (N = 5)
    torch.testing.assert_close(out_default["aopc"], out_large["aopc"], rtol=0, atol=1e-12)
    for k in out_small:
        torch.testing.assert_close(out_small[k], out_large[k], rtol=0, atol=1e-12)


def test_class_choices():
    # logit z = Σx; class 1 prob = sigmoid(z), class 0 prob = 1 − sigmoid(z)
    x = torch.tensor([0.2, -0.4]).view(2, 1, 1, 1).expand(2, 1, 2, 2).clone()
    model = PatchSum(torch.ones(1, 1, 2, 2))
    labels = torch.tensor([0, 0])
    a = torch.rand(2, 2, 2)
    f0 = {choice: testing.score(SPEC, make_ctx(model, x, a, labels=labels), patch=1, **{"class": choice})["morf/0"]
          for choice in ("label", "predicted", "1", "target")}
    p1 = torch.sigmoid(torch.tensor([0.8, -1.6])).double()
    torch.testing.assert_close(f0["label"], 1 - p1)
    torch.testing.assert_close(f0["1"], p1)
    torch.testing.assert_close(f0["predicted"], torch.stack([p1[0], 1 - p1[1]]))
    torch.testing.assert_close(f0["target"], f0["label"])  # the context's targets are the labels here
    with pytest.raises(Exception, match="class index 0..1"):
        testing.score(SPEC, make_ctx(model, x, a), **{"class": "7"})


def test_nonfinite_and_constant_maps_are_flagged():
    model = PatchSum(torch.ones(1, 1, 4, 4))
    a = torch.rand(2, 4, 4)
    a[0, 0, 0] = float("inf")
    a[1] = 0.0
    ctx = make_ctx(model, torch.rand(2, 1, 4, 4), a, labels=torch.ones(2, dtype=torch.long))
    out = testing.score(SPEC, ctx, patch=2)
    assert math.isnan(out["aopc"][0]) and math.isfinite(out["aopc"][1])
    flags = {reason: w.tolist() for w, reason in ctx.notes}
    assert flags[NONFINITE] == [True, False]
    assert flags["constant attribution: patch order is a seeded random permutation"] == [False, True]


@pytest.fixture(scope="module")
def trained():
    data = testing.planted_dataset(n_train=384, n_val=64, n_test=64, size=32, seed=0)
    return data, testing.train_small_cnn(data, epochs=5, width=8)


def test_ground_truth_order_beats_inverted_order(trained):
    data, model = trained
    gt = data.test.masks.float()
    auc_gt = testing.score(SPEC, testing.metric_context(model, data.test, attribution=gt, n=32), patch=4)["aopc"]
    auc_inv = testing.score(SPEC, testing.metric_context(model, data.test, attribution=1 - gt, n=32), patch=4)["aopc"]
    assert auc_gt.mean() > auc_inv.mean() + 0.1
