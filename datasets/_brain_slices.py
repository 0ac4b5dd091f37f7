"""Axial slices of skull-stripped T1 MRI: real backgrounds for the lesion benchmark and for
in-domain MRI pre-training.

``axial_slices(background, count=, size=, seed=)`` reads a bank of T1 volumes (:func:`bank`):

- ``mni152``: the MNI152 ICBM 2009a template that nilearn ships (a real MRI, but an average);
- ``sample-t1``: one real individual T1 head, with its skull-strip mask, that Debian's
  ``insighttoolkit5-examples`` ships (ITK's ``KmeansTest_T1UCharRaw``, Apache-2.0);
- ``ixi``: IXI's T1 volumes (CC BY-SA 3.0), skull-stripped by :func:`extract_brain` when
  ``xbench data fetch ixi:t1`` prepares them;
- a folder of skull-stripped T1 NIfTI volumes (HCP ``T1w_restore_brain.nii.gz`` or any other).

``None`` or "" means the template, a path a folder. Slices are taken from the axial levels where
the brain is at least half its largest cross-section, shown anterior up, padded to a square,
resized to ``size`` and scaled to [0, 1] by the volume's 99.5th brain percentile. Background stays
exactly 0 (the lesion benchmark defines the brain as > 0).

One volume gives only ~40–90 distinct slices, so the template and the sample get per-image
variation by default: a random similarity transform (rotation ±10°, scale 0.9–1.1, shift ±5 %,
left–right flip), a gamma in [0.8, 1.25] and a smooth multiplicative bias field (±10 %), all
batched in torch. The sources (``xbench data list``) are declared here and yielded by the
``hcp-lesions`` plugin.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xbench import DataSource, RemoteFile, sources
from xbench.errors import DataError

from ._realdata import data_error

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_NAME = "mni152-2009a (nilearn package data)"
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MIN_AREA_FRACTION = 0.5
LAYOUT = ("a folder of 3-D skull-stripped T1 NIfTI volumes (*.nii or *.nii.gz; background exactly 0), "
          "e.g. the HCP files <subject>/T1w/T1w_restore_brain.nii.gz copied or linked into one folder")
SOURCE = ("HCP data: https://db.humanconnectome.org (free registration, WU-Minn HCP Data Use Terms; "
          "`xbench data fetch hcp` prints the steps); any skull-stripped T1 set works (e.g. OpenNeuro with FSL "
          "BET). Without one, background = \"ixi\" (`xbench data fetch ixi:t1`), \"sample-t1\" or \"mni152\".")
BACKGROUNDS = ("mni152", "sample-t1", "ixi", "hcp")


# --- the sources of background volumes ---


def _nilearn_data() -> Path | None:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


MNI152 = DataSource(
    name="mni152", kind="package", data_kind="sample", location=_nilearn_data,
    description="MNI152 ICBM 2009a T1 template (an average of 152 brains, 1 mm), in nilearn's package data",
    licence="free use with attribution (© McConnell Brain Imaging Centre)",
    files=(RemoteFile(TEMPLATE_FILE, checksum="sha256:421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
                      size=1_617_531),),
    homepage="https://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/", version="nilearn package data",
    steps="pip install nilearn (a dependency of xbench)")

SAMPLE_DIRS = ("/usr/share/doc/insighttoolkit5-examples/examples/Data",)
SAMPLE_FILES = {"head": "KmeansTest_T1UCharRaw.nii.gz", "brain": "KmeansTest_T1RawSkullStrip.nii.gz",
                "tissues": "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"}


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _sample_dir() -> Path | None:
    return next((Path(d) for d in SAMPLE_DIRS if (Path(d) / SAMPLE_FILES["head"]).is_file()), None)


SAMPLE_T1 = DataSource(
    name="sample-t1", kind="package", data_kind="sample", env="XBENCH_SAMPLE_T1_DIR", location=_sample_dir,
    description="one real individual T1 head (128×128×62, 2×2×3 mm axial) with its skull-strip mask and 6 tissue "
                "classes: ITK's KmeansTest_T1 example data",
    licence="Apache-2.0 (ITK data)",
    files=(RemoteFile(SAMPLE_FILES["head"], size=317_795,
                      checksum="sha256:e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327"),
           RemoteFile(SAMPLE_FILES["brain"], size=11_799,
                      checksum="sha256:f3ca85fa9559f7cc4b7c3ca862355cf0e7351505bdc62e3144b7fe6f6da37f3b"),
           RemoteFile(SAMPLE_FILES["tissues"],
                      checksum="sha256:8f48a7ced6d27644489b8a2fc8084bf6594560d05f8997ad4327b6353d11f342", size=80_954)),
    homepage="https://packages.debian.org/bookworm/insighttoolkit5-examples", version="insighttoolkit5-examples 5.2.1",
    steps="sudo apt-get install insighttoolkit5-examples (Debian 12+, Ubuntu 22.04+; 1.7 MB).\nElsewhere, copy the "
          "three KmeansTest_T1*.nii.gz files of ITK's Examples/Data into a folder and set XBENCH_SAMPLE_T1_DIR to it.")

IXI_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-T1.tar"
IXI_BRAINS = "brains"


def _ixi_layout(folder: Path) -> str | None:
    done = folder / IXI_BRAINS / ".complete"
    if not done.is_file():
        return (f"the skull-stripped volumes ({folder / IXI_BRAINS}) are not prepared yet: "
                "`xbench data fetch ixi:t1` prepares them from the verified IXI-T1.tar")
    want = int(done.read_text().split()[0] or 0)
    have = sum(1 for _ in (folder / IXI_BRAINS).glob("*.nii.gz"))
    return None if have == want and want else f"{folder / IXI_BRAINS} holds {have} volumes, expected {want}"


def _hcp_layout(folder: Path) -> str | None:
    import nibabel as nib

    try:
        files = nifti_files(folder)
    except DataError as exc:
        return str(exc)
    for f in files:
        try:
            shape = nib.load(str(f)).shape
        except Exception as exc:  # noqa: BLE001 - any unreadable header is a layout problem
            return f"{f} is not a readable NIfTI file ({type(exc).__name__}: {exc})"
        if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
            return f"{f} is not a 3-D volume (shape {shape})"
    return None


HCP = DataSource(
    name="hcp", kind="terms", folder="hcp", env="XBENCH_HCP_DIR", layout=_hcp_layout,
    description="HCP young-adult T1 volumes, skull-stripped (T1w_restore_brain), the source study's backgrounds",
    licence="WU-Minn HCP Data Use Terms (registration)", homepage="https://db.humanconnectome.org",
    size_note="≈ 10 MB a subject",
    steps="HCP data cannot be downloaded without accepting its terms.\n1. Register at https://db.humanconnectome.org "
          "and accept the WU-Minn HCP Open Access Data Use Terms.\n2. Download the 'Structural Preprocessed' package "
          "of the subjects you want (e.g. the 1200 Subjects release, via Aspera or Amazon S3 "
          "s3://hcp-openaccess/HCP_1200/<subject>/T1w/T1w_restore_brain.nii.gz).\n3. Put every "
          "<subject>/T1w/T1w_restore_brain.nii.gz in one folder (copies or links; sub-folders are fine): "
          "$XBENCH_DATA/hcp, or any folder named by XBENCH_HCP_DIR.\n4. `xbench data verify hcp` checks the layout.")


def prepare_ixi(folder: Path, report: Callable[[str], None] = lambda line: None) -> None:
    """Skull-strip every T1 volume of ``IXI-T1.tar`` into ``<folder>/brains`` (written to a temporary
    folder and renamed when complete, so a half-prepared bank is never read)."""
    import nibabel as nib

    target = folder / IXI_BRAINS
    work = folder / f".{IXI_BRAINS}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    count = 0
    with tarfile.open(folder / "IXI-T1.tar") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith((".nii", ".nii.gz"))]
        for i, member in enumerate(members):
            data = archive.extractfile(member).read()
            image = nib.Nifti1Image.from_bytes(_gunzip(data))
            head = np.asarray(image.dataobj)
            brain = extract_brain(head.astype(np.float32), image.header.get_zooms()[:3])
            stem = Path(member.name).name.split(".nii")[0]
            box = tuple(slice(max(int(lo) - 3, 0), int(hi) + 4) for lo, hi in zip(*(np.min(np.nonzero(brain), 1),
                                                                                  np.max(np.nonzero(brain), 1))))
            out = nib.Nifti1Image(np.where(brain, head, 0).astype(head.dtype), image.affine, image.header).slicer[box]
            nib.save(out, str(work / f"{stem}_brain.nii.gz"))
            count += 1
            if (i + 1) % 25 == 0 or i + 1 == len(members):
                report(f"ixi:t1: skull-stripped {i + 1} of {len(members)} volumes")
    (work / ".complete").write_text(f"{count} volumes, extract_brain v1\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(work, target)


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


IXI_T1 = DataSource(
    name="ixi:t1", kind="download", folder="ixi", env="XBENCH_IXI_DIR",
    description="IXI: T1 MRI of ~580 healthy adults (3 London hospitals), skull-stripped by xbench after download",
    licence="CC BY-SA 3.0", homepage="https://brain-development.org/ixi-dataset/",
    files=(RemoteFile("IXI-T1.tar", IXI_URL, "md5:34901a0593b41dd19c1a1f746eac2d58"),),
    size_note="≈ 4.5 GB (+ ≈ 2 GB prepared)",
    version="IXI-T1.tar (MD5 as TorchIO's IXI record)", layout=_ixi_layout, prepare=prepare_ixi)

DATA_SOURCES = (HCP, IXI_T1, SAMPLE_T1, MNI152)


def extract_brain(volume: np.ndarray, zooms, *, erode_mm: float = 4.0, close_mm: float = 6.0,
                  tissue: float = 0.6) -> np.ndarray:
    """A brain mask of a T1 head by thresholds and morphology, conservative by design (a lesion
    must never be planted in the scalp): smooth (σ 1 mm); the head is above Otsu's threshold; tissue
    is above ``tissue`` × Otsu's threshold within the head; erode by ``erode_mm`` (cutting the
    thin bridges to the scalp), keep the largest component, grow it back inside the tissue, close
    by ``close_mm`` and fill holes (sulci, ventricles). Distances are Euclidean in mm (voxel sizes
    ``zooms``), so it costs O(voxels). On ITK's sample head against its own skull-strip mask:
    precision 0.997, recall 0.85 (tests/test_datasets_brain_slices.py)."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    zooms = tuple(float(z) for z in zooms[:3])
    smooth = ndi.gaussian_filter(np.asarray(volume, dtype=np.float32), [1.0 / z for z in zooms])
    head = smooth > threshold_otsu(smooth)
    if not head.any():
        return head
    candidate = (smooth > tissue * threshold_otsu(smooth[head])) & ndi.binary_fill_holes(head)
    core = ndi.distance_transform_edt(candidate, sampling=zooms) > erode_mm
    labels, n = ndi.label(core)
    if n == 0:
        return core
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    core = labels == sizes.argmax()
    brain = (ndi.distance_transform_edt(~core, sampling=zooms) <= erode_mm) & candidate
    closed = ndi.distance_transform_edt(~brain, sampling=zooms) <= close_mm
    closed = ndi.distance_transform_edt(closed, sampling=zooms) > close_mm
    return ndi.binary_fill_holes(closed | brain)


