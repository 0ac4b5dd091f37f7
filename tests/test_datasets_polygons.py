"""Synthetic polygons: placement rules, outlines, box and tight masks, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from xbench import testing
from xbench.datasets import polygons as P
from xbench.errors import UsageError
from xbench.specs import defaults

SMALL = {**defaults(P.PARAMS), "size": 96, "rad_min": 6, "rad_max": 14, "n_train": 16, "n_val": 8, "n_test": 48}


@pytest.fixture(scope="module")
def data():
    return testing.check_dataset_spec(next(P.xbench_datasets()), SMALL, seed=0)


def test_balanced_classes_and_masks_only_for_the_target(data):
    test = data.test
    assert test.images.shape == (48, 3, 96, 96) and test.images.dtype == torch.float32
    assert test.labels.bincount().tolist() == [24, 24]
    has = test.masks.flatten(1).any(1)
    assert torch.equal(has, test.labels == 1)
    assert bool(torch.all(test.regions["polygon"] <= test.regions["box"]))  # the polygon lies in its box
    assert torch.equal(test.masks, test.regions["box"])
    x = test.images[:, 0]
    assert torch.allclose(x * 255, (x * 255).round()) and float(x.max()) == 1.0


def test_shapes_are_never_clipped_and_never_overlap(data):
    for name in ("train", "val", "test"):
        split = data.split(name)
        c, r, count = split.meta["centres"], split.meta["radii"], split.meta["shapes"]
        for i in range(len(split)):
            k = int(count[i])
            ci, ri = c[i, :k], r[i, :k]
            assert bool(torch.all((ci - ri[:, None] >= 0) & (ci + ri[:, None] <= 95)))
            assert bool(torch.all((ri >= 6) & (ri < 14)))
            dist = torch.cdist(ci, ci) - ri[:, None] - ri[None, :]
            assert bool(torch.all(dist[~torch.eye(k, dtype=torch.bool)] > 0))
        assert float(count.float().mean()) > 4.5


def test_outlines_and_masks_follow_the_geometry(data):
    test = data.test
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    for i in range(len(test)):
        c, r = test.meta["centres"][i], test.meta["radii"][i]
        first = 1 if int(test.labels[i]) == 1 else 0  # the target's outline is not a circle
        for k in range(first, int(test.meta["shapes"][i])):
            on_circle = ((yy - c[k, 0]) ** 2 + (xx - c[k, 1]) ** 2).sqrt().sub(r[k]).abs() < 0.25
            assert float(test.images[i, 0][on_circle].max()) < 0.8  # ink on every circle's outline
        if first:
            box = ((yy - c[0, 0]).abs() <= r[0]) & ((xx - c[0, 1]).abs() <= r[0])
            assert torch.equal(test.masks[i], box)
            area = float(test.regions["polygon"][i].sum())
            triangle = 3 * math.sqrt(3) / 4 * float(r[0]) ** 2
            assert 0.9 * triangle < area < triangle + 3 * math.sqrt(3) * float(r[0])  # plus at most its rim
            ink = test.images[i, 0] < 0.5
            assert int((ink & box).sum()) > 2 * float(r[0])  # the triangle is drawn inside its box


def test_tight_masks_star_targets_and_determinism():
    params = {**SMALL, "mask": "polygon", "target_vertices": 5, "target_step": 2, "n_test": 16}
    a = P.load(params, 3).test
    assert torch.equal(a.masks, a.regions["polygon"]) and torch.equal(a.masks.flatten(1).any(1), a.labels == 1)
    assert torch.equal(a.images, P.load(params, 3).test.images)
    assert not torch.equal(a.images, P.load(params, 4).test.images)
    one = P.load({**params, "channels": 1}, 3).test
    assert one.images.shape[1] == 1 and torch.equal(one.images[:, 0], a.images[:, 0])
    noisy = P.load({**params, "noise": True}, 3).test
    assert 2 < float((a.images - noisy.images).mean() * 255) < 8  # darker by about N(5, var 5)


def test_bad_params_are_explained_before_any_data_is_made():
    spec = next(P.xbench_datasets())
    given = {k: SMALL[k] for k in ("size", "rad_min", "rad_max", "n_train", "n_val", "n_test")}
    for bad, match in (({"target_vertices": 4, "target_step": 2}, "1 <= q < p/2"),
                       ({"mask": "blob"}, "'mask' .* must be one of 'box', 'polygon'"),
                       ({"rad_max": 60}, "rad_max < size/2"), ({"channels": 2}, "'channels' .* must be one of 1, 3")):
        with pytest.raises((UsageError, ValueError), match=match):
            testing.params_of("datasets", spec, {**given, **bad})
    assert testing.params_of("datasets", spec, given)["mask"] == "box"
