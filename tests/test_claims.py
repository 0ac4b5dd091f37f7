"""The claim grammar (xbench.claims): every relation parses; every kind of mistake is named."""

from __future__ import annotations

import json
import textwrap

import pytest

import xbench.claims as claims_module
from xbench.claims import Claim, claims_from_toml, parse_claims, position_key
from xbench.errors import UsageError

BASE = {"id": "c-1", "claim": "a finding", "source": "a paper", "metric": "tpr-tnr", "value": "tpr"}
VALID = {
    "greater": {"relation": "greater", "a": {"model": "x"}, "b": {"model": "y"}},
    "less": {"relation": "less", "a": {"model": "x"}, "b": {"model": "y"}, "test": "wilcoxon"},
    "largest": {"relation": "largest", "among": "method", "a": {"method": "in-model"}},
    "smallest": {"relation": "smallest", "among": "facet", "a": {"facet": "contrast"}, "b": {"level": [1, 2]}},
    "increasing": {"relation": "increasing", "along": "model:degree", "order": ["1", "2", "all"]},
    "decreasing": {"relation": "decreasing", "along": "level", "a": {"facet": "contrast"}},
    "near": {"relation": "near", "target": 0.19, "tolerance": 0.05, "chance": 0.034},
    "above": {"relation": "above", "target": 2.0, "a": {"model_params": {"loss": "hybrid"}}},
    "below": {"relation": "below", "target": 0.25, "chance": 0.034},
}


def problem(**keys) -> str:
    with pytest.raises(UsageError) as info:
        parse_claims([{**BASE, **keys}], "study.toml")
    text = str(info.value)
    assert 'Claim "c-1"' in text and "study.toml" in text
    return text


def docstring_toml() -> str:
    block = claims_module.__doc__.split("Examples, one per relation")[1].split("::", 1)[1]
    return textwrap.dedent(block.split("Accuracy floor:")[0])


def test_docstring_examples_parse_one_per_relation():
    parsed = claims_from_toml(docstring_toml(), "docstring")
    assert sorted({c.relation for c in parsed}) == sorted(claims_module.RELATIONS)
    callanan = parsed[0]
    assert callanan.relation == "less" and callanan.accuracy_floor.absolute == 0.95
    assert callanan.accuracy_floor.split == "val" and callanan.published["d"] == -11.88
    assert callanan.a.model == "heatmap-loss[loss=cce]"


@pytest.mark.parametrize("relation", sorted(VALID))
def test_each_relation_parses_with_defaults(relation):
    (c,) = parse_claims([{**BASE, **VALID[relation]}])
    assert isinstance(c, Claim) and c.relation == relation
    assert c.statistic_test == VALID[relation].get("test", claims_module.RELATIONS[relation].default_test)
    assert c.alpha == 0.05 and c.min_seeds == 3 and c.samples == "all"
    assert c.accuracy_floor.above_chance is None and c.accuracy_floor.floor(0.5) == 0.5
    # the manifest form reads back to the same claim
    assert parse_claims(json.loads(json.dumps([c.to_dict()])))[0] == c


def test_unknown_keys_get_did_you_mean():
    text = problem(**VALID["greater"], relaton="greater")
    assert "unknown key 'relaton'" in text and 'did you mean "relation"' in text
    text = problem(relation="greater", a={"modle": "x"}, b={"model": "y"})
    assert "unknown key 'a.modle'" in text and 'did you mean "model"' in text
    text = problem(**VALID["greater"], accuracy_floor={"above_chanse": 0.2})
    assert "'accuracy_floor.above_chanse'" in text and 'did you mean "above_chance"' in text
    text = problem(**VALID["greater"], published={"dd": 1.0})
    assert "'published.dd'" in text and 'did you mean "d"' in text


def test_bad_choices_say_what_is_expected_and_the_closest():
    text = problem(relation="greatr", a={"model": "x"}, b={"model": "y"})
    assert "'relation' must be one of greater, less" in text and 'got "greatr"' in text
    assert 'did you mean "greater"' in text
    text = problem(**VALID["greater"], test="man-whitney")
    assert 'did you mean "mann-whitney"' in text
    text = problem(**VALID["greater"], samples="corect")
    assert '"all" or "correct"' in text and 'did you mean "correct"' in text
    text = problem(relation="largest", among="methods", a={"method": "m"})
    assert 'did you mean "method"' in text
    text = problem(relation="increasing", along="levels")
    assert "'along' must be" in text and 'did you mean "level"' in text


