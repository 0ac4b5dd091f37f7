"""What a result is: the one owner of the row contract.

Everything that decides what a row of the results means lives here, so fixing a row-building bug
means this module and its test:

- :data:`SCHEMA`, the Parquet columns (``store.py`` only persists tables of it);
- :func:`prepare_attribution`, the one place where a method's maps become what metrics see: reduced
  to ``(N, H, W)`` by the run's rule, with NaN/Inf zeroed and the samples that had them flagged
  (their values are reported as NaN, whatever the metric computes); :func:`finite_maps` applies the
  same rule to the maps a metric asks for again through the context (randomised models, corrupted
  inputs), so no metric handles NaN maps itself;
- :func:`metric_context`, the one factory of a :class:`~xbench.specs.MetricContext`, used by the
  runner and by :func:`xbench.testing.metric_context`, so a plugin author's test scores exactly
  the context a run scores;
- :func:`score`, which calls a metric and checks what it returned against its declaration
  (plain values and :class:`~xbench.specs.Family` members, shapes, finiteness, no complex numbers);
- :class:`RowBuilder`, the tidy rows of a unit: one per (value, sample), facets in columns of their
  own (``family``, ``facet``, ``level``), the untrained-model and baseline-method flags apart;
- the gallery record format (:class:`GalleryItem`, :func:`read_gallery`), written by the runner
  and read by the leaderboard;
- :func:`upgrade`, which reads parts written by an older schema.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .specs import Family, MetricContext, MetricSpec

RESULTS_SCHEMA = 2
"""Bumped when the columns or their meaning change; stored in every part's metadata."""

SCHEMA_KEY = b"xbench.results_schema"
ROWS_KEY = b"xbench.rows"

SCHEMA = pa.schema(
    [
        ("unit", pa.string()),
        ("dataset", pa.string()),
        ("dataset_label", pa.string()),
        ("dataset_version", pa.string()),
        ("dataset_params", pa.string()),
        ("model", pa.string()),
        ("model_label", pa.string()),
        ("model_version", pa.string()),
        ("model_params", pa.string()),
        ("model_untrained", pa.bool_()),
        ("seed", pa.int64()),
        ("method", pa.string()),
        ("method_label", pa.string()),
        ("method_version", pa.string()),
        ("method_params", pa.string()),
        ("method_baseline", pa.bool_()),
        ("metric", pa.string()),
        ("metric_label", pa.string()),
        ("metric_version", pa.string()),
        ("metric_params", pa.string()),
        ("value_name", pa.string()),
        ("family", pa.string()),
        ("facet", pa.string()),
        ("level", pa.float64()),
        ("category", pa.string()),
        ("higher_is_better", pa.bool_()),
        ("scope", pa.string()),
        ("target_mode", pa.string()),
        ("reduction", pa.string()),
        ("sample", pa.int64()),
        ("label", pa.int64()),
        ("prediction", pa.int64()),
        ("correct", pa.bool_()),
        ("target", pa.int64()),
        ("value", pa.float64()),
        ("note", pa.string()),
        ("explain_seconds", pa.float64()),
        ("explain_peak_bytes", pa.int64()),
    ]
)
"""One row per (cell, method, metric value, sample); model-level rows have null method and sample.

``model_untrained``: the model is the untrained null baseline; ``method_baseline``: the method is a
null baseline (random map, edge filter). ``family``/``facet``/``level``: the declared family of the
value and its named and numeric facets (null for plain values). ``explain_seconds`` and
``explain_peak_bytes``: what explaining cost, per sample, and the peak of the memory the method
added while explaining (torch's allocator, on a GPU or a CPU: :mod:`xbench.costs`); null on
model-level rows."""

