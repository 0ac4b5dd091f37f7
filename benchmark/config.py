"""Run configuration: a TOML file (or a built-in preset), validated, resolved against the registry.

Layout::

    [run]                    # how to run: seeds, device, executor, output, target mode ...
    seeds = [0, 1]

    [datasets.synthetic-cardiac]   # a name or a glob, with params for every match
    n_train = 400

    [models."vgg16-*"]
    sweep = { degree = [1, 2, "all"] }   # one variant per combination of the listed values

    [methods."*"]            # methods and metrics default to every installed one
    [metrics."*"]

    [metrics.saliency-rmse]
    only = { methods = ["*cam*"] }       # join only these upstream variants (names, labels or globs)

An exact name takes precedence over globs; among globs the first that matches wins.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing import Annotated

from .claims import Claim, ClaimsFrom, derive_claim, parse_claims, position_key
from .errors import UsageError, XbenchError, did_you_mean
from .hashing import content_hash
from .naming import is_glob, select, select_any, stand_in_label
from .registry import Registry
from .specs import MODEL_FIT, PLUGIN_KINDS, Family, Param, defaults, param_table

RESERVED = ("sweep", "label", "only", "fallback")
CORE_MODEL_PARAMS = {"untrained": Param(False, doc="skip training: the model's null baseline (same architecture, "
                                                   "initial weights)", label=True)}
Seed = Annotated[int, Field(ge=0, lt=2**63)]


class RunOptions(BaseModel):
    """The ``[run]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("run", description="a title for the run, shown on the leaderboard")
    about: str = Field("", description="what this run tests and what it leaves to other configs, in a sentence "
                                       "or two; shown above the leaderboard's findings")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1,
                              description="one cell per dataset × model × seed; integers 0 ≤ seed < 2⁶³")
    device: str = "auto"
    executor: str = "local"
    scheduler: str = ""
    workers: int = Field(2, ge=1)
    threads: int = Field(0, ge=0, description="torch CPU threads in every cell (results depend on it); "
                                              "0 = torch's default on the driver")
    target: Literal["label", "predicted"] = "label"
    reduction: Literal["abs-luminance", "abs-sum", "abs-max", "sum", "positive-sum"] = "abs-luminance"
    batch_size: int = Field(32, ge=1)
    samples: int = Field(0, ge=0, description="explain at most this many test samples per cell; 0 = all")
    out: str = ""
    cache: str = ""
    leaderboard: bool = True
    gallery: int = Field(6, ge=0, description="test samples per cell whose images and maps are kept for figures")
    seeding: Literal["variant", "paired"] = Field(
        "variant", description="'paired': model variants that differ only in params outside their spec's "
                               "architecture start from the same weights and see the same batches")


# Every [run] option either identifies results (it is in the keys of what it changes, so re-running a
# folder with another value recomputes) or does not change them (and says why). tests/test_core_keys.py
# holds every option to one of the two and checks both claims.
KEYED_OPTIONS = {
    "seeds": "each seed is a cell of its own (the seed is in its model's key and every unit's)",
    "seeding": "how a model's initial weights and batches are seeded (in its model's key, so in its cache entry, "
               "its attributions' keys and every unit's key)",
    "target": "the explained class (in every unit's key and the attributions' keys; recorded in every row)",
    "reduction": "how maps become (N, H, W) (in every unit's key; recorded in every row)",
    "batch_size": "batch boundaries seed stochastic methods and metrics batch by batch (in every unit's key and "
                  "the attributions' keys)",
    "samples": "how many test samples are explained (in every sample-level unit's key)",
}
UNKEYED_OPTIONS = {
    "name": "a title", "about": "a description", "out": "where results go", "cache": "where the caches live",
    "leaderboard": "whether the site is built", "gallery": "how many samples the figures keep",
    "executor": "where cells run: executors give identical rows", "scheduler": "the dask scheduler's address",
    "workers": "how many local dask workers",
    "device": "changes floating-point rounding only; recorded with each cell (manifest cells.<key>.device)",
    "threads": "changes floating-point rounding only; recorded with each cell (manifest cells.<key>.threads)",
}


