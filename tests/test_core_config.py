"""Config validation: every bad config exits 2 with a message that names the problem, no traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from helpers import write_config
from xbench.cli import main
from xbench.config import PRESETS, load_config
from xbench.errors import UsageError
from xbench.registry import load_registry

GOOD = """
[datasets.synthetic-cardiac]
n_train = 8
[models.small-cnn]
"""


def plan(*args):
    result = CliRunner().invoke(main, ["plan", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[run]\nsedes = [1]\n" + GOOD, "unknown key 'run.sedes' (did you mean \"seeds\"?)"),
        ("[run]\nseeds = \"many\"\n" + GOOD, "'run.seeds': input should be a valid list"),
        ("[run]\ntarget = \"sometimes\"\n" + GOOD, "'run.target': input should be 'label' or 'predicted'"),
        ("[run]\nbatch_size = 0\n" + GOOD, "'run.batch_size': input should be greater than or equal to 1"),
        ("[modles.small-cnn]\n" + GOOD, "unknown key 'modles' (did you mean \"models\""),
        ("[datasets.synthetic-cardiac]\n[models.small-cnnn]\n", 'Unknown model \'small-cnnn\' (did you mean "small-cnn"?)'),
        ("[datasets.synthetic-cardiac]\nn_trian = 3\n[models.small-cnn]\n",
         "'n_trian' is not a parameter of dataset 'synthetic-cardiac' (did you mean \"n_train\"?)"),
        ("[datasets.synthetic-cardiac]\nn_train = \"lots\"\n[models.small-cnn]\n",
         "param 'n_train' of dataset 'synthetic-cardiac' must be a int (default 10000), got 'lots' (str)"),
        ("[datasets.synthetic-cardiac]\nsweep = { mode = [] }\n[models.small-cnn]\n",
         "sweep.mode must be a non-empty list of values"),
        ("[datasets.\"nothing-*\"]\n[models.small-cnn]\n", "matches no installed dataset"),
        ("[models.small-cnn]\n", "missing key 'datasets'"),
        ("[run]\nexecutor = \"daks\"\n" + GOOD, "run.executor 'daks' is not an installed executor (did you mean \"dask\"?)"),
        ("[run\nseeds = [0]\n", "is not valid TOML"),
        (GOOD + "only = { methods = [\"saliency\"] }\n",
         "only.methods is not a kind a model can be restricted to; models can be restricted to datasets"),
        (GOOD + "only = { datasets = [\"synthetic-cardiak\"] }\n",
         "only.datasets = 'synthetic-cardiak' matches none of the datasets this config selects or that are "
         "installed (did you mean \"synthetic-cardiac\"?)"),
        (GOOD + "only = { datasets = \"synthetic-cardiac\" }\n", "only.datasets must be a non-empty list"),
        # list items are typed like the default's items (a string among numbers once crashed the check)
        (GOOD + "[metrics.road]\npercentages = [\"ten\"]\n",
         "param 'percentages' of metric 'road' must be a list of int (default [10, 20, 30, 40, 50, 60, 70, 80, 90]), "
         "but the item 'ten' in ['ten'] is a str"),
        (GOOD + "[metrics.road]\npercentages = [10, true]\n", "but the item True in [10, True] is a bool"),
        (GOOD + "[metrics.road]\nsweep = { percentages = [[10], [\"x\"]] }\n", "but the item 'x' in ['x'] is a str"),
        (GOOD + "[metrics.corruption-classification]\nseverities = [1.5]\n",
         "must be a list of int (default [1, 2, 3, 4, 5]), but the item 1.5 in [1.5] is a float"),
    ],
)
def test_bad_configs_exit_2_with_a_clear_message(tmp_path, body, expected):
    path = write_config(tmp_path / "bad.toml", body)
    code, output = plan(str(path))
    assert code == 2, output
    assert expected in " ".join(output.split()), output
    assert str(path) in " ".join(output.split())
    assert "Traceback" not in output


def test_missing_config_file_and_unknown_preset(tmp_path):
    code, output = plan(str(tmp_path / "nope.toml"))
    assert code == 2 and "does not exist" in output and "Traceback" not in output
    code, output = plan("quik")
    assert code == 2 and 'did you mean "quick"' in output


def test_bad_cli_options_exit_2(tmp_path):
    path = write_config(tmp_path / "ok.toml", GOOD)
    code, output = plan(str(path), "--seeds", "a,b")
    assert code == 2 and "comma-separated list of integers" in output
    code, output = plan(str(path), "-a", "nonexistent*")
    assert code == 2 and "matches none of the methods" in output
    assert CliRunner().invoke(main, ["run", str(path), "--device", "tpu"]).exit_code == 2


def test_sweeps_globs_and_precedence(tmp_path):
    path = write_config(tmp_path / "c.toml", """
        [datasets.synthetic-cardiac]
        sweep = { mode = ["sex_size", "sex_marker"], channels = [1, 3] }
        n_train = 10
        [models.small-cnn]
        sweep = { untrained = [false, true] }
        [methods."*"]
        [methods.integrated-gradients]
        steps = 4
        [metrics."*"]
        """)
    cfg = load_config(str(path), load_registry())
    labels = [v.label for v in cfg.variants["datasets"]]
    assert labels == ["synthetic-cardiac[mode=sex_size,channels=1]", "synthetic-cardiac[mode=sex_size,channels=3]",
                      "synthetic-cardiac[mode=sex_marker,channels=1]", "synthetic-cardiac[mode=sex_marker,channels=3]"]
    assert all(v.params["n_train"] == 10 for v in cfg.variants["datasets"])
    assert [v.label for v in cfg.variants["models"]] == ["small-cnn[untrained=false]", "small-cnn[untrained=true]"]
    ig = next(v for v in cfg.variants["methods"] if v.name == "integrated-gradients")
    assert ig.params["steps"] == 4  # the exact name wins over the glob
    assert len({v.key for v in cfg.variants["datasets"]}) == 4


def test_overrides_and_filters():
    registry = load_registry()
    cfg = load_config("quick", registry, overrides={"seeds": [5], "device": "cpu"},
                      filters={"methods": ["sal*"], "metrics": ["tpr-tnr"]})
    assert cfg.run.seeds == [5] and cfg.run.device == "cpu"
    assert [v.name for v in cfg.variants["methods"]] == ["saliency"]
    assert [v.name for v in cfg.variants["metrics"]] == ["tpr-tnr"]
    assert {c.metric for c in cfg.claims} == {"tpr-tnr", "corruption-classification"}  # kept; filtered ones read inconclusive
    with pytest.raises(UsageError):
        load_config("quick", registry, filters={"datasets": ["imagenet*"]})


def test_presets_validate():
    registry = load_registry()
    for preset in PRESETS:  # every preset `xbench run --help` names
        try:
            cfg = load_config(preset, registry)
        except UsageError as exc:  # a paper dataset may need real data, but the config itself must be valid
            pytest.fail(f"preset {preset} is invalid: {exc}")
        assert cfg.variants["datasets"] and cfg.variants["models"]


def test_only_restricts_combinations_without_changing_keys(tmp_path):
    from xbench.plan import make_plan

    registry = load_registry()
    body = """
        [datasets.synthetic-cardiac]
        n_train = 10
        [datasets.polygons]
        size = 32
        rad_min = 4
        rad_max = 9
        [models.small-cnn]
        sweep = { untrained = [false, true] }
        [models.cifar-resnet18]
        %s
        [methods.saliency]
        [methods.grad-cam]
        [metrics.classification]
        [metrics.tpr-tnr]
        [metrics.pompom]
        %s
        """
    free = make_plan(load_config(str(write_config(tmp_path / "a.toml", body % ("", ""))), registry), registry)
    cfg = load_config(str(write_config(tmp_path / "b.toml", body % (
        'only = { datasets = ["polygons"] }',
        'only = { methods = ["grad-*"], models = ["small-cnn[untrained=false]"] }'))), registry)
    restricted = make_plan(cfg, registry)
    cells = {(c.dataset.name, c.model.label) for c in restricted.cells}
    assert cells == {("synthetic-cardiac", "small-cnn[untrained=false]"), ("synthetic-cardiac", "small-cnn[untrained=true]"),
                     ("polygons", "small-cnn[untrained=false]"), ("polygons", "small-cnn[untrained=true]"),
                     ("polygons", "cifar-resnet18")}
    pompom = {(u.cell.model.label, u.method.name) for u in restricted.all_units if u.metric.name == "pompom"}
    assert pompom == {("small-cnn[untrained=false]", "grad-cam")}
    assert any("runs only on datasets polygons" in s.reason for s in restricted.skipped)
    assert any(s.metric == "pompom" and "runs only on methods grad-*" in s.reason for s in restricted.skipped)
    # a restriction picks combinations; what it keeps has the same keys (and results) as without it
    assert {u.key for u in restricted.all_units} < {u.key for u in free.all_units}
    pompom_entry = next(m for m in cfg.as_dict()["metrics"] if m["name"] == "pompom")
    assert pompom_entry["only"] == {"methods": ["grad-*"], "models": ["small-cnn[untrained=false]"]}


def test_an_array_of_tables_makes_variants_of_one_plugin_from_several_entries(tmp_path):
    registry = load_registry()
    path = write_config(tmp_path / "c.toml", """
        [datasets.synthetic-cardiac]
        [[models.small-cnn]]
        sweep = { width = [4, 8] }
        [[models.small-cnn]]
        untrained = true
        width = 8
        """)
    models = load_config(str(path), registry).variants["models"]
    # every label names the params that set its variant apart (width 8 is not small-cnn's default 16)
    assert [(v.label, v.params["width"], v.params["untrained"]) for v in models] == [
        ("small-cnn[width=4]", 4, False), ("small-cnn[width=8]", 8, False),
        ("small-cnn[width=8,untrained=true]", 8, True)]
    apart = write_config(tmp_path / "d.toml", """
        [datasets.synthetic-cardiac]
        [[models.small-cnn]]
        width = 4
        [[models.small-cnn]]
        width = 8
        """)
    labels = [v.label for v in load_config(str(apart), registry).variants["models"]]
    assert labels == ["small-cnn[width=4]", "small-cnn[width=8]"]  # entries told apart by what differs
    clash = write_config(tmp_path / "e.toml", """
        [datasets.synthetic-cardiac]
        [[models.small-cnn]]
        width = 4
        [[models.small-cnn]]
        width = 4
        """)
    code, output = plan(str(clash))
    assert code == 2 and "make the same variant twice ('small-cnn')" in " ".join(output.split())
    assert "Give each entry its own `label" in output


def test_the_paper_preset_runs_each_study_on_its_own_data():
    from xbench.plan import make_plan

    registry = load_registry()
    cells = make_plan(load_config("paper", registry), registry).cells
    pairs = {(c.dataset.name, c.model.name) for c in cells}
    assert pairs == {("synthetic-cardiac", "heatmap-loss"), ("hcp-lesions", "vgg16-finetune"),
                     ("polygons", "joint-explainer")}  # medmnist and imagenet-hvz need the user's files
    vgg = sorted({c.model.label for c in cells if c.model.name == "vgg16-finetune"})
    assert len(vgg) == 11 and "vgg16-finetune[untrained=true]" in vgg
    assert {c.seed for c in cells} == {0, 1, 2, 3, 4}  # five: Mann–Whitney over seeds can reach p < 0.05


def test_cells_run_dataset_then_seed_then_model(tmp_path):
    """A dataset's data depends on the seed and a worker keeps the last one it loaded: cells of one
    (dataset, seed) come together, so each is loaded once."""
    from xbench.plan import make_plan

    registry = load_registry()
    path = write_config(tmp_path / "order.toml", """
