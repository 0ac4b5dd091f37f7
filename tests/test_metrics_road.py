"""ROAD: the batched imputation against pytorch-grad-cam's NoisyLinearImputer, the curves against
its ROAD metrics, known answers on a model whose score is a pixel sum, seeded noise, batch
invariance, dtypes, and params rejected as a config's would be."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xbench import testing
from xbench.errors import UsageError
from xbench.plugins.metrics import road as rm

from helpers import metric_ctx as make_ctx

SPEC = next(iter(rm.xbench_metrics()))


class RegionSum(nn.Module):
    """logits = [0, Σ weight·x]."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, x):
        z = (x * self.weight).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(z), z], 1)


def smooth_map(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def reference_imputer():
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    return road.NoisyLinearImputer(noise=0.0)


@pytest.mark.parametrize("shape,share", [((2, 3, 24, 24), 0.5), ((2, 1, 13, 17), 0.9), ((1, 2, 16, 16), 0.1)])
def test_imputation_equals_the_reference_solve(shape, share):
    """The batched MG-preconditioned CG against pytorch-grad-cam's scipy ``spsolve`` (noise 0) on random
    images, for blob-shaped (MoRF of a smooth map) and scattered (random) masks, odd sizes included.
    Tolerance 1e-4 absolute at the default ``tolerance = 1e-5``; measured max difference 4.6e-5 (also on
    64×64 at 50 and 90 %)."""
    imputer = reference_imputer()
    n, c, h, w = shape
    g = torch.Generator().manual_seed(h)
    x = torch.rand(shape, generator=g)
    blob = smooth_map(n, h, w, 1)
    for removed in (blob > torch.quantile(blob.flatten(1), 1 - share, dim=1).view(n, 1, 1),
                    torch.rand(n, h, w, generator=g) < share):
        ours, converged = rm.impute(x, removed)
        theirs = torch.stack([imputer(x[i], (~removed[i]).float()) for i in range(n)])
        assert converged.all()
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
        assert torch.equal(ours[~removed[:, None].expand_as(x)], x[~removed[:, None].expand_as(x)])


def test_imputation_is_the_neighbour_mean():
    # one removed pixel in the middle of a 3×3 image: the weighted mean of its 8 neighbours
    x = torch.arange(9.0).view(1, 1, 3, 3)
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True
    out, _ = rm.impute(x, removed)
    axial = (1 + 3 + 5 + 7) / 6
    diagonal = (0 + 2 + 6 + 8) / 12
    assert out[0, 0, 1, 1].item() == pytest.approx(axial + diagonal, abs=1e-6)
    # a corner pixel averages its three in-image neighbours only
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 0, 0] = True
    out, _ = rm.impute(x, removed)
    assert out[0, 0, 0, 0].item() == pytest.approx((1 / 6 + 3 / 6 + 4 / 12) / (5 / 12), abs=1e-6)


def test_noise_is_seeded_and_only_on_removed_pixels():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    removed = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.4
    clean, _ = rm.impute(x, removed)
    a, _ = rm.impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(3))
    b, _ = rm.impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(3))
    c, _ = rm.impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    keep = ~removed[:, None].expand_as(x)
    assert torch.equal(a[keep], x[keep])
    assert (a - clean)[~keep].std().item() == pytest.approx(0.05, rel=0.15)


