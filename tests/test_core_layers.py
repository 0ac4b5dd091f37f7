"""The layering holds: no import circle among the core's modules (counting imports inside functions,
which only hide a circle), no core module importing a higher layer (the leaderboard, the built-in
plugins), and the leaderboard reading no plugin. Read from the source, so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"benchmark": "xbench", "leaderboard": "xbench.leaderboard", "plugins": "xbench.plugins",
            "datasets": "xbench.datasets"}
HIGHER = ("xbench.leaderboard", "xbench.plugins", "xbench.datasets")
ABOVE_THE_CORE = {"cli": "the command line drives the leaderboard too",
                  "testing": "the plugin authors' kit trains the built-in small-cnn"}
"""Modules in ``benchmark/`` that sit above the core, and why (nothing in the core imports them)."""


def imports(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, as absolute ``xbench...`` names (module-level and inside
    functions; ``from . import x`` counts as the module ``x``)."""
    out: set[str] = set()
    parts = package.split(".")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("xbench")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("xbench"):
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from . import x` may name a module
    return out


def modules(folder: str) -> dict[str, set[str]]:
    package = PACKAGES[folder]
    return {f"{package}.{p.stem}" if p.stem != "__init__" else package: imports(p, package)
            for p in sorted((ROOT / folder).rglob("*.py"))}


CORE = modules("benchmark")


def core_graph() -> dict[str, set[str]]:
    names = set(CORE)
    return {m: {d for d in deps if d in names and d != m and d != "xbench"} for m, deps in CORE.items()
            if m != "xbench"}


def test_no_import_circle_among_the_core_modules():
    graph = core_graph()
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                circles.append(" → ".join(path + [nxt]))
            elif nxt not in path and nxt > path[0]:  # each circle once, from its smallest module
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not circles, "import circles among the core's modules:\n" + "\n".join(circles)


@pytest.mark.parametrize("module", sorted(m for m in CORE if m.rsplit(".", 1)[-1] not in ABOVE_THE_CORE))
def test_core_modules_import_no_higher_layer(module):
    bad = sorted(d for d in CORE[module] if d.startswith(HIGHER))
    assert not bad, f"{module} imports {bad}: the core never imports the leaderboard or a plugin"


def test_nothing_in_the_core_imports_the_modules_above_it():
    above = {f"xbench.{name}" for name in ABOVE_THE_CORE}
    for module, deps in CORE.items():
        if module not in above:
            assert not deps & above, f"{module} imports {sorted(deps & above)}"


def test_the_leaderboard_imports_no_plugin_and_plugins_no_leaderboard():
    for module, deps in modules("leaderboard").items():
        assert not [d for d in deps if d.startswith(("xbench.plugins", "xbench.datasets"))], module
    for folder in ("plugins", "datasets"):
        for module, deps in modules(folder).items():
            assert not [d for d in deps if d.startswith("xbench.leaderboard")], module


def test_the_reader_sees_a_circle_when_there_is_one(tmp_path):
    """The check itself: two modules importing each other inside functions form a circle."""
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "b.py").write_text("from .a import f\n")
    assert "xbench.b" in imports(tmp_path / "a.py", "xbench")
    assert "xbench.a" in imports(tmp_path / "b.py", "xbench")
