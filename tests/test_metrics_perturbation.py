"""Deletion and insertion: hand-computed curves and areas on a model whose logit is a pixel sum,
the fills and start images, patches, the forward passes (one per step, one image for a black end),
batch invariance, dtypes, params."""

from __future__ import annotations

import pytest
import torch

from xbench import testing
from xbench.errors import UsageError
from xbench.plugins.metrics import faithfulness as fm
from xbench.plugins.metrics import perturbation as pm

from helpers import PatchSum as Recording
from helpers import metric_ctx as make_ctx

DELETION, INSERTION = pm.xbench_metrics()


def ctx_for(model, x, a, **kw):
    ctx = make_ctx(model, x, a, **kw)
    model.seen.clear()
    return ctx


def test_deletion_curve_and_area_hand_computed():
    # 1×2×2 image of ones, pixel weights c; relevance order 3, 0, 2, 1; 4 steps delete one pixel each.
    c = torch.tensor([0.5, 0.25, -0.25, 0.75])
    model = Recording(c.view(1, 1, 2, 2))
    a = torch.tensor([3.0, 0.0, 1.0, 9.0]).view(1, 2, 2)
    out = testing.score(DELETION, ctx_for(model, torch.ones(1, 1, 2, 2), a), steps=4)
    z = [c.sum().item()]
    for p in (3, 0, 2, 1):
        z.append(z[-1] - c[p].item())
    f = torch.sigmoid(torch.tensor(z, dtype=torch.float64))
    got = torch.stack([out[f"deletion/{j}"][0] for j in range(5)])
    torch.testing.assert_close(got, f, rtol=1e-6, atol=0)
    area = (f.sum() - (f[0] + f[-1]) / 2) / 4
    assert out["deletion"].item() == pytest.approx(area.item(), rel=1e-6)
    assert len(model.seen) == 4 and all(len(b) == 1 for b in model.seen)  # one forward per step, clean reused


def test_insertion_starts_black_and_ends_clean():
    c = torch.tensor([0.5, 0.25, -0.25, 0.75])
    model = Recording(c.view(1, 1, 2, 2))
    a = torch.tensor([3.0, 0.0, 1.0, 9.0]).view(1, 2, 2)
    out = testing.score(INSERTION, ctx_for(model, torch.ones(1, 1, 2, 2), a), steps=4, start="black")
    z = [0.0]
    for p in (3, 0, 2, 1):
        z.append(z[-1] + c[p].item())
    f = torch.sigmoid(torch.tensor(z, dtype=torch.float64))
    torch.testing.assert_close(torch.stack([out[f"insertion/{j}"][0] for j in range(5)]), f, rtol=1e-6, atol=0)
    assert out["insertion"].item() == pytest.approx(((f.sum() - (f[0] + f[-1]) / 2) / 4).item(), rel=1e-6)


def test_good_map_beats_inverted_map():
    # the logit counts the pixels of a square; a map on the square deletes them first, its inverse last
    weight = torch.zeros(1, 1, 12, 12)
    weight[..., 3:7, 3:7] = 0.5
    model = Recording(weight)
    x = torch.ones(2, 1, 12, 12)
    good = weight[:, 0].expand(2, 12, 12) + 0.01 * torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(0))
    bad = 1 - good
    d_good = testing.score(DELETION, ctx_for(model, x, good))["deletion"]
    d_bad = testing.score(DELETION, ctx_for(model, x, bad))["deletion"]
    i_good = testing.score(INSERTION, ctx_for(model, x, good), start="black")["insertion"]
    i_bad = testing.score(INSERTION, ctx_for(model, x, bad), start="black")["insertion"]
    assert (d_good < d_bad - 0.2).all() and (i_good > i_bad + 0.2).all()


