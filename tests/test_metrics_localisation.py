"""TPR/TNR, POMPOM, mass in region and EMD: hand-computed examples, oracles and edge cases. (TPR
against Quantus and EMD against a transport LP: plugins/verifications/metrics_localisation.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xbench import Dataset, MetricContext, testing
from xbench.errors import DataError
from xbench.plugins.metrics import localisation as lm
from xbench import results
from xbench.results import NONFINITE

SPECS = {s.name: s for s in lm.xbench_metrics()}


def ctx_for(attribution, mask=None, regions=None, params=None, seed=0, method="m", dataset=None):
    """A context over hand-made maps (no model needed by these metrics), built by the factory the
    runner uses; the ``sum`` reduction leaves a one-channel map as it is."""
    a = torch.as_tensor(attribution, dtype=torch.float32)
    n = a.shape[0]
    dummy = torch.zeros(n, dtype=torch.long)
    return results.metric_context(
        model=None, inputs=torch.zeros(n, 1, *a.shape[1:]), labels=dummy, logits=torch.zeros(n, 2), targets=dummy,
        target_mode="label", params=dict(params or {}), generator=torch.Generator().manual_seed(seed), predict=None,
        attribution=results.prepare_attribution(a, tuple(a.shape[1:]), "sum"), reduction="sum",
        mask=None if mask is None else torch.as_tensor(mask, dtype=torch.bool),
        regions={k: torch.as_tensor(v, dtype=torch.bool) for k, v in (regions or {}).items()},
        method=method, dataset=dataset,
    )


def score(name, ctx, **params):
    return testing.score(SPECS[name], ctx, **params)


def notes(ctx):
    return {reason: where.tolist() for where, reason in ctx.notes}


# ----------------------------------------------------------------------------- TPR / TNR

def test_tpr_tnr_hand_computed():
    # 3×3 map, GT = the 3 pixels of the top row. The three highest pixels are (0,0), (1,1), (0,2):
    # TP = 2, FP = 1, FN = 1, TN = 5 → TPR = 2/3, TNR = 5/6.
    a = [[[9, 1, 7], [2, 8, 3], [0, 4, 5]]]
    gt = [[[1, 1, 1], [0, 0, 0], [0, 0, 0]]]
    out = score("tpr-tnr", ctx_for(a, gt))
    assert [out[k].item() for k in ("tp", "fp", "fn", "tn")] == [2, 1, 1, 5]
    assert out["tpr"].item() == pytest.approx(2 / 3)
    assert out["tnr"].item() == pytest.approx(5 / 6)


def test_tpr_oracles_on_planted_masks():
    split = testing.planted_split(64, size=32, seed=3)
    gt = split.masks
    assert score("tpr-tnr", ctx_for(gt.float(), gt))["tpr"].eq(1).all()
    assert score("tpr-tnr", ctx_for((~gt).float() + 0.01 * torch.rand(gt.shape), gt))["tpr"].eq(0).all()
    random_tpr = score("tpr-tnr", ctx_for(torch.rand(gt.shape, generator=torch.Generator().manual_seed(0)), gt))["tpr"]
    chance = gt.flatten(1).sum(1).double() / gt[0].numel()  # 64 / 1024
    # mean of 64 hypergeometric TPRs: sd ≈ sqrt(chance·(1−chance)/64/64) ≈ 0.004
    assert random_tpr.mean().item() == pytest.approx(chance.mean().item(), abs=0.02)


def test_ties_split_gives_exact_chance_index_and_random_give_pixel_sets():
    gt = torch.zeros(1, 4, 4, dtype=torch.bool)
    gt[0, 0, :2] = True  # 2 of 16 pixels, top-left
    const = torch.ones(1, 4, 4)
    ctx = ctx_for(const, gt)
    out = score("tpr-tnr", ctx)
    assert out["tpr"].item() == pytest.approx(2 / 16)  # every tied pixel holds 2/16 of a place
    assert out["tp"].item() + out["fp"].item() == pytest.approx(2)
    assert notes(ctx)["constant attribution: top pixels decided by the tie rule"] == [True]
    assert score("tpr-tnr", ctx_for(const, gt), ties="index")["tpr"].item() == 1.0  # lower indices win
    # partial tie: one clear winner inside GT, 15 pixels tied for the last place
    a = torch.zeros(1, 4, 4)
    a[0, 0, 0] = 1
    assert score("tpr-tnr", ctx_for(a, gt))["tp"].item() == pytest.approx(1 + 1 / 15)
    picks = [score("tpr-tnr", ctx_for(a, gt, seed=s), ties="random")["tp"].item() for s in range(60)]
    assert set(picks) == {1.0, 2.0} and np.mean(picks) == pytest.approx(1 + 1 / 15, abs=0.08)


def test_legacy_strict_threshold_drops_ties_like_the_source():
    gt = torch.zeros(1, 4, 4, dtype=torch.bool)
    gt[0, 0, :2] = True
    a = torch.zeros(1, 4, 4)
    a[0, 0, 0] = 1  # source: M = a > 3rd largest (= 0) → only one pixel
    out = score("tpr-tnr", ctx_for(a, gt), legacy_strict_threshold=True)
    assert (out["tp"].item(), out["fp"].item(), out["tpr"].item()) == (1, 0, 0.5)


def test_tpr_edge_cases_are_defined_and_flagged():
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt[1] = True
    gt[2, 1, 1] = True
    a = torch.rand(3, 4, 4)
    a[2, 0, 0] = float("nan")
    ctx = ctx_for(a, gt)
    out = score("tpr-tnr", ctx)
    flags = notes(ctx)
    assert math.isnan(out["tpr"][0]) and out["tnr"][0] == 1  # empty mask
    assert flags["empty mask: TPR undefined"] == [True, False, False]
    assert out["tpr"][1] == 1 and math.isnan(out["tnr"][1])  # whole-image mask
    assert flags["mask covers the whole image: TNR undefined"] == [False, True, False]
    assert all(math.isnan(out[k][2]) for k in out)  # NaN in the map
    assert flags[NONFINITE] == [False, False, True]


def test_wrong_mask_shape_is_a_clear_error_naming_dataset_and_method():
    dataset = Dataset("cardiac-x", ("a", "b"), {})
    ctx = ctx_for(torch.rand(2, 8, 8), torch.ones(2, 4, 4), method="grad-cam", dataset=dataset)
    with pytest.raises(DataError, match=r"(?s)'cardiac-x'.*\(2, 4, 4\).*'grad-cam'.*\(2, 8, 8\)"):
        score("tpr-tnr", ctx)
    with pytest.raises(DataError, match="region 'heart'"):
        score("mass-in-region", ctx_for(torch.rand(2, 8, 8), regions={"heart": torch.ones(2, 8, 7)},
                                        dataset=dataset))


# ----------------------------------------------------------------------------- POMPOM

def test_pompom_hand_computed_and_oracles():
    # outside = the top 6 pixels; ẑ = a/8 there: 0, 0.5, 1, 0.25, 1.25e-7 (not > ε), 0 → 3 of 6
    a = [[[0, 4, 8], [2, 1e-6, 0], [8, 8, 8]]]
    z = [[[0, 0, 0], [0, 0, 0], [1, 1, 1]]]
    out = score("pompom", ctx_for(a, z))["pompom"].item()
    assert out == pytest.approx(3 / (6 + 1e-6))
    gt = testing.planted_split(8, size=16, patch=4).masks
    assert score("pompom", ctx_for(gt.float(), gt))["pompom"].eq(0).all()
    assert score("pompom", ctx_for((~gt).float(), gt))["pompom"].sub(1).abs().max() < 1e-6


def test_pompom_minmax_rule_and_edge_cases():
    a = torch.tensor([[[2.0, 2.0], [3.0, 5.0]]])
    z = torch.tensor([[[0, 0], [0, 1]]], dtype=torch.bool)
    # max rule: every outside pixel is > 0 → 3/3; minmax: the two minima become 0 → 1/3
    assert score("pompom", ctx_for(a, z))["pompom"].item() == pytest.approx(3 / (3 + 1e-6))
    assert score("pompom", ctx_for(a, z), normalise="minmax")["pompom"].item() == pytest.approx(1 / (3 + 1e-6))
    maps = torch.zeros(3, 2, 2)
    maps[1] = 1.0
    maps[2, 0, 0] = 1.0
    masks = torch.tensor([[[0, 1], [0, 0]], [[0, 1], [0, 0]], [[1, 1], [1, 1]]], dtype=torch.bool)
    ctx = ctx_for(maps, masks)
    out = score("pompom", ctx)["pompom"]
    assert math.isnan(out[0]) and out[1] == pytest.approx(1, abs=1e-6) and out[2] == 0
    flags = notes(ctx)
    assert flags["all-zero (or, with minmax, constant) attribution: no meaningful pixels, POMPOM undefined"] == \
        [True, False, False]
    assert flags["mask covers the whole image: no pixel outside it, POMPOM is 0 by its ε"] == [False, False, True]


# ----------------------------------------------------------------------------- mass in region

def test_mass_in_region_hand_computed():
    a = torch.tensor([[[1.0, -2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[-1.0, -2.0], [-3.0, -4.0]]])
    heart = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]], [[1, 0], [0, 0]]])
    marker = torch.zeros(3, 2, 2)
    ctx = ctx_for(a, regions={"heart": heart, "sex marker": marker}, method="hires-cam")
    out = score("mass-in-region", ctx)
    assert out["mass/heart"][0].item() == pytest.approx(1 / 8)  # negative part excluded: h⁺ sums to 8
    assert out["area/heart"].tolist() == [0.5, 0.25, 0.25]
    assert out["mass/sex-marker"][0].item() == 0 and out["area/sex-marker"].tolist() == [0, 0, 0]
    assert math.isnan(out["mass/heart"][1]) and math.isnan(out["mass/heart"][2])  # no positive attribution
    flags = notes(ctx)  # the rows say why the value is undefined
    assert flags["hires-cam map all zero: no positive evidence for the explained class, so the share of its mass "
                 "in each region is undefined (0/0)"] == [False, True, False]
    assert flags["hires-cam map all negative: no positive attribution, so the share of its mass in each region "
                 "is undefined (0/0)"] == [False, False, True]
    assert flags["region 'sex marker' is empty in this image (its mass is 0)"] == [True, True, True]


def test_mass_in_region_oracle_on_planted_regions():
    split = testing.planted_split(8, size=16, patch=4)
    out = score("mass-in-region", ctx_for(split.masks.float(), regions=split.regions))
    assert out["mass/patch"].eq(1).all() and out["area/patch"].eq(16 / 256).all()


# ----------------------------------------------------------------------------- EMD

def test_emd_hand_computed():
    # GT = pixels (0,0),(0,1); top-2 of the map = (1,0),(1,1): every point moves one row, cost 1.
    gt = torch.zeros(1, 3, 3, dtype=torch.bool)
    gt[0, 0, :2] = True
    a = torch.zeros(1, 3, 3)
    a[0, 1, :2] = 1
    assert score("emd", ctx_for(a, gt))["emd"].item() == pytest.approx(1.0)
    # shifted by one column: the plan shifts both points (cost 1 + 1) rather than keep the shared
    # point and move the other two columns (0 + 4)
    a2 = torch.zeros(1, 3, 3)
    a2[0, 0, 1:] = 1
    assert score("emd", ctx_for(a2, gt))["emd"].item() == pytest.approx(1.0)
    # squared Euclidean, not Euclidean: one point two columns away costs 4
    one = torch.zeros(1, 3, 3, dtype=torch.bool)
    one[0, 0, 0] = True
    a3 = torch.zeros(1, 3, 3)
    a3[0, 0, 2] = 1
    assert score("emd", ctx_for(a3, one))["emd"].item() == pytest.approx(4.0)
    assert score("emd", ctx_for(gt.float(), gt))["emd"].item() == 0


def test_emd_edge_cases():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[1] = True
    ctx = ctx_for(torch.rand(2, 4, 4), gt)
    out = score("emd", ctx, max_points=8)["emd"]
    assert math.isnan(out[0]) and math.isnan(out[1])
    flags = notes(ctx)
    assert flags["empty mask: EMD undefined"] == [True, False]
    assert flags["mask larger than max_points = 8: EMD skipped (raise max_points; cost grows as p³)"] == [False, True]