def test_curves_and_score_on_a_region_sum_model():
    # f = sigmoid(0.1·Σ over the left half of x). The map ranks the left half first. MoRF removes left-half
    # pixels first (f falls), LeRF removes right-half pixels first (f unchanged until 50 %).
    h = w = 8
    weight = torch.zeros(1, 1, h, w)
    weight[..., :, : w // 2] = 0.1
    model = RegionSum(weight)
    x = torch.ones(1, 1, h, w)
    a = torch.zeros(1, h, w)
    a[0, :, : w // 2] = 1 + torch.rand(h, w // 2, generator=torch.Generator().manual_seed(0))
    out = testing.score(SPEC, make_ctx(model, x, a), noise=0.0, percentages=[25, 50, 75])
    clean = torch.sigmoid(torch.tensor(3.2)).item()
    for q in (25, 50):  # right-half pixels imputed from a constant image stay 1: f unchanged
        assert out[f"lerf/{q}"].item() == pytest.approx(clean, abs=1e-6)
    assert out["lerf/75"].item() == pytest.approx(clean, abs=1e-6)  # constant image: imputation is exact
    # a non-constant image: the removed left-half pixels (value 1) are imputed from right-half pixels (0)
    x2 = (weight > 0).float()
    out2 = testing.score(SPEC, make_ctx(model, x2, a), noise=0.0, percentages=[25, 50])
    assert out2["morf/50"].item() == pytest.approx(0.5, abs=1e-5)  # the left half imputed from zeros
    assert out2["morf/50"].item() < out2["morf/25"].item() < clean
    assert out2["lerf/25"].item() == pytest.approx(clean, abs=1e-6)
    road = ((out2["lerf/25"] - out2["morf/25"]) + (out2["lerf/50"] - out2["morf/50"])) / 2
    torch.testing.assert_close(out2["road"], road)
    assert out2["road"].item() > 0


def test_batch_invariance():
    torch.manual_seed(1)
    from xbench.plugins.models.small_cnn import SmallCNN

    model = SmallCNN(1, 2, 4).eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    a = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))  # no ties: the order is fixed
    labels = torch.tensor([0, 1, 1])
    whole = testing.score(SPEC, make_ctx(model, x, a, labels=labels), noise=0.0, percentages=[20, 60])
    for i in range(3):
        one = testing.score(SPEC, make_ctx(model, x[i:i + 1], a[i:i + 1], labels=labels[i:i + 1]), noise=0.0,
                            percentages=[20, 60])
        for key in whole:
            torch.testing.assert_close(whole[key][i:i + 1], one[key], rtol=0, atol=1e-5)


def test_solving_all_percentages_together_gives_the_curves_of_one_solve_each(monkeypatch):
    """The GPU's chunking (every percentage and order in one solve), forced on the CPU."""
    torch.manual_seed(1)
    from xbench.plugins.models.small_cnn import SmallCNN

    model = SmallCNN(1, 2, 4).eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    a = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 1])
    monkeypatch.setitem(rm.IMPUTE_ELEMENTS, "cpu", x.numel())       # one set per solve
    apart = testing.score(SPEC, make_ctx(model, x, a, labels=labels), noise=0.0, percentages=[20, 50, 80])
    monkeypatch.setitem(rm.IMPUTE_ELEMENTS, "cpu", 6 * x.numel())   # all six sets in one solve
    together = testing.score(SPEC, make_ctx(model, x, a, labels=labels), noise=0.0, percentages=[20, 50, 80])
    monkeypatch.setitem(rm.IMPUTE_ELEMENTS, "cpu", 4 * x.numel())   # chunks of four sets and two
    uneven = testing.score(SPEC, make_ctx(model, x, a, labels=labels), noise=0.0, percentages=[20, 50, 80])
    assert set(apart) == set(together) == set(uneven)
    for key in apart:
        torch.testing.assert_close(together[key], apart[key], rtol=0, atol=1e-5)
        torch.testing.assert_close(uneven[key], apart[key], rtol=0, atol=1e-5)
    assert not torch.equal(apart["morf/20"], apart["morf/80"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_the_inputs(dtype):
    x = torch.rand(2, 2, 12, 12, dtype=dtype, generator=torch.Generator().manual_seed(0))
    removed = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(1)) < 0.5
    out, ok = rm.impute(x, removed)
    assert out.dtype == dtype and out.device == x.device and ok.all()
    out32, _ = rm.impute(x.float(), removed)
    torch.testing.assert_close(out.float(), out32, rtol=0, atol=1e-4)
    if torch.cuda.is_available():
        cuda, _ = rm.impute(x.cuda(), removed.cuda())
        torch.testing.assert_close(cuda.cpu(), out, rtol=0, atol=1e-4)


def test_unconverged_solves_are_flagged():
    model = RegionSum(torch.ones(1, 1, 16, 16))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ctx = make_ctx(model, x, smooth_map(2, 16, 16, 0))
    testing.score(SPEC, ctx, max_iterations=1, tolerance=1e-12, percentages=[80])
    flags = {reason: w.tolist() for w, reason in ctx.notes}
    assert any(r.startswith("imputation did not reach") and w == [True, True] for r, w in flags.items())


@pytest.mark.parametrize("params", [{"percentages": [0, 50]}, {"percentages": [50, 100]}, {"percentages": []},
                                    {"percentages": [10, 10]}, {"noise": -0.1}, {"tolerance": 0.0},
                                    {"max_iterations": 0}, {"class": "dog"}])
def test_invalid_params_are_rejected(params):
    model = RegionSum(torch.ones(1, 1, 4, 4))
    with pytest.raises(UsageError):
        testing.score(SPEC, make_ctx(model, torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4)), **params)