@pytest.mark.parametrize("fill", pm.DELETION_FILLS)
def test_deletion_fills(fill):
    model = Recording(torch.ones(1, 3, 8, 8))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))
    testing.score(DELETION, ctx_for(model, x, a), steps=2, fill=fill, blur_sigma=1.5)
    want = {"black": torch.zeros_like(x), "mean": x.mean((2, 3), keepdim=True).expand_as(x),
            "blur": fm.gaussian_blur(x, 1.5)}[fill]
    if fill == "black":  # every pixel deleted: one black image stands for the batch, forwarded first
        bare, half = model.seen
        torch.testing.assert_close(bare, want[:1])
    else:
        half, bare = model.seen
        torch.testing.assert_close(bare, want)
    taken = fm.morf_ranks(a.flatten(1), None).view(2, 1, 8, 8) < 32  # the 32 most relevant pixels
    torch.testing.assert_close(half, torch.where(taken, want, x))


def test_one_black_image_gives_the_batchs_bare_end():
    """Deleting every pixel to black (or inserting none into black) gives each sample the same
    image: its one forward pass gives the value a forward pass of the whole batch would."""
    weight = torch.randn(1, 2, 10, 10, generator=torch.Generator().manual_seed(4)) * 0.2
    x = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(5))
    a = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(6))
    for spec, params, bare in ((DELETION, {"fill": "black"}, "deletion/4"),
                               (INSERTION, {"start": "black"}, "insertion/0")):
        model = Recording(weight)
        out = testing.score(spec, ctx_for(model, x, a), steps=4, **params)
        assert [len(b) for b in model.seen] == [1, 3, 3, 3]
        whole = torch.softmax(model(torch.zeros_like(x)), 1)[:, 1].double()
        torch.testing.assert_close(out[bare], whole)


def test_insertion_from_blurred_and_patches():
    model = Recording(torch.ones(1, 1, 8, 8))
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    a = torch.zeros(1, 8, 8)
    a[0, :4, :4] = 1.0  # the top-left 4×4 patch first
    testing.score(INSERTION, ctx_for(model, x, a), steps=4, patch=4, blur_sigma=2.0)
    first = model.seen[0]  # step 0: the blurred image
    torch.testing.assert_close(first, fm.gaussian_blur(x, 2.0))
    one = model.seen[1]  # step 1: one of the four patches inserted, the most relevant
    torch.testing.assert_close(one[..., :4, :4], x[..., :4, :4])
    torch.testing.assert_close(one[..., 4:, :], fm.gaussian_blur(x, 2.0)[..., 4:, :])


def test_batch_invariance_and_the_forward_passes():
    weight = torch.randn(1, 2, 10, 10, generator=torch.Generator().manual_seed(4)) * 0.2
    x = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(5))
    a = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(6))
    for spec, sizes in ((DELETION, [1, 3, 3, 3, 3]), (INSERTION, [3] * 5)):  # black fill; blurred start
        model = Recording(weight)
        whole = testing.score(spec, ctx_for(model, x, a), steps=5)
        assert [len(b) for b in model.seen] == sizes
        for i in range(3):
            one = testing.score(spec, ctx_for(Recording(weight), x[i:i + 1], a[i:i + 1]), steps=5)
            for key in whole:
                torch.testing.assert_close(whole[key][i:i + 1], one[key])


def test_float64_inputs():
    model = Recording(torch.ones(1, 1, 6, 6))
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    out = testing.score(DELETION, ctx_for(model, x, torch.rand(2, 6, 6)), steps=3, fill="blur", blur_sigma=1.0)
    assert model.seen[0].dtype == torch.float64 and out["deletion"].dtype == torch.float64


@pytest.mark.parametrize("spec,params", [(DELETION, {"fill": "white"}), (DELETION, {"steps": 0}),
                                         (DELETION, {"patch": 0}), (INSERTION, {"start": "mean"}),
                                         (INSERTION, {"blur_sigma": 0.0}), (INSERTION, {"class": "x"})])
def test_invalid_params_are_rejected(spec, params):
    model = Recording(torch.ones(1, 1, 4, 4))
    with pytest.raises(UsageError):
        testing.score(spec, ctx_for(model, torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4)), **params)