def keyed_options(run: RunOptions, scope: str) -> dict[str, Any]:
    """The result-changing [run] options of a unit's key that differ from their defaults (seeds and
    seeding enter through the cell's model key; target, reduction and samples of a sample-level unit
    have always been in its key). An option at its default adds nothing, so keys, and the random
    draws seeded from them, stay those of the versions before it was keyed."""
    keys = ("batch_size",) if scope == "sample" else ("target", "reduction", "batch_size")
    return {k: getattr(run, k) for k in keys if getattr(run, k) != RunOptions.model_fields[k].get_default(
        call_default_factory=True)}


class RawConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: RunOptions = Field(default_factory=RunOptions)
    # a plugin's entry is a table, or an array of tables ([[models.x]]) each making its own variants
    datasets: dict[str, dict[str, Any] | list[dict[str, Any]]]
    models: dict[str, dict[str, Any] | list[dict[str, Any]]]
    methods: dict[str, dict[str, Any] | list[dict[str, Any]]] = Field(default_factory=lambda: {"*": {}})
    metrics: dict[str, dict[str, Any] | list[dict[str, Any]]] = Field(default_factory=lambda: {"*": {}})
    claims: list[Any] = Field(default_factory=list, description="the findings this config tests ([[claims]])")
    claims_from: list[ClaimsFrom] = Field(default_factory=list, description="configs whose claims this one takes too")
    executor: dict[str, dict[str, Any]] = Field(default_factory=dict, description="executors' settings, one table "
                                                "each ([executor.slurm]: partition, time, gpus …)")