def test_removal_count_keeps_a_pixel():
    for rule in rm.COUNTS:
        assert rm.removal_count(50, 9, rule) == 5 and rm.removal_count(10, 4096, rule) == 410
        assert rm.removal_count(99.9, 20, rule) == 19 and rm.removal_count(50, 1, rule) == 0
    # where the rules differ on a 64 × 64 map: grad-cam's percentile removes one more pixel at 20 and 40 %
    assert [rm.removal_count(p, 4096) - rm.removal_count(p, 4096, "round") for p in rm.PERCENTAGES] == \
        [0, 1, 0, 1, 0, 0, 0, 0, 0]


def test_percentile_count_is_pytorch_grad_cams():
    """grad-cam's percentile q = 100 − p keeps the pixels below numpy's q-th percentile: on maps
    without ties the default count removes exactly as many at the default percentages on the usual
    sizes; over every integer p on 78 sizes, numpy's floating-point interpolation differs from the
    exact count by one pixel in a handful of cases (where its index is an exact integer, in the
    last bit of the map's values), never more."""
    import numpy as np

    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    g = torch.Generator().manual_seed(0)
    for h, w in ((8, 8), (20, 20), (28, 28), (32, 32), (64, 64), (105, 135), (224, 224)):
        for _ in range(3):
            cam = torch.rand(h, w, generator=g).numpy()
            assert [int((cam >= np.percentile(cam, 100 - p)).sum()) for p in rm.PERCENTAGES] == \
                [rm.removal_count(p, h * w) for p in rm.PERCENTAGES], (h, w)
    off = []
    for h in range(2, 41):
        for w in (h, h + 3):
            cam = torch.rand(h, w, generator=g).numpy()
            for p in range(1, 100):
                removed = int((cam >= np.percentile(cam, 100 - p)).sum())
                if removed != rm.removal_count(p, h * w):
                    off.append((h, w, p, removed - rm.removal_count(p, h * w)))
    assert all(abs(d) == 1 for *_, d in off) and len(off) <= 8, off  # of 7722
    # the removed pixels themselves, through grad-cam's own classes, at the default percentages, on a
    # map of distinct values in [0.5, 1) (where grad-cam's LeRF map 1 − cam is exact in float32)
    x = torch.rand(1, 3, 64, 64, generator=g)
    cam = 0.5 + torch.randperm(4096, generator=g).float().view(64, 64) / 8192
    ranks = rm.morf_ranks(cam.flatten()[None], None).view(64, 64)
    for p in rm.PERCENTAGES:
        k = rm.removal_count(p, 64 * 64)
        for remove, ours in ((road.RemoveMostRelevantFirst, ranks < k),
                             (road.RemoveLeastRelevantFirst, ranks >= 4096 - k)):
            kept = remove(100 - p, lambda img, mask: mask)(x[0], cam)  # grad-cam's mask: 1 where kept
            assert torch.equal(kept == 0, ours), (remove.__name__, p)