COLUMN_DOCS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("unit",), "the unit's content hash (it names the Parquet part)"),
    (("dataset", "model", "method", "metric"), "the plugin's name (method: null on model-level rows)"),
    (("dataset_label", "model_label", "method_label", "metric_label"),
     "the variant's display name: the name and, in brackets, the params that tell variants apart"),
    (("dataset_version", "model_version", "method_version", "metric_version"), "the plugin spec's version"),
    (("dataset_params", "model_params", "method_params", "metric_params"), "every resolved param, as canonical JSON"),
    (("model_untrained",), "the model is the untrained null baseline (its param `untrained`)"),
    (("method_baseline",), "the method is a null baseline (random map, edge filter, centre)"),
    (("seed",), "the cell's seed"),
    (("value_name",), "what was measured: `tpr`, or a family member such as `rmse/contrast/3`"),
    (("family", "facet", "level"), "a family member's family, named facet and numeric facet (null for plain values)"),
    (("category",), "the metric's category (localisation, faithfulness, …)"),
    (("higher_is_better",), "the value's direction (null where it has none, e.g. counts)"),
    (("scope",), "`sample` (one row per test sample) or `model` (one row per model instance)"),
    (("target_mode", "reduction"), "the run's explained class (`label` or `predicted`) and map reduction rule"),
    (("sample", "label", "prediction", "correct", "target"),
     "the test sample's index, label, prediction, whether it is correct, and the explained class"),
    (("value",), "the number (NaN where undefined, with the reason in `note`)"),
    (("note",), "why a value is undefined (an empty mask, a NaN attribution, …)"),
    (("explain_seconds", "explain_peak_bytes"), "what explaining cost per sample, and the peak memory the method "
                                                "added (above what was allocated before it)"),
)
"""What each column means, grouped; the README's column table is :func:`columns_markdown`."""


def columns_markdown() -> str:
    """The README's table of result columns, from :data:`SCHEMA` and :data:`COLUMN_DOCS`."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for names, doc in COLUMN_DOCS:
        types = list(dict.fromkeys(str(SCHEMA.field(n).type) for n in names))
        shown = types[0] if len(types) == 1 else ", ".join(str(SCHEMA.field(n).type) for n in names)
        lines.append(f"| {', '.join(f'`{n}`' for n in names)} | {shown} | {doc} |")
    return "\n".join(lines)


ROW_COLUMNS = ("value_name", "higher_is_better", "family", "facet", "level", "value", "sample", "label", "prediction",
               "target", "correct", "note")
"""The columns :class:`RowBuilder` fills per row; every other column is the same for a unit's rows."""
DERIVED_COLUMNS = {"model_untrained": "model_params (its 'untrained' param)", "correct": "label and prediction"}
"""Columns :class:`RowBuilder` derives from others (what it derives them from)."""


MEASUREMENTS = ("explain_seconds", "explain_peak_bytes")
"""Columns that measure the run (time, memory) rather than the results: they differ between two
runs of the same config; every other column is reproducible."""

NONFINITE = "attribution contains NaN or Inf"
REEXPLAINED = "a map the metric asked the method for again (other model or inputs) contains NaN or Inf"


class MetricOutputError(ValueError):
    """A metric returned something its declaration does not allow."""


# ----------------------------------------------------------------------------- value names

