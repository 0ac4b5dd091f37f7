"""ImageNetHVZ: both layouts written as real files (JPEG/PNG, data.csv, box XML), splits, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from xbench import LazyArray, testing
from xbench.datasets import imagenet_hvz as I
from xbench.errors import DataError
from xbench.specs import defaults

XML = """<annotation><folder>{synset}</folder><filename>{stem}</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>{synset}</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin><xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>"


def _photo(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
    return np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def _source_layout(root, n_per_class: int = 8, mask_ext: str = ".png") -> None:
    rows = ["imageID,label"]
    for label in ("horse", "zebra"):
        (root / "images" / label).mkdir(parents=True)
        (root / "masks" / label).mkdir(parents=True)
        for k in range(n_per_class):
            image_id = f"{I.SYNSETS[label]}_{k}.JPEG"
            Image.fromarray(_photo(60, 40, k)).save(root / "images" / label / image_id, format="JPEG")
            mask = np.zeros((40, 60), dtype=np.uint8)
            mask[10:30, 15 + k:45] = 255
            Image.fromarray(mask).save(root / "masks" / label / f"{I.SYNSETS[label]}_{k}_mask{mask_ext}",
                                       format="JPEG" if mask_ext == ".JPEG" else "PNG")
            rows.append(f"{image_id},{label}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")


def _synset_layout(root, n_per_class: int = 8) -> dict:
    boxes = {}
    for label, synset in I.SYNSETS.items():
        (root / synset).mkdir(parents=True)
        (root / "Annotation" / synset).mkdir(parents=True)
        for k in range(n_per_class + 1):
            stem = f"{synset}_{k}"
            Image.fromarray(_photo(100, 50, k)).save(root / synset / f"{stem}.JPEG", format="JPEG")
            if k == n_per_class:
                continue  # an image without boxes: left out, as in the source
            box = [(5 + k, 4, 40 + k, 30), (60, 20 + k, 90, 45)][: 1 + k % 2]
            objects = "".join(OBJ.format(*b, synset=synset) for b in box)
            where = root / "Annotation" / synset if k % 3 else root / synset  # both XML places
            (where / f"{stem}.xml").write_text(XML.format(synset=synset, stem=stem, w=100, h=50, objects=objects))
            boxes[stem] = box
    return boxes


def test_source_layout_reads_images_masks_and_splits(tmp_path):
    _source_layout(tmp_path)
    data = testing.check_dataset_spec(next(I.xbench_datasets()), {"root": str(tmp_path), "size": 32})
    assert data.info["layout"].startswith("source") and data.info["per_class"] == [8, 8]
    sizes = {k: len(data.split(k)) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 16 and sizes == data.info["split_sizes"]
    test = data.test
    assert isinstance(test.images, LazyArray) and test.images.shape == (len(test), 3, 32, 32)
    x, m = test.images[torch.arange(len(test))], test.masks[torch.arange(len(test))]
    assert x.dtype == torch.float32 and float(x.max()) <= 1 and m.dtype == torch.bool
    frac = m.float().mean(dim=(1, 2))
    assert bool(torch.all((frac > 0.1) & (frac < 0.35)))
    assert not bool(m[:, :6].any()) and bool(m[:, 10:20, 16:22].all())  # rows 10:30 of 40, cols 15+k:45 of 60
    assert test.labels.bincount().tolist() in ([1, 2], [2, 1], [2, 2], [1, 1])


def test_images_are_resized_like_cv2(tmp_path):
    cv2 = pytest.importorskip("cv2")
    _source_layout(tmp_path)
    data = I.load({**defaults(I.PARAMS), "root": str(tmp_path), "size": 48}, 0)
    path = data.test.meta["file"][0]
    reference = cv2.resize(np.asarray(Image.open(path).convert("RGB")), (48, 48), interpolation=cv2.INTER_LINEAR)
    ours = (data.test.images[0] * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(ours - reference.astype(float)).max() <= 1.0


def test_jpeg_masks_survive_their_artefacts(tmp_path):
    _source_layout(tmp_path, mask_ext=".JPEG")
    data = I.load({**defaults(I.PARAMS), "root": str(tmp_path), "size": 60}, 0)
    m = data.train.masks[torch.arange(len(data.train))]  # rows 10:30 of 40 -> 15:45 of 60; cols 15+k:45
    assert not bool(m[:, :14].any()) and not bool(m[:, 46:].any()) and not bool(m[:, :, 46:].any())
    assert bool(m[:, 17:43, 23:43].all())


def test_synset_layout_draws_the_boxes_exactly(tmp_path):
    boxes = _synset_layout(tmp_path)
    data = I.load({**defaults(I.PARAMS), "root": str(tmp_path), "size": 50}, 0)
    assert data.info["images"] == 16 and data.info["layout"].startswith("imagenet")
    for name in ("train", "val", "test"):
        split = data.split(name)
        for i, path in enumerate(split.meta["file"]):
            stem = path.rsplit("/", 1)[1][: -len(".JPEG")]
            original = np.zeros((50, 100), dtype=bool)
            for xmin, ymin, xmax, ymax in boxes[stem]:
                original[ymin:ymax + 1, xmin:xmax + 1] = True
            centres_y = ((np.arange(50) + 0.5) * 50 / 50).astype(int)
            centres_x = ((np.arange(50) + 0.5) * 100 / 50).astype(int)
            expected = original[centres_y][:, centres_x]
            assert np.array_equal(split.masks[i].numpy(), expected), stem


def test_source_split_sizes_for_669_images():
    labels = [0] * 324 + [1] * 345
    parts = I.split_indices(labels, 0.149, 0.2, 6)
    assert (len(parts["test"]), len(parts["val"]), len(parts["train"])) == (100, 114, 455)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(669))
    assert abs(np.mean(np.asarray(labels)[parts["test"]]) - 345 / 669) < 0.01
    assert np.array_equal(parts["test"], I.split_indices(labels, 0.149, 0.2, 6)["test"])


def test_missing_and_broken_data_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("XBENCH_IMAGENET_HVZ_DIR", raising=False)
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match=r"folder does not exist.*data/imagenet-hvz.*data\.csv.*image-net\.org.*"
                                        r"xbench data fetch imagenet-hvz"):
        I.load(defaults(I.PARAMS), 0)
    monkeypatch.setenv("XBENCH_IMAGENET_HVZ_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="the folder does not exist.*nowhere"):
        I.load(defaults(I.PARAMS), 0)
    with pytest.raises(DataError, match="found neither data.csv nor the synset folders"):
        I.load({**defaults(I.PARAMS), "root": str(tmp_path)}, 0)
    root = tmp_path / "src"
    root.mkdir()
    _source_layout(root)
    (root / "masks" / "zebra" / "n02391049_3_mask.png").unlink()
    with pytest.raises(DataError, match=r"missing: the mask of n02391049_3\.JPEG"):
        I.load({**defaults(I.PARAMS), "root": str(root)}, 0)
    (root / "data.csv").write_text("image,class\nx.JPEG,horse\n")
    with pytest.raises(DataError, match="needs the columns imageID and label"):
        I.load({**defaults(I.PARAMS), "root": str(root)}, 0)
    broken = tmp_path / "broken"
    broken.mkdir()
    _source_layout(broken)
    (broken / "images" / "horse" / "n02389026_0.JPEG").write_bytes(b"\xff\xd8 truncated jpeg")
    data = I.load({**defaults(I.PARAMS), "root": str(broken)}, 0)
    with pytest.raises(DataError, match=r"cannot decode this image.*n02389026_0\.JPEG"):
        for name in ("train", "val", "test"):
            split = data.split(name)
            split.images[torch.arange(len(split))]
    syn = tmp_path / "syn"
    syn.mkdir()
    _synset_layout(syn)
    (syn / "Annotation" / "n02389026" / "n02389026_1.xml").write_text("<annotation><size>")
    data = I.load({**defaults(I.PARAMS), "root": str(syn)}, 0)
    with pytest.raises(DataError, match=r"cannot read this bounding-box XML.*n02389026_1\.xml"):
        for name in ("train", "val", "test"):
            split = data.split(name)
            split.masks[torch.arange(len(split))]