def template_path() -> Path:
    """The MNI152 T1 file inside nilearn's package data (located without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("brain slices: nilearn is not installed, so the MNI152 template is unavailable; "
                        "`pip install nilearn` or name a folder of T1 NIfTI volumes.")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE_FILE
    if not path.is_file():
        raise DataError(f"brain slices: nilearn's MNI152 template is missing (expected {str(path)!r}); "
                        "reinstall nilearn or name a folder of T1 NIfTI volumes.")
    return path


def nifti_files(folder: Path) -> list[Path]:
    """The NIfTI volumes in ``folder`` (searched recursively), sorted; a DataError when there are none."""
    if not folder.is_dir():
        raise data_error("brain slices", folder, "the MRI folder does not exist", LAYOUT, SOURCE)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise data_error("brain slices", folder, "the MRI folder holds no .nii or .nii.gz file", LAYOUT, SOURCE)
    return files


def read_volume(path: Path) -> np.ndarray:
    """A volume in RAS+ orientation (axis 2 runs inferior to superior), float32 in [0, 1], background 0."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:
        raise data_error("brain slices", path, f"cannot read this NIfTI file ({type(exc).__name__}: {exc})",
                         LAYOUT, SOURCE) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise data_error("brain slices", path, f"expected a 3-D volume, got shape {data.shape}", LAYOUT, SOURCE)
    return _normalise(data, path)