def facet_text(name: Any) -> str:
    """A region, class or corruption name made safe as one ``/``-separated part of a value name."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(name)).strip("-") or "_"


def level_text(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else repr(float(level))


def value_name(family: str, facet: str | None, level: float | None) -> str:
    """``rmse/contrast/3``, ``morf/4``, ``mass/heart``: the readable name of a family member."""
    parts = [family] + ([facet] if facet is not None else []) + ([level_text(level)] if level is not None else [])
    return "/".join(parts)


@dataclass(frozen=True)
class Value:
    """One validated output of a metric: a plain value or a family member, per sample or per model."""

    name: str
    higher_is_better: bool | None
    values: Any  # torch.Tensor, float64 on the CPU: (N,) per sample, () per model
    family: str | None = None
    facet: str | None = None
    level: float | None = None


def _as_values(spec: MetricSpec, key: str, raw: Any, n: int | None):
    import torch

    if isinstance(raw, (complex, np.complexfloating)) or (isinstance(raw, torch.Tensor) and raw.is_complex()) \
            or (isinstance(raw, np.ndarray) and np.iscomplexobj(raw)):
        raise MetricOutputError(f"metric {spec.name!r} returned complex values for {key!r}; a metric value is a "
                                "real number (take .real or .abs() in the metric if that is what it means).")
    try:
        v = torch.as_tensor(raw).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise MetricOutputError(f"metric {spec.name!r} returned {type(raw).__name__} for {key!r}, which is not a "
                                f"number or a tensor of numbers ({exc}).") from None
    if n is None:
        if v.numel() != 1:
            raise MetricOutputError(f"model-level metric {spec.name!r} returned shape {tuple(v.shape)} for {key!r}; "
                                    "expected a scalar")
        return v.reshape(())
    if v.numel() != n:
        raise MetricOutputError(f"metric {spec.name!r} returned shape {tuple(v.shape)} for {key!r}; expected one value "
                                f"per sample ({n},)")
    return v.reshape(n)


def _member(spec: MetricSpec, name: str, fam: Family, key: Any) -> tuple[str | None, float | None]:
    kind = fam.kind
    try:
        if kind == "curve":
            return None, float(key)
        if kind == "categorical":
            if not isinstance(key, str):
                raise TypeError
            return facet_text(key), None
        facet, level = key
        return facet_text(facet), float(level)
    except (TypeError, ValueError):
        shape = {"curve": "a number (the level, e.g. the step k)", "categorical": "a string (e.g. a region name)",
                 "grid": "a (facet, level) pair, e.g. (\"contrast\", 3)"}[kind]
        raise MetricOutputError(f"metric {spec.name!r} returned family {name!r} (a {kind}) with the member key {key!r}; "
                                f"each key must be {shape}.") from None


def validated(spec: MetricSpec, out: Any, n: int | None) -> list[Value]:
    """Check ``out`` (what ``spec.score`` returned) against the spec's declared values: every name
    declared, every family a mapping from facet to values, one value per sample (``n``) or a scalar
    (``n is None``), real numbers. At least one value."""
    if not isinstance(out, Mapping):
        raise MetricOutputError(f"metric {spec.name!r} returned a {type(out).__name__}; score() must return a dict "
                                "of value name to per-sample values")
    values: list[Value] = []
    for name, raw in out.items():
        if name not in spec.values:
            raise MetricOutputError(f"metric {spec.name!r} returned the undeclared value {name!r}; declare it in "
                                    f"MetricSpec.values (declared: {sorted(spec.values)})")
        fam = spec.family(name)
        if fam is None:
            values.append(Value(name, spec.direction(name), _as_values(spec, name, raw, n)))
            continue
        if not isinstance(raw, Mapping):
            raise MetricOutputError(f"metric {spec.name!r} declares {name!r} as a family ({fam.kind}) but returned a "
                                    f"{type(raw).__name__}; return a dict from each member's facet to its values.")
        family = fam.name or name
        for key, member in raw.items():
            facet, level = _member(spec, name, fam, key)
            values.append(Value(value_name(family, facet, level), fam.higher_is_better,
                                _as_values(spec, f"{name}[{key!r}]", member, n), family, facet, level))
    if not values:
        raise MetricOutputError(f"metric {spec.name!r} returned no values (an empty dict): a unit with no rows "
                                "would vanish from the results. Return at least one declared value, NaN where "
                                "undefined (with ctx.flag saying why).")
    if len({v.name for v in values}) != len(values):
        raise MetricOutputError(f"metric {spec.name!r} returned two values with the same name "
                                f"({sorted(v.name for v in values)}).")
    return values


# ----------------------------------------------------------------------------- attributions

@dataclass
class Attribution:
    """A batch of a method's maps as metrics see them: ``raw`` as returned (finite), ``reduced`` to
    ``(N, H, W)`` at input resolution by ``rule`` (finite), and ``bad``, the samples whose maps had
    NaN or Inf (zeroed here; their metric values become NaN)."""

    raw: Any
    reduced: Any
    bad: Any
    rule: str


def prepare_attribution(raw, size: tuple[int, int], rule: str, method: str = "?") -> Attribution:
    import torch

    from .attribution import reduce_attribution

    reduced = reduce_attribution(raw, size, rule, method)
    bad = ~torch.isfinite(reduced).flatten(1).all(1) | ~torch.isfinite(raw.float()).flatten(1).all(1)
    if bad.any():
        reduced = torch.nan_to_num(reduced, nan=0.0, posinf=0.0, neginf=0.0)
        raw = torch.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
    return Attribution(raw=raw, reduced=reduced, bad=bad, rule=rule)


# ----------------------------------------------------------------------------- contexts

Explainer = Callable[..., Any]
"""``explainer(model, x, targets) -> raw maps``: how a context re-explains other inputs (the
runner's is the method spec with its params; a plugin author's test passes any function)."""


def metric_context(
    *,
    model,
    inputs,
    labels,
    logits,
    targets,
    target_mode: str,
    params: Mapping[str, Any],
    generator,
    predict: Callable,
    device=None,
    attribution: Attribution | None = None,
    explainer: Explainer | None = None,
    mask=None,
    regions: Mapping[str, Any] | None = None,
    dataset=None,
    method: str | None = None,
    reduction: str = "abs-luminance",
    shared: Callable | None = None,
) -> MetricContext:
    """The context a metric scores, built the same way for runs and for tests.

    ``explain(x, targets=None, model=None)`` re-explains inputs with the method: targets default
    to this batch's targets when the run explains the label (the corrupted copy of a sample keeps
    its label), and to ``x``'s own predicted class when it explains the prediction (as the runner
    has always done for corrupted inputs). ``explain_raw`` is the same before the reduction.
    """
    from .attribution import reduce_attribution

    ctx = MetricContext(
        model=model, inputs=inputs, labels=labels, logits=logits, targets=targets, params=dict(params),
        generator=generator, device=device if device is not None else inputs.device, predict=predict,
        attribution=None if attribution is None else attribution.reduced,
        raw_attribution=None if attribution is None else attribution.raw,
        mask=mask, regions=dict(regions or {}), dataset=dataset,
        method=method, reduction=reduction, undefined=None if attribution is None else attribution.bad,
        shared=shared,
    )
    if attribution is not None and attribution.bad.any():
        ctx.flag(attribution.bad, NONFINITE)
    if explainer is not None:
        trained, batch_targets = model, targets

        def explain_raw(x, targets=None, model=None):
            if targets is None:
                if target_mode == "label":
                    if len(x) != len(batch_targets):
                        raise ValueError(f"explain() got {len(x)} inputs for a batch of {len(batch_targets)}; pass "
                                         "targets= for inputs that are not this batch's samples")
                    targets = batch_targets
                else:
                    targets = predict(x).argmax(1)
            return finite_maps(ctx, explainer(model if model is not None else trained, x, targets.to(x.device)))

        def explain(x, targets=None, model=None):
            reduced = reduce_attribution(explain_raw(x, targets, model), tuple(x.shape[-2:]), reduction, method or "?")
            return finite_maps(ctx, reduced)

        ctx.explain, ctx.explain_raw = explain, explain_raw
    return ctx


def finite_maps(ctx: MetricContext, maps):
    """``maps`` that a metric asked the method for again (of a randomised model, a corrupted or
    noisy input), with NaN/Inf zeroed: the same rule as for the batch's own maps. The samples they
    belong to are flagged (:data:`REEXPLAINED`) and marked undefined, so every value of theirs is
    reported as NaN. Maps of stacked copies of the batch (``k·N`` of them) belong to sample
    ``i mod N``; maps of other inputs belong to no one sample, so then every sample is undefined."""
    import torch

    bad = ~torch.isfinite(maps).flatten(1).all(1)
    if not bad.any():
        return maps
    n = len(ctx.inputs)
    samples = bad.reshape(-1, n).any(0) if len(maps) % n == 0 else torch.ones(n, dtype=torch.bool)
    samples = samples.to(ctx.inputs.device)
    ctx.undefined = samples if ctx.undefined is None else ctx.undefined | samples
    ctx.flag(samples, REEXPLAINED)
    return torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)


def score(spec: MetricSpec, ctx: MetricContext) -> list[Value]:
    """Call ``spec.score(ctx)``, validate its output, and set every value of the samples whose
    attribution was not finite (``ctx.undefined``) to NaN. Non-finite values that the metric did not
    explain with ``ctx.flag`` get a note saying so."""
    import torch

    n = None if spec.scope == "model" else len(ctx.inputs)
    values = validated(spec, spec.score(ctx), n)
    bad = ctx.undefined
    if bad is not None and n is not None and bad.any():
        where = bad.to("cpu")
        values = [Value(v.name, v.higher_is_better, v.values.clone().masked_fill_(where, math.nan), v.family, v.facet,
                        v.level) for v in values]
    if n is not None:
        flagged = torch.zeros(n, dtype=torch.bool)
        for where, _ in ctx.notes:
            flagged |= where[:n]
        unexplained = torch.zeros(n, dtype=torch.bool)
        for v in values:
            unexplained |= ~torch.isfinite(v.values)
        unexplained &= ~flagged
        if unexplained.any():
            ctx.flag(unexplained, f"metric {spec.name} returned NaN or Inf without a reason")
    elif not ctx.notes and any(not math.isfinite(float(v.values)) for v in values):
        ctx.notes.append((torch.ones(1, dtype=torch.bool), f"metric {spec.name} returned NaN or Inf without a reason"))
    return values


def notes_per_sample(ctx: MetricContext, n: int) -> list[str | None]:
    """Each sample's reasons (``ctx.flag``), joined, or None."""
    import torch

    out: list[list[str]] = [[] for _ in range(n)]
    for where, reason in ctx.notes:
        for i in torch.nonzero(where[:n]).flatten().tolist():
            if reason not in out[i]:
                out[i].append(reason)
    return ["; ".join(r) if r else None for r in out]


