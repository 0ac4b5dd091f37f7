"""Fixtures: the sample third-party plugin sites and tiny configs."""

from __future__ import annotations

import os
import textwrap

import pytest

from helpers import SITES, TINY, write_config


@pytest.fixture(autouse=True, scope="session")
def _isolated_data_root(tmp_path_factory):
    """Tests never read or write the user's data root (``$XBENCH_DATA``, ~/.cache/xbench/data) or its
    mirrors: every session gets an empty one of its own."""
    os.environ["XBENCH_DATA"] = str(tmp_path_factory.mktemp("xbench-data"))
    for name in ("XBENCH_DATA_MIRROR", "XBENCH_DATA_SOURCES"):
        os.environ.pop(name, None)


@pytest.fixture
def use_sites(monkeypatch):
    """Put sample plugin packages on the path, for this process, subprocesses and Dask workers."""

    def use(*names: str) -> str:
        paths = [str(SITES[n]) for n in names]
        for p in paths:
            monkeypatch.syspath_prepend(p)
        joined = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        monkeypatch.setenv("PYTHONPATH", joined)
        return joined

    return use


@pytest.fixture
def tiny_config(tmp_path, use_sites):
    """A TOML config on the acme dataset that runs in a few seconds."""
    use_sites("acme")

    def make(extra: str = "", body: str = TINY):
        return write_config(tmp_path / "tiny.toml", body + "\n" + textwrap.dedent(extra))

    return make


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a GPU (tests/benchmarks/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
