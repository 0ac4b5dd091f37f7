"""MedMNIST 2-D subsets (MedMNIST v2 / MedMNIST+), read from the ``.npz`` files the medmnist package
writes, as in Treyer's robustness study (seed-algorithms.md §4.1). No ground-truth mask: this
dataset is for classification under graded corruption and saliency stability.

Why our own reader: medmnist's Dataset class downloads and asserts the official sample counts; a
``.npz`` is a zip of ``.npy`` arrays, so we read it with numpy and, when a member is stored
uncompressed (``np.savez``), memory-map it, so that 224-px sets never have to fit in memory.

The data sources (``medmnist:<flag>:<size>``, fetched by ``xbench data fetch``) come from the
medmnist package's own record of URLs and MD5s (``medmnist.INFO``), read from its source without
importing the package (its import creates ``~/.medmnist``).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xbench import Dataset, DatasetSpec, DataSource, LazyArray, Param, RemoteFile, Split, hookimpl, sources
from xbench.errors import DataError, XbenchError, did_you_mean

from ._realdata import data_error, resolve_root

ENV = "XBENCH_MEDMNIST_DIR"
SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
          "lung-right", "pancreas", "spleen")
# flag: (channels, class names, licence) — the 2-D single-label subsets of MedMNIST v2
FLAGS: dict[str, tuple[int, tuple[str, ...], str]] = {
    "pathmnist": (3, ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                      "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
                  "CC BY 4.0"),
    "dermamnist": (3, ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                       "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                       "vascular lesions"), "CC BY-NC 4.0"),
    "octmnist": (1, ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), "CC BY 4.0"),
    "pneumoniamnist": (1, ("normal", "pneumonia"), "CC BY 4.0"),
    "retinamnist": (3, ("0", "1", "2", "3", "4"), "CC BY 4.0"),
    "breastmnist": (1, ("malignant", "normal, benign"), "CC BY 4.0"),
    "bloodmnist": (3, ("basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                       "monocyte", "neutrophil", "platelet"), "CC BY 4.0"),
    "tissuemnist": (1, ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                        "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
                        "Proximal Tubule Segments", "Thick Ascending Limb"), "CC BY 4.0"),
    "organamnist": (1, ORGANS, "CC BY 4.0"),
    "organcmnist": (1, ORGANS, "CC BY 4.0"),
    "organsmnist": (1, ORGANS, "CC BY 4.0"),
}
MULTI_LABEL = ("chestmnist",)

def _flag_problem(flag: str) -> str | None:
    flag = str(flag).lower()
    if flag in MULTI_LABEL:
        return f"names a multi-label set; xbench datasets have one label per image (2-D flags: {', '.join(FLAGS)})"
    if flag not in FLAGS:
        return f"is not a 2-D MedMNIST flag{did_you_mean(flag, FLAGS)} (flags: {', '.join(FLAGS)})"
    return None


PARAMS = {
    "root": Param("", f"folder of <flag>_<size>.npz files; '' = ${ENV}, else $XBENCH_DATA/medmnist"),
    "flag": Param("breastmnist", "which MedMNIST set", check=_flag_problem, label=True),
    "size": Param(64, "image side in pixels (MedMNIST+ sizes)", choices=SIZES, label=True),
    "n_train": Param(0, "use at most this many training images (a stratified subset); 0 = all", ge=0),
    "n_val": Param(0, "at most this many validation images; 0 = all", ge=0),
    "n_test": Param(0, "at most this many test images; 0 = all", ge=0),
    "legacy_normalisation": Param(False, "the source's [-1, 1] clean images (and min-max corruptions), Treyer's bug"),
}

def how_to_get(flag: str, size: int) -> str:
    return (f"`xbench data fetch {source_name(flag, size)}` downloads it and checks its MD5 (the medmnist package's "
            "record of https://zenodo.org/records/10519652); or place a file you have and set the dataset param root "
            "or XBENCH_MEDMNIST_DIR to its folder.")


CARD = """\
**MedMNIST** (Yang et al., Scientific Data 2023; MedMNIST v2 and MedMNIST+ sizes 28/64/128/224), as
used by Treyer's interpretability-based robustness study: BreastMNIST (ultrasound, 2 classes),
PneumoniaMNIST (chest X-ray, 2), DermaMNIST (dermatoscopy, RGB, 7) and the other 2-D single-label
flags (PathMNIST, OCTMNIST, RetinaMNIST, BloodMNIST, TissueMNIST, OrganA/C/SMNIST). Official
train/val/test splits, val included (the source trained without one). No ground-truth mask: use it
with the corruptions (`xbench.datasets._corruptions`) for per-severity classification and saliency
RMSE.