def _normalise(data: np.ndarray, path: Path) -> np.ndarray:
    data = np.nan_to_num(data, nan=0.0)
    data[data < 0] = 0.0
    brain = data > 0
    if brain.mean() > 0.9 or not brain.any():
        raise data_error("brain slices", path, "the volume is not skull-stripped (fewer than 10 % of its voxels "
                         "are background 0) or is empty", LAYOUT, SOURCE)
    scale = float(np.percentile(data[brain], 99.5))
    return np.clip(data / max(scale, 1e-12), 0.0, 1.0)


def read_sample_t1(folder: Path) -> np.ndarray:
    """ITK's sample head, skull-stripped by its own mask, in RAS+ axes. Its header is wrong (it
    calls the 62-slice axis anterior); the voxels are axial slices from the vertex down, anterior
    at low rows, as the images show, so the axes are set by hand: (left–right, flipped rows, flipped
    slices). Left and right are not known; the default variation flips them anyway."""
    import nibabel as nib

    try:
        head = np.asarray(nib.load(str(folder / SAMPLE_FILES["head"])).dataobj, dtype=np.float32)
        mask = np.asarray(nib.load(str(folder / SAMPLE_FILES["brain"])).dataobj) > 0
    except Exception as exc:
        raise DataError(f"sample-t1: cannot read ITK's sample head in {str(folder)!r} ({type(exc).__name__}: "
                        f"{exc}). `xbench data verify sample-t1` checks the files; "
                        f"{_one_line(SAMPLE_T1.steps)}") from None
    if head.shape != mask.shape or head.ndim != 3:
        raise DataError(f"sample-t1: the head {head.shape} and its mask {mask.shape} in {str(folder)!r} do not match; "
                        "`xbench data verify sample-t1` checks the files.")
    return _normalise(_crop(np.ascontiguousarray((head * mask)[:, ::-1, ::-1])), folder / SAMPLE_FILES["head"])


