"""The plan: datasets × models × seeds are cells; inside each, every compatible method × metric.

A combination runs only where every ``requires`` tag is provided upstream (dataset → model →
method → metric) and every variant's ``only`` restriction admits it; the rest are skipped with the
reason. Every cell also records its model's fit (the metric ``model-fit``: test and validation
accuracy against chance), whatever the config selects, so every result can be read against whether
its model learned. Planning computes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Config, Variant, keyed_options
from .hashing import content_hash
from .registry import Registry
from .specs import MODEL_FIT, defaults, resolve_tags


@dataclass(frozen=True)
class Cell:
    """One dataset variant, one model variant, one seed: the unit of scheduling."""

    dataset: Variant
    model: Variant
    seed: int
    seeding: str = "variant"  # [run] seeding: how the model's weights and batches are seeded

    @property
    def dataset_key(self) -> str:
        return content_hash({"dataset": self.dataset.key, "seed": self.seed})

    @property
    def model_key(self) -> str:
        """What the trained model is: data, model variant, seed and (when not the default) seeding."""
        paired = {"seeding": self.seeding} if self.seeding != "variant" else {}
        return content_hash({"data": self.dataset_key, "model": self.model.key, "seed": self.seed, **paired})

    @property
    def key(self) -> str:
        return self.model_key

    @property
    def title(self) -> str:
        return f"{self.dataset.label} × {self.model.label} × seed {self.seed}"


@dataclass(frozen=True)
class Unit:
    """One method × metric in one cell (method is None for model-level metrics): the unit of
    results and of resume. Its key names its Parquet part."""

    cell: Cell
    method: Variant | None
    metric: Variant
    key: str


@dataclass(frozen=True)
class Skip:
    dataset: str
    model: str
    method: str | None
    metric: str | None
    reason: str


@dataclass
class Plan:
    config: Config
    cells: list[Cell] = field(default_factory=list)
    units: dict[str, list[Unit]] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    implicit: list[Variant] = field(default_factory=list)  # variants the core adds (model-fit)

    @property
    def all_units(self) -> list[Unit]:
        return [u for cell in self.cells for u in self.units[cell.key]]


def unit_key(cell: Cell, method: Variant | None, metric: Variant, config: Config, scope: str) -> str:
    run = config.run
    identity = {"model": cell.model_key, "metric": metric.key}
    if scope == "sample":
        identity.update(method=method.key, target=run.target, reduction=run.reduction, samples=run.samples)
    identity.update(keyed_options(run, scope))
    return content_hash(identity)


def _missing(required: frozenset[str], provided: frozenset[str]) -> list[str]:
    return sorted(required - provided)


def _excluded(variant: Variant, other: Variant) -> str:
    patterns = ", ".join(dict(variant.only)[other.kind])
    return f"{variant.kind[:-1]} {variant.label} runs only on {other.kind} {patterns} (its 'only' in the config)"


def _barred(variant: Variant, *upstream: Variant) -> str | None:
    """Why ``variant``'s ``only`` excludes this combination, or None when it admits it."""
    for other in upstream:
        if not variant.admits(other):
            return _excluded(variant, other)
    return None


def model_fit_variant(config: Config, registry: Registry) -> Variant | None:
    """The ``model-fit`` variant every cell gets: the config's own, else the installed default."""
    chosen = [m for m in config.variants["metrics"] if m.name == MODEL_FIT]
    if chosen or MODEL_FIT not in registry.entries["metrics"]:
        return None
    entry = registry.get("metrics", MODEL_FIT)
    return Variant("metrics", MODEL_FIT, entry.version, defaults(entry.spec.params), MODEL_FIT)


def make_plan(config: Config, registry: Registry) -> Plan:
    plan = Plan(config)
    v = dict(config.variants)
    fit = model_fit_variant(config, registry)
    if fit is not None:
        v["metrics"] = [*v["metrics"], fit]
        plan.implicit.append(fit)
    for ds in v["datasets"]:
        ds_tags = resolve_tags(registry.get("datasets", ds.name).spec.provides, ds.params)
        for model in v["models"]:
            barred = _barred(model, ds)
            if barred:
                plan.skipped.append(Skip(ds.label, model.label, None, None, barred))
                continue
            mspec = registry.get("models", model.name).spec
            lacking = _missing(resolve_tags(mspec.requires, model.params), ds_tags)
            if lacking:
                plan.skipped.append(Skip(ds.label, model.label, None, None,
                                         f"model needs {', '.join(lacking)}, which dataset {ds.label} does not provide"))
                continue
            upstream = ds_tags | resolve_tags(mspec.provides, model.params)
            pairs: list[tuple[Variant | None, Variant, str]] = []
            for metric in v["metrics"]:
                sspec = registry.get("metrics", metric.name).spec
                if sspec.scope != "model":
                    continue
                barred = _barred(metric, ds, model)
                if barred:
                    plan.skipped.append(Skip(ds.label, model.label, None, metric.label, barred))
                    continue
                lacking = _missing(resolve_tags(sspec.requires, metric.params), upstream)
                if lacking:
                    plan.skipped.append(Skip(ds.label, model.label, None, metric.label,
                                             f"metric needs {', '.join(lacking)}, not provided by the dataset or model"))
                else:
                    pairs.append((None, metric, "model"))
            for method in v["methods"]:
                espec = registry.get("methods", method.name).spec
                barred = _barred(method, ds, model)
                if barred:
                    plan.skipped.append(Skip(ds.label, model.label, method.label, None, barred))
                    continue
                lacking = _missing(resolve_tags(espec.requires, method.params), upstream)
                if lacking:
                    plan.skipped.append(Skip(ds.label, model.label, method.label, None,
                                             f"method needs {', '.join(lacking)}, which model {model.label} "
                                             f"and dataset {ds.label} do not provide"))
                    continue
                provided = upstream | resolve_tags(espec.provides, method.params)
                for metric in v["metrics"]:
                    sspec = registry.get("metrics", metric.name).spec
                    if sspec.scope == "model":
                        continue
                    barred = _barred(metric, ds, model, method)
                    if barred:
                        plan.skipped.append(Skip(ds.label, model.label, method.label, metric.label, barred))
                        continue
                    lacking = _missing(resolve_tags(sspec.requires, metric.params), provided)
                    if lacking:
                        plan.skipped.append(Skip(ds.label, model.label, method.label, metric.label,
                                                 f"metric needs {', '.join(lacking)}, not provided upstream"))
                    else:
                        pairs.append((method, metric, "sample"))
            if not pairs:
                continue
            for seed in config.run.seeds:
                cell = Cell(ds, model, seed, config.run.seeding)
                plan.cells.append(cell)
                plan.units[cell.key] = [
                    Unit(cell, method, metric, unit_key(cell, method, metric, config, scope))
                    for method, metric, scope in pairs
                ]
    # dataset, then seed, then model: a dataset's data depends on the seed, and a worker keeps the
    # last dataset it loaded, so this order loads each (dataset, seed) once instead of once per cell
    datasets = {label: i for i, label in enumerate(dict.fromkeys(c.dataset.label for c in plan.cells))}
    seeds = {seed: i for i, seed in enumerate(config.run.seeds)}
    plan.cells.sort(key=lambda c: (datasets[c.dataset.label], seeds[c.seed]))
    return plan