Files: `<root>/<flag>.npz` (28 px) or `<root>/<flag>_<size>.npz`, as the medmnist package writes
them (keys `train_images`, `train_labels`, `val_*`, `test_*`). Get one with
`xbench data fetch medmnist:<flag>:<size>` (e.g. `medmnist:breastmnist:64`; `medmnist:breastmnist`
takes every size): it downloads from Zenodo with resume and retries and checks the MD5 of the
medmnist package's record. xbench reads `root`, else `XBENCH_MEDMNIST_DIR`, else
`$XBENCH_DATA/medmnist`; a run records the file's MD5 and whether it is the published one.
Licence per subset: CC BY 4.0, except DermaMNIST (CC BY-NC 4.0).

Images are in [0, 1] (`legacy_normalisation = true` gives the source's [−1, 1], and tells the
corruptions to min-max stretch their inputs as the source did). `n_train/n_val/n_test` > 0 keep a
seeded random subset of that size; 0 keeps the whole split. ChestMNIST (multi-label) is not offered.
"""


def layout(flag: str, size: int) -> str:
    name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    return (f"<root>/{name}, a NumPy .npz with uint8 arrays train_images/val_images/test_images of shape "
            f"(N, {size}, {size}) or (N, {size}, {size}, 3) and int labels train_labels/val_labels/test_labels "
            "of shape (N, 1)")


def npz_path(root: Path, flag: str, size: int) -> Path:
    return root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


def _header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(handle)


def _stored_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where an uncompressed member's bytes start in the file (after its local header)."""
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
    if local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    return info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")


def read_member(path: Path, key: str, *, header_only: bool = False):
    """Array ``key`` of an ``.npz``: memory-mapped when stored uncompressed (``np.savez``), else read
    into memory. ``header_only`` returns ``(shape, dtype)`` without reading the data."""
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(f"{key}.npy")
        except KeyError:
            raise KeyError(key) from None
        if info.compress_type == zipfile.ZIP_STORED:
            start = _stored_offset(path, info)
            with open(path, "rb") as handle:
                handle.seek(start)
                shape, fortran, dtype = _header(handle)
                offset = handle.tell()
            if offset + int(np.prod(shape)) * dtype.itemsize > path.stat().st_size:
                raise zipfile.BadZipFile(f"{key}.npy is truncated")
            if header_only:
                return shape, dtype
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        with archive.open(info) as member:
            if header_only:
                shape, _, dtype = _header(member)
                return shape, dtype
            return np.lib.format.read_array(member, allow_pickle=False)


def _unreadable(path: Path, flag: str, size: int, exc: Exception):
    if isinstance(exc, KeyError):
        return data_error("medmnist", path, f"the file has no array {exc.args[0]!r}", layout(flag, size),
                          how_to_get(flag, size))
    return data_error("medmnist", path, f"the file is not a readable .npz ({type(exc).__name__}: {exc}); it may "
                      "be truncated or not a MedMNIST file", layout(flag, size), how_to_get(flag, size))


READ_ERRORS = (KeyError, zipfile.BadZipFile, ValueError, OSError, EOFError)