def _crop(volume: np.ndarray, margin: int = 3) -> np.ndarray:
    """The volume cut in-plane to its brain's bounding box over all levels (plus ``margin``
    voxels), so that a small brain in a wide field of view fills the slice as the template does."""
    keep = np.nonzero(volume.any(axis=2))
    if not len(keep[0]):
        return volume
    (x0, y0), (x1, y1) = np.min(keep, 1), np.max(keep, 1)
    return volume[max(x0 - margin, 0):x1 + margin + 1, max(y0 - margin, 0):y1 + margin + 1]


@functools.lru_cache(maxsize=4)
def _cached_volume(path: str, reader: str = "nifti") -> np.ndarray:
    return read_sample_t1(Path(path)) if reader == "sample-t1" else read_volume(Path(path))


@dataclass(frozen=True)
class Bank:
    """Where background volumes come from: ``name`` (mni152, sample-t1, ixi, hcp or folder), the
    volumes (files, or the sample's folder), how to read them, whether slices vary per image by
    default, and the data source it is (None for a plain folder)."""

    name: str
    volumes: tuple[str, ...]
    reader: str
    augment: bool
    label: str
    source: DataSource | None = None
    folder: Path | None = None


def bank(background: Any = None, root: Path | None = None) -> Bank:
    """The bank named by ``background`` (one of :data:`BACKGROUNDS`; None or "" = mni152; a path or
    ``root`` = a folder); a DataError naming the command that gets a missing one."""
    if isinstance(background, Bank):
        return background
    name = "" if background is None else str(background).strip()
    if isinstance(background, Path) or (name and name not in BACKGROUNDS):
        folder = Path(name).expanduser()
        return Bank("folder", tuple(map(str, nifti_files(folder))), "nifti", False, f"folder:{folder}", None, folder)
    if name in ("", "mni152"):
        return Bank("mni152", (str(template_path()),), "nifti", True, TEMPLATE_NAME, MNI152)
    if name == "sample-t1":
        folder = sources.source_dir(SAMPLE_T1)
        if folder is None or not (folder / SAMPLE_FILES["head"]).is_file():
            raise DataError(f"background = \"sample-t1\" needs ITK's sample T1 head, which is not installed here "
                            f"(looked in {folder or ', '.join(SAMPLE_DIRS)}). {_one_line(SAMPLE_T1.steps)}")
        return Bank("sample-t1", (str(folder),), "sample-t1", True,
                    "sample-t1 (ITK KmeansTest_T1, one real individual)", SAMPLE_T1, folder)
    if name == "ixi":
        folder = sources.source_dir(IXI_T1)
        if _ixi_layout(folder):
            missing = sources.missing_message(IXI_T1, "the skull-stripped IXI T1 bank")
            raise DataError(f"background = \"ixi\": {missing} ({IXI_T1.size_note}). {_ixi_layout(folder)}.")
        brains = folder / IXI_BRAINS
        return Bank("ixi", tuple(map(str, nifti_files(brains))), "nifti", False, f"ixi:{brains}", IXI_T1, brains)
    folder = root or sources.source_dir(HCP)
    if not folder.is_dir():
        raise data_error("brain slices", folder, "the HCP folder does not exist", LAYOUT,
                         f"`xbench data fetch hcp` prints the steps to get it; {SOURCE}")
    return Bank("hcp", tuple(map(str, nifti_files(folder))), "nifti", False, f"folder:{folder}", HCP, folder)