# ----------------------------------------------------------------------------- rows

@dataclass(frozen=True)
class UnitIdentity:
    """What every row of a unit shares: which variants produced it, and how."""

    key: str
    cell: Any            # xbench.plan.Cell
    method: Any | None   # xbench.config.Variant, None for model-level units
    metric: Any          # xbench.config.Variant
    target_mode: str
    reduction: str
    method_baseline: bool = False


class RowBuilder:
    """Builds the tidy rows of a unit as an Arrow table of :data:`SCHEMA`.

    ``labels``, ``predictions`` and ``targets`` are the test split's (numpy, int64)."""

    def __init__(self, labels, predictions, targets):
        self.labels = np.asarray(labels)
        self.preds = np.asarray(predictions)
        self.targets = np.asarray(targets)

    @staticmethod
    def _constants(unit: UnitIdentity, spec: MetricSpec) -> dict[str, Any]:
        cell, m, metric = unit.cell, unit.method, unit.metric
        return {
            "unit": unit.key,
            "dataset": cell.dataset.name, "dataset_label": cell.dataset.label,
            "dataset_version": cell.dataset.version, "dataset_params": cell.dataset.params_json,
            "model": cell.model.name, "model_label": cell.model.label,
            "model_version": cell.model.version, "model_params": cell.model.params_json,
            "model_untrained": bool(cell.model.params.get("untrained", False)),
            "seed": cell.seed,
            "method": m.name if m else None, "method_label": m.label if m else None,
            "method_version": m.version if m else None, "method_params": m.params_json if m else None,
            "method_baseline": bool(unit.method_baseline) if m else None,
            "metric": metric.name, "metric_label": metric.label,
            "metric_version": metric.version, "metric_params": metric.params_json,
            "category": spec.category, "scope": spec.scope,
            "target_mode": unit.target_mode, "reduction": unit.reduction if m else None,
        }

    def sample_table(self, unit: UnitIdentity, spec: MetricSpec, values: Sequence[Value], n: int,
                     notes: Sequence[str | None], cost: Mapping[str, Any] | None = None) -> pa.Table:
        const = self._constants(unit, spec)
        const.update({"explain_seconds": (cost or {}).get("seconds_per_sample"),
                      "explain_peak_bytes": (cost or {}).get("added_bytes")})
        columns: dict[str, list] = defaultdict(list)
        sample = np.arange(n)
        note_array = np.asarray(list(notes), dtype=object)
        for v in values:
            for col, item in (("value_name", v.name), ("higher_is_better", v.higher_is_better), ("family", v.family),
                              ("facet", v.facet), ("level", v.level)):
                columns[col].append(np.full(n, item, dtype=object))
            columns["value"].append(v.values.numpy())
            columns["sample"].append(sample)
            columns["label"].append(self.labels[:n])
            columns["prediction"].append(self.preds[:n])
            columns["target"].append(self.targets[:n])
            columns["correct"].append(self.labels[:n] == self.preds[:n])
            columns["note"].append(note_array)
        return _table(const, columns)

    def model_table(self, unit: UnitIdentity, spec: MetricSpec, values: Sequence[Value],
                    note: str | None = None) -> pa.Table:
        const = self._constants(unit, spec)
        columns: dict[str, list] = defaultdict(list)
        for v in values:
            for col, item in (("value_name", v.name), ("higher_is_better", v.higher_is_better), ("family", v.family),
                              ("facet", v.facet), ("level", v.level), ("note", note)):
                columns[col].append(np.array([item], dtype=object))
            columns["value"].append(v.values.reshape(1).numpy())
            for col in ("sample", "label", "prediction", "target", "correct"):
                columns[col].append(np.array([None], dtype=object))
        return _table(const, columns)


