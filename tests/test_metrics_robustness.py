"""Saliency RMSE under corruption and classification under corruption: native (layer) resolution,
content seeds, lazy inputs, edge cases. (Against numpy and scikit-learn on the same corrupted images:
plugins/verifications/metrics_classification.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xbench import LazyArray, TrainedModel, testing
from xbench.datasets._corruptions import CORRUPTIONS, corrupt
from xbench.errors import UsageError
from xbench.plugins.metrics import robustness as rm
from xbench.plugins.models.small_cnn import SmallCNN
from xbench.specs import defaults

SPECS = {s.name: s for s in rm.xbench_metrics()}
GRID = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 4]}


@pytest.fixture(scope="module")
def setup():
    split = testing.planted_split(12, size=32, seed=5)
    torch.manual_seed(0)
    module = SmallCNN(1, 2, width=4).eval()
    model = TrainedModel(module=module, info=None, target_layers={})
    return split, model


def identity(model, x, targets):
    """The image as its own 'saliency map': RMSE then measures the corrupted pixels themselves."""
    return x.clone()


def scaled(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    out = np.where(hi > lo, (flat - lo) / np.where(hi > lo, hi - lo, 1) * 255, 0.0)
    return out


def test_seeds_follow_the_image_not_the_batch(setup):
    split, model = setup
    x = split.images
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    seeds = rm.content_seeds(x, "gaussian_noise", 2)
    assert torch.equal(rm.content_seeds(x[perm], "gaussian_noise", 2), seeds[perm])
    assert torch.equal(rm.content_seeds(x[3:5], "gaussian_noise", 2), seeds[3:5])
    assert len(set(seeds.tolist())) == len(x)
    assert not torch.equal(rm.content_seeds(x, "gaussian_noise", 3), seeds)
    assert not torch.equal(rm.content_seeds(x, "speckle_noise", 2), seeds)
    a = testing.score(SPECS["saliency-rmse"], testing.metric_context(model, split, attribution=x[:, 0],
                                                                     explain=identity), **GRID)
    ctx = testing.metric_context(model, split, attribution=x[:, 0], explain=identity)
    ctx.inputs, ctx.attribution, ctx.raw_attribution = x[perm], x[perm, 0], x[perm, 0]
    b = testing.score(SPECS["saliency-rmse"], ctx, **GRID)
    for k in a:
        torch.testing.assert_close(b[k], a[k][perm])


def test_layer_resolution_maps_are_compared_at_their_resolution(setup):
    split, model = setup
    x = split.images

    def cam(model, inputs, targets):  # an 8×8 'CAM' of a 32×32 input
        return F.avg_pool2d(inputs, 4)

    ctx = testing.metric_context(model, split, explain=cam)
    raw = cam(model, x, None)
    ctx.raw_attribution = raw
    ctx.attribution = F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    grid = {"corruptions": ["contrast"], "severities": [3]}
    out = testing.score(SPECS["saliency-rmse"], ctx, **grid)["rmse/contrast/3"]
    xc = corrupt(x, "contrast", 3, rm.content_seeds(x, "contrast", 3))
    native = np.sqrt(((scaled(raw.numpy()) - scaled(cam(model, xc, None).numpy())) ** 2).mean(1))
    np.testing.assert_allclose(out.numpy(), native, rtol=1e-6)


def test_constant_maps_become_zero_and_legacy_uint8_rounds(setup):
    split, model = setup
    x = split.images[:4]

    def silent_when_corrupted(model, inputs, targets):
        return torch.zeros_like(inputs) if not torch.equal(inputs, x) else inputs.clone()

    ctx = testing.metric_context(model, split, attribution=x[:, 0], explain=silent_when_corrupted, n=4)
    grid = {"corruptions": ["brightness"], "severities": [2]}
    out = testing.score(SPECS["saliency-rmse"], ctx, **grid)["rmse/brightness/2"]
    want = np.sqrt((scaled(x.numpy()) ** 2).mean(1))  # clean map scaled to [0, 255] against all 0
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)
    assert any("constant saliency map" in reason and w.all() for w, reason in ctx.notes)
    ctx = testing.metric_context(model, split, attribution=x[:, 0], explain=identity, n=4)
    legacy = testing.score(SPECS["saliency-rmse"], ctx, legacy_uint8=True, **grid)["rmse/brightness/2"]
    xc = corrupt(x, "brightness", 2, rm.content_seeds(x, "brightness", 2))
    want = np.sqrt(((np.round(scaled(x.numpy())) - np.round(scaled(xc.numpy()))) ** 2).mean(1))
    np.testing.assert_allclose(legacy.numpy(), want, rtol=1e-6)


def test_nonfinite_maps_and_bad_params(setup):
    split, model = setup
    x = split.images[:3]
    clean = x[:, 0].clone()
    clean[1, 0, 0] = float("nan")
    ctx = testing.metric_context(model, split, attribution=clean, explain=identity, n=3)
    out = testing.score(SPECS["saliency-rmse"], ctx, corruptions=["contrast"], severities=[1])["rmse/contrast/1"]
    assert math.isnan(out[1]) and math.isfinite(out[0]) and math.isfinite(out[2])
    with pytest.raises(UsageError, match="must be one of 'gaussian_noise'.*got 'fog'"):
        testing.score(SPECS["saliency-rmse"], testing.metric_context(model, split, attribution=clean, n=3,
                                                                     explain=identity), corruptions=["fog"])
    with pytest.raises(UsageError, match="must be one of 1, 2, 3, 4, 5; got 0"):
        testing.score(SPECS["saliency-rmse"], testing.metric_context(model, split, attribution=clean, n=3,
                                                                     explain=identity), severities=[0])


def test_classification_under_corruption(setup):
    from sklearn.metrics import roc_auc_score

    split, model = setup
    images = split.images
    lazy = LazyArray(len(images), tuple(images.shape[1:]), lambda idx: images[idx])
    ctx = testing.metric_context(model, split)
    ctx.inputs = lazy
    out = testing.score(SPECS["corruption-classification"], ctx, batch_size=5, **GRID)
    names = {"auc", "acc"} | {f"{v}/{c}/{s}" for v in ("auc", "acc", "delta_auc", "delta_acc")
                              for c in GRID["corruptions"] for s in GRID["severities"]}
    assert set(out) == names and all(v.dim() == 0 for v in out.values())
    y = split.labels.numpy()
    with torch.no_grad():
        p0 = model.module(images).softmax(1).numpy()
    assert out["auc"].item() == pytest.approx(roc_auc_score(y, p0[:, 1]))
    assert out["acc"].item() == pytest.approx(np.mean(p0.argmax(1) == y))
    for c in GRID["corruptions"]:
        for s in GRID["severities"]:
            with torch.no_grad():
                p = model.module(corrupt(images, c, s, rm.content_seeds(images, c, s))).softmax(1).numpy()
            assert out[f"auc/{c}/{s}"].item() == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-9)
            assert out[f"acc/{c}/{s}"].item() == pytest.approx(np.mean(p.argmax(1) == y))
            assert out[f"delta_auc/{c}/{s}"].item() == pytest.approx(out["auc"].item() - out[f"auc/{c}/{s}"].item())
            assert out[f"delta_acc/{c}/{s}"].item() == pytest.approx(out["acc"].item() - out[f"acc/{c}/{s}"].item())


def test_default_grid_is_every_corruption_and_severity():
    spec = SPECS["saliency-rmse"]
    grid = defaults(spec.params)
    assert tuple(grid["corruptions"]) == CORRUPTIONS and grid["severities"] == [1, 2, 3, 4, 5]
    assert spec.direction("rmse") is False and spec.family("rmse").kind == "grid"
    assert SPECS["corruption-classification"].direction("delta_auc") is False