def provenance(b: Bank) -> dict[str, Any]:
    """What ``Dataset.info["provenance"]`` says about a bank: the package samples with their
    checksums, the real sets with the fingerprint of the files read."""
    detail = "real T1 MRI backgrounds; the lesions are generated"
    if b.name in ("mni152", "sample-t1"):
        files = [Path(b.volumes[0])] if b.name == "mni152" else [b.folder / f for f in SAMPLE_FILES.values()
                                                                 if f != SAMPLE_FILES["tissues"]]
        return sources.provenance(source=b.source, files=files, detail=detail)
    record = sources.provenance("real", source=b.source, detail=detail, folder=str(b.folder),
                                fingerprint=sources.folder_fingerprint([Path(v) for v in b.volumes]))
    if b.source is None:
        record.update(source="folder")
    return record


def eligible_levels(volume: np.ndarray) -> np.ndarray:
    """Axial levels whose brain area is at least half the largest one."""
    area = (volume > 0).sum(axis=(0, 1))
    return np.nonzero(area >= MIN_AREA_FRACTION * area.max())[0]


def _square_slices(volume: np.ndarray, levels: np.ndarray, size: int) -> torch.Tensor:
    """``(k, size, size)`` slices, anterior up, right on the right of the image, zero-padded square."""
    planes = torch.from_numpy(np.ascontiguousarray(volume[:, :, levels].transpose(2, 1, 0)[:, ::-1, :]))
    k, h, w = planes.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    planes = F.pad(planes, (left, side - w - left, top, side - h - top))
    return F.interpolate(planes[:, None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[:, 0].clamp_(0.0, 1.0)


def _bias_fields(n: int, size: int, generator: torch.Generator, amplitude: float = 0.1) -> torch.Tensor:
    """Smooth multiplicative fields ``1 + a·p(y, x)``: a random quadratic surface per image with
    max |p| = 1 and a ~ U(0, amplitude), built from separable Legendre terms (two small matmuls)."""
    t = torch.linspace(-1, 1, size)
    basis = torch.stack([torch.ones_like(t), t, (3 * t**2 - 1) / 2])  # (3, size)
    coef = torch.rand(n, 3, 3, generator=generator) * 2 - 1
    surface = torch.einsum("iy,nij,jx->nyx", basis, coef, basis)
    surface /= surface.flatten(1).abs().amax(1).clamp_min(1e-6)[:, None, None]
    amp = amplitude * torch.rand(n, 1, 1, generator=generator)
    return surface.mul_(amp).add_(1.0)


def _similarity_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """What ``F.affine_grid`` returns (align_corners=False), by broadcasting: 5x faster on a CPU."""
    t = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    gx = theta[:, 0, 0, None, None] * t[None, None, :] + theta[:, 0, 1, None, None] * t[None, :, None] \
        + theta[:, 0, 2, None, None]
    gy = theta[:, 1, 0, None, None] * t[None, None, :] + theta[:, 1, 1, None, None] * t[None, :, None] \
        + theta[:, 1, 2, None, None]
    return torch.stack([gx, gy], dim=-1)


def vary(slices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-image spatial and intensity variation, batched; the background stays exactly 0."""
    n, size, _ = slices.shape
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    angle = (u[:, 0] * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * u[:, 1]
    shift = (u[:, 2:4] * 2 - 1) * 0.1  # in [-1, 1] grid units: ±5 % of the side
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0).double()
    gamma = torch.exp(math.log(0.8) + (math.log(1.25) - math.log(0.8)) * u[:, 5])
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1).float()
    out = F.grid_sample(slices[:, None], _similarity_grid(theta, size), mode="bilinear", padding_mode="zeros",
                        align_corners=False)[:, 0]
    out = out.clamp_(0.0, 1.0).pow_(gamma.float()[:, None, None]).mul_(_bias_fields(n, size, generator))
    return out.clamp_(0.0, 1.0), {"angle_deg": torch.rad2deg(angle).float(), "scale": scale.float(),
                                  "flip": flip < 0, "gamma": gamma.float()}


def axial_slices(background: Any, *, count: int, size: int, seed: int,
                 augment: bool | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """``count`` axial slices, ``(count, size, size)`` float32 in [0, 1] with background exactly 0,
    deterministic for ``seed``, and an info dict: ``background`` (what they came from), ``files``,
    per-slice ``volume`` (index into files) and ``level`` (axial index), ``augmented``.

    ``background``: a :class:`Bank`, a name of :data:`BACKGROUNDS`, a folder, or None/"" (the
    template). ``augment`` (default: on for the template and the sample, off for folders) adds
    per-image variation.
    """
    if count < 0 or size < 8:
        raise ValueError(f"axial_slices: count must be >= 0 and size >= 8, got count={count}, size={size}")
    b = bank(background)
    files = b.volumes
    augment = b.augment if augment is None else bool(augment)
    rng = np.random.default_rng([int(seed), 0x5B1CE])
    volume_of = rng.integers(0, len(files), count)
    pick = rng.random(count)
    slices = torch.zeros(count, size, size)
    levels = np.zeros(count, dtype=np.int64)
    for v in np.unique(volume_of):  # one read per volume, never one per slice
        where = np.nonzero(volume_of == v)[0]
        volume = _cached_volume(files[v], b.reader)
        eligible = eligible_levels(volume)
        levels[where] = eligible[np.minimum((pick[where] * len(eligible)).astype(np.int64), len(eligible) - 1)]
        slices[torch.from_numpy(where)] = _square_slices(volume, levels[where], size)
    info: dict[str, Any] = {
        "background": b.label,
        "files": list(files),
        "volume": torch.from_numpy(volume_of),
        "level": torch.from_numpy(levels),
        "augmented": augment,
    }
    if augment and count:
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        slices, variation = vary(slices, generator)
        info.update(variation)
    return slices.float().contiguous(), info