def _table(const: dict[str, Any], columns: dict[str, list]) -> pa.Table:
    arrays = {k: np.concatenate(v) if v else np.array([], dtype=object) for k, v in columns.items()}
    length = len(arrays.get("value", []))
    data = {}
    for f in SCHEMA:
        if f.name in arrays:
            data[f.name] = pa.array(arrays[f.name], type=f.type, from_pandas=True)
        else:
            data[f.name] = pa.array([const.get(f.name)] * length, type=f.type)
    return pa.table(data, schema=SCHEMA)


def stamp(table: pa.Table) -> pa.Table:
    """The table with the schema version and its row count in its metadata (checked on resume)."""
    meta = dict(table.schema.metadata or {})
    meta[SCHEMA_KEY] = str(RESULTS_SCHEMA).encode()
    meta[ROWS_KEY] = str(table.num_rows).encode()
    return table.replace_schema_metadata(meta)


def schema_version(metadata: Mapping[bytes, bytes] | None) -> int:
    """The results schema a part was written with (1 before it was recorded)."""
    if not metadata or SCHEMA_KEY not in metadata:
        return 1
    return int(metadata[SCHEMA_KEY].decode())


# ----------------------------------------------------------------------------- older parts

V1_COLUMNS = [f.name for f in SCHEMA if f.name not in ("model_untrained", "method_baseline", "family", "facet",
                                                       "level", "explain_seconds", "explain_peak_bytes")]


