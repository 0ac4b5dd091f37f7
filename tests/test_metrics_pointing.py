"""Pointing game and relevance mass accuracy: hits and misses by construction, the tolerance (strict,
scaled with the image), ties, empty masks, batch invariance, and the `centre` baseline's pointing on
centred objects. (Against TorchRay's test and Quantus: plugins/verifications/metrics_localisation.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xbench import testing
from xbench.errors import DataError, UsageError
from xbench.plugins.methods import baselines
from xbench.plugins.metrics import pointing as pg

from helpers import metric_ctx

POINTING, MASS = pg.xbench_metrics()


class Constant(nn.Module):
    def forward(self, x):
        return torch.zeros(len(x), 2, dtype=x.dtype, device=x.device)


def ctx(a, mask):
    return metric_ctx(Constant(), torch.zeros(len(a), 1, *a.shape[-2:]), a, mask=mask)


def square_mask(n=1, size=20, box=(5, 10, 5, 10)):
    m = torch.zeros(n, size, size, dtype=torch.bool)
    m[:, box[0]:box[1], box[2]:box[3]] = True
    return m


def peak_at(row, col, size=20):
    a = torch.zeros(1, size, size)
    a[0, row, col] = 1.0
    return a


def test_hit_inside_and_miss_far_away():
    mask = square_mask()
    assert testing.score(POINTING, ctx(peak_at(7, 7), mask), tolerance_rule="torchray")["pointing_game"].item() == 1
    assert testing.score(POINTING, ctx(peak_at(18, 18), mask), tolerance=0.0)["pointing_game"].item() == 0


def test_tolerance_is_strict():
    mask = square_mask()  # rows/cols 5..9
    # (row 12, col 7) is 3 px below the mask: a hit with τ = 3.5 and 4, not with τ = 3 (strict <)
    for tau, want in ((3.0, 0), (3.5, 1), (4.0, 1)):
        got = testing.score(POINTING, ctx(peak_at(12, 7), mask), tolerance=tau,
                            tolerance_rule="torchray")["pointing_game"]
        assert got.item() == want


def test_tolerance_scales_with_the_image():
    # τ = 15 at a 224 side is 15·20/224 = 1.34 px on a 20×20 image: 1 px away hits, 2 px away misses
    mask = square_mask()
    assert testing.score(POINTING, ctx(peak_at(10, 7), mask))["pointing_game"].item() == 1
    assert testing.score(POINTING, ctx(peak_at(11, 7), mask))["pointing_game"].item() == 0
    assert testing.score(POINTING, ctx(peak_at(11, 7), mask), tolerance_rule="torchray")["pointing_game"].item() == 1
    assert pg.effective_tolerance(15, "scaled", 224, 112, 448) == pytest.approx(7.5)


def test_torchray_rule_on_a_voc_sized_image():
    """TorchRay applies 15 px at the original resolution: on a 375×500 image (VOC's typical size)
    'torchray' is TorchRay's test at 15 px, 'scaled' (the default) at 15·375/224 = 25.1 px."""
    from xbench.plugins.verifications.metrics_localisation import torchray_hit

    mask = torch.zeros(24, 375, 500, dtype=torch.bool)
    mask[:, 150:220, 200:320] = True
    distance = torch.arange(0, 48, 2)  # below the box, 0..46 px from its last row, and beside it
    beside = distance % 4 == 2  # to the right of the box instead
    rows, cols = torch.where(beside, 180, 219 + distance), torch.where(beside, 319 + distance, 260)
    a = torch.zeros(24, 375, 500)
    a[torch.arange(24), rows, cols] = 1.0
    c = ctx(a, mask)
    for rule, radius in (("torchray", 15.0), ("scaled", 15 * 375 / 224)):
        ours = testing.score(POINTING, c, tolerance_rule=rule)["pointing_game"]
        theirs = [float(torchray_hit(mask[i], (cols[i].item(), rows[i].item()), radius)) for i in range(24)]
        assert ours.tolist() == theirs
    strict = testing.score(POINTING, c, tolerance_rule="torchray")["pointing_game"]
    lenient = testing.score(POINTING, c, tolerance_rule="scaled")["pointing_game"]
    assert strict.tolist() == [float(d < 15) for d in distance.tolist()]
    assert lenient.tolist() == [float(d < 25.11) for d in distance.tolist()]
    assert pg.effective_tolerance(15, "torchray", 224, 375, 500) == 15
    assert pg.effective_tolerance(15, "scaled", 224, 375, 500) == pytest.approx(25.11, abs=0.01)


@pytest.mark.parametrize("ties", pg.TIES)
def test_maxima_alone_give_the_dilated_masks_hits(monkeypatch, ties):
    """The test at the maxima (a gather of each maximum's disc, in chunks) equals the dilated mask
    read at the maxima, for single and tied maxima and constant maps, at several tolerances."""
    g = torch.Generator().manual_seed(5)
    a = torch.rand(12, 30, 23, generator=g)
    a[::3] = (a[::3] * 2).floor()  # about half the pixels tie for the maximum
    a[1] = 0.0
    masks = torch.rand(12, 30, 23, generator=g) < 0.02
    masks[2] = False
    for tau in (0.0, 1.5, 4.0, 9.0, 40.0):
        got = {}
        for way, below, chunk in (("dilation", 0.0, 1 << 22), ("maxima", math.inf, 1 << 22), ("chunked", math.inf, 50)):
            monkeypatch.setattr(pg, "DILATE_BELOW", below)
            monkeypatch.setattr(pg, "GATHER_ELEMENTS", chunk)
            got[way] = testing.score(POINTING, ctx(a, masks), tolerance=tau, tolerance_rule="torchray",
                                     ties=ties)["pointing_game"]
        torch.testing.assert_close(got["maxima"], got["dilation"], equal_nan=True, rtol=0, atol=1e-12)
        torch.testing.assert_close(got["chunked"], got["dilation"], equal_nan=True, rtol=0, atol=1e-12)


def test_ties():
    mask = square_mask()
    a = torch.zeros(1, 20, 20)
    a[0, 7, 7] = a[0, 18, 18] = a[0, 0, 19] = a[0, 19, 0] = 1.0  # one of four maxima inside
    score = {t: testing.score(POINTING, ctx(a, mask), ties=t, tolerance=0.0)["pointing_game"].item()
             for t in pg.TIES}
    assert score == {"split": 0.25, "any": 1.0, "first": 0.0}  # the first in row-major order is (0, 19)
    flat = ctx(torch.zeros(1, 20, 20), mask)
    assert testing.score(POINTING, flat, tolerance=0.0)["pointing_game"].item() == pytest.approx(25 / 400)
    assert any(r.startswith("constant attribution") for _, r in flat.notes)


def test_empty_mask_is_undefined_and_wrong_shapes_fail():
    for spec in (POINTING, MASS):
        out = testing.score(spec, ctx(peak_at(7, 7), torch.zeros(1, 20, 20, dtype=torch.bool)))
        assert all(math.isnan(v.item()) for v in out.values())
    with pytest.raises(DataError, match="shape"):
        testing.score(POINTING, ctx(peak_at(7, 7), torch.zeros(1, 10, 10, dtype=torch.bool)))


def test_relevance_mass_accuracy_known_answers():
    mask = square_mask()
    a = torch.zeros(2, 20, 20)
    a[0, 5:10, 5:10] = 1.0          # all the mass inside
    a[1, 5:10, 5:10] = 1.0
    a[1, 15:20, 15:20] = 3.0        # a quarter inside
    a[1, 0, 0] = -50.0              # negative relevance does not count
    out = testing.score(MASS, ctx(a, mask.expand(2, 20, 20)))["relevance_mass_accuracy"]
    torch.testing.assert_close(out, torch.tensor([1.0, 0.25], dtype=torch.float64))
    silent = testing.score(MASS, ctx(-torch.ones(1, 20, 20), mask))["relevance_mass_accuracy"]
    assert math.isnan(silent.item())


def test_batch_invariance():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(4, 16, 16, generator=g)
    masks = torch.rand(4, 16, 16, generator=g) < 0.1
    for spec, params in ((POINTING, {"tolerance": 3.0, "tolerance_rule": "torchray"}), (MASS, {})):
        whole = testing.score(spec, ctx(a, masks), **params)
        for i in range(4):
            one = testing.score(spec, ctx(a[i:i + 1], masks[i:i + 1]), **params)
            for key in whole:
                torch.testing.assert_close(whole[key][i:i + 1], one[key], equal_nan=True)


def test_centre_baseline_points_at_centred_objects():
    method = next(m for m in baselines.xbench_methods() if m.name == "centre")
    assert method.baseline and not method.stochastic
    x = torch.rand(3, 2, 21, 30)
    maps = method.explain(None, x, torch.zeros(3, dtype=torch.long), {"sigma": 0.25, "peak": "centre"})
    assert maps.shape == (3, 1, 21, 30) and torch.equal(maps[0], maps[2])
    peak = divmod(int(maps[0, 0].argmax()), 30)
    assert peak in ((10, 14), (10, 15))  # the centre (10, 14.5)
    assert maps[0, 0, 10, 14].item() == pytest.approx(math.exp(-0.25 / (2 * 5.25 ** 2)), rel=1e-6)
    assert maps[0, 0, 10, 0].item() == pytest.approx(math.exp(-14.5 ** 2 / (2 * 5.25 ** 2)), rel=1e-6)
    centred, corner = square_mask(3, 21, (8, 13, 12, 18)), square_mask(3, 21, (0, 4, 0, 4))
    a = maps[:, 0, :, :21].contiguous()
    assert testing.score(POINTING, ctx(a, centred), tolerance=0.0)["pointing_game"].eq(1).all()
    assert testing.score(POINTING, ctx(a, corner), tolerance=0.0)["pointing_game"].eq(0).all()
    wide = method.explain(None, x, None, {"sigma": 1.0, "peak": "centre"})
    assert wide.min() > maps.min()


def test_invalid_params_are_rejected():
    c = ctx(peak_at(7, 7), square_mask())
    for params in ({"tolerance": -1.0}, {"reference_side": -5.0}, {"reference_side": 0.0}, {"ties": "random"},
                   {"tolerance_rule": "original"}):
        with pytest.raises(UsageError):
            testing.score(POINTING, c, **params)
    method = next(m for m in baselines.xbench_methods() if m.name == "centre")
    from xbench.config import check_param, plugin_params

    with pytest.raises(UsageError):
        check_param("test", "methods", "centre", "sigma", 0.0, plugin_params("methods", method))
