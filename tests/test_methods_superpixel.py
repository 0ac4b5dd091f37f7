"""LIME, KernelSHAP and feature ablation on superpixels: exact Shapley values and ablation drops of
a model that is additive in the features, the per-image features and fills, and the plugin against
Captum called directly image by image with the same features, fills and random state.

The cross-check against Captum per image is a registered verification
(plugins/verifications/methods_expanding.py), which `xbench verify` and
tests/test_verification.py run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.plugins.methods import superpixel as sp
from xbench.plugins.verifications.methods_expanding import blobs
from xbench.registry import load_registry
from xbench.specs import defaults

INFO = DatasetInfo("toy", 3, 24, 24, ("a", "b"))


def explain(name, module, x, t, seed=0, **params):
    spec = load_registry().get("methods", name).spec
    gen = torch.Generator().manual_seed(seed) if spec.stochastic else None
    return run_method(spec, TrainedModel(module, INFO, {}), x, t, {**defaults(spec.params), **params},
                      generator=gen)


class Additive(nn.Module):
    """logits = [Σ w ⊙ x, −Σ w ⊙ x]: additive in any grouping of the pixels."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


def exact_group_values(model: Additive, x, base, mask) -> torch.Tensor:
    """Each feature's Shapley value of the additive model, Σ_{its pixels} w·(x − b), spread over its
    pixels (as Captum returns it)."""
    contrib = ((x - base) * model.w.detach()).sum(1)  # (N, H, W)
    out = torch.zeros_like(contrib)
    for i in range(len(x)):
        for f in mask[i, 0].unique():
            where = mask[i, 0] == f
            out[i][where] = contrib[i][where].sum()
    return out[:, None].expand_as(x)


# ----------------------------------------------------------------------------- cross-checks

# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("fill", ["mean", "black"])
def test_kernel_shap_and_feature_ablation_are_exact_on_an_additive_model(fill):
    net = Additive().eval()
    x, t = blobs(), torch.zeros(3, dtype=torch.long)
    params = {"segments": 10, "fill": fill, "output": "logit"}
    mask = sp.features(x, {**defaults(load_registry().get("methods", "kernel-shap").spec.params), **params})
    want = exact_group_values(net, x, sp.fill_image(x, mask, fill), mask)
    shap = explain("kernel-shap", net, x, t, samples=200, **params)
    torch.testing.assert_close(shap, want, rtol=1e-3, atol=1e-3)
    ablation = explain("feature-ablation", net, x, t, **params)
    torch.testing.assert_close(ablation, want, rtol=1e-4, atol=1e-4)


def test_lime_ranks_the_features_of_an_additive_model():
    # ridge shrinks the coefficients, so not exact; with many samples their order is the truth's
    net = Additive(3).eval()
    x, t = blobs(1, seed=2), torch.zeros(1, dtype=torch.long)
    params = {"segments": 8, "output": "logit", "samples": 400}
    mask = sp.features(x, {**defaults(load_registry().get("methods", "lime").spec.params), **params})
    truth = exact_group_values(net, x, sp.fill_image(x, mask, "mean"), mask)[0, 0]
    got = explain("lime", net, x, t, **params)[0, 0]
    ids = mask[0, 0].unique()
    per_truth = torch.stack([truth[mask[0, 0] == f][0] for f in ids])
    per_got = torch.stack([got[mask[0, 0] == f][0] for f in ids])
    from scipy.stats import spearmanr

    assert len(ids) >= 5 and spearmanr(per_truth, per_got).statistic > 0.95


def test_slic_features_are_numbered_per_image_and_equal_scikit_image():
    from skimage.segmentation import slic

    x = blobs(2, seed=5)
    mask = sp.slic_features(x, 15, 10.0)
    assert mask.shape == (2, 1, 24, 24) and mask.dtype == torch.int64
    for i in range(2):
        ids = mask[i, 0].unique()
        assert torch.equal(ids, torch.arange(len(ids)))  # 0..M_i − 1, no gaps
        image = x[i].numpy().astype(np.float64)
        scaled = (image - image.min()) / (image.max() - image.min()) * 100
        ref = slic(np.moveaxis(scaled, 0, -1), n_segments=15, compactness=10.0, start_label=0, convert2lab=False,
                   channel_axis=-1)
        # the same partition (labels may be renumbered)
        pairs = {(int(a), int(b)) for a, b in zip(mask[i, 0].flatten().tolist(), ref.flatten().tolist())}
        assert len(pairs) == len(ids) == len(np.unique(ref))


def test_mean_fill_is_each_features_own_mean_colour():
    x = blobs(2, seed=6)
    mask = sp.patch_features(x, 5)  # 5 × 5 grid of partial patches on 24 px
    filled = sp.fill_image(x, mask, "mean")
    for i in range(2):
        for f in mask[i, 0].unique():
            where = mask[i, 0] == f
            want = x[i][:, where].mean(1)
            torch.testing.assert_close(filled[i][:, where], want[:, None].expand(-1, int(where.sum())))
    assert torch.equal(sp.fill_image(x, mask, "gray"), torch.full_like(x, 0.5))


def test_patch_features_cover_the_grid():
    mask = sp.patch_features(torch.zeros(1, 1, 10, 13), 4)
    assert mask.max() == 3 * 4 - 1 and mask[0, 0, 0, 12] == 3 and mask[0, 0, 9, 0] == 8
