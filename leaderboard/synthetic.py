"""Run directories of synthetic results, without running a model, in the real row contract.

Why: the leaderboard must be testable with numbers known in advance, and its speed must be
measurable on runs far larger than a laptop can compute (millions of rows). Every row is built by
:class:`xbench.results.RowBuilder` from the objects a run builds it from (``Variant``, ``Cell``,
``UnitIdentity``, ``Value``), so a synthetic run can never drift from what the core writes: the
null-baseline flags, the family columns and the cost columns come out exactly as in a real run.

``table`` builds one unit's rows from column values; ``write_run`` writes units and a manifest;
``random_run`` writes a large, realistic run (fine-tune degrees and pre-training, a null-baseline
method and an untrained model, MoRF curves, RMSE and ΔAUC families, classification rows, costs and
a gallery) whose numbers follow a known structure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import Variant
from ..hashing import content_hash
from ..plan import Cell
from ..results import (DERIVED_COLUMNS, ROW_COLUMNS, SCHEMA, RowBuilder, UnitIdentity, Value, gallery_inputs,
                       gallery_maps, value_name)
from ..specs import Family, MetricSpec
from ..store import RunStore

KINDS = {"dataset": "datasets", "model": "models", "method": "methods", "metric": "metrics"}
PER_ROW = set(ROW_COLUMNS) - set(DERIVED_COLUMNS)
IDENTITY = set(SCHEMA.names) - set(ROW_COLUMNS) - set(DERIVED_COLUMNS)


def _not_scored(ctx):  # pragma: no cover - synthetic metrics are never scored
    raise RuntimeError("a synthetic metric has no score function")


def _params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return dict(json.loads(value)) if isinstance(value, str) else dict(value)


def variant(kind: str, columns: Mapping[str, Any]) -> Variant | None:
    """The ``Variant`` of ``kind`` (dataset, model, method, metric) that the columns name: its label
    (required), name (default: the label), version (default "1") and params (JSON text or a dict)."""
    label = columns.get(f"{kind}_label", columns.get(kind))
    if label is None:
        return None
    return Variant(KINDS[kind], str(columns.get(kind, label)), str(columns.get(f"{kind}_version", "1")),
                   _params(columns.get(f"{kind}_params")), str(label))


def _array(value: Any, n: int, dtype=object) -> np.ndarray:
    if isinstance(value, (np.ndarray, list, tuple, pa.Array)):
        arr = np.asarray(value, dtype=dtype)
        if arr.shape != (n,):
            raise ValueError(f"a per-row column has {arr.shape[0] if arr.ndim else 1} values for {n} rows")
        return arr
    return np.full(n, value, dtype=dtype)


def _spec(name: str, category: str, scope: str, values: Sequence[Value]) -> MetricSpec:
    declared: dict[str, Any] = {}
    for v in values:
        if v.family is None:
            declared[v.name] = v.higher_is_better
        else:
            declared[v.family] = Family(v.higher_is_better, facet="facet" if v.facet is not None else None,
                                        level="level" if v.level is not None else None)
    return MetricSpec(name=name, score=_not_scored, values=declared, category=category, scope=scope)


def table(columns: Mapping[str, Any], length: int | None = None) -> pa.Table:
    """The rows of one unit, built by ``RowBuilder``.

    Identity (scalars): ``dataset_label``, ``model_label``, ``metric_label`` (required), their
    names, versions and params (``model_params`` as JSON text or a dict: ``untrained`` there makes
    the model an untrained one, as in a run), ``seed``, ``method_label`` (none for a model-level
    unit), ``method_baseline``, ``category``, ``scope``, ``target_mode``, ``reduction``, ``unit``
    (default: a hash of the identity), ``explain_seconds`` and ``explain_peak_bytes``.

    Per row (scalars are broadcast): ``value``, ``value_name`` or a family member's ``family``,
    ``facet`` and ``level`` (the name then follows as in a run, ``rmse/contrast/3``),
    ``higher_is_better``, and for per-sample units ``sample`` (each value's samples must be 0..n-1,
    as RowBuilder numbers them), ``label``, ``prediction``, ``target`` and ``note``. Columns that a
    run derives (``model_untrained``, ``correct``) or that do not exist are an error.
    """
    unknown = set(columns) - IDENTITY - PER_ROW
    if unknown:
        hints = "; ".join(f"{k} follows from {DERIVED_COLUMNS[k]}" for k in sorted(unknown) if k in DERIVED_COLUMNS)
        raise ValueError(f"synthetic.table: unknown or derived columns {sorted(unknown)}"
                         + (f" ({hints})" if hints else "") + f"; known: {sorted(IDENTITY | PER_ROW)}")
    arrays = [v for k, v in columns.items() if k in PER_ROW and isinstance(v, (np.ndarray, list, tuple, pa.Array))]
    n = length if length is not None else max((len(v) for v in arrays), default=1)
    dataset, model, metric = (variant(k, columns) for k in ("dataset", "model", "metric"))
    if dataset is None or model is None or metric is None:
        raise ValueError("synthetic.table needs dataset_label, model_label and metric_label")
    method = variant("method", columns)
    scope = str(columns.get("scope", "sample"))
    category = str(columns.get("category", "classification" if scope == "model" else "localisation"))
    cell = Cell(dataset, model, int(columns.get("seed", 0)))

    family = _array(columns.get("family"), n)
    facet = _array(columns.get("facet"), n)
    level = _array(columns.get("level"), n)
    given = _array(columns.get("value_name"), n)
    names = np.array([value_name(f, c, None if lv is None or lv != lv else float(lv)) if f is not None else g
                      for f, c, lv, g in zip(family, facet, level, given)], dtype=object)
    clash = [(g, m) for g, m, f in zip(given, names, family) if f is not None and g is not None and g != m]
    if clash:
        raise ValueError(f"value_name {clash[0][0]!r} is not the name of its family member ({clash[0][1]!r})")
    if any(m is None for m in names):
        raise ValueError("every row needs a value_name or a family")
    hib = _array(columns.get("higher_is_better"), n)
    value = _array(columns.get("value"), n, float)

    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(str(name), []).append(i)

    def direction(i: int):
        h = hib[i]
        return None if h is None or (isinstance(h, float) and h != h) else bool(h)

    def lv(i: int):
        x = level[i]
        return None if x is None or (isinstance(x, float) and x != x) else float(x)

    import torch

    values = [Value(name, direction(idx[0]), torch.from_numpy(value[idx].copy()), family[idx[0]], facet[idx[0]],
                    lv(idx[0])) for name, idx in groups.items()]
    spec = _spec(metric.name, category, scope, values)
    key = columns.get("unit") or content_hash([cell.key, method.key if method else None, metric.key,
                                               sorted(groups)])
    identity = UnitIdentity(str(key), cell, method, metric, str(columns.get("target_mode", "label")),
                            str(columns.get("reduction", "abs-luminance")),
                            bool(columns.get("method_baseline", False)))
    if scope == "model":
        notes = {x for x in _array(columns.get("note"), n) if x is not None}
        if len(notes) > 1:
            raise ValueError("a model-level unit has one note")
        empty = np.zeros(0, np.int64)
        return RowBuilder(empty, empty, empty).model_table(identity, spec, values, next(iter(notes), None))
    first = groups[str(names[0])]
    k = len(first)
    sample = _array(columns["sample"], n) if "sample" in columns else None
    for name, idx in groups.items():
        if len(idx) != k or (sample is not None and [int(x) for x in sample[idx]] != list(range(k))):
            got = list(sample[idx]) if sample is not None else f"{len(idx)} rows"
            raise ValueError(f"value {name!r}: samples {got}; RowBuilder numbers each value's samples 0..{k - 1}")

    def per_sample(column: str, default: np.ndarray) -> np.ndarray:
        return _array(columns[column], n).astype(np.int64)[first] if column in columns else default.copy()

    labels = per_sample("label", np.zeros(k, np.int64))
    predictions, targets = per_sample("prediction", labels), per_sample("target", labels)
    notes = list(_array(columns.get("note"), n)[first])
    cost = {"seconds_per_sample": columns.get("explain_seconds"), "added_bytes": columns.get("explain_peak_bytes")}
    return RowBuilder(labels, predictions, targets).sample_table(identity, spec, values, k, notes, cost)


def write_run(run_dir: str | Path, tables: Iterable[pa.Table], manifest: Mapping[str, Any] | None = None) -> Path:
    """Write each table as one part (named by its ``unit`` column) and a manifest whose ``units``
    lists them. Two tables of one unit are an error (one would overwrite the other)."""
    store = RunStore(run_dir)
    store.prepare()
    units: list[str] = []
    for t in tables:
        unit = t.column("unit")[0].as_py()
        if unit in units:
            raise ValueError(f"two tables of unit {unit!r}: give them different identities or unit keys")
        store.write_part(unit, t)
        units.append(unit)
    info = {"xbench_version": "synthetic", "started": "2025-01-01T00:00:00+00:00",
            "finished": "2025-01-01T00:10:00+00:00", "config": {"source": "synthetic", "run": {"name": "synthetic"}},
            "versions": {"torch": "none"}, "plugins": [], "device": {"device": "cpu"},
            "git": {"xbench": "0" * 40}, "status": "complete"}
    info.update(manifest or {})
    info["units"] = units
    info.setdefault("counts", {"planned": len(units), "already_done": 0, "computed": len(units), "failed": 0,
                               "missing": 0, "skipped_combinations": 0})
    store.write_manifest(info)
    return Path(run_dir)


FAMILIES = {
    "aopc": {"morf": {"kind": "curve", "facet": None, "level": "step", "higher_is_better": False}},
    "saliency-rmse": {"rmse": {"kind": "grid", "facet": "corruption", "level": "severity",
                               "higher_is_better": False}},
    "classification": {"delta_auc": {"kind": "grid", "facet": "corruption", "level": "severity",
                                     "higher_is_better": False}},
}
"""The families ``random_run`` writes, as a run's manifest declares them (``specs.metrics``)."""


