"""Claims are checked completely when the config is read (``xbench plan`` exits 2 with a did-you-mean
for any name a claim uses that the config does not select), and a config can take another
config's claims instead of copying them (the paper preset takes the study presets')."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest
from click.testing import CliRunner

from xbench.claims import ClaimsFrom, derive_claim, parse_claims
from xbench.cli import main
from xbench.config import load_config
from xbench.errors import UsageError
from xbench.registry import load_registry

STUDIES = {"callanan": ClaimsFrom(preset="callanan", where={"model": "heatmap-loss*"},
                                  replace={"hires-cam": "hires-cam[layer=#-1]"}),
           "oliveira": ClaimsFrom(preset="oliveira", replace={"hed-bsds500-standin": "imagenet"}),
           "riotorto": ClaimsFrom(preset="riotorto", replace={"aopc[fill=white]": "aopc[patch=16,fill=white]",
                                                              "aopc[fill=blur]": "aopc[patch=16,fill=blur]"}),
           "treyer": ClaimsFrom(preset="treyer", where={"model": "cifar-resnet18*"})}

CONFIG = """
[run]
seeds = [0, 1, 2]

[datasets.hcp-lesions]

[[models.vgg16-finetune]]
sweep = { pretrain = ["mri", "none"], degree = ["1", "all"] }

[methods.saliency]
[methods.deconvolution]
[methods.grad-cam]

[metrics.tpr-tnr]

[[claims]]
id = "c"
claim = "a claim"
source = "a paper"
metric = "tpr-tnr"
value = "tpr"
relation = "increasing"
along = "model:degree"
a = { model_params = { pretrain = "mri" }, method = "saliency" }
"""


def preset(name: str) -> dict:
    return tomllib.loads(resources.files("xbench").joinpath("presets", f"{name}.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


def test_the_paper_preset_takes_the_study_presets_claims_without_copies(registry):
    paper = load_config("paper", registry)
    raw = preset("paper")
    assert "claims" not in raw, "the paper preset states no claims of its own: it takes the study presets'"
    assert {r["preset"] for r in raw["claims_from"]} == set(STUDIES)
    expected = [derive_claim(t, STUDIES[r["preset"]]) for r in raw["claims_from"] for t in preset(r["preset"])["claims"]]
    assert [c.id for c in paper.claims] == [t["id"] for t in expected]
    assert paper.claims == parse_claims(expected)


def write(tmp_path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("typo, message", [
    ('a = { model_params = { pretrain = "mri" }, method = "salency" }', 'a.method \'salency\' matches none this config '
                                                                        'selects (did you mean "saliency"?)'),
    ('a = { model_params = { pretrian = "mri" }, method = "saliency" }', "model_params.pretrian: no model this config "
                                                                         "selects has the param 'pretrian' (did you mean "
                                                                         '"pretrain"'),
    ('a = { model_params = { pretrain = "mrj" }, method = "saliency" }', "model_params.pretrain = 'mrj': no model this "
                                                                         'config selects has that value (did you mean "mri"?)'),
    ('along = "model:degre"', "along = 'model:degre': no model this config selects has the param 'degre' (did you "
                              'mean "degree"?)'),
    ('value = "tprr"', "value 'tprr' is none of the values or families of metric 'tpr-tnr' (did you mean \"tpr\""),
    ('metric = "tpr-tn"', "metric 'tpr-tn' matches none this config selects (did you mean \"tpr-tnr\"?)"),
])
def test_a_typo_anywhere_in_a_claim_is_found_before_the_run(tmp_path, registry, typo, message):
    key = typo.split(" = ")[0]
    text = "\n".join(typo if line.startswith(key + " = ") else line for line in CONFIG.splitlines())
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_config(str(path), registry)
    assert message in " ".join(str(info.value).split()) and "claim 'c'" in str(info.value)
    result = CliRunner().invoke(main, ["plan", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "did you mean" in result.output


def test_a_claim_that_names_only_what_the_config_selects_passes(tmp_path, registry):
    config = load_config(str(write(tmp_path, CONFIG)), registry)
    assert [c.id for c in config.claims] == ["c"]
    # a model-fit claim needs no model-fit table: every cell records its model's fit
    fit = CONFIG + '\n[[claims]]\nid = "fit"\nclaim = "x"\nsource = "y"\nmetric = "model-fit"\nvalue = "test_accuracy"\n' \
                   'relation = "near"\ntarget = 1.0\ntolerance = 0.1\n'
    assert [c.id for c in load_config(str(write(tmp_path, fit)), registry).claims] == ["c", "fit"]


def test_claims_from_a_file_with_a_duplicate_id_or_a_nested_include(tmp_path, registry):
    (tmp_path / "other.toml").write_text(CONFIG.split("[[claims]]")[0] + "[[claims]]" + CONFIG.split("[[claims]]")[1])
    both = write(tmp_path, CONFIG + '\n[[claims_from]]\npreset = "other.toml"\n')
    with pytest.raises(UsageError, match="claim ids 'c' occur more than once"):
        load_config(str(both), registry)
    taken = write(tmp_path, CONFIG.split("[[claims]]")[0] + '[[claims_from]]\npreset = "other.toml"\n'
                            'replace = { "saliency" = "deconvolution" }\n')
    (claim,) = load_config(str(taken), registry).claims
    assert claim.a.method == "deconvolution"
    (tmp_path / "nested.toml").write_text(CONFIG.split("[[claims]]")[0] + '[[claims_from]]\npreset = "other.toml"\n')
    nested = write(tmp_path, CONFIG.split("[[claims]]")[0] + '[[claims_from]]\npreset = "nested.toml"\n')
    with pytest.raises(UsageError, match="takes claims from other configs itself"):
        load_config(str(nested), registry)