def upgrade(table: pa.Table) -> pa.Table:
    """A part of results schema 1 in the current schema.

    Schema 1 merged both null-baseline flags into one ``baseline`` column and kept families only in
    the value names (``morf/<k>``, ``rmse/<corruption>/<severity>``, ``mass/<region>``); both are
    recovered here exactly as the leaderboard of that version read them.
    """
    frame = table.to_pandas()
    untrained = frame["model_params"].map(lambda s: bool(json.loads(s or "{}").get("untrained", False)))
    frame["model_untrained"] = untrained
    has_method = frame["method"].notna()
    frame["method_baseline"] = np.where(has_method, frame["baseline"].fillna(False).astype(bool) & ~untrained, None)
    names = [str(n) for n in frame["value_name"]]
    family, facet, level = _v1_facets(names)
    frame["family"], frame["facet"], frame["level"] = family, facet, level
    frame["explain_seconds"] = None
    frame["explain_peak_bytes"] = None
    out = pa.Table.from_pandas(frame[[f.name for f in SCHEMA]], schema=SCHEMA, preserve_index=False)
    return out


def _v1_facets(names: Sequence[str]) -> tuple[list, list, list]:
    shapes: dict[str, list[list[str]]] = {}
    for name in set(names):
        if "/" in name:
            head, *rest = name.split("/")
            shapes.setdefault(head, []).append(rest)

    def numeric(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    kinds = {}
    for fam, facets in shapes.items():
        if all(len(x) == 1 and x[0].lstrip("-").isdigit() for x in facets):
            kinds[fam] = "curve"
        elif all(len(x) == 2 and numeric(x[1]) for x in facets):
            kinds[fam] = "grid"
        elif all(len(x) == 1 for x in facets):
            kinds[fam] = "categorical"
    family, facet, level = [], [], []
    for name in names:
        head, _, rest = name.partition("/")
        kind = kinds.get(head) if rest else None
        parts = rest.split("/")
        family.append(head if kind else None)
        facet.append(parts[0] if kind in ("categorical", "grid") else None)
        level.append(float(parts[-1]) if kind in ("curve", "grid") else None)
    return family, facet, level


# ----------------------------------------------------------------------------- gallery

GALLERY_INPUTS = "inputs"


@dataclass
class GalleryItem:
    """Arrays for the leaderboard's heatmap gallery, one file ``gallery/<cell>/<name>.npz``.

    The inputs record (``name`` = ``inputs``) holds ``images`` (float16 ``(k, C, H, W)``), ``labels``,
    ``predictions`` and, where the dataset has them, ``masks``, with meta ``dataset_label``,
    ``model_label``, ``seed`` and ``class_names``. A method's record (``name`` = the method variant's
    key) holds its reduced maps ``attribution`` (float32 ``(k, H, W)``) with meta ``method_label``,
    ``reduction`` and ``baseline``."""

    cell_key: str
    name: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def gallery_inputs(cell_key: str, images, labels, predictions, masks, meta: Mapping[str, Any]) -> GalleryItem:
    arrays = {"images": np.asarray(images, dtype=np.float16), "labels": np.asarray(labels),
              "predictions": np.asarray(predictions)}
    if masks is not None:
        arrays["masks"] = np.asarray(masks, dtype=bool)
    return GalleryItem(cell_key, GALLERY_INPUTS, arrays, dict(meta))


def gallery_maps(cell_key: str, method_key: str, maps, method_label: str, reduction: str,
                 baseline: bool) -> GalleryItem:
    return GalleryItem(cell_key, method_key, {"attribution": np.asarray(maps, dtype=np.float32)},
                       {"method_label": method_label, "reduction": reduction, "baseline": bool(baseline)})


@dataclass
class GalleryCell:
    """A cell's gallery as the leaderboard reads it."""

    meta: dict[str, Any]
    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    masks: np.ndarray | None
    maps: list[tuple[str, bool, np.ndarray]]  # (method label, is a baseline, (k, H, W) maps)


def read_gallery_meta(cell_dir: Path) -> dict[str, Any] | None:
    """The inputs record's meta, or None where the cell has no readable gallery."""
    try:
        with np.load(Path(cell_dir) / f"{GALLERY_INPUTS}.npz", allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError):
        return None


def read_gallery(cell_dir: Path) -> GalleryCell | None:
    cell_dir = Path(cell_dir)
    inputs = cell_dir / f"{GALLERY_INPUTS}.npz"
    if not inputs.exists():
        return None
    with np.load(inputs, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        images = z["images"].astype(np.float32)
        labels, preds = z["labels"], z["predictions"]
        masks = z["masks"] if "masks" in z.files else None
    maps = []
    for path in sorted(cell_dir.glob("*.npz")):
        if path.name == inputs.name:
            continue
        with np.load(path, allow_pickle=False) as z:
            m = json.loads(str(z["meta"]))
            maps.append((str(m.get("method_label", path.stem)), bool(m.get("baseline")),
                         z["attribution"].astype(np.float32)))
    return GalleryCell(meta, images, labels, preds, masks, maps)