def test_wrong_types_and_ranges():
    text = problem(**VALID["greater"], alpha=2)
    assert "'alpha' must be a number with 0 < alpha < 1; got 2" in text
    text = problem(**VALID["greater"], min_seeds=1)
    assert "'min_seeds' must be an integer ≥ 2" in text
    text = problem(relation="greater", a={"model": "x", "level": "3"}, b={"model": "y"})
    assert "'a.level' must be a number or an array of numbers; got \"3\"" in text
    text = problem(relation="greater", a={"model": "x", "untrained": "yes"}, b={"model": "y"})
    assert "'a.untrained' must be true or false" in text
    text = problem(**VALID["greater"], accuracy_floor=0.9)
    assert "'accuracy_floor' must be a table" in text


def test_missing_required_keys():
    with pytest.raises(UsageError) as info:
        parse_claims([{k: v for k, v in {**BASE, **VALID["greater"]}.items() if k != "metric"}], "study.toml")
    assert 'Claim "c-1"' in str(info.value) and "missing key 'metric'" in str(info.value)
    with pytest.raises(UsageError) as info:
        parse_claims([{k: v for k, v in {**BASE, **VALID["greater"]}.items() if k != "id"}], "study.toml")
    assert "Claim 1 (no id)" in str(info.value) and "missing key 'id'" in str(info.value)


@pytest.mark.parametrize("keys, message", [
    ({"relation": "greater", "a": {"model": "x"}}, "relation 'greater' needs key 'b'"),
    ({"relation": "largest", "a": {"method": "m"}}, "relation 'largest' needs key 'among'"),
    ({"relation": "increasing"}, "relation 'increasing' needs key 'along'"),
    ({"relation": "near", "target": 0.2}, "relation 'near' needs key 'tolerance'"),
    ({"relation": "increasing", "along": "level", "b": {"model": "y"}}, "key 'b' does not apply to relation 'increasing'"),
    ({**VALID["greater"], "among": "method"}, "key 'among' does not apply to relation 'greater' (it is for largest, smallest)"),
    ({**VALID["greater"], "chance": 0.5}, "key 'chance' does not apply to relation 'greater' (it is for near, above, below)"),
    ({**VALID["greater"], "test": "spearman"}, "'test' = \"spearman\" does not apply to relation 'greater'"),
    ({**VALID["near"], "test": "mann-whitney"}, "use one of bootstrap"),
    ({"relation": "greater", "a": {}, "b": {"model": "y"}}, "'a' selects nothing"),
    ({"relation": "largest", "among": "facet", "a": {"method": "m"}}, "needs 'a' to choose the candidate facet (set a.facet)"),
    ({"relation": "increasing", "along": "model:"}, "'along' must be"),
    ({"relation": "increasing", "along": "level", "order": [1, "1"]}, "'order' must list at least two distinct"),
    ({**VALID["greater"], "accuracy_floor": {"above_chance": 0.1, "absolute": 0.9}}, "not both"),
])
def test_relation_keys(keys, message):
    assert message in problem(**keys)


def test_ids_are_lowercase_slugs():
    with pytest.raises(UsageError) as info:
        parse_claims([{**BASE, **VALID["greater"], "id": "Callanan Heart"}], "study.toml")
    assert 'Claim "Callanan Heart"' in str(info.value) and "'id' must be a unique lowercase string" in str(info.value)
    assert parse_claims([{**BASE, **VALID["greater"], "id": "acme.heart_mass-2"}])[0].id == "acme.heart_mass-2"


def test_published_numbers_must_agree_with_the_relation():
    text = problem(**VALID["greater"], published={"a": 0.796, "b": 0.26, "d": -11.88})
    assert "published d = -11.88 contradicts relation 'greater'" in text and "relation 'less'" in text
    text = problem(**VALID["less"], published={"a": 0.796, "b": 0.26})
    assert "published a = 0.796 and b = 0.26 contradict relation 'less'" in text
    text = problem(**VALID["increasing"], published={"rho": -0.5})
    assert "published rho = -0.5 contradicts relation 'increasing'" in text
    text = problem(**VALID["increasing"], published={"means": 0.5})
    assert "'published.means' must be a table of numbers" in text
    ok = parse_claims([{**BASE, **VALID["less"], "published": {"a": 0.26, "b": 0.796, "d": -11.88, "U": 0}}])
    assert ok[0].published["U"] == 0


