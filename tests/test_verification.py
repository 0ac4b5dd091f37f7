"""Verification as data: every registered cross-check passes (the same function `xbench verify`
runs, so the record and the suite cannot drift apart); a deliberately broken metric fails its
check; missing references skip, raising checks are errors; the command's table, JSON and files;
a third-party package ships its check through the entry point."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from click.testing import CliRunner

from xbench import VerificationSpec
from xbench import cli as cli_module
from xbench.cli import main
from xbench.registry import load_registry
from xbench.verification import RECORD_FILE, max_abs_difference, run_check, verify

REGISTRY = load_registry(entry_points=False)
CHECKS = REGISTRY.names("verifications")


@pytest.mark.parametrize("name", CHECKS)
def test_every_registered_check_passes(name):
    """One test per check in the record: a failure here is a failure in `xbench verify`."""
    spec = REGISTRY.get("verifications", name).spec
    outcome = run_check(REGISTRY, spec)
    if outcome.verdict == "skipped":
        pytest.skip(f"{name}: {outcome.reason} (pip install \"xbench[verify]\")")
    assert outcome.verdict == "pass", f"{name}: {outcome.verdict}: {outcome.reason}"
    assert outcome.difference is not None and outcome.difference <= spec.tolerance
    assert outcome.library_version or not spec.library  # the record names the reference's version


def test_the_builtin_checks_cover_the_verified_plugins():
    checked = {(s.kind, s.plugin) for s in (REGISTRY.get("verifications", n).spec for n in CHECKS)}
    assert {("methods", m) for m in ("grad-cam", "hires-cam", "grad-cam-pp", "sobel", "laplace", "saliency",
                                     "input-x-gradient", "guided-backprop", "deconvolution", "integrated-gradients",
                                     "lrp-epsilon", "occlusion")} <= checked
    assert {("metrics", m) for m in ("aopc", "deletion", "road", "tpr-tnr", "pointing-game", "relevance-mass-accuracy", "emd",
                                     "mprt", "smprt", "emprt", "random-logit", "classification",
                                     "corruption-classification", "saliency-rmse")} <= checked
    for kind, plugin in checked:  # every check names an installed plugin
        assert plugin in REGISTRY.names(kind), (kind, plugin)


def _pointing_torchray_check():
    return REGISTRY.get("verifications", "pointing-game.torchray").spec


class Broken:
    """A third-party metric with an off-by-one: it counts a point at exactly the tolerance as a hit
    (TorchRay's test is strict), checked by the built-in TorchRay check."""

    @staticmethod
    def xbench_metrics():
        real = REGISTRY.get("metrics", "pointing-game").spec

        def score(ctx):
            ctx.params = {**ctx.params, "tolerance": float(ctx.params["tolerance"]) + 1e-6}
            return real.score(ctx)

        yield dataclasses.replace(real, name="broken.pointing-game", score=score)

    @staticmethod
    def xbench_verifications():
        yield dataclasses.replace(_pointing_torchray_check(), name="broken.pointing-game.torchray",
                                  plugin="broken.pointing-game")


def broken_registry():
    return load_registry(entry_points=False, extra=[("broken", Broken)])


def test_a_broken_metric_fails_its_verification():
    registry = broken_registry()
    record = verify(registry, ("*pointing-game*",))
    verdicts = {o.plugin: o for o in record.outcomes if o.name.endswith("torchray")}
    assert verdicts["pointing-game"].verdict == "pass"
    broken = verdicts["broken.pointing-game"]
    assert broken.verdict == "fail" and broken.difference == 1.0
    assert "exceeds the tolerance" in broken.reason and broken.check_from == "broken"
    assert not record.ok


def test_the_command_shows_the_broken_metric_failing(monkeypatch, tmp_path):
    monkeypatch.setattr(cli_module, "_registry", broken_registry)
    result = CliRunner().invoke(main, ["verify", "broken.*", "sobel", "--out", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "broken.pointing-game" in result.output and "fail: max |difference| 1 exceeds the tolerance 0" in result.output
    assert "1 passed, 1 failed, 0 errors, 0 skipped." in result.output
    saved = json.loads((tmp_path / RECORD_FILE).read_text())
    assert {c["plugin"]: c["verdict"] for c in saved["checks"]} == {"broken.pointing-game": "fail", "sobel": "pass"}
    assert "| metric broken.pointing-game |" in (tmp_path / "verification.md").read_text()


def test_a_missing_reference_skips_and_a_raising_check_is_an_error():
    def raises(spec):
        raise RuntimeError("reference exploded")

    class Odd:
        @staticmethod
        def xbench_verifications():
            yield VerificationSpec(name="odd.missing", plugin="sobel", kind="methods", reference="a library",
                                   library="xbench-no-such-library", check=lambda s: 0.0, tolerance=0, inputs="-")
            yield VerificationSpec(name="odd.raises", plugin="laplace", kind="methods", reference="scipy",
                                   library="scipy", check=raises, tolerance=0, inputs="-")
            yield VerificationSpec(name="odd.nan", plugin="laplace", kind="methods", reference="scipy",
                                   check=lambda s: math.nan, tolerance=1, inputs="-")
            yield VerificationSpec(name="odd.absent", plugin="no-such-method", kind="methods", reference="x",
                                   check=lambda s: 0.0, tolerance=0, inputs="-")

    record = verify(load_registry(entry_points=False, extra=[("odd", Odd)]), ("odd.*",))
    by = {o.name: o for o in record.outcomes}
    assert (by["odd.missing"].verdict, by["odd.missing"].reason) == ("skipped", "xbench-no-such-library not installed")
    assert by["odd.raises"].verdict == "error" and "RuntimeError: reference exploded" in by["odd.raises"].reason
    assert by["odd.nan"].verdict == "fail" and by["odd.nan"].reason == "the difference is NaN"
    assert by["odd.absent"].verdict == "skipped" and "method 'no-such-method' is not installed" in by["odd.absent"].reason
    assert record.counts == {"pass": 0, "fail": 1, "error": 1, "skipped": 2} and not record.ok
    json.dumps(record.to_dict(), allow_nan=False)  # NaN and inf are written as text, valid JSON


def test_an_invalid_check_is_the_plugins_error_not_a_crash():
    class Bad:
        @staticmethod
        def xbench_verifications():
            yield VerificationSpec(name="bad.kind", plugin="sobel", kind="datasets", reference="x",
                                   check=lambda s: 0.0, tolerance=0, inputs="-")

    registry = load_registry(entry_points=False, extra=[("bad", Bad)])
    record = next(p for p in registry.plugins if p.name == "bad")
    assert record.status == "error" and "kind must be one of methods, metrics" in record.errors[0]


def test_max_abs_difference():
    assert max_abs_difference([1.0, math.nan, 3.0], [1.5, math.nan, 2.0]) == 1.0
    assert max_abs_difference([1.0, math.nan], [1.0, 2.0]) == math.inf
    assert max_abs_difference([], []) == 0.0
    with pytest.raises(ValueError, match=r"different shapes: ours \(2,\), the reference's \(1, 2\)"):
        max_abs_difference([1.0, 2.0], [[1.0, 2.0]])


def test_json_record_and_unknown_patterns(tmp_path):
    result = CliRunner().invoke(main, ["verify", "--json", "sobel", "laplace"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert [c["name"] for c in record["checks"]] == ["laplace.scipy", "sobel.scipy"]
    check = record["checks"][0]
    assert check["library"] == "scipy" and check["library_version"] and check["verdict"] == "pass"
    assert check["plugin_version"] == "1" and check["distribution"] == "xbench" and check["check_from"]
    assert "random" in record["unverified"]["methods"] and "insertion" in record["unverified"]["metrics"]
    assert record["versions"]["xbench"] and record["counts"]["pass"] == 2
    unknown = CliRunner().invoke(main, ["verify", "no-such-*"])
    assert unknown.exit_code == 2 and "No check of a method or metric matches 'no-such-*'" in unknown.output


def test_a_third_party_package_ships_its_check_through_its_entry_point(use_sites):
    use_sites("acme")
    registry = load_registry()
    entry = registry.get("verifications", "acme.mass.numpy")
    assert entry.plugin.name == "acme" and entry.plugin.distribution == "xbench-acme"
    (outcome,) = verify(registry, ("acme.*",)).outcomes
    assert (outcome.plugin, outcome.verdict, outcome.check_from) == ("acme.mass", "pass", "acme")
    assert outcome.distribution == "xbench-acme" and outcome.difference < 1e-6
