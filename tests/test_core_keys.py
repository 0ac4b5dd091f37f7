"""Every [run] option that changes a result is in the keys of what it changes, so a folder re-run
with another value recomputes; every other option is documented as changing no result, and is
shown not to."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import TINY, write_config
from xbench import load_results
from xbench.config import KEYED_OPTIONS, UNKEYED_OPTIONS, RunOptions, load_config
from xbench.plan import make_plan
from xbench.registry import load_registry
from xbench.results import MEASUREMENTS
from xbench.runner import run

# the acme benchmark with one method: a run takes seconds
SMALL = TINY.replace('[methods."acme.x-sign-grad"]\n', "").replace("[metrics.classification]\n", "")
ORDER = ["unit", "value_name", "sample"]

# a value other than the default for every option (the plan never reaches the executor or device)
OTHER = {"name": "other", "about": "x", "seeds": [1], "device": "cpu", "executor": "dask", "scheduler": "tcp://x:1",
         "workers": 3, "threads": 1, "target": "predicted", "reduction": "abs-sum", "batch_size": 8, "samples": 16,
         "out": "elsewhere", "cache": "/tmp/elsewhere", "leaderboard": False, "gallery": 0, "seeding": "paired"}


def test_every_run_option_is_keyed_or_documented_as_changing_no_result():
    assert set(KEYED_OPTIONS) | set(UNKEYED_OPTIONS) == set(RunOptions.model_fields)
    assert not set(KEYED_OPTIONS) & set(UNKEYED_OPTIONS)
    assert set(OTHER) == set(RunOptions.model_fields)


@pytest.mark.parametrize("option", sorted(RunOptions.model_fields))
def test_keyed_options_change_every_key_and_the_others_none(tiny_config, option):
    registry = load_registry()
    base = load_config(str(tiny_config()), registry)
    changed = base.run.model_copy(update={option: OTHER[option]})
    other = type(base)(run=changed, variants=base.variants, source=base.source, raw=base.raw, claims=base.claims)
    before = {(u.cell.dataset.label, u.cell.model.label, u.method and u.method.label, u.metric.label): u.key
              for u in make_plan(base, registry).all_units}
    after = {(u.cell.dataset.label, u.cell.model.label, u.method and u.method.label, u.metric.label): u.key
             for u in make_plan(other, registry).all_units}
    if option == "seeds":  # another seed is another cell: none of its keys is one of seed 0's
        assert not set(before.values()) & set(after.values())
    elif option == "samples":  # model-level units use the whole test split
        assert {k: v == before[k] for k, v in after.items()} == {k: k[2] is None for k in after}
    elif option in KEYED_OPTIONS:
        assert before.keys() == after.keys() and all(before[k] != after[k] for k in before), option
    else:
        assert before == after, option


def _rows(out):
    return load_results(out).sort_values(ORDER).reset_index(drop=True).drop(columns=list(MEASUREMENTS))


def test_switching_seeding_recomputes_and_unkeyed_options_change_no_row(tmp_path, use_sites):
    """A folder computed with seeding = "variant" and re-run with "paired" recomputes every unit
    (it printed "0 units computed" and kept the variant numbers before seeding was keyed), and equals
    a fresh paired run made with every unkeyed option changed (name, gallery, cache, leaderboard)."""
    use_sites("acme")
    registry = load_registry()
    variant = write_config(tmp_path / "variant.toml", SMALL)
    paired = write_config(tmp_path / "paired.toml", SMALL.replace("seeds = [0]", 'seeds = [0]\nseeding = "paired"'))
    fresh = write_config(tmp_path / "fresh.toml", SMALL.replace('name = "tiny"', 'name = "another"').replace(
        "gallery = 2", f'gallery = 0\nleaderboard = false\ncache = "{tmp_path / "cache"}"\nseeding = "paired"'))
    out = tmp_path / "run"
    first = run(load_config(str(variant), registry), registry, out=out)
    variant_rows = _rows(out)
    again = run(load_config(str(paired), registry), registry, out=out)
    assert first.computed == first.planned == again.planned
    assert again.computed == again.planned and again.skipped_done == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cells"] and all(c["threads"] == manifest["threads"] for c in manifest["cells"].values())
    reference = run(load_config(str(fresh), registry), registry, out=tmp_path / "fresh")
    assert reference.computed == reference.planned
    want = _rows(tmp_path / "fresh")
    pd.testing.assert_frame_equal(_rows(out), want)
    assert not variant_rows["value"].equals(want["value"])  # the seeding does change the numbers