def random_run(
    run_dir: str | Path,
    *,
    datasets: Sequence[str] = ("lesions",),
    degrees: Sequence[Any] = (1, 2, "all"),
    pretrain: Sequence[str] = ("imagenet", "mri"),
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = ("saliency", "integrated-gradients", "grad-cam"),
    layers: Sequence[str] = ("layer3", "layer4"),
    samples: int = 64,
    morf_steps: int = 8,
    corruptions: Sequence[str] = ("gaussian_noise", "contrast"),
    severities: Sequence[int] = (1, 2, 3),
    gallery: int = 3,
    size: int = 16,
    seed: int = 0,
) -> Path:
    """A realistic run with a known structure: a method's localisation score grows with its index
    and the fine-tune degree, MRI pre-training adds 0.05, the ``random`` baseline and the untrained
    model sit near chance; explaining costs grow with the method's index; every cell has its
    ``model-fit`` accuracy and chance (what a study's accuracy floor reads). Rows ≈ datasets ×
    (models+1) × seeds × (methods + CAM layers + 1) × samples × (4 + morf_steps + 1 + corruptions ×
    severities)."""
    import torch

    rng = np.random.default_rng(seed)
    models = [("vgg16", {"degree": d, "pretrain": p, "untrained": False}) for p in pretrain for d in degrees]
    models.append(("vgg16", {"degree": degrees[-1], "pretrain": pretrain[0], "untrained": True}))
    variants = []  # (method variant, baseline, strength, seconds per sample)
    for i, name in enumerate(methods):
        if name in ("grad-cam", "gradcampp", "hirescam"):
            for j, layer in enumerate(layers):
                variants.append((Variant("methods", name, "1", {"layer": layer}, f"{name}[layer={layer}]"), False,
                                 0.1 + 0.1 * i + 0.05 * j, 0.002 * (i + 1)))
        else:
            variants.append((Variant("methods", name, "1", {}, name), False, 0.1 + 0.1 * i, 0.002 * (i + 1)))
    variants.append((Variant("methods", "random", "1", {}, "random"), True, 0.0, 0.0001))
    metric = {name: Variant("metrics", name, "1", {}, label) for name, label in (
        ("tpr-tnr", "tpr-tnr"), ("aopc", "aopc[patch=8,perturbation=black]"), ("saliency-rmse", "saliency-rmse"),
        ("classification", "classification"), ("model-fit", "model-fit"))}
    specs = {
        "tpr-tnr": MetricSpec("tpr-tnr", _not_scored, {"tpr": True, "tnr": True, "pompom": False, "tp": None},
                              "localisation"),
        "aopc": MetricSpec("aopc", _not_scored, {"morf": Family(False, level="step")}, "faithfulness"),
        "saliency-rmse": MetricSpec("saliency-rmse", _not_scored,
                                    {"rmse": Family(False, facet="corruption", level="severity")}, "robustness"),
        "classification": MetricSpec("classification", _not_scored,
                                     {"accuracy": True, "auroc": True,
                                      "delta_auc": Family(False, facet="corruption", level="severity")},
                                     "classification", scope="model"),
        "model-fit": MetricSpec("model-fit", _not_scored, {"test_accuracy": True, "val_accuracy": True, "chance": None},
                                "classification", scope="model"),
    }

    def values(pairs) -> list[Value]:
        return [Value(name, hib, torch.from_numpy(np.asarray(v, dtype=np.float64)), fam, facet, level)
                for name, hib, v, fam, facet, level in pairs]

    tables = []
    for dataset_name in datasets:
        dataset = Variant("datasets", dataset_name, "1", {}, dataset_name)
        for m_name, m_params in models:
            shown = {k: v for k, v in m_params.items() if k != "untrained"} if not m_params["untrained"] else \
                {"untrained": "true"}
            m_label = f"{m_name}[" + ",".join(f"{k}={v}" for k, v in shown.items()) + "]"
            model = Variant("models", m_name, "1", m_params, m_label)
            degree_rank = list(degrees).index(m_params["degree"]) / max(len(degrees) - 1, 1)
            model_effect = 0.0 if m_params["untrained"] else 0.2 * degree_rank + (0.05 if m_params["pretrain"] == "mri" else 0.0)
            for s in seeds:
                cell = Cell(dataset, model, s)
                labels = rng.integers(0, 2, samples)
                acc = 0.5 if m_params["untrained"] else 0.75 + 0.2 * degree_rank
                preds = np.where(rng.random(samples) < acc, labels, 1 - labels)
                rows = RowBuilder(labels, preds, labels)
                accuracy = float((labels == preds).mean())
                model_values = [("accuracy", True, accuracy, None, None, None),
                                ("auroc", True, min(1.0, accuracy + 0.05), None, None, None)]
                for c in corruptions:
                    for sev in severities:
                        model_values.append((value_name("delta_auc", c, sev), False,
                                             0.02 * sev * (2 if c == "contrast" else 1) + rng.normal(0, 0.005),
                                             "delta_auc", c, float(sev)))
                unit = UnitIdentity(content_hash([cell.key, "classification"]), cell, None, metric["classification"],
                                    "label", "abs-luminance")
                tables.append(rows.model_table(unit, specs["classification"], values(model_values)))
                chance = float(max(labels.mean(), 1 - labels.mean()))
                fit = [("test_accuracy", True, accuracy, None, None, None), ("val_accuracy", True, accuracy, None, None,
                                                                            None), ("chance", None, chance, None, None, None)]
                unit = UnitIdentity(content_hash([cell.key, "model-fit"]), cell, None, metric["model-fit"], "label",
                                    "abs-luminance")
                tables.append(rows.model_table(unit, specs["model-fit"], values(fit)))
                seed_effect = rng.normal(0, 0.02)
                for method, v_base, strength, seconds in variants:
                    quality = 0.0 if (v_base or m_params["untrained"]) else strength + model_effect
                    cost = {"seconds_per_sample": seconds * (1 + 0.1 * s), "added_bytes": int(2**20 * (1 + 10 * seconds))}

                    def unit_rows(name: str, pairs) -> pa.Table:
                        identity = UnitIdentity(content_hash([cell.key, method.key, name]), cell, method, metric[name],
                                                "label", "abs-luminance", v_base)
                        return rows.sample_table(identity, specs[name], values(pairs), samples, [None] * samples,
                                                 cost)

                    tpr = np.clip(0.15 + quality + seed_effect + rng.normal(0, 0.08, samples), 0, 1)
                    loc = [("tpr", True, tpr),
                           ("tnr", True, np.clip(0.8 + 0.3 * quality + rng.normal(0, 0.05, samples), 0, 1)),
                           ("pompom", False, np.clip(0.6 - quality + rng.normal(0, 0.05, samples), 0, 1)),
                           ("tp", None, np.round(tpr * 100))]
                    tables.append(unit_rows("tpr-tnr", [(n, h, v, None, None, None) for n, h, v in loc]))
                    start = 0.9 + rng.normal(0, 0.02, samples)
                    steps = np.arange(morf_steps + 1)
                    decay = np.exp(-np.outer(1 + 3 * quality + rng.normal(0, 0.1, samples).clip(-0.9), steps) / morf_steps * 3)
                    curve = (start[:, None] * decay).clip(0, 1)
                    tables.append(unit_rows("aopc", [(value_name("morf", None, k), False, curve[:, k], "morf", None,
                                                      float(k)) for k in steps]))
                    layer_depth = layers.index(method.params["layer"]) if "layer" in method.params else 0
                    rmse = []
                    for c in corruptions:
                        for sev in severities:
                            base = 10 + 4 * sev * (2 if c == "contrast" else 1) + 5 * layer_depth
                            rmse.append((value_name("rmse", c, sev), False, np.abs(base + rng.normal(0, 3, samples)),
                                         "rmse", c, float(sev)))
                    tables.append(unit_rows("saliency-rmse", rmse))
                if gallery:
                    _gallery(run_dir, cell, [v[0] for v in variants], [v[1] for v in variants], gallery, size, rng)
    manifest_specs = {"metrics": [{"name": name, "version": "1", "plugin": "synthetic",
                                   **({"families": FAMILIES[name]} if name in FAMILIES else {})} for name in specs]}
    return write_run(run_dir, tables, {"config": {"source": "synthetic", "run": {"name": "synthetic",
                                                                                 "seeds": list(seeds)}},
                                       "specs": manifest_specs})


def _gallery(run_dir, cell: Cell, methods: Sequence[Variant], baselines: Sequence[bool], k, size, rng) -> None:
    store = RunStore(run_dir)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((k, size, size), bool)
    images = rng.random((k, 1, size, size)) * 0.3
    for i in range(k):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2
        images[i, 0][masks[i]] += 0.6
    labels = rng.integers(0, 2, k)
    items = [gallery_inputs(cell.key, images, labels, labels, masks,
                            {"dataset_label": cell.dataset.label, "model_label": cell.model.label, "seed": cell.seed,
                             "class_names": ["round", "not-round"]})]
    for j, (method, baseline) in enumerate(zip(methods, baselines)):
        blur = masks.astype(float) * (j + 1) / len(methods) + rng.random((k, size, size)) * 0.5
        items.append(gallery_maps(cell.key, method.key, blur, method.label, "abs-luminance", baseline))
    for item in items:
        store.write_gallery(item.cell_key, item.name, item.arrays, item.meta)


__all__ = ["table", "write_run", "random_run", "variant"]
