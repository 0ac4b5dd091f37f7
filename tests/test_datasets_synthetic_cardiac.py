"""Synthetic cardiac MRI: the §3.1 generator's classes, intensities, modes and the source's measurements."""

from __future__ import annotations

import pytest
import torch

from xbench import testing
from xbench.datasets import synthetic_cardiac as S
from xbench.specs import defaults

SEG = S.SEG


@pytest.fixture(scope="module")
def marker_split():
    return S.generate(1200, 0, 0, mode="sex_marker", channels=1)


def _per_class(values: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [float(values[labels == c].float().mean()) for c in range(4)]


def test_contract_determinism_and_balance():
    data = testing.check_dataset_spec(next(S.xbench_datasets()), {"n_train": 40, "n_val": 20, "n_test": 20}, seed=1)
    assert data.test.images.shape == (20, 3, 105, 135) and data.class_names == ("NOR", "HCM", "DCM", "RV")
    assert data.train.labels.bincount().tolist() == [10, 10, 10, 10]
    assert set(data.test.regions) == {"heart", "fat", "marker"} and torch.equal(data.test.masks, data.test.regions["heart"])
    other = S.load({**defaults(S.PARAMS), "n_train": 40, "n_val": 20, "n_test": 20}, 2)
    assert not torch.equal(other.test.images, data.test.images)


@pytest.mark.parametrize("mode,expected", [
    ("sex_size", [0.097, 0.096, 0.187, 0.137]),  # NOR, HCM, DCM, RV as measured from the source's data
    ("sex_marker", [0.071, 0.067, 0.137, 0.090]),
])
def test_legacy_variability_reproduces_the_sources_heart_fractions(mode, expected):
    split = S.generate(800, 0, 0, mode=mode, channels=1, legacy_variability=True)
    fractions = _per_class(split.masks.flatten(1).float().mean(1), split.labels)
    assert fractions == pytest.approx(expected, abs=0.006)
    correct = S.generate(800, 0, 0, mode=mode, channels=1)
    ratio = correct.masks.flatten(1).float().mean() / split.masks.flatten(1).float().mean()
    assert float(ratio) == pytest.approx(0.25, abs=0.03)  # the source's sizes are doubled, areas 4×


def test_class_geometry(marker_split):
    seg, labels = marker_split.meta["segmentation"], marker_split.labels
    cavity = (seg == SEG["lv_cavity"]).flatten(1).sum(1).float()
    outer = cavity + (seg == SEG["lv_myocardium"]).flatten(1).sum(1).float()
    wall = (outer / torch.pi).sqrt() - (cavity / torch.pi).sqrt()
    nor, hcm, dcm, rv = _per_class(cavity, labels)
    assert dcm > 2 * nor and hcm < 0.5 * nor  # LV radius ×1.8 and ×0.4
    w = _per_class(wall, labels)
    assert w[S.HCM] > 1.8 * w[S.NOR]  # LV wall ×2.2
    rv_cavity = _per_class((seg == SEG["rv_cavity"]).flatten(1).sum(1).float(), labels)
    assert rv_cavity[S.RV] > 1.8 * rv_cavity[S.NOR]  # RV radius ×1.5


def test_intensities_and_the_fatty_right_ventricle(marker_split):
    x, seg, labels = marker_split.images[:, 0] * 255, marker_split.meta["segmentation"], marker_split.labels
    assert float(x[seg == SEG["lv_cavity"]].mean()) == pytest.approx(203.5, abs=0.5)
    assert float(x[seg == SEG["fat"]].mean()) == pytest.approx(229.0, abs=0.5)
    assert float(x[seg == 0].abs().max()) == 0.0
    normal = (seg == SEG["rv_myocardium"]) & (labels != S.RV)[:, None, None]
    fatty = (seg == SEG["rv_myocardium"]) & (labels == S.RV)[:, None, None]
    assert float(x[normal].mean()) == pytest.approx(50.5, abs=0.5)
    assert float(x[fatty].mean()) > 90  # re-filled with U(51, 51 + f·178.5), f in 0.3–0.9
    variant = marker_split.meta["rv_variant"][labels == S.RV]
    assert 0.4 < float((variant == 2).float().mean()) < 0.6


def test_sex_marker_only_on_males_with_class_dependent_odds(marker_split):
    marker, male, labels = marker_split.regions["marker"], marker_split.meta["male"], marker_split.labels
    assert torch.equal(marker.flatten(1).any(1), male)
    assert bool(torch.all(marker[male][:, 95:104, 125:134])) and int(marker[male].flatten(1).sum(1).max()) == 81
    assert float(marker_split.images[:, 0][marker].min()) > 0.95
    assert _per_class(male, labels) == pytest.approx([0.5, 0.6, 0.5, 2.7 / 3.7], abs=0.07)
    assert not S.generate(40, 0, 0, mode="sex_size").regions["marker"].any()


def test_class_marker_corners():
    split = S.generate(40, 0, 0, mode="class_marker", channels=1)
    corners = {S.RV: (95, 125), S.NOR: (10, 125), S.HCM: (95, 10), S.DCM: (10, 10)}
    for i in range(40):
        m = split.regions["marker"][i]
        assert int(m.sum()) == 19 * 19
        y, x = corners[int(split.labels[i])]
        assert bool(m[y, x])
