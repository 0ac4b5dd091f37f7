"""Axial MRI slices: the MNI152 template offline, NIfTI folders, orientation, and every data error."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from xbench.datasets import _brain_slices as B
from xbench.errors import DataError


def _phantom(shape=(40, 48, 36)) -> np.ndarray:
    """A skull-stripped 'brain': an ellipsoid of tissue, background exactly 0, and a bright
    anterior (high y) spot so orientation can be checked."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = x**2 / 0.8**2 + y**2 / 0.9**2 + z**2 / 0.9**2 < 1
    vol = np.where(inside, 300 + 100 * np.cos(6 * x), 0.0)
    vol[(y > 0.55) & (np.abs(x) < 0.2) & inside] = 1000.0  # anterior marker
    return vol.astype(np.float32)


def _save(vol: np.ndarray, path, affine=None) -> None:
    nib.save(nib.Nifti1Image(vol, np.eye(4) if affine is None else affine), str(path))


def test_template_slices_are_real_brain_with_zero_background():
    x, info = B.axial_slices(None, count=6, size=64, seed=0)
    assert x.shape == (6, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) <= 1.0
    assert torch.all(x[:, 0, :] == 0) and torch.all(x[:, :, 0] == 0)  # background is exactly 0
    brain = (x > 0).float().mean(dim=(1, 2))
    assert torch.all((brain > 0.15) & (brain < 0.8))
    assert info["background"].startswith("mni152") and info["augmented"] is True
    assert info["files"][0].endswith(B.TEMPLATE_FILE)
    assert len(info["level"]) == 6 and set(info) >= {"angle_deg", "scale", "flip", "gamma", "volume"}


def test_template_slices_are_deterministic_and_vary_per_image():
    a, ia = B.axial_slices("", count=8, size=48, seed=3)
    b, _ = B.axial_slices(None, count=8, size=48, seed=3)
    c, _ = B.axial_slices(None, count=8, size=48, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    same, ib = B.axial_slices(None, count=8, size=48, seed=3, augment=False)
    assert torch.equal(ia["level"], ib["level"])
    assert not torch.equal(a, same)  # the variation changes the pixels
    # two images of the same level differ only through the variation
    plain, info = B.axial_slices(None, count=200, size=32, seed=0, augment=False)
    levels = info["level"].tolist()
    i = next(k for k in range(200) if levels.count(levels[k]) > 1)
    j = levels.index(levels[i], i + 1)
    assert torch.equal(plain[i], plain[j])


def test_folder_of_nifti_volumes_in_any_orientation(tmp_path):
    vol = _phantom()
    _save(vol, tmp_path / "sub-01_T1w_brain.nii.gz")
    x, info = B.axial_slices(tmp_path, count=10, size=40, seed=0)
    assert x.shape == (10, 40, 40) and info["background"] == f"folder:{tmp_path}"
    assert info["augmented"] is False and float(x.min()) == 0.0 and float(x.max()) == 1.0
    # anterior is up: the marker lands in the top half of every slice that holds it
    bright = x > 0.9
    assert bright.any() and float(x[:, 20:].max()) < 0.45  # tissue peaks at 0.4, the marker at 1
    # the same brain stored left-posterior (flipped axes in the affine) gives the same slices
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [vol.shape[0] - 1, vol.shape[1] - 1, 0]
    _save(vol[::-1, ::-1, :].copy(), flipped / "sub-01.nii", affine)
    y, _ = B.axial_slices(flipped, count=10, size=40, seed=0)
    torch.testing.assert_close(x, y)


def test_levels_are_where_the_brain_is_large():
    vol = B.read_volume(B.template_path())
    levels = B.eligible_levels(vol)
    area = (vol > 0).sum(axis=(0, 1))
    assert area[levels].min() >= 0.5 * area.max()
    assert len(levels) > 60 and np.all(np.diff(levels) == 1)


def test_missing_empty_corrupt_and_unsuitable_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist.*Expected layout.*humanconnectome"):
        B.axial_slices(tmp_path / "nope", count=1, size=32, seed=0)
    with pytest.raises(DataError, match="holds no .nii or .nii.gz file"):
        B.axial_slices(tmp_path, count=1, size=32, seed=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(DataError, match=r"cannot read this NIfTI file.*broken\.nii\.gz"):
        B.axial_slices(bad, count=1, size=32, seed=0)
    skull = tmp_path / "skull"
    skull.mkdir()
    _save(_phantom() + 50.0, skull / "head.nii.gz")
    with pytest.raises(DataError, match="not skull-stripped"):
        B.axial_slices(skull, count=1, size=32, seed=0)
    four = tmp_path / "four"
    four.mkdir()
    _save(np.stack([_phantom()] * 2, axis=-1), four / "bold.nii.gz")
    with pytest.raises(DataError, match="expected a 3-D volume"):
        B.axial_slices(four, count=1, size=32, seed=0)