def check_file(path: Path, flag: str, size: int) -> dict[str, int]:
    """Shapes and dtypes of all six arrays, from their headers only; the split sizes."""
    channels = FLAGS[flag][0]
    want = (size, size) if channels == 1 else (size, size, 3)
    counts = {}
    for split in SPLITS:
        try:
            shape, dtype = read_member(path, f"{split}_images", header_only=True)
            lshape, ldtype = read_member(path, f"{split}_labels", header_only=True)
        except READ_ERRORS as exc:
            raise _unreadable(path, flag, size, exc) from None
        if dtype != np.uint8 or tuple(shape[1:]) != want:
            raise data_error("medmnist", path, f"{split}_images is {dtype} {tuple(shape)}, expected uint8 "
                             f"(N, {', '.join(map(str, want))}) for {flag} at {size} px", layout(flag, size),
                             how_to_get(flag, size))
        if (len(lshape) not in (1, 2) or lshape[0] != shape[0] or (len(lshape) == 2 and lshape[1] != 1)
                or not np.issubdtype(ldtype, np.integer)):
            hint = " (multi-label files are not supported)" if len(lshape) == 2 and lshape[1] > 1 else ""
            raise data_error("medmnist", path, f"{split}_labels is {ldtype} {tuple(lshape)}, expected integers "
                             f"(N, 1) with N = {shape[0]}{hint}", layout(flag, size), how_to_get(flag, size))
        counts[split] = int(shape[0])
    return counts


def _read_split(path: Path, flag: str, size: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = FLAGS[flag][1]
    try:
        images = read_member(path, f"{split}_images")
        labels = np.asarray(read_member(path, f"{split}_labels")).reshape(-1)
    except READ_ERRORS as exc:
        raise _unreadable(path, flag, size, exc) from None
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise data_error("medmnist", path, f"{split}_labels hold values outside 0..{len(names) - 1} "
                         f"({flag} has {len(names)} classes)", layout(flag, size), how_to_get(flag, size))
    return images, labels.astype(np.int64)


def _subset(n: int, keep: int, seed: int, split_index: int) -> np.ndarray:
    if keep <= 0 or keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, split_index, 0x3ED]).choice(n, keep, replace=False))


def _split(path: Path, flag: str, size: int, split: str, keep: int, seed: int, legacy: bool) -> Split:
    images, labels = _read_split(path, flag, size, split)
    chosen = _subset(len(images), keep, seed, SPLITS.index(split))
    channels = FLAGS[flag][0]

    def fetch(indices: list[int]) -> torch.Tensor:
        rows = np.asarray(images[chosen[np.asarray(indices, dtype=np.int64)]])
        x = torch.from_numpy(rows).float().div_(255.0)
        x = x[:, None] if channels == 1 else x.permute(0, 3, 1, 2)
        return x.mul_(2).sub_(1).contiguous() if legacy else x.contiguous()

    return Split(images=LazyArray(len(chosen), (channels, size, size), fetch),
                 labels=torch.from_numpy(labels[chosen]), meta={"index": torch.from_numpy(chosen)})


def _check(params: Mapping[str, Any]) -> tuple[str, int]:
    flag, size = str(params["flag"]).lower(), int(params["size"])
    problem = _flag_problem(flag)
    if problem:
        raise XbenchError(f"medmnist: flag {params['flag']!r} {problem}.")
    if size not in SIZES:
        raise XbenchError(f"medmnist: size must be one of {SIZES}, got {size}.")
    return flag, size


def folder(params: Mapping[str, Any]) -> Path:
    """Where the npz files are read: ``root``, else ``$XBENCH_MEDMNIST_DIR``, else the data root's ``medmnist``."""
    return resolve_root(params["root"], ENV) or sources.data_root() / "medmnist"


def available(params: Mapping[str, Any]) -> str | None:
    """Why the MedMNIST file for these params cannot be read here (with the command that gets it), or None."""
    flag, size = str(params["flag"]).lower(), int(params["size"])
    path = npz_path(folder(params), flag, size)
    if path.is_file():
        return None
    return f"{path} does not exist; `xbench data fetch {source_name(flag, size)}` downloads it"


