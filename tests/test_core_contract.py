"""The plugin contract checks itself: every registered plugin, whatever module it lives in, is held
to it here, so adding a plugin is its file and its own test, and nothing can be forgotten.

- Built-ins are found by scanning the plugin folders; the folders are listed again here by file
  name, and every module there must register at least one hook.
- Every param of every plugin is a documented ``Param`` whose default passes its own check, and the
  defaults pass the plugin's cross-param ``validate``.
- Every dataset passes the dataset contract at a small size (``n_train``/``n_val``/``n_test``
  shrunk), deterministically; a dataset whose real data is not here is skipped with its reason.
- Every model builds for a small planted dataset and returns one logit per class.
- Every method returns maps that reduce to ``(N, H, W)`` for a model that provides what it needs.
- Every metric scores a planted batch through the test kit and returns only declared values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xbench import testing
from xbench.config import check_param, plugin_params
from xbench.errors import DataError, UsageError
from xbench.registry import BUILTIN_PLUGINS, PLUGIN_PACKAGES, load_registry
from xbench.specs import MODEL_FIT, Param, defaults, resolve_tags

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"xbench.datasets": ROOT / "datasets", **{f"xbench.plugins.{kind}": ROOT / "plugins" / kind
                                                    for kind in ("models", "methods", "metrics", "verifications")}}
REGISTRY = load_registry(entry_points=False)
UNDOCUMENTED: dict[tuple[str, str], str] = {}
"""Known exceptions to the params contract, with their reasons (none left)."""


def specs(*kinds: str, exceptions: dict | None = None) -> list:
    exceptions = exceptions or {}
    return [pytest.param(kind, name, id=f"{kind[:-1]}:{name}",
                         marks=[pytest.mark.xfail(strict=True, reason=exceptions[(kind, name)])]
                         if (kind, name) in exceptions else [])
            for kind in kinds for name in REGISTRY.names(kind)]


# ----------------------------------------------------------------------------- registration

def test_every_module_in_the_plugin_folders_is_a_registered_builtin():
    assert set(PLUGIN_PACKAGES) == set(FOLDERS)
    on_disk = {f"{package}.{path.stem}" for package, folder in FOLDERS.items() for path in folder.glob("*.py")
               if not path.name.startswith("_")}
    assert on_disk <= set(BUILTIN_PLUGINS), sorted(on_disk - set(BUILTIN_PLUGINS))
    records = {p.name: p for p in REGISTRY.plugins if p.builtin}
    for module in on_disk:
        assert records[module].status == "active", records[module].errors
        assert records[module].hooks, f"{module} is in a plugin folder but registers no xbench_* hook"


# ----------------------------------------------------------------------------- params

@pytest.mark.parametrize("kind, name", specs("datasets", "models", "methods", "metrics", exceptions=UNDOCUMENTED))
def test_every_param_is_documented_and_its_default_is_valid(kind, name):
    spec = REGISTRY.get(kind, name).spec
    bare = [key for key, value in spec.params.items() if not isinstance(value, Param) or not value.doc.strip()]
    assert not bare, f"{kind[:-1]} {name}: params without a documented Param: {bare}"
    table = plugin_params(kind, spec)
    for key, param in table.items():
        check_param(f"{kind[:-1]} {name}", kind, name, key, param.default, table)  # a UsageError names the key
    if spec.validate is not None:
        spec.validate(defaults(table))


# ----------------------------------------------------------------------------- datasets

SMALL = {"n_train": 24, "n_val": 12, "n_test": 12}


@pytest.mark.parametrize("kind, name", specs("datasets"))
def test_every_dataset_keeps_the_data_contract_at_a_small_size(kind, name):
    spec = REGISTRY.get(kind, name).spec
    table = plugin_params(kind, spec)
    params = {k: max(v, table[k].ge or 0) for k, v in SMALL.items() if k in table}
    merged = {**defaults(table), **params}
    reason = spec.available(merged) if spec.available is not None else None
    if reason:
        pytest.skip(f"{name}: its real data is not here ({reason})")
    try:
        data = testing.check_dataset_spec(spec, params)
    except DataError as exc:  # a dataset that reads files must say so cheaply, so a study can name a fallback
        pytest.fail(f"{name}: load() raised DataError ({exc}) but its spec's available() did not say why")
    assert len(data.test) == params.get("n_test", len(data.test))


# ----------------------------------------------------------------------------- models and methods

@pytest.fixture(scope="module")
def planted():
    return testing.planted_dataset(n_train=64, n_val=16, n_test=16, size=32, channels=3)


@pytest.mark.parametrize("kind, name", specs("models"))
def test_every_model_builds_and_returns_one_logit_per_class(kind, name, planted):
    model = testing.model_from_spec(REGISTRY.get(kind, name).spec, planted)
    x = planted.test.images[:4]
    with torch.no_grad():
        logits = model.module(x)
    assert tuple(logits.shape) == (4, len(planted.class_names))
    modules = set(model.module.modules())
    assert model.target_layers and all(m in modules for m in model.target_layers.values())


def model_for(method_spec, planted):
    """The first model (small-cnn first) that provides what the method requires."""
    names = sorted(REGISTRY.names("models"), key=lambda n: n != "small-cnn")
    for name in names:
        spec = REGISTRY.get("models", name).spec
        provided = resolve_tags(spec.provides, defaults(spec.params)) | {"mask", "regions", "rgb"}
        if resolve_tags(method_spec.requires, defaults(method_spec.params)) <= provided:
            return testing.model_from_spec(spec, planted)
    pytest.fail(f"no built-in model provides what method {method_spec.name} requires")


@pytest.mark.parametrize("kind, name", specs("methods"))
def test_every_method_returns_maps_of_the_batch(kind, name, planted):
    spec = REGISTRY.get(kind, name).spec
    model = model_for(spec, planted)
    x, y = planted.test.images[:4], planted.test.labels[:4]
    maps = testing.explain_maps(spec, model, x, y)
    assert tuple(maps.shape) == (4, 32, 32) and maps.dtype == torch.float32


# ----------------------------------------------------------------------------- metrics

@pytest.fixture(scope="module")
def trained(planted):
    return testing.train_small_cnn(planted, epochs=2, width=4)


@pytest.mark.parametrize("kind, name", specs("metrics"))
def test_every_metric_scores_a_planted_batch_with_declared_values(kind, name, planted, trained):
    spec = REGISTRY.get(kind, name).spec
    saliency = REGISTRY.get("methods", "saliency").spec

    def explain(model, x, targets):
        return testing.explain_maps(saliency, model, x, targets)

    if spec.scope == "model":
        ctx = testing.metric_context(trained, planted.test, dataset=planted)
        n = None
    else:
        n = 6
        ctx = testing.metric_context(trained, planted.test, n=n, explain=explain, dataset=planted,
                                     attribution=explain(trained, planted.test.images[:n], planted.test.labels[:n]))
    out = testing.score(spec, ctx)  # validated against the declaration: an undeclared value raises
    assert out, f"metric {name} returned nothing"
    for value_name, values in out.items():
        head = value_name.split("/")[0]
        assert head in {fam.name or key if hasattr(fam, "facet") else key for key, fam in spec.values.items()}
        assert tuple(values.shape) == (() if n is None else (n,))
    if name == MODEL_FIT:
        assert {"test_accuracy", "val_accuracy", "chance"} <= set(out)


def test_a_bad_param_value_is_refused_by_the_kit():
    spec = REGISTRY.get("metrics", "aopc").spec
    with pytest.raises(UsageError):
        check_param("test", "metrics", "aopc", "fill", "grey", plugin_params("metrics", spec))