def test_ids_are_unique_and_every_bad_claim_is_reported_at_once():
    with pytest.raises(UsageError) as info:
        parse_claims([{**BASE, **VALID["greater"]}, {**BASE, **VALID["near"]},
                      {**BASE, **VALID["less"], "id": "c-2", "relation": "bigger"}], "study.toml")
    text = str(info.value)
    assert "reuses the id of claim 1" in text and 'Claim "c-2" (claim 3)' in text and "bigger" in text


def test_claims_must_be_an_array_of_tables():
    with pytest.raises(UsageError, match="must be an array of tables"):
        parse_claims({"id": "x"}, "study.toml")
    with pytest.raises(UsageError, match="Claim 1 .* must be a table"):
        parse_claims(["greater"], "study.toml")
    assert parse_claims(None) == [] and parse_claims([]) == []
    with pytest.raises(UsageError, match="not valid TOML"):
        claims_from_toml("[[claims]\nid = 1")


def test_position_keys_unify_numbers_and_text():
    assert position_key(4) == position_key(4.0) == position_key("4") == "4"
    assert position_key(0.5) == "0.5" and position_key(True) == "true" and position_key("all") == "all"


@pytest.mark.parametrize("name", sorted(claims_module.RELATIONS))
def test_each_relation_is_one_complete_record(name):
    """A relation is one record that validation here and evaluation (findings) both read."""
    from xbench.leaderboard.findings import EVALUATORS

    rel = claims_module.RELATIONS[name]
    assert rel.name == name and rel.evaluator in EVALUATORS
    assert rel.tests and set(rel.tests) <= set(claims_module.TESTS) and rel.default_test == rel.tests[0]
    assert set(rel.needs) | set(rel.takes) | set(rel.forbids) == set(claims_module.SHAPE_KEYS)
    assert not set(rel.forbids) & (set(rel.needs) | set(rel.takes))
    if rel.sign is None:
        assert rel.opposite is None
    else:
        other = claims_module.RELATIONS[rel.opposite]
        assert other.sign == -rel.sign and other.opposite == name and other.evaluator == rel.evaluator
    for test in rel.tests:
        assert rel.statistic_text(test, 0.05)  # reads on the leaderboard
    # the record drives validation: a missing needed key and a forbidden key are named
    needed = rel.needs[0]
    keys = {**{k: v for k, v in VALID[name].items() if k != needed}}
    assert f"relation {name!r} needs key {needed!r}" in problem(**keys)
    if rel.forbids:
        extra = {"a": {"model": "x"}, "b": {"model": "y"}, "among": "method", "along": "level", "order": [1, 2],
                 "target": 0.5, "tolerance": 0.1, "chance": 0.5}
        key = rel.forbids[0]
        assert f"key {key!r} does not apply to relation {name!r}" in problem(**{**VALID[name], key: extra[key]})


def test_statistic_text_comes_from_the_record():
    (c,) = parse_claims([{**BASE, **VALID["largest"], "test": "bootstrap", "alpha": 0.1}])
    assert c.statistic == "bootstrap 90% CI of the mean difference over model seeds, Holm-corrected over every competitor"
    (n,) = parse_claims([{**BASE, **VALID["near"]}])
    assert n.statistic == "bootstrap 90% CI of the mean within target ± tolerance"


def test_claims_from_replaces_selector_values_and_narrows_with_where():
    table = {**BASE, "metric": "aopc[fill=white]", "method": "hires-cam", "relation": "greater",
             "a": {"model_params": {"pretrain": "synthetic-ood", "degree": "1"}}, "b": {"model": ["x", "synthetic-ood"]},
             "claim": "synthetic-ood stays in the text"}
    rule = claims_module.ClaimsFrom(preset="p", where={"model": "vgg*"},
                                    replace={"synthetic-ood": "imagenet", "aopc[fill=white]": "aopc[patch=16,fill=white]",
                                             "hires-cam": "hires-cam[layer=#-1]"})
    out = claims_module.derive_claim(table, rule)
    assert out["metric"] == "aopc[patch=16,fill=white]" and out["method"] == "hires-cam[layer=#-1]"
    assert out["a"]["model_params"] == {"pretrain": "imagenet", "degree": "1"} and out["b"]["model"] == ["x", "imagenet"]
    assert out["model"] == "vgg*" and out["claim"] == "synthetic-ood stays in the text"
    assert table["a"]["model_params"]["pretrain"] == "synthetic-ood"  # the source table is left as it is
    with pytest.raises(UsageError, match="where.model = 'vgg\\*' would replace claim 'c-1'"):
        claims_module.derive_claim({**table, "model": "other"}, rule)
    assert claims_module.derive_claim({**table, "model": "vgg*"}, rule)["model"] == "vgg*"