@dataclass(frozen=True)
class Variant:
    """One selected plugin with fully resolved params: a row label on the leaderboard."""

    kind: str
    name: str
    version: str
    params: Mapping[str, Any]
    label: str
    only: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Upstream kinds this variant is restricted to: ``(("datasets", ("hcp-lesions",)),)``. Not part
    of the key: a restriction chooses combinations, it never changes a result."""
    stand_in_for: str = ""
    """The label of the variant this one stands in for (a config's ``fallback``), recorded as the data's provenance."""

    def admits(self, other: Variant) -> bool:
        """Whether this variant joins a combination with ``other`` (a variant of an upstream kind)."""
        patterns = dict(self.only).get(other.kind)
        return patterns is None or any(_matches(other, p) for p in patterns)

    @property
    def key(self) -> str:
        return content_hash({"kind": self.kind, "name": self.name, "version": self.version, "params": self.params})

    @property
    def params_json(self) -> str:
        return canonical_json(self.params)


@dataclass
class Config:
    """A validated run configuration, resolved against a registry."""

    run: RunOptions
    variants: dict[str, list[Variant]]
    source: str
    raw: dict[str, Any] = field(default_factory=dict)
    claims: list[Any] = field(default_factory=list)  # xbench.claims.Claim
    notes: list[str] = field(default_factory=list)   # e.g. a dataset replaced by its stand-in
    executors: dict[str, dict[str, Any]] = field(default_factory=dict)  # [executor.<name>], checked, with defaults

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "run": self.run.model_dump(),
            "executor": self.executors,
            **{kind: [{"name": v.name, "version": v.version, "label": v.label, "params": dict(v.params),
                       **({"only": {k: list(p) for k, p in v.only}} if v.only else {}),
                       **({"stand_in_for": v.stand_in_for} if v.stand_in_for else {})}
                      for v in self.variants[kind]] for kind in PLUGIN_KINDS},
            "claims": [c.to_dict() for c in self.claims],
        }


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


PRESETS = ("quick", "callanan", "oliveira", "riotorto", "treyer", "literature", "paper")


def read_config(name_or_path: str | None) -> tuple[dict[str, Any], str]:
    """Read a TOML config from a path, or a built-in preset by name (default ``quick``)."""
    target = name_or_path or "quick"
    path = Path(target)
    if path.suffix == ".toml" or path.exists() or "/" in target or "\\" in target:
        if path.is_dir():
            raise UsageError(f"Config {str(path)!r} is a directory, not a file. Pass the path of a TOML run config "
                             f"(e.g. {str(path / 'study.toml')!r}), or the name of a built-in preset "
                             f"({', '.join(PRESETS)}).")
        if not path.is_file():
            raise UsageError(
                f"Config file {str(path)!r} does not exist. Pass the path of a TOML run config, or the name "
                f"of a built-in preset ({', '.join(PRESETS)}); `xbench run` alone runs the quick preset."
            )
        try:
            text = path.read_bytes().decode("utf-8-sig")  # a UTF-8 byte-order mark is not part of the TOML
        except UnicodeDecodeError as exc:
            raise UsageError(f"Config {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}). TOML files "
                             "must be UTF-8: re-save it as UTF-8 and run again.") from None
        except OSError as exc:
            raise UsageError(f"Cannot read config {str(path)!r}: {exc.strerror or exc}.") from None
        source = str(path)
    elif target in PRESETS:
        text = resources.files("xbench").joinpath("presets", f"{target}.toml").read_text(encoding="utf-8")
        source = f"preset:{target}"
    else:
        raise UsageError(
            f"{target!r} is neither a config file nor a preset{did_you_mean(target, PRESETS)}. "
            f"Presets: {', '.join(PRESETS)}. A config file must exist and end in .toml."
        )
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"Config {source} is not valid TOML: {exc}. Fix the syntax at that line and run again.") from None


def load_config(
    name_or_path: str | None,
    registry: Registry,
    *,
    overrides: Mapping[str, Any] | None = None,
    filters: Mapping[str, Sequence[str]] | None = None,
) -> Config:
    """Read, validate and resolve a config. ``overrides`` replace ``[run]`` keys (from the CLI);
    ``filters`` keep only plugins matching one of the given names or globs, per kind."""
    data, source = read_config(name_or_path)
    data = dict(data)
    if not isinstance(data.get("run", {}), Mapping):
        raise UsageError(f"Config {source}: [run] must be one table (`[run]`), not {type(data['run']).__name__} "
                         "(`[[run]]` makes an array of tables). Write `[run]` once, with every run option under it.")
    run = dict(data.get("run", {}))
    for key, value in (overrides or {}).items():
        if value is not None:
            run[key] = value
    data["run"] = run
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_explain_validation(exc, source)) from None
    notes: list[str] = []
    variants = {kind: _resolve_kind(kind, getattr(raw, kind), registry, source, notes) for kind in PLUGIN_KINDS}
    _check_only(variants, registry, source)
    claims = _claims(raw, source)
    _check_claims(claims, variants, registry, source)  # the whole config: a filtered run leaves claims inconclusive
    for kind, patterns in (filters or {}).items():
        if patterns:
            variants[kind] = _filter(kind, variants[kind], patterns, source)
    for kind in PLUGIN_KINDS:
        if not variants[kind]:
            raise UsageError(f"Config {source} selects no {kind}. Add a [{kind}.<name or glob>] table.")
    if raw.run.executor not in registry.entries["executors"]:
        raise UsageError(
            f"Config {source}: run.executor {raw.run.executor!r} is not an installed executor"
            f"{did_you_mean(raw.run.executor, registry.names('executors'))}. "
            f"Installed: {', '.join(registry.names('executors'))}."
        )
    executors = _executor_settings(raw.executor, raw.run.executor, registry, source)
    return Config(run=raw.run, variants=variants, source=source, raw=data, claims=claims, notes=notes,
                  executors=executors)


def _executor_settings(tables: Mapping[str, Mapping[str, Any]], chosen: str, registry: Registry,
                       source: str) -> dict[str, dict[str, Any]]:
    """Every ``[executor.<name>]`` table checked against that executor's params, before anything
    runs, and the chosen executor's settings completed with their defaults."""
    out = {}
    for name in dict.fromkeys([*tables, chosen]):
        if name not in registry.entries["executors"]:
            raise UsageError(f"Config {source}: [executor.{name}] names no installed executor"
                             f"{did_you_mean(name, registry.names('executors'))}. "
                             f"Installed: {', '.join(registry.names('executors'))}.")
        spec = registry.get("executors", name).spec
        params = param_table(spec.params)
        where = f"Config {source}: [executor.{name}]"
        fixed = {k: check_param(where, "executors", name, k, v, params) for k, v in (tables.get(name) or {}).items()}
        out[name] = {**defaults(params), **fixed}
        if spec.validate is not None:
            try:
                spec.validate(out[name])
            except (ValueError, XbenchError) as exc:
                raise UsageError(f"{where}: {exc}") from None
    return out


def _claims(raw: RawConfig, source: str) -> list[Claim]:
    """The config's own claims, then those it takes from other configs (``[[claims_from]]``)."""
    claims = parse_claims(raw.claims, source)
    for rule in raw.claims_from:
        target = rule.preset
        if target not in PRESETS and not source.startswith("preset:"):
            target = str(Path(source).parent / target)  # a path is relative to the config that names it
        data, other = read_config(target)
        if data.get("claims_from"):
            raise UsageError(f"Config {source}: claims_from {rule.preset!r} takes claims from other configs itself; "
                             "take them from where they are stated.")
        tables = [derive_claim(t, rule) if isinstance(t, Mapping) else t for t in data.get("claims") or []]
        claims += parse_claims(tables, f"{other} (taken by {source})")
    seen: dict[str, int] = {}
    for c in claims:
        seen[c.id] = seen.get(c.id, 0) + 1
    twice = sorted(k for k, n in seen.items() if n > 1)
    if twice:
        raise UsageError(f"Config {source}: claim ids {', '.join(map(repr, twice))} occur more than once (its own "
                         "claims and those of claims_from): claim ids must be unique.")
    return claims


def _check_claims(claims: list[Claim], variants: Mapping[str, list[Variant]], registry: Registry,
                  source: str) -> None:
    """Everything a claim names must exist in what the config selects, before anything runs: its
    metric and value, every dataset, model and method pattern, model and method params (keys and
    values), and the param it trends ``along``. A typo would otherwise leave the claim inconclusive
    after the whole run. Patterns select as at evaluation (:mod:`xbench.naming`)."""
    fit = [] if any(v.name == MODEL_FIT for v in variants["metrics"]) or MODEL_FIT not in registry.entries["metrics"] \
        else [Variant("metrics", MODEL_FIT, "1", {}, MODEL_FIT)]
    chosen = {**variants, "metrics": [*variants["metrics"], *fit]}
    for claim in claims:
        problems = [p for sel, prefix in ((claim, ""), (claim.a, "a."), (claim.b, "b.")) if sel is not None
                    for p in _selector_problems(sel, chosen, prefix)]
        metrics = _selected(chosen["metrics"], claim.metric)
        if not metrics:
            problems.insert(0, _unmatched("metric", claim.metric, chosen["metrics"]))
        else:
            values = {_declared(n, v) for m in metrics for n, v in registry.get("metrics", m.name).spec.values.items()}
            head = claim.value.split("/")[0]
            if not select(head, values):
                problems.append(f"value {claim.value!r} is none of the values or families of metric {claim.metric!r}"
                                f"{did_you_mean(head, values)} (it has: {', '.join(sorted(values))})")
        if claim.along and ":" in claim.along:
            kind, param = claim.along.split(":", 1)
            known = {k for v in chosen[kind + "s"] for k in v.params}
            if param not in known:
                problems.append(f"along = {claim.along!r}: no {kind} this config selects has the param {param!r}"
                                f"{did_you_mean(param, known)}")
        if problems:
            raise UsageError(f"Config {source}: claim {claim.id!r}: " + "; ".join(problems) + ". Every name in a "
                             "claim must match what the config selects (a name, a label or a glob).")


def _declared(name: str, declared: Any) -> str:
    return (declared.name or name) if isinstance(declared, Family) else name


def _selected(variants: Sequence[Variant], patterns: str | Sequence[str]) -> list[Variant]:
    texts = select_any(patterns, {t for v in variants for t in (v.name, v.label)})
    return [v for v in variants if v.name in texts or v.label in texts]


def _unmatched(what: str, pattern: str, variants: Sequence[Variant]) -> str:
    names = sorted({t for v in variants for t in (v.name, v.label)})
    return f"{what} {pattern!r} matches none this config selects{did_you_mean(pattern, names)} ({', '.join(names)})"


def _selector_problems(sel: Any, variants: Mapping[str, Sequence[Variant]], prefix: str) -> list[str]:
    """The names and params of one selector (a claim's own keys, or side ``a.`` or ``b.``) that
    match nothing."""
    out = []
    for key, kind in (("dataset", "datasets"), ("model", "models"), ("method", "methods")):
        value = getattr(sel, key)
        for p in [value] if isinstance(value, str) else list(value or []):
            if not _selected(variants[kind], p):
                out.append(_unmatched(prefix + key, p, variants[kind]))
    for key, kind in (("model_params", "models"), ("method_params", "methods")):
        for param, wanted in (getattr(sel, key) or {}).items():
            present = {position_key(v.params[param]) for v in variants[kind] if param in v.params}
            if not present:
                known = {k for v in variants[kind] for k in v.params}
                out.append(f"{prefix}{key}.{param}: no {kind[:-1]} this config selects has the param {param!r}"
                           f"{did_you_mean(param, known)}")
            elif position_key(wanted) not in present:
                out.append(f"{prefix}{key}.{param} = {wanted!r}: no {kind[:-1]} this config selects has that value"
                           f"{did_you_mean(position_key(wanted), present)} (values: {', '.join(sorted(present))})")
    return out


def _explain_validation(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            known = RunOptions.model_fields if parent == ("run",) else (RawConfig.model_fields if not parent else {})
            problems.append(f"unknown key {loc!r}{did_you_mean(str(err['loc'][-1]), known)}")
        elif err["type"] == "missing":
            problems.append(f"missing key {loc!r}")
        else:
            problems.append(f"{loc!r}: {err['msg'].lower()} (got {err.get('input')!r})")
    return (
        f"Config {source} is invalid: " + "; ".join(problems) + ". "
        "See the README's config section for every key and its type."
    )


def _resolve_kind(kind: str, table: Mapping[str, Any], registry: Registry, source: str,
                  notes: list[str] | None = None) -> list[Variant]:
    chosen: dict[str, tuple[str, Any]] = {}
    exact = [(p, e) for p, e in table.items() if not is_glob(p)]
    globs = [(p, e) for p, e in table.items() if is_glob(p)]
    for pattern, entry in exact:
        if pattern not in registry.entries[kind]:
            raise UsageError(f"Config {source}: [{kind}.{pattern}]: {registry.unknown_message(kind, pattern)}")
        chosen[pattern] = (pattern, entry)
    for pattern, entry in globs:
        matches = registry.match(kind, pattern)
        if not matches:
            raise UsageError(
                f"Config {source}: [{kind}.\"{pattern}\"] matches no installed {kind[:-1]}. "
                f"Installed {kind}: {', '.join(registry.names(kind)) or 'none'}."
            )
        for name in matches:
            chosen.setdefault(name, (pattern, entry))
    variants: list[Variant] = []
    for name in sorted(chosen):
        pattern, entries = chosen[name]
        made: dict[str, Variant] = {}
        entry_list = entries if isinstance(entries, list) else [entries]
        # params fixed to different values in the entries of an array of tables tell its variants apart
        fixed = [{k: v for k, v in e.items() if k not in RESERVED} for e in entry_list if isinstance(e, Mapping)]
        differing = {k for k in set().union(*fixed) if len({canonical_json(f.get(k)) for f in fixed}) > 1} \
            if len(fixed) > 1 else set()
        for entry in entry_list:
            for variant in _standing_in(kind, name, pattern, entry, registry, source, differing, notes):
                other = made.get(variant.label)
                if other is not None:
                    what = "the same variant twice" if other.key == variant.key else "two variants with one label"
                    raise UsageError(
                        f"Config {source}: the entries of [[{kind}.{_quote(pattern)}]] make {what} "
                        f"({variant.label!r}). Give each entry its own `label = \"...\"`, or sweep the params "
                        "that differ, so every row of the results says which variant it is.")
                made[variant.label] = variant
        variants.extend(made.values())
    return variants


def _standing_in(kind: str, name: str, pattern: str, entry: Mapping[str, Any], registry: Registry, source: str,
                 differing: Iterable[str], notes: list[str] | None) -> list[Variant]:
    """The entry's variants; where a dataset's real data is not here and the entry names a
    ``fallback = { dataset = "...", <its params> }``, the stand-in's variants instead, labelled
    as stand-ins (a study runs end to end everywhere, and never passes one dataset off as another)."""
    made = _expand(kind, name, pattern, entry, registry, source, differing)
    fallback = entry.get("fallback")
    if fallback is None:
        return made
    where = f"Config {source}: [{kind}.{_quote(pattern)}]"
    if kind != "datasets" or not isinstance(fallback, Mapping) or not isinstance(fallback.get("dataset"), str):
        raise UsageError(f"{where}: 'fallback' is for datasets only, as a table naming the stand-in and its "
                         "params, e.g. fallback = { dataset = \"hcp-lesions\", size = 64 }.")
    available = getattr(registry.get(kind, name).spec, "available", None)
    reasons = {v.label: available(v.params) for v in made} if available is not None else {}
    if not any(reasons.values()):
        return made
    other = fallback["dataset"]
    if other not in registry.entries[kind]:
        raise UsageError(f"{where}: fallback dataset: {registry.unknown_message(kind, other)}")
    params = {k: v for k, v in fallback.items() if k != "dataset"}
    out = []
    for v in made:
        if not reasons.get(v.label):
            out.append(v)
            continue
        for stand_in in _expand(kind, other, other, params, registry, source):
            label = stand_in_label(stand_in.label, v.label)
            out.append(Variant(kind, stand_in.name, stand_in.version, stand_in.params, label, v.only, v.label))
            if notes is not None:
                notes.append(f"{v.label} is not available here ({reasons[v.label]}); {stand_in.label} stands in "
                             f"for it, labelled {label!r}.")
    return out


def plugin_params(kind: str, spec: Any) -> dict[str, Param]:
    """Every param a plugin of ``kind`` takes (a model also takes the core's ``untrained``)."""
    table = param_table(getattr(spec, "params", {}) or {})
    return {**table, **CORE_MODEL_PARAMS} if kind == "models" else table


def _expand(kind: str, name: str, pattern: str, entry: Mapping[str, Any], registry: Registry, source: str,
            differing: Iterable[str] = ()) -> list[Variant]:
    """The variants of one config entry. A variant's label names the plugin and, in brackets, its
    swept params, the params that differ between the entries of an array of tables, and every
    param its spec marks ``label=True`` (what a variant *is*, e.g. the pre-training) that differs
    from the default, so that no label reads as the defaults when it is not."""
    spec_entry = registry.get(kind, name)
    table = plugin_params(kind, spec_entry.spec)
    where = f"Config {source}: [{kind}.{_quote(pattern)}]"
    sweep = entry.get("sweep", {})
    label = entry.get("label")
    if not isinstance(sweep, Mapping):
        raise UsageError(f"{where}: 'sweep' must be a table of param = [values], got {sweep!r}.")
    if label is not None and (not isinstance(label, str) or sweep or is_glob(pattern)):
        raise UsageError(f"{where}: 'label' must be a string, and only on an exact name without a sweep.")
    only = _parse_only(where, kind, entry.get("only", {}))
    fixed = {k: v for k, v in entry.items() if k not in RESERVED}
    for key, value in fixed.items():
        fixed[key] = check_param(where, kind, name, key, value, table)
    grid: list[tuple[str, list[Any]]] = []
    for key, values in sweep.items():
        if key in fixed:
            raise UsageError(f"{where}: param {key!r} is both set and swept; keep one.")
        if not isinstance(values, list) or not values:
            raise UsageError(f"{where}: sweep.{key} must be a non-empty list of values, got {values!r}.")
        grid.append((key, [check_param(where, kind, name, key, v, table) for v in values]))
    variants = []
    validate = getattr(spec_entry.spec, "validate", None)
    for combo in itertools.product(*(values for _, values in grid)) if grid else [()]:
        params = {**defaults(table), **fixed, **dict(zip([k for k, _ in grid], combo))}
        if validate is not None:
            try:
                validate(params)
            except (ValueError, XbenchError) as exc:
                raise UsageError(f"{where}: {exc}") from None
        base = defaults(table)
        shown = {k: params[k] for k, _ in grid}
        for k in table:
            if k not in shown and params.get(k) != base.get(k) and (table[k].label or k in differing):
                shown[k] = params[k]
        text = label or (name + ("[" + ",".join(f"{k}={_fmt(v)}" for k, v in shown.items()) + "]" if shown else ""))
        variants.append(Variant(kind, name, spec_entry.version, params, text, only))
    return variants


def _parse_only(where: str, kind: str, only: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    upstream = PLUGIN_KINDS[:PLUGIN_KINDS.index(kind)]
    if not isinstance(only, Mapping):
        raise UsageError(f"{where}: 'only' must be a table of kind = [names or globs], e.g. only = "
                         f"{{ {(upstream or ('datasets',))[0]} = [\"...\"] }}, got {only!r}.")
    out = []
    for key, patterns in only.items():
        if key not in upstream:
            allowed = ", ".join(upstream) if upstream else "nothing (datasets come first)"
            raise UsageError(f"{where}: only.{key} is not a kind a {kind[:-1]} can be restricted to"
                             f"{did_you_mean(key, upstream)}; {kind} can be restricted to {allowed}.")
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise UsageError(f"{where}: only.{key} must be a non-empty list of names or globs, got {patterns!r}.")
        out.append((key, tuple(patterns)))
    return tuple(out)


def _check_only(variants: Mapping[str, list[Variant]], registry: Registry, source: str) -> None:
    """Every ``only`` pattern must match a variant the config selects or an installed plugin (one
    the config leaves out for now, e.g. a dataset whose files are not here): a typo would
    silently drop combinations."""
    for kind in PLUGIN_KINDS:
        for v in variants[kind]:
            for upstream, patterns in v.only:
                installed = registry.names(upstream)
                for pattern in patterns:
                    if not any(_matches(u, pattern) for u in variants[upstream]) \
                            and not registry.match(upstream, pattern):
                        raise UsageError(
                            f"Config {source}: [{kind}.{_quote(v.name)}] only.{upstream} = {pattern!r} matches none "
                            f"of the {upstream} this config selects or that are installed"
                            f"{did_you_mean(pattern, installed)}. Installed: {', '.join(installed)}."
                        )


def _matches(variant: Variant, pattern: str) -> bool:
    """Whether ``pattern`` selects the variant by its name or label (:mod:`xbench.naming`)."""
    return bool(select(pattern, (variant.name, variant.label)))


def check_param(where: str, kind: str, name: str, key: str, value: Any, params: Mapping[str, Param]) -> Any:
    """``value`` for param ``key`` of a plugin, checked against its :class:`Param` (type, choices,
    bounds, own check); a :class:`UsageError` naming the plugin, the key, what is allowed and the
    closest allowed value otherwise."""
    if key not in params:
        known = ", ".join(sorted(params)) or "none"
        raise UsageError(
            f"{where}: {key!r} is not a parameter of {kind[:-1]} {name!r}{did_you_mean(key, params)}. "
            f"Its parameters are: {known}."
        )
    param = params[key]
    value = _typed(where, kind, name, key, value, param.default)
    problem = param_problem(param, value)
    if problem:
        doc = f" ({param.doc})" if param.doc else ""
        raise UsageError(f"{where}: param {key!r} of {kind[:-1]} {name!r}{doc} {problem}.")
    return value


def _typed(where: str, kind: str, name: str, key: str, value: Any, default: Any) -> Any:
    ok = True
    if default is None:
        pass
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int) and not isinstance(default, bool):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, list)
        if ok:
            value = _typed_items(where, kind, name, key, value, default)
    elif isinstance(default, Mapping):
        ok = isinstance(value, Mapping)
    if not ok:
        raise UsageError(
            f"{where}: param {key!r} of {kind[:-1]} {name!r} must be a {type(default).__name__} "
            f"(default {default!r}), got {value!r} ({type(value).__name__})."
        )
    return value


def _typed_items(where: str, kind: str, name: str, key: str, value: list, default: Sequence[Any]) -> list:
    """Every item of a list param has a type of the default's items (an int where floats are
    expected becomes a float, as for a scalar); a default without items leaves them unchecked."""
    kinds = {type(d) for d in default if d is not None}
    if not kinds:
        return value
    out = []
    for item in value:
        if type(item) in kinds:
            out.append(item)
        elif float in kinds and type(item) is int:
            out.append(float(item))
        else:
            allowed = " or ".join(sorted(t.__name__ for t in kinds))
            raise UsageError(
                f"{where}: param {key!r} of {kind[:-1]} {name!r} must be a list of {allowed} (default {list(default)!r}), "
                f"but the item {item!r} in {value!r} is a {type(item).__name__}. Write every item as a {allowed}, "
                f"e.g. {key} = {_fmt(list(default)[:3])}.")
    return out


def param_problem(param: Param, value: Any) -> str | None:
    """Why ``value`` (of the right type) is not allowed for ``param``, or None."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and param.min_items is not None and len(value) < param.min_items:
        return f"must list at least {param.min_items} value{'s' if param.min_items != 1 else ''}, got {value!r}"
    if param.choices is not None:
        allowed = list(param.choices)
        for item in items:
            if item not in allowed:
                shown = ", ".join(repr(c) for c in allowed)
                what = f"{item!r} in {value!r}" if isinstance(value, list) else repr(item)
                return f"must be one of {shown}; got {what}{did_you_mean(str(item), [str(c) for c in allowed])}"
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            for bound, ok, text in ((param.ge, lambda v, b: v >= b, "≥"), (param.gt, lambda v, b: v > b, ">"),
                                    (param.le, lambda v, b: v <= b, "≤")):
                if bound is not None and not ok(item, bound):
                    what = f"{item!r} in {value!r}" if isinstance(value, list) else repr(item)
                    return f"must be {text} {bound:g}; got {what}"
    if param.check is not None:
        try:
            message = param.check(value)
        except Exception as exc:  # noqa: BLE001 - a plugin's own check must not end in a traceback
            message = f"could not be checked ({type(exc).__name__}: {exc})"
        if message:
            return f"{message} (got {value!r})"
    return None


def _filter(kind: str, variants: list[Variant], patterns: Iterable[str], source: str) -> list[Variant]:
    patterns = list(patterns)
    kept = [v for v in variants if any(_matches(v, p) for p in patterns)]
    if not kept:
        names = sorted({v.name for v in variants})
        hint = did_you_mean(patterns[0], names)
        raise UsageError(
            f"The {kind} filter {', '.join(map(repr, patterns))} matches none of the {kind} that {source} "
            f"selects{hint}. Selected: {', '.join(names)}."
        )
    return kept


def _quote(pattern: str) -> str:
    return f'"{pattern}"' if is_glob(pattern) or "." in pattern else pattern


def _fmt(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
