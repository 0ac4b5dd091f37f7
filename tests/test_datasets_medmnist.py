"""MedMNIST: reading the medmnist package's .npz files (stored and compressed), lazily, and every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xbench import LazyArray, testing
from xbench.datasets import medmnist as M
from xbench.datasets._corruptions import corrupt, corruption_options
from xbench.errors import DataError, XbenchError
from xbench.specs import resolve_tags
from xbench.specs import defaults

COUNTS = {"train": 20, "val": 6, "test": 10}


def _arrays(size: int, channels: int, classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in COUNTS.items():
        shape = (n, size, size) if channels == 1 else (n, size, size, 3)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1).astype(np.uint8)
    return out


def _params(root, **kw):
    return {**defaults(M.PARAMS), "root": str(root), **kw}


def test_grayscale_file_is_memory_mapped_and_read_exactly(tmp_path):
    arrays = _arrays(28, 1, 2)
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    assert isinstance(M.read_member(tmp_path / "breastmnist.npz", "test_images"), np.memmap)
    data = testing.check_dataset_spec(next(M.xbench_datasets()), _params(tmp_path, size=28))
    assert data.class_names == ("malignant", "normal, benign") and data.info["file_counts"] == COUNTS
    for split, n in COUNTS.items():
        s = data.split(split)
        assert isinstance(s.images, LazyArray) and s.images.shape == (n, 1, 28, 28) and s.masks is None
        x = s.images[torch.arange(n)]
        assert torch.equal(x[:, 0], torch.from_numpy(arrays[f"{split}_images"]).float() / 255)
        assert torch.equal(s.labels, torch.from_numpy(arrays[f"{split}_labels"][:, 0]).long())
    assert resolve_tags(next(M.xbench_datasets()).provides, {"flag": "breastmnist"}) == {"grayscale"}


def test_rgb_compressed_file_channels_first(tmp_path):
    arrays = _arrays(64, 3, 7)
    arrays["test_images"][0] = 0
    arrays["test_images"][0, :, :, 0] = 255  # a red image
    np.savez_compressed(tmp_path / "dermamnist_64.npz", **arrays)
    data = M.load(_params(tmp_path, flag="dermamnist", size=64), 0)
    x = data.test.images[[0, 3]]
    assert x.shape == (2, 3, 64, 64)
    assert float(x[0, 0].min()) == 1.0 and float(x[0, 1:].max()) == 0.0
    assert len(data.class_names) == 7 and data.info["licence"] == "CC BY-NC 4.0"
    assert resolve_tags(next(M.xbench_datasets()).provides, {"flag": "dermamnist"}) == {"rgb"}


def test_subsets_environment_and_legacy_normalisation(tmp_path, monkeypatch):
    np.savez(tmp_path / "pneumoniamnist_128.npz", **_arrays(128, 1, 2))
    monkeypatch.setenv("XBENCH_MEDMNIST_DIR", str(tmp_path))
    params = {**defaults(M.PARAMS), "flag": "pneumoniamnist", "size": 128, "n_test": 4}
    a, b = M.load(params, 0).test, M.load(params, 0).test
    assert len(a) == 4 and torch.equal(a.meta["index"], b.meta["index"])
    assert bool(torch.all(a.meta["index"][1:] > a.meta["index"][:-1]))
    assert not torch.equal(a.meta["index"], M.load(params, 1).test.meta["index"])
    legacy = M.load({**params, "legacy_normalisation": True}, 0)
    x = legacy.test.images[torch.arange(4)]
    torch.testing.assert_close(x, a.images[torch.arange(4)] * 2 - 1)
    opts = corruption_options(legacy)
    assert opts == {"legacy_minmax": True} and corruption_options(M.load(params, 0)) == {}
    y = corrupt(x, "brightness", 1, torch.arange(4), **opts)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_missing_and_corrupt_files_are_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("XBENCH_MEDMNIST_DIR", raising=False)
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match=r"neither does the folder \(at '.*data/medmnist/breastmnist_64\.npz'\).*"
                                        r"xbench data fetch medmnist:breastmnist:64.*zenodo"):
        M.load(defaults(M.PARAMS), 0)
    assert "xbench data fetch medmnist:breastmnist:64" in M.available(defaults(M.PARAMS))
    np.savez(tmp_path / "breastmnist.npz", **_arrays(28, 1, 2))
    with pytest.raises(DataError, match=r"does not exist \(the folder holds breastmnist\.npz\).*breastmnist_64"):
        M.load(_params(tmp_path), 0)
    good = (tmp_path / "breastmnist.npz").read_bytes()
    (tmp_path / "breastmnist_64.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"not a readable \.npz.*truncated"):
        M.load(_params(tmp_path), 0)
    arrays = _arrays(64, 1, 2)
    del arrays["val_labels"]
    np.savez(tmp_path / "breastmnist_64.npz", **arrays)
    with pytest.raises(DataError, match="no array 'val_labels'"):
        M.load(_params(tmp_path), 0)
    arrays = _arrays(64, 3, 2)
    np.savez(tmp_path / "breastmnist_64.npz", **arrays)
    with pytest.raises(DataError, match=r"train_images is uint8 \(20, 64, 64, 3\), expected uint8 \(N, 64, 64\)"):
        M.load(_params(tmp_path), 0)
    arrays = _arrays(64, 1, 2)
    arrays["train_labels"][3] = 5
    np.savez(tmp_path / "breastmnist_64.npz", **arrays)
    data = M.load(_params(tmp_path), 0)
    with pytest.raises(DataError, match="values outside 0..1"):
        data.train
    arrays = _arrays(64, 1, 2)
    arrays["test_labels"] = np.zeros((10, 14), dtype=np.uint8)
    np.savez(tmp_path / "breastmnist_64.npz", **arrays)
    with pytest.raises(DataError, match="multi-label files are not supported"):
        M.load(_params(tmp_path), 0)


def test_bad_flags_and_sizes():
    with pytest.raises(XbenchError, match='did you mean "dermamnist"'):
        M.load({**defaults(M.PARAMS), "flag": "dermamnst"}, 0)
    with pytest.raises(XbenchError, match="multi-label"):
        M.load({**defaults(M.PARAMS), "flag": "chestmnist"}, 0)
    with pytest.raises(XbenchError, match=r"size must be one of \(28, 64, 128, 224\)"):
        M.load({**defaults(M.PARAMS), "size": 32}, 0)


# ----------------------------------------------------------------------------- fetched with `xbench data`


def _breast_file(path, seed: int = 0) -> bytes:
    """A small BreastMNIST-layout file (64 px) whose class 1 shows a bright disk: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    arrays = {}
    for split, n in (("train", 60), ("val", 16), ("test", 24)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 80, (n, 64, 64), dtype=np.uint8)
        for i in np.nonzero(labels)[0]:
            cy, cx = rng.integers(20, 44, 2)
            images[i][(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 220
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(n, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path.read_bytes()


def test_record_is_medmnist_own_for_every_flag_and_size():
    info, version = M.record()
    import medmnist  # the package's own table, imported only here

    assert info == medmnist.INFO and version == medmnist.__version__
    for flag in M.FLAGS:
        for size in M.SIZES:
            src = M.source(flag, size)
            suffix = "" if size == 28 else f"_{size}"
            assert src.files[0].checksum == "md5:" + medmnist.INFO[flag][f"MD5{suffix}"]
            assert src.files[0].url == medmnist.INFO[flag][f"url{suffix}"] and src.licence == M.FLAGS[flag][2]


@pytest.mark.slow
def test_fetch_then_treyer_runs_on_breastmnist_itself(tmp_path, monkeypatch):
    """`xbench data fetch medmnist:breastmnist` then `xbench run treyer`: the preset reads BreastMNIST
    instead of its stand-in. The file comes from a loopback mirror named in a catalogue
    ($XBENCH_DATA_SOURCES, as a user with a private mirror would), with the checksum the test computes."""
    import hashlib
    import json

    from click.testing import CliRunner

    from loopback import Loopback, Route
    from xbench import load_results
    from xbench.cli import main

    monkeypatch.delenv("XBENCH_MEDMNIST_DIR", raising=False)
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "data"))
    runner = CliRunner()
    planned = runner.invoke(main, ["plan", "treyer"])
    assert planned.exit_code == 0 and "xbench data fetch medmnist:breastmnist:64" in planned.output
    assert "stand-in" in planned.output
    body = _breast_file(tmp_path / "fixture.npz")
    with Loopback() as server:
        server.routes["/breastmnist_64.npz"] = Route(body, drop_after=[len(body) // 2])  # and it resumes
        catalogue = tmp_path / "sources.toml"
        catalogue.write_text(f'["medmnist:breastmnist:64"]\nurl = "{server.url("/breastmnist_64.npz")}"\n'
                             f'checksum = "md5:{hashlib.md5(body).hexdigest()}"\n')
        monkeypatch.setenv("XBENCH_DATA_SOURCES", str(catalogue))
        fetched = runner.invoke(main, ["data", "fetch", "medmnist:breastmnist:64", "--timeout", "5"])
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "data" / "medmnist" / "breastmnist_64.npz").read_bytes() == body
    assert [r for _, r in server.requests] == [None, f"bytes={len(body) // 2}-"]
    out = tmp_path / "run"
    result = runner.invoke(main, ["run", "treyer", "--seeds", "0", "-a", "grad-cam-pp[layer=#7]", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output  # 1: a claim may be contradicted on a toy file
    assert "stand-in" not in result.output
    rows = load_results(out)
    assert set(rows["dataset_label"]) == {"medmnist"} and len(rows) > 100
    data = next(iter(json.loads((out / "manifest.json").read_text())["cells"].values()))["data"]
    assert (data["kind"], data["source"], data["verified"]) == ("real", "medmnist:breastmnist:64", True)
    assert data["files"][0]["checksum"] == "md5:" + hashlib.md5(body).hexdigest()
    assert "XBENCH_DATA_SOURCES" in data["note"]
    assert "medmnist:breastmnist:64" in (out / "leaderboard" / "index.html").read_text()
