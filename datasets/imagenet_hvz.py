"""ImageNetHVZ (Rio-Torto et al. 2020): ImageNet horses vs zebras, ground truth = the union of the
animals' bounding boxes (seed-algorithms.md §1.6, §5.1 D2).

Two layouts are read. The source project's: ``data.csv`` (imageID, label), ``images/<label>/<id>``,
``masks/<label>/<stem>_mask.<ext>``. Or raw ImageNet synset folders ``n02389026/`` (horse) and
``n02391049/`` (zebra) with their bounding-box XML (``Annotation/<synset>/<stem>.xml`` as in the
ImageNet box release, or beside the image); masks are then drawn from the boxes directly at the
output resolution, so they are exact (the source's JPEG masks lose their edges).
Images load lazily, decoded once and kept as uint8.
"""

from __future__ import annotations

import csv
import functools
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xbench import Dataset, DatasetSpec, DataSource, LazyArray, Param, Split, hookimpl, sources
from xbench.errors import DataError

from ._realdata import data_error, resolve_root

CLASSES = ("horse", "zebra")
SYNSETS = {"horse": "n02389026", "zebra": "n02391049"}
ENV = "XBENCH_IMAGENET_HVZ_DIR"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
MASK_SUFFIXES = (".png", ".PNG", ".JPEG", ".jpeg", ".jpg", ".JPG")

PARAMS = {
    "root": Param("", "folder in the source layout (data.csv, images/, masks/) or ImageNet synset folders with "
                      "box XML; '' = $XBENCH_IMAGENET_HVZ_DIR, else $XBENCH_DATA/imagenet-hvz"),
    "size": Param(224, "image side after resizing, in pixels", ge=8),
    "test_size": Param(0.149, "share of images in the stratified test split (the source's 0.149: 100 images)",
                       gt=0, le=0.9),
    "val_size": Param(0.2, "share of the rest in the validation split", gt=0, le=0.9),
    "split_seed": Param(6, "scikit-learn random_state of the splits (the source's 6)", ge=0),
}

LAYOUT = ("either the source layout <root>/data.csv (columns imageID,label with label horse or zebra), "
          "<root>/images/<label>/<imageID>, <root>/masks/<label>/<imageID without .JPEG>_mask.png (or .JPEG); "
          "or ImageNet synset folders <root>/n02389026/*.JPEG (horse) and <root>/n02391049/*.JPEG (zebra) with "
          "bounding-box XML in <root>/Annotation/<synset>/<image stem>.xml or beside each image")
SOURCE = ("Get the images and boxes from ImageNet (https://image-net.org, ILSVRC terms of access: "
          "non-commercial research), synsets n02389026 and n02391049 with the bounding-box annotations; or the "
          "imagenetHVZ archive linked from https://github.com/icrto/xML; `xbench data fetch imagenet-hvz` prints the "
          "steps. Put the folder at $XBENCH_DATA/imagenet-hvz, or set the dataset param root or "
          "XBENCH_IMAGENET_HVZ_DIR to it.")

CARD = """\
**ImageNetHVZ** (Rio-Torto, Fernandes, Teixeira, Pattern Recognition Letters 2020): ImageNet images
of horses (n02389026, class 0) and zebras (n02391049, class 1) that have bounding boxes (669 in the
source: 324 horses, 345 zebras). Ground truth (`mask`): the filled union of the animals' boxes.
Images resized to `size`×`size` (bilinear, as cv2 does) and scaled to [0, 1]. Splits as the source:
stratified `test_size` 0.149, then `val_size` 0.2 of the rest, `random_state` 6 (scikit-learn).

Data: ImageNet, under its terms of access (non-commercial research); xbench cannot download it
(`xbench data fetch imagenet-hvz` prints the steps, `xbench data verify imagenet-hvz` checks the
placed folder). xbench reads `root`, else `XBENCH_IMAGENET_HVZ_DIR`, else `$XBENCH_DATA/imagenet-hvz`:
the source layout (data.csv, images/, masks/) or the two synset folders with their box XML (masks are then drawn from the boxes, exactly: the pixel is in the
mask when its centre is inside a box, box corners read as 0-based inclusive pixel indices).
"""


def _fail(path, problem: str):
    return data_error("imagenet-hvz", path, problem, LAYOUT, SOURCE)


def _find_mask(root: Path, label: str, image_id: str) -> Path | None:
    stem = image_id[: -len(".JPEG")] if image_id.upper().endswith(".JPEG") else Path(image_id).stem
    for suffix in MASK_SUFFIXES:
        candidate = root / "masks" / label / f"{stem}_mask{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _source_layout(root: Path) -> tuple[list[Path], list[int], list[Any]]:
    """Images, labels and mask files from data.csv; every missing file is an error, named."""
    table = root / "data.csv"
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _fail(table, f"cannot read data.csv ({type(exc).__name__}: {exc})") from None
    if not rows or not {"imageID", "label"} <= set(rows[0]):
        raise _fail(table, f"data.csv needs the columns imageID and label, found {sorted(rows[0]) if rows else 'no rows'}")
    images, labels, masks, missing = [], [], [], []
    for row in rows:
        label = row["label"].strip().lower()
        if label not in CLASSES:
            raise _fail(table, f"label {row['label']!r} of {row['imageID']!r} is neither horse nor zebra")
        image = root / "images" / label / row["imageID"].strip()
        mask = _find_mask(root, label, row["imageID"].strip())
        if not image.is_file():
            missing.append(f"image {image}")
        elif mask is None:
            missing.append(f"the mask of {image.name} (masks/{label}/{Path(image.name).stem}_mask.png)")
        images.append(image)
        labels.append(CLASSES.index(label))
        masks.append(mask)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise _fail(root, f"{len(missing)} file(s) listed in data.csv are missing: {'; '.join(missing[:3])}{more}")
    return images, labels, masks