[run]
seeds = [3, 1]
[datasets.synthetic-cardiac]
sweep = { mode = ["sex_size", "sex_marker"] }
n_train = 8
[models.small-cnn]
sweep = { width = [4, 8] }
[methods.saliency]
[metrics.classification]
""")
    cells = make_plan(load_config(str(path), registry), registry).cells
    order = [(c.dataset.label, c.seed) for c in cells]
    assert len(cells) == 8 and len(set(order)) == 4
    assert all(order[i] == order[i + 1] for i in range(0, 8, 2))  # both models of a (dataset, seed) together
    assert [seed for _, seed in order[::2]] == [3, 1, 3, 1]  # the configured seed order, per dataset


def test_a_plugins_own_check_that_raises_is_a_usage_error():
    from xbench.config import check_param
    from xbench.specs import Param

    def check(value):
        return None if value < 3 else "too big"  # raises TypeError on a str

    with pytest.raises(UsageError, match=r"could not be checked \(TypeError: .*\) \(got 'x'\)"):
        check_param("here", "metrics", "m", "k", "x", {"k": Param(None, check=check)})


def test_list_items_are_converted_like_scalars(tmp_path):
    registry = load_registry()
    config = load_config(str(write_config(tmp_path / "ok.toml", GOOD + "[metrics.road]\npercentages = [10, 45]\n")),
                         registry)
    assert [v.params["percentages"] for v in config.variants["metrics"]] == [[10, 45]]


def test_show_checks_its_params_with_card_too():
    result = CliRunner().invoke(main, ["show", "synthetic-cardiac", "--card", "-p", "mode=bogus"])
    assert result.exit_code == 2, result.output
    assert "param 'mode' of dataset 'synthetic-cardiac'" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert CliRunner().invoke(main, ["show", "synthetic-cardiac", "--card"]).exit_code == 0
