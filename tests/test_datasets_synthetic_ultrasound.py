"""Synthetic breast ultrasound: the data contract, the lesion's shape as the class, speckle and
attenuation, and that no trivial global statistic gives the class away while a small CNN learns it."""

from __future__ import annotations

import pytest
import torch

from xbench import testing
from xbench.datasets import synthetic_ultrasound as U
from xbench.errors import UsageError
from xbench.specs import defaults

BASE = defaults(U.PARAMS)


@pytest.fixture(scope="module")
def big():
    return U.generate(1000, 0, 2, BASE)


def _best_threshold_accuracy(values: torch.Tensor, labels: torch.Tensor) -> float:
    """The best accuracy any single threshold on ``values`` reaches, either way round."""
    order = torch.argsort(values)
    y = labels[order].double()
    n = len(y)
    ones_below = torch.cat([torch.zeros(1, dtype=torch.float64), y.cumsum(0)])  # class-1 count below each cut
    k = torch.arange(n + 1, dtype=torch.float64)
    accuracy = (k - ones_below + (y.sum() - ones_below)) / n  # below → class 0, above → class 1
    return float(torch.maximum(accuracy, 1 - accuracy).max())


def _aspect_and_compactness(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask: width/height from second moments, and perimeter² / (4π·area) (1 for a disk)."""
    m = masks.double()
    area = m.flatten(1).sum(1)
    yy = torch.arange(m.shape[1], dtype=torch.float64)[None, :, None]
    xx = torch.arange(m.shape[2], dtype=torch.float64)[None, None, :]
    cy = (m * yy).flatten(1).sum(1) / area
    cx = (m * xx).flatten(1).sum(1) / area
    var_y = (m * (yy - cy[:, None, None]) ** 2).flatten(1).sum(1) / area
    var_x = (m * (xx - cx[:, None, None]) ** 2).flatten(1).sum(1) / area
    padded = torch.nn.functional.pad(masks, (1, 1, 1, 1))
    inner = padded[:, 1:-1, 1:-1] & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    perimeter = (masks & ~inner).flatten(1).sum(1).double()
    return (var_x / var_y).sqrt(), perimeter ** 2 / (4 * torch.pi * area)


def test_contract_determinism_and_balance():
    data = testing.check_dataset_spec(next(U.xbench_datasets()), {"n_train": 40, "n_val": 20, "n_test": 20}, seed=1)
    test = data.test
    assert test.images.shape == (20, 1, 64, 64) and test.images.dtype == torch.float32
    assert data.class_names == ("malignant", "normal, benign")  # BreastMNIST's names and order
    assert data.info["provenance"]["kind"] == "generated"  # so a stand-in's page says what it is made of
    assert data.train.labels.bincount().tolist() == [20, 20] and test.labels.bincount().tolist() == [10, 10]
    x = test.images
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and torch.equal(x * 255, (x * 255).round())  # 8-bit
    assert test.masks.dtype == torch.bool and test.masks.shape == (20, 64, 64)
    assert set(test.regions) == {"lesion"} and torch.equal(test.regions["lesion"], test.masks)
    other = U.load({**BASE, "n_train": 40, "n_val": 20, "n_test": 20}, 2)
    assert not torch.equal(other.test.images, test.images)
    assert not torch.equal(data.train.images[:20], data.val.images)  # splits differ for one seed


def test_one_lesion_per_image_inside_the_image(big):
    masks = big.masks
    area = masks.flatten(1).float().mean(1)
    assert bool(torch.all((area > 0.02) & (area < 0.12)))  # lesion_area [0.03, 0.10], up to rasterisation
    border = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    assert not border.any()  # never clipped by the image's edge


def test_the_lesions_shape_follows_the_class(big):
    aspect, compactness = _aspect_and_compactness(big.masks)
    benign, malignant = big.labels == U.BENIGN, big.labels == U.MALIGNANT
    assert float(aspect[benign].median()) > 1.35 and float(aspect[malignant].median()) < 1.05  # wider than tall
    assert float(compactness[malignant].median()) > 1.5 * float(compactness[benign].median())  # irregular margin


def test_the_lesion_is_hypoechoic(big):
    x, m = big.images[:, 0], big.masks
    near = torch.nn.functional.max_pool2d(m.float()[:, None], 9, stride=1, padding=4)[:, 0].bool() & ~m
    inside = (x * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    around = (x * near).flatten(1).sum(1) / near.flatten(1).sum(1)
    assert float((inside < around - 0.1).float().mean()) > 0.95


def test_no_trivial_global_statistic_gives_the_class_away(big):
    x, m, y = big.images[:, 0], big.masks, big.labels
    # the lesion's core (the mask eroded by one pixel): the whole mask's mean mixes in its blurred
    # edge, which is longer for an irregular outline, i.e. it reads the shape
    core = -torch.nn.functional.max_pool2d(-m.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0.5
    statistics = {
        "mean intensity": x.flatten(1).mean(1),
        "intensity s.d.": x.flatten(1).std(1),
        "share of dark pixels": (x < 0.3).flatten(1).float().mean(1),
        "lesion area": m.flatten(1).float().mean(1),
        "mean intensity in the lesion's core": (x * core).flatten(1).sum(1) / core.flatten(1).sum(1).clamp(min=1),
        "lesion depth": (m * torch.arange(64.0)[None, :, None]).flatten(1).sum(1) / m.flatten(1).sum(1),
    }
    for name, values in statistics.items():
        assert _best_threshold_accuracy(values, y) < 0.6, name  # chance is 0.5; n = 1000
    # the statistics the test uses are sharp: the lesion's shape does separate the classes
    aspect, _ = _aspect_and_compactness(m)
    assert _best_threshold_accuracy(aspect, y) > 0.95


def test_speckle_is_grained_wider_laterally_and_attenuation_darkens_depth():
    params = {**BASE, "lesion_area": [0.005, 0.006]}

    def neighbour_correlation(x: torch.Tensor, dim: int) -> float:
        x = x - x.mean((1, 2), keepdim=True)
        a, b = x.narrow(dim, 0, x.shape[dim] - 1), x.narrow(dim, 1, x.shape[dim] - 1)
        return float((a * b).mean() / (a.std() * b.std()))

    grained = U.generate(64, 0, 0, {**params, "speckle_grain": 1.0}).images[:, 0, 24:40]
    assert neighbour_correlation(grained, 2) > neighbour_correlation(grained, 1) + 0.1 > 0.2  # lateral > axial
    fine = U.generate(64, 0, 0, {**params, "speckle_grain": 0.0}).images[:, 0, 24:40]
    assert neighbour_correlation(fine, 2) < neighbour_correlation(grained, 2) - 0.3
    flat = U.generate(64, 0, 0, {**params, "attenuation": 0.0}).images[:, 0]
    steep = U.generate(64, 0, 0, {**params, "attenuation": 4.0}).images[:, 0]
    drop = flat.mean((0, 2)) - steep.mean((0, 2))  # per depth row
    assert float(drop[48:].mean()) > float(drop[:16].mean()) + 0.05


def test_the_lesion_area_range_is_checked():
    from xbench.config import check_param, plugin_params

    table = plugin_params("datasets", next(U.xbench_datasets()))
    with pytest.raises(UsageError, match="low ≤ high"):
        check_param("test", "datasets", "synthetic-ultrasound", "lesion_area", [0.1, 0.05], table)


def test_a_small_cnn_learns_the_class_at_a_tiny_size():
    params = {**BASE, "size": 32, "lesion_area": [0.08, 0.16], "n_train": 512, "n_val": 128, "n_test": 256}
    data = U.load(params, 0)
    model = testing.train_small_cnn(data, epochs=12, seed=0, lr=1e-2)
    with torch.no_grad():
        accuracy = float((model.module(data.test.images).argmax(1) == data.test.labels).float().mean())
    assert accuracy > 0.65  # chance 0.5; measured 0.76 (one and two threads)
