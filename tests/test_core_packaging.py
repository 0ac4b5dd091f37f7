"""A normal wheel install works, ships its data files, and never shadows Hugging Face `datasets`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_under_one_namespace_without_shadowing(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("xbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("xbench-")}
    assert top_level == {"xbench"}, top_level  # no top-level `datasets`, `plugins`, `benchmark`
    assert {"xbench/presets/quick.toml", "xbench/presets/paper.toml", "xbench/presets/callanan.toml",
            "xbench/leaderboard/templates/base.html", "xbench/datasets/synthetic_cardiac.py"} <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "xbench = xbench.cli:main" in entry_points

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel),
                              "-q"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    # a stand-in for Hugging Face's `datasets`, installed beside xbench
    fake = tmp_path / "hf" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("HUGGING_FACE = True\n")
    probe = (
        "import datasets, xbench, xbench.datasets.synthetic_cardiac as c, xbench.config as cfg;"
        "assert datasets.HUGGING_FACE;"
        f"assert xbench.__file__.startswith({str(site)!r}), xbench.__file__;"
        "print(cfg.read_config('quick')[1], c.CLASSES)"
    )
    import sysconfig

    deps = sysconfig.get_paths()["purelib"]
    # -S skips .pth files, so the editable install of this checkout stays out of the way while the
    # dependencies in site-packages stay importable through PYTHONPATH
    env = {"PYTHONPATH": f"{site}:{tmp_path / 'hf'}:{deps}", "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "preset:quick ('NOR', 'HCM', 'DCM', 'RV')" in out.stdout


def test_the_sample_plugin_is_a_source_package_a_plugin_author_can_copy(tmp_path):
    """tests/thirdparty/acme_site builds into a wheel that declares the same entry point as the
    dist-info the tests put on the path."""
    site = ROOT / "tests" / "thirdparty" / "acme_site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(site), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = zipfile.ZipFile(next(tmp_path.glob("xbench_acme-*.whl")))
    names = wheel.namelist()
    assert "xbench_acme/__init__.py" in names
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    shipped = (site / "xbench_acme-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert "acme = xbench_acme" in entry_points and "acme = xbench_acme" in shipped
