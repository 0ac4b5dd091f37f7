"""The plugin registry: built-ins and entry points through one path, fault isolation, conflicts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from xbench.cli import main
from xbench.errors import PluginConflictError, UsageError
from xbench.registry import BUILTIN_PLUGINS, load_registry
from xbench.specs import SPEC_TYPES


def test_builtins_load_cleanly_and_yield_valid_specs():
    registry = load_registry()
    assert not registry.problems, [p.errors for p in registry.problems]
    builtin = {p.name for p in registry.plugins if p.builtin}
    assert builtin == set(BUILTIN_PLUGINS)
    for kind, spec_type in SPEC_TYPES.items():
        assert registry.names(kind), f"no built-in {kind}"
        for name in registry.names(kind):
            entry = registry.get(kind, name)
            assert isinstance(entry.spec, spec_type)
            assert entry.plugin.distribution == "xbench"


def test_third_party_plugin_is_found_through_its_entry_point(use_sites):
    use_sites("acme")
    registry = load_registry()
    acme = next(p for p in registry.plugins if p.name == "acme")
    assert (acme.distribution, acme.version, acme.builtin, acme.status) == ("xbench-acme", "0.1.0", False, "active")
    assert set(acme.hooks) == {"xbench_datasets", "xbench_methods", "xbench_metrics", "xbench_verifications"}
    assert registry.get("datasets", "acme.planted").plugin is acme
    assert registry.get("methods", "acme.x-sign-grad").plugin is acme
    assert registry.get("metrics", "acme.mass").plugin is acme


def test_broken_plugin_is_reported_by_name_and_the_rest_load(use_sites):
    use_sites("acme", "faulty")
    registry = load_registry()
    broken = next(p for p in registry.plugins if p.name == "broken")
    assert broken.status == "error"
    assert "xbench_broken_import needs a library that is not installed" in broken.errors[0]
    faulty = next(p for p in registry.plugins if p.name == "faulty")
    assert any("unknown hook xbench_method" in e and 'did you mean "xbench_methods"' in e for e in faulty.errors)
    # everything else still loads: the faulty plugin's valid specs, acme, and the built-ins
    assert "faulty.method" in registry.names("methods")
    assert "acme.planted" in registry.names("datasets")
    assert "saliency" in registry.names("methods")


def test_disabled_plugin_is_skipped(use_sites, monkeypatch):
    use_sites("acme", "faulty")
    monkeypatch.setenv("XBENCH_DISABLE_PLUGINS", "broken, faulty")
    registry = load_registry()
    status = {p.name: p.status for p in registry.plugins}
    assert status["broken"] == status["faulty"] == "disabled"
    assert not registry.problems
    assert "faulty.method" not in registry.names("methods")


def test_a_hook_that_raises_loses_only_its_own_specs():
    class Raising:
        @staticmethod
        def xbench_methods():
            raise RuntimeError("no methods today")

        @staticmethod
        def xbench_metrics():
            from xbench import MetricSpec

            yield MetricSpec(name="ok.metric", score=lambda ctx: {}, values={}, category="sanity")
            yield "not a spec"

    registry = load_registry(extra=[("raising", Raising)])
    record = next(p for p in registry.plugins if p.name == "raising")
    assert record.status == "error"
    assert any("xbench_methods() raised RuntimeError: no methods today" in e for e in record.errors)
    assert any("yielded a str, expected a MetricSpec" in e for e in record.errors)
    assert "ok.metric" in registry.names("metrics")


def test_duplicate_names_are_an_error_naming_every_provider(use_sites):
    use_sites("clash")
    with pytest.raises(PluginConflictError) as info:
        load_registry()
    message = str(info.value)
    assert "method 'saliency' is provided by" in message
    assert "plugin 'xbench.plugins.methods.captum' (xbench" in message
    assert "plugin 'clash' (xbench-clash 0.2.0)" in message
    assert "XBENCH_DISABLE_PLUGINS" in message


def test_invalid_names_are_rejected():
    class BadName:
        @staticmethod
        def xbench_methods():
            from xbench import MethodSpec

            yield MethodSpec(name="Has Spaces", explain=lambda *a: None)

    registry = load_registry(extra=[("badname", BadName)])
    assert "Has Spaces" not in registry.names("methods")
    assert "invalid name" in next(p for p in registry.plugins if p.name == "badname").errors[0]


def test_unknown_names_get_did_you_mean():
    registry = load_registry()
    with pytest.raises(UsageError, match=r'Unknown method .saliencey. \(did you mean "saliency"\?\)'):
        registry.get("methods", "saliencey")


def test_cli_plugins_lists_third_party_with_status(use_sites):
    use_sites("acme", "faulty")
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 1  # a plugin failed to load
    data = {p["name"]: p for p in json.loads(result.output)}
    assert set(data) == {"acme", "faulty", "broken"}
    assert data["acme"]["version"] == "0.1.0" and data["acme"]["distribution"] == "xbench-acme"
    assert data["broken"]["status"] == "error"
    everything = json.loads(CliRunner().invoke(main, ["plugins", "--all", "--json"]).output)
    assert {p["name"] for p in everything} >= set(BUILTIN_PLUGINS)


def test_cli_list_kinds(use_sites):
    use_sites("acme")
    result = CliRunner().invoke(main, ["list", "metrics", "--json"])
    assert result.exit_code == 0, result.output
    metrics = {m["name"]: m for m in json.loads(result.output)}
    assert metrics["acme.mass"]["values"] == {"mass": True}
    assert metrics["acme.mass"]["requires"] == ["mask"]
    assert metrics["tpr-tnr"]["category"] == "localisation"
    executors = json.loads(CliRunner().invoke(main, ["list", "executors", "--json"]).output)
    assert {e["name"] for e in executors} >= {"local", "dask"}
    assert CliRunner().invoke(main, ["list", "widgets"]).exit_code == 2


def test_the_readme_example_plugin_loads_beside_the_test_suites_sample_plugin(use_sites, tmp_path, monkeypatch):
    """A user who installs the README's example must not break this suite: its entry-point name and
    its spec names differ from the sample plugin's (``acme``), and both load together."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    module = re.search(r"```python\n# (xbench_\w+)/__init__\.py\n(.*?)```", readme, re.S)
    entry = re.search(r"\[project\.entry-points\.xbench\]\n(\w+) = \"(xbench_\w+)\"", readme)
    assert module and entry and entry.group(2) == module.group(1)
    (tmp_path / module.group(1)).mkdir()
    (tmp_path / module.group(1) / "__init__.py").write_text(module.group(2))
    monkeypatch.syspath_prepend(str(tmp_path))
    use_sites("acme")
    import importlib

    example = importlib.import_module(module.group(1))
    registry = load_registry(extra=[(entry.group(1), example)])
    assert not registry.problems, [p.errors for p in registry.problems]
    names = {p.name for p in registry.plugins}
    assert {"acme", entry.group(1)} <= names
    mine = [n for kind in ("methods", "metrics") for n in registry.names(kind)
            if registry.get(kind, n).plugin.name == entry.group(1)]
    assert len(mine) == 2 and not any(n.startswith("acme.") for n in mine)