def load(params: Mapping[str, Any], seed: int) -> Dataset:
    flag, size = _check(params)
    root = folder(params)
    path = npz_path(root, flag, size)
    if not path.is_file():
        present = sorted(p.name for p in root.glob("*.npz")) if root.is_dir() else []
        problem = "the file does not exist" + (f" (the folder holds {', '.join(present[:6])})" if present else
                                               "" if root.is_dir() else "; neither does the folder")
        raise data_error("medmnist", path, problem, layout(flag, size),
                         how_to_get(flag, size))
    legacy = bool(params["legacy_normalisation"])
    counts = check_file(path, flag, size)  # fail now, with the layout, rather than inside a run
    splits = {name: functools.partial(_split, path, flag, size, name, int(params[f"n_{name}"]), seed, legacy)
              for name in SPLITS}
    info: dict[str, Any] = {"flag": flag, "size": size, "file": str(path), "licence": FLAGS[flag][2],
                            "file_counts": counts, "value_range": [-1, 1] if legacy else [0, 1],
                            "provenance": sources.provenance(source=source(flag, size), files=[path])}
    if legacy:
        info["corruption_options"] = {"legacy_minmax": True}
    return Dataset("medmnist", FLAGS[flag][1], splits, info=info)


def _tags(params: Mapping[str, Any]) -> set[str]:
    flag = str(params.get("flag", "")).lower()
    return {"rgb"} if FLAGS.get(flag, (1,))[0] == 3 else {"grayscale"}


# --- the data sources: medmnist's own record of URLs and MD5s ---


def source_name(flag: str, size: int) -> str:
    return f"medmnist:{flag}:{size}"


@functools.lru_cache(maxsize=1)
def record() -> tuple[dict[str, Any], str]:
    """``(medmnist.INFO, medmnist.__version__)``, read from the installed package's ``info.py`` as
    literals (importing medmnist would create ``~/.medmnist`` and import its training stack)."""
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("medmnist: the medmnist package is not installed, so its record of URLs and MD5s is "
                        "missing; `pip install medmnist`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "info.py"
    values: dict[str, Any] = {}
    try:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id in ("INFO", "__version__"):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"medmnist: cannot read the package's record {str(path)!r} ({type(exc).__name__}: {exc}); "
                        "reinstall medmnist.") from None
    if "INFO" not in values:
        raise DataError(f"medmnist: {str(path)!r} holds no literal INFO table; this medmnist version is not "
                        "supported (install medmnist 3).")
    return values["INFO"], str(values.get("__version__", "?"))


def source(flag: str, size: int) -> DataSource:
    """The data source of ``<flag>_<size>.npz``: its Zenodo URL and MD5 from medmnist's record."""
    info, version = record()
    entry = info[flag]
    suffix = "" if size == 28 else f"_{size}"
    url = entry[f"url{suffix}"]
    counts = entry["n_samples"]
    images = sum(counts.values())
    upper = images * (size * size * entry["n_channels"] + 8)
    zenodo = url.split("/files/")[0].rsplit("/", 1)[-1] if "/records/" in url else "?"
    return DataSource(
        name=source_name(flag, size),
        description=f"{entry['python_class']} {size} px, {images} images, {len(entry['label'])} classes",
        licence=entry["license"], kind="download", folder="medmnist", env=ENV,
        files=(RemoteFile(npz_path(Path(), flag, size).name, url, f"md5:{entry[f'MD5{suffix}']}", upper),),
        homepage="https://medmnist.com", size_note="at most (the arrays uncompressed; the file is smaller)",
        version=f"MedMNIST+ Zenodo record {zenodo} (medmnist {version}'s record)",
    )


@hookimpl
def xbench_data_sources():
    info, _ = record()
    for flag in FLAGS:
        if flag in info:
            for size in SIZES:
                yield source(flag, size)


@hookimpl
def xbench_datasets():
    yield DatasetSpec(
        name="medmnist",
        load=load,
        version="1",
        description="MedMNIST 2-D subsets at 28/64/128/224 px from local .npz files; official splits (Treyer).",
        params=PARAMS,
        provides=_tags,
        card=CARD,
        available=available,
    )