def read_boxes(xml_path: Path) -> tuple[tuple[int, int] | None, list[tuple[float, float, float, float]]]:
    """``((width, height) or None, [(xmin, ymin, xmax, ymax), ...])`` from an ImageNet/VOC box file."""
    try:
        tree = ET.parse(xml_path)
        size = tree.find("size")
        wh = (int(size.findtext("width")), int(size.findtext("height"))) if size is not None else None
        boxes = [tuple(float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                 for obj in tree.findall("object") if obj.find("bndbox") is not None]
    except (ET.ParseError, OSError, TypeError, ValueError, AttributeError) as exc:
        raise _fail(xml_path, f"cannot read this bounding-box XML ({type(exc).__name__}: {exc})") from None
    if wh is not None and min(wh) <= 0:
        wh = None
    return wh, boxes


def _synset_layout(root: Path) -> tuple[list[Path], list[int], list[Any]]:
    """Images with a box file from the synset folders (those without boxes are left out, as the source)."""
    images, labels, boxes = [], [], []
    for label, synset in SYNSETS.items():
        folder = root / synset
        if not folder.is_dir():
            raise _fail(folder, f"the {label} synset folder is missing")
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            for xml in (root / "Annotation" / synset / f"{image.stem}.xml", image.with_suffix(".xml")):
                if xml.is_file():
                    images.append(image)
                    labels.append(CLASSES.index(label))
                    boxes.append(xml)
                    break
    if not images:
        raise _fail(root, "no image in the synset folders has a bounding-box XML")
    return images, labels, boxes


def box_mask(size_wh: tuple[int, int], boxes: Sequence[tuple[float, float, float, float]], out: int) -> torch.Tensor:
    """``(out, out)`` bool: output pixel (i, j) is in the mask when its centre, mapped back to the
    original image, lies inside a box; a box covers pixels xmin..xmax, ymin..ymax inclusive."""
    width, height = size_wh
    centres_x = (torch.arange(out, dtype=torch.float64) + 0.5) * width / out
    centres_y = (torch.arange(out, dtype=torch.float64) + 0.5) * height / out
    mask = torch.zeros(out, out, dtype=torch.bool)
    for xmin, ymin, xmax, ymax in boxes:
        inside_x = (centres_x >= xmin) & (centres_x < xmax + 1)
        inside_y = (centres_y >= ymin) & (centres_y < ymax + 1)
        mask |= inside_y[:, None] & inside_x[None, :]
    return mask


def _decode(path: Path, mode: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise _fail(path, f"cannot decode this image ({type(exc).__name__}: {exc})") from None


def _resize_uint8(array: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, C) uint8 → (C, size, size) uint8, bilinear without antialiasing (cv2.INTER_LINEAR)."""
    x = torch.from_numpy(np.array(array)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


class _Images:
    """Decodes each image once, on first use, and keeps it as uint8 at the output size."""

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths, self.size = list(paths), size
        self.cache: dict[int, torch.Tensor] = {}

    def pixels(self, i: int) -> torch.Tensor:
        if i not in self.cache:
            self.cache[i] = _resize_uint8(np.asarray(_decode(self.paths[i], "RGB")), self.size)
        return self.cache[i]

    def fetch(self, indices: list[int]) -> torch.Tensor:
        return torch.stack([self.pixels(i) for i in indices]).float().div_(255.0)


class _Masks:
    """Masks from mask images (source layout) or from box XML (synset layout), made on first use."""

    def __init__(self, sources: Sequence[Any], images: Sequence[Path], size: int, from_boxes: bool):
        self.sources, self.images, self.size, self.from_boxes = list(sources), list(images), size, from_boxes
        self.cache: dict[int, torch.Tensor] = {}

    def mask(self, i: int) -> torch.Tensor:
        if i not in self.cache:
            if self.from_boxes:
                wh, boxes = read_boxes(self.sources[i])
                if wh is None:
                    wh = _decode(self.images[i], "RGB").size
                self.cache[i] = box_mask(wh, boxes, self.size)
            else:  # pre-rendered white-on-black masks; > 127 survives JPEG ringing
                gray = np.asarray(_decode(self.sources[i], "L"))[:, :, None]
                self.cache[i] = _resize_uint8(gray, self.size)[0] > 127
        return self.cache[i]

    def fetch(self, indices: list[int]) -> torch.Tensor:
        return torch.stack([self.mask(i) for i in indices])


def split_indices(labels: Sequence[int], test_size: float, val_size: float, seed: int) -> dict[str, np.ndarray]:
    """The source's splits: stratified test, then stratified val from the rest, one random_state."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    y = np.asarray(labels)
    trainval, test = train_test_split(index, test_size=test_size, stratify=y, random_state=seed)
    train, val = train_test_split(trainval, test_size=val_size, stratify=y[trainval], random_state=seed)
    return {"train": train, "val": val, "test": test}


def _subset(images: _Images, masks: _Masks, labels: torch.Tensor, chosen: np.ndarray, size: int) -> Split:
    chosen = [int(i) for i in chosen]
    return Split(
        images=LazyArray(len(chosen), (3, size, size), lambda idx: images.fetch([chosen[i] for i in idx])),
        labels=labels[chosen],
        masks=LazyArray(len(chosen), (size, size), lambda idx: masks.fetch([chosen[i] for i in idx])),
        meta={"file": [str(images.paths[i]) for i in chosen]},
    )


def folder(params: Mapping[str, Any]) -> Path:
    """Where the images are read: ``root``, else ``$XBENCH_IMAGENET_HVZ_DIR``, else ``$XBENCH_DATA/imagenet-hvz``."""
    return resolve_root(params["root"], ENV) or sources.source_dir(DATA_SOURCE)


def available(params: Mapping[str, Any]) -> str | None:
    """Why no ImageNetHVZ folder can be read here (cheap: the folder only), or None when one is there."""
    root = folder(params)
    return None if root.is_dir() else f"{root} does not exist; `xbench data fetch imagenet-hvz` prints the steps"


def _read_layout(root: Path) -> tuple[list[Path], list[int], list[Any], str]:
    """The images, labels and mask sources of a placed folder, and which layout it is; a DataError
    naming what is missing otherwise."""
    if not root.is_dir():
        raise _fail(root, "the folder does not exist")
    if (root / "data.csv").is_file():
        return (*_source_layout(root), "source (data.csv, images/, masks/)")
    if any((root / s).is_dir() for s in SYNSETS.values()):
        return (*_synset_layout(root), "imagenet synsets with box XML")
    raise _fail(root, "found neither data.csv nor the synset folders n02389026 and n02391049")


def _layout_problem(root: Path) -> str | None:
    try:
        _read_layout(root)
    except DataError as exc:
        return str(exc)
    return None


DATA_SOURCE = DataSource(
    name="imagenet-hvz", kind="terms", folder="imagenet-hvz", env=ENV, layout=_layout_problem,
    description="ImageNet horses (n02389026) and zebras (n02391049) with bounding boxes (669 images in the source)",
    licence="ImageNet terms of access (non-commercial research)", homepage="https://image-net.org",
    size_note="≈ 80 MB",
    steps="ImageNet cannot be downloaded without accepting its terms.\n1. Sign in at https://image-net.org and accept "
          "the terms of access.\n2. Download the ILSVRC images of synsets n02389026 (horse) and n02391049 (zebra) "
          "and their bounding-box annotations (Annotation/<synset>/*.xml), or the source study's imagenetHVZ "
          "archive (data.csv, images/, masks/) linked from https://github.com/icrto/xML.\n3. Put them in "
          "$XBENCH_DATA/imagenet-hvz (or set XBENCH_IMAGENET_HVZ_DIR): n02389026/*.JPEG, n02391049/*.JPEG and "
          "Annotation/, or data.csv, images/ and masks/.\n4. `xbench data verify imagenet-hvz` checks the layout.")


def load(params: Mapping[str, Any], seed: int) -> Dataset:
    root = folder(params)
    size = int(params["size"])
    paths, labels, mask_sources, layout = _read_layout(root)
    if len(set(labels)) < 2 or min(np.bincount(labels)) < 3:
        raise _fail(root, f"need at least 3 images of each class, found {np.bincount(labels, minlength=2).tolist()}")
    images = _Images(paths, size)
    masks = _Masks(mask_sources, paths, size, from_boxes=layout.startswith("imagenet"))
    y = torch.tensor(labels, dtype=torch.int64)
    parts = split_indices(labels, float(params["test_size"]), float(params["val_size"]), int(params["split_seed"]))
    splits = {name: functools.partial(_subset, images, masks, y, parts[name], size) for name in parts}
    info = {"layout": layout, "root": str(root), "images": len(labels),
            "per_class": np.bincount(labels, minlength=2).tolist(),
            "split_sizes": {k: len(v) for k, v in parts.items()},
            "provenance": sources.provenance(source=DATA_SOURCE, folder=str(root),
                                             fingerprint=sources.folder_fingerprint(paths))}
    return Dataset("imagenet-hvz", CLASSES, splits, info=info)


@hookimpl
def xbench_datasets():
    yield DatasetSpec(
        name="imagenet-hvz",
        load=load,
        version="1",
        description="ImageNet horses vs zebras with bounding-box ground truth, read locally (Rio-Torto).",
        params=PARAMS,
        provides=frozenset({"mask", "rgb"}),
        card=CARD,
        available=available,
    )


@hookimpl
def xbench_data_sources():
    yield DATA_SOURCE
