"""HCP lesions: the lesion bank of §2.1, placement and blending of §2.2, backgrounds, legacy bugs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from skimage.measure import label, regionprops

from xbench import LazyArray, testing
from xbench.datasets import hcp_lesions as H
from xbench.errors import DataError
from xbench.specs import defaults

SMALL = {**defaults(H.PARAMS), "size": 64, "canvas": 128, "lesion_upscale": 1, "n_train": 24, "n_val": 8, "n_test": 40}


@pytest.fixture(scope="module")
def bank():
    return H.lesion_bank(30, 70, 2)


@pytest.fixture(scope="module")
def data():
    return testing.check_dataset_spec(next(H.xbench_datasets()), SMALL, seed=0)


def test_lesion_bank_matches_the_recipe_and_the_published_pickles(bank):
    assert bank["patches"].shape[:2] == (2, 30)
    comp = bank["compactness"]
    assert float(comp[0].min()) > 0.8 and float(comp[1].max()) < 0.4
    energy = bank["patches"].flatten(2).sum(2)
    assert torch.all((energy > 4 * 66.375 * 0.97) & (energy < 4 * 68.375 * 1.03))  # ×2 upscale: 4× the energy
    support = (bank["patches"] > 0).flatten(2).sum(2).float().mean(1)
    # the source's pickles: 452-496 (mean 468) round vs 576-708 (mean 624) not-round non-zero pixels
    assert 430 < float(support[0]) < 510 and 560 < float(support[1]) < 720
    h, w = bank["shapes"].unbind(-1)
    assert int(h[0].max()) <= 40 and int(torch.maximum(h[1], w[1]).max()) >= 40
    # an independent measure on the upscaled supports separates the classes too
    def solidity(kind):
        return [regionprops(label(bank["patches"][kind, j].numpy() > 0))[0].solidity for j in range(30)]
    assert min(solidity(0)) > max(solidity(1))


def test_splits_shapes_balance_and_lazy_images(data):
    for name, n in (("train", 24), ("val", 8), ("test", 40)):
        split = data.split(name)
        assert isinstance(split.images, LazyArray) and split.images.shape == (n, 3, 64, 64)
        assert torch.equal(split.labels.bincount(), torch.tensor([n // 2, n // 2]))
        x = split.images[torch.arange(n)]
        assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
        assert torch.equal(x[:, 0], x[:, 2])
        counts = split.meta["n_lesions"]
        assert int(counts.min()) >= 3 and int(counts.max()) <= 5
        frac = split.masks.flatten(1).float().mean(1)
        assert float(frac.min()) > 0.004 and 0.015 < float(frac.mean()) < 0.05  # source: ~3.4 % at 224 px
        assert bool(torch.all(x[:, 0][split.masks] > 0))  # lesions are inside the brain
    assert data.info["background"].startswith("mni152") and data.info["background_varied"] is True


def test_round_images_hold_round_lesions_of_many_shapes(data, bank):
    test = data.test
    ids = test.meta["lesion_ids"]
    for kind in (0, 1):
        used = ids[test.labels == kind]
        used = used[used >= 0]
        assert len(set(used.tolist())) > 10  # shuffled for both types
        comp = bank["compactness"][kind, used]
        assert bool(torch.all(comp > 0.8)) if kind == 0 else bool(torch.all(comp < 0.4))


def _disk_backgrounds(n: int, s: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    inside = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (0.45 * s) ** 2
    return (inside * (0.2 + 0.3 * (xx / s))).expand(n, s, s).float()


def test_compose_places_inside_the_brain_without_overlap_and_screens(bank):
    n, s = 12, 160
    bg = _disk_backgrounds(n, s)
    labels = torch.arange(n) % 2
    counts = torch.tensor([3, 4, 5] * 4)
    out = H.compose(bg, labels, counts, bank, torch.Generator().manual_seed(0))
    assert torch.equal(out["placed"], counts)
    brain = bg > 0
    for i in range(n):
        cover = torch.zeros(s, s)
        for j in range(int(counts[i])):
            pid, (top, left) = int(out["ids"][i, j]), out["anchors"][i, j].tolist()
            h, w = bank["shapes"][labels[i], pid].tolist()
            assert bool(brain[top:top + h, left:left + w].all())  # the whole rectangle in the brain
            cover[top:top + h, left:left + w] += (bank["patches"][labels[i], pid, :h, :w] > 0).float()
        assert float(cover.max()) == 1.0  # no two lesions share a pixel
        assert torch.equal(cover > 0, out["truth"][i])
    # the screen blend: I' = 1 − (1 − I)(1 − L), I = background scaled to max 0.7, L ≤ 0.5
    scaled = bg / bg.flatten(1).amax(1)[:, None, None] * 0.7
    lesion = 1 - (1 - out["image"]) / (1 - scaled).clamp_min(1e-6)
    assert float(lesion.max()) == pytest.approx(0.5, abs=1e-4)
    assert torch.allclose(out["image"][~out["truth"]], scaled[~out["truth"]])
    assert bool(torch.all(out["image"][out["truth"]] > scaled[out["truth"]]))
    assert bool(torch.all(out["image"][~brain] == 0))


def test_lesions_that_fit_nowhere_are_swapped_then_left_out(bank):
    tiny = torch.zeros(3, 96, 96)
    tiny[:, 30:70, 30:70] = 0.5  # a 40×40 "brain": every round lesion fits alone, five never fit
    out = H.compose(tiny, torch.tensor([0, 0, 0]), torch.tensor([5, 5, 5]), bank, torch.Generator().manual_seed(1))
    assert bool(torch.all((out["placed"] >= 1) & (out["placed"] < 5)))
    assert torch.equal(out["ids"] >= 0, torch.arange(5) < out["placed"][:, None])


def test_legacy_bugs_are_reproduced_only_on_request(bank):
    n, s = 10, 160
    bg = _disk_backgrounds(n, s)
    labels = torch.zeros(n, dtype=torch.int64)
    counts = torch.full((n,), 3)
    fixed = H.compose(bg, labels, counts, bank, torch.Generator().manual_seed(0), fixed_round=True)
    assert torch.equal(fixed["ids"], torch.arange(3).expand(n, 3))
    shuffled = H.compose(bg, labels, counts, bank, torch.Generator().manual_seed(0))
    assert len(set(shuffled["ids"].flatten().tolist())) > 5
    boxed = H.compose(bg, labels, counts, bank, torch.Generator().manual_seed(0), box_artefact=True)
    top, left = boxed["anchors"][0, 0].tolist()
    h, w = bank["shapes"][0, int(boxed["ids"][0, 0])].tolist()
    scaled = bg[0] / bg[0].max() * 0.7
    rect = boxed["image"][0, top:top + h, left:left + w]
    floor = 1 - (1 - scaled[top:top + h, left:left + w]) * (1 - 0.1)
    assert bool(torch.all(rect >= floor - 1e-6))  # the whole box brightened by the 0.1 floor
    assert torch.equal(boxed["truth"][0, top:top + h, left:left + w],
                       bank["patches"][0, int(boxed["ids"][0, 0]), :h, :w] > 0)  # truth stays the lesion


def _nifti_folder(path) -> None:
    path.mkdir()
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in (60, 72, 40)], indexing="ij")
    vol = np.where(x**2 / 0.8**2 + y**2 / 0.9**2 + z**2 < 1, 200 + 50 * np.sin(5 * y), 0).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path / "sub-01_T1w_restore_brain.nii.gz"))


def test_backgrounds_from_a_folder_or_the_environment(tmp_path, monkeypatch):
    folder = tmp_path / "hcp"
    _nifti_folder(folder)
    params = {**SMALL, "n_train": 4, "n_val": 4, "n_test": 6}
    data = H.load({**params, "root": str(folder)}, 0)
    assert data.info["background"] == f"folder:{folder}" and data.info["background_varied"] is False
    assert data.test.images.shape == (6, 3, 64, 64) and int(data.test.meta["n_lesions"].min()) >= 3
    monkeypatch.setenv("XBENCH_HCP_DIR", str(folder))
    assert H.load(params, 0).info["background"] == f"folder:{folder}"
    monkeypatch.setenv("XBENCH_HCP_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"does not exist.*missing.*Expected layout.*T1w_restore_brain"):
        H.load(params, 0)


def test_every_param_is_documented_and_rules_between_them_are_checked_first():
    from click.testing import CliRunner

    from xbench import Param
    from xbench.cli import main

    assert all(isinstance(p, Param) and p.doc for p in H.PARAMS.values())
    spec = next(H.xbench_datasets())
    with pytest.raises(ValueError, match=r"max_lesions \(5\) must be at most bank_size \(3\)"):
        spec.validate({**defaults(H.PARAMS), "bank_size": 3})  # was an IndexError inside compose
    with pytest.raises(ValueError, match=r"min_lesions \(4\) must be at most max_lesions \(2\)"):
        spec.validate({**defaults(H.PARAMS), "min_lesions": 4, "max_lesions": 2})
    with pytest.raises(ValueError, match=r"root names an HCP folder, which background = 'mni152' does not read"):
        spec.validate({**defaults(H.PARAMS), "root": "/data/hcp", "background": "mni152"})
    for bad in (["-p", "bank_size=3"], ["-p", "background=ixii"], ["-p", "augment=sometimes"], ["-p", "max_brain=2.0"]):
        result = CliRunner().invoke(main, ["show", "hcp-lesions", *bad])
        assert result.exit_code == 2, (bad, result.output)
    assert "did you mean" in CliRunner().invoke(main, ["show", "hcp-lesions", "-p", "background=ixii"]).output
    # the boundary is allowed: five distinct lesions from a bank of five
    data = H.load({**SMALL, "bank_size": 5, "min_lesions": 5, "max_lesions": 5, "n_train": 2, "n_val": 2,
                   "n_test": 4}, 0)
    ids = data.test.meta["lesion_ids"]
    for row in ids:
        placed = row[row >= 0].tolist()
        assert len(placed) == len(set(placed))


def test_each_background_names_the_command_that_gets_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "data"))
    for name in ("XBENCH_HCP_DIR", "XBENCH_IXI_DIR"):
        monkeypatch.delenv(name, raising=False)
    params = {**SMALL, "n_train": 4, "n_val": 4, "n_test": 6}
    with pytest.raises(DataError, match=r"HCP folder does not exist.*data/hcp.*xbench data fetch hcp"):
        H.load({**params, "background": "hcp"}, 0)
    with pytest.raises(DataError, match=r"xbench data fetch ixi:t1"):
        H.load({**params, "background": "ixi"}, 0)
    monkeypatch.setenv("XBENCH_SAMPLE_T1_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"sample-t1.*apt-get install insighttoolkit5-examples"):
        H.load({**params, "background": "sample-t1"}, 0)
    (tmp_path / "data").mkdir()
    _nifti_folder(tmp_path / "data" / "hcp")  # placed where `xbench data fetch hcp` says
    hcp = H.load({**params, "background": "hcp"}, 0)
    prov = hcp.info["provenance"]
    assert (prov["kind"], prov["source"]) == ("real", "hcp") and prov["fingerprint"].startswith("files:1:")
    template = H.load(params, 0).info["provenance"]  # auto, nothing set: the template
    assert (template["kind"], template["source"], template["verified"]) == ("sample", "mni152", True)
