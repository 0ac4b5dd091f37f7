"""Run directories of synthetic results, in the store's schema, without running a model.

Why: the leaderboard must be testable with numbers known in advance, and its speed must be
measurable on runs far larger than a laptop can compute (millions of rows). ``write_run`` writes
rows you give it; ``random_run`` writes a large, realistic run (fine-tune degrees and pre-training,
a null-baseline method and an untrained model, MoRF curves, RMSE and ΔAUC families, classification
rows and a gallery) whose numbers follow a known structure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..hashing import content_hash
from ..results import SCHEMA
from ..store import RunStore

DEFAULTS: dict[str, Any] = {
    "dataset_version": "1", "model_version": "1", "method_version": "1", "metric_version": "1",
    "dataset_params": "{}", "metric_params": "{}", "scope": "sample", "baseline": False,
    "target_mode": "label", "reduction": "abs-luminance", "category": "localisation",
}


def table(columns: Mapping[str, Any], length: int | None = None) -> pa.Table:
    """An Arrow table in the store's schema: given columns (scalars broadcast, arrays as they are),
    names derived from labels where missing, everything else null or the defaults above."""
    n = length if length is not None else max((len(v) for v in columns.values() if _is_array(v)), default=1)
    cols = dict(columns)
    for kind in ("dataset", "model", "method", "metric"):
        if f"{kind}_label" in cols and kind not in cols:
            cols[kind] = cols[f"{kind}_label"]
    if cols.get("scope") == "model":
        cols.setdefault("reduction", None)
    data = {}
    for f in SCHEMA:
        value = cols.get(f.name, DEFAULTS.get(f.name))
        if f.name == "method_params" and "method_params" not in cols and cols.get("method") is not None:
            value = "{}"
        if f.name == "model_params" and value is None:
            value = "{}"
        if _is_array(value):
            arr = np.asarray(value)
            if arr.dtype.kind in "US":
                arr = arr.astype(object)
            data[f.name] = pa.array(arr, type=f.type, from_pandas=True)
        else:
            data[f.name] = pa.array([value] * n, type=f.type)
    if "correct" not in cols and "label" in cols and "prediction" in cols:
        data["correct"] = pa.array(np.asarray(cols["label"]) == np.asarray(cols["prediction"]))
    return pa.table(data, schema=SCHEMA)


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, list, tuple, pa.Array))


def write_run(run_dir: str | Path, tables: Iterable[pa.Table], manifest: Mapping[str, Any] | None = None) -> Path:
    """Write each table as one part (its ``unit`` column names it; filled in when missing) and a
    manifest whose ``units`` lists them."""
    store = RunStore(run_dir)
    store.prepare()
    units = []
    for i, t in enumerate(tables):
        unit = t.column("unit")[0].as_py() if t.num_rows and t.column("unit")[0].is_valid else f"part{i:05d}"
        t = t.set_column(0, "unit", pa.array([unit] * t.num_rows, pa.string()))
        store.write_part(unit, t)
        units.append(unit)
    info = {"xbench_version": "synthetic", "started": "2025-01-01T00:00:00+00:00",
            "finished": "2025-01-01T00:10:00+00:00", "config": {"source": "synthetic", "run": {"name": "synthetic"}},
            "versions": {"torch": "none"}, "plugins": [], "device": {"device": "cpu"},
            "git": {"xbench": "0" * 40}, "status": "complete"}
    info.update(manifest or {})
    info["units"] = units
    store.write_manifest(info)
    return Path(run_dir)


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
    model sit near chance. Rows ≈ datasets × (models+1) × seeds × (methods + CAM layers + 1) ×
    samples × (4 + morf_steps + 1 + corruptions × severities)."""
    rng = np.random.default_rng(seed)
    models = [(f"vgg16[degree={d},pretrain={p}]", {"degree": d, "pretrain": p, "untrained": False})
              for p in pretrain for d in degrees]
    models.append(("vgg16[untrained=true]", {"degree": degrees[-1], "pretrain": pretrain[0], "untrained": True}))
    variants = []  # (label, name, params, baseline, strength)
    for i, name in enumerate(methods):
        if name in ("grad-cam", "gradcampp", "hirescam"):
            for j, layer in enumerate(layers):
                variants.append((f"{name}[layer={layer}]", name, {"layer": layer}, False, 0.1 + 0.1 * i + 0.05 * j))
        else:
            variants.append((name, name, {}, False, 0.1 + 0.1 * i))
    variants.append(("random", "random", {}, True, 0.0))
    tables = []
    idx = np.arange(samples)
    for dataset in datasets:
        for m_label, m_params in models:
            degree_rank = list(degrees).index(m_params["degree"]) / max(len(degrees) - 1, 1)
            model_effect = 0.0 if m_params["untrained"] else 0.2 * degree_rank + (0.05 if m_params["pretrain"] == "mri" else 0.0)
            for s in seeds:
                labels = rng.integers(0, 2, samples)
                acc = 0.5 if m_params["untrained"] else 0.75 + 0.2 * degree_rank
                preds = np.where(rng.random(samples) < acc, labels, 1 - labels)
                cell = dict(dataset_label=dataset, model_label=m_label, model="vgg16", seed=s,
                            model_params=json.dumps(m_params, sort_keys=True, separators=(",", ":")))
                accuracy = float((labels == preds).mean())
                model_values = {"accuracy": accuracy, "auroc": min(1.0, accuracy + 0.05)}
                for c in corruptions:
                    for sev in severities:
                        model_values[f"delta_auc/{c}/{sev}"] = 0.02 * sev * (2 if c == "contrast" else 1) + rng.normal(0, 0.005)
                names = list(model_values)
                tables.append(table({**cell, "unit": content_hash([cell, "classification"]), "scope": "model",
                                     "metric_label": "classification", "category": "classification",
                                     "value_name": names, "value": [model_values[n] for n in names],
                                     "higher_is_better": [not n.startswith("delta") if "/" in n else True for n in names],
                                     "baseline": bool(m_params["untrained"])}, len(names)))
                seed_effect = rng.normal(0, 0.02)
                for v_label, v_name, v_params, v_base, strength in variants:
                    quality = 0.0 if (v_base or m_params["untrained"]) else strength + model_effect
                    common = {**cell, "method_label": v_label, "method": v_name,
                              "method_params": json.dumps(v_params, sort_keys=True, separators=(",", ":")),
                              "baseline": bool(v_base or m_params["untrained"]), "sample": idx, "label": labels,
                              "prediction": preds, "target": labels}
                    tpr = np.clip(0.15 + quality + seed_effect + rng.normal(0, 0.08, samples), 0, 1)
                    loc_names = ["tpr", "tnr", "pompom", "tp"]
                    loc = [tpr, np.clip(0.8 + 0.3 * quality + rng.normal(0, 0.05, samples), 0, 1),
                           np.clip(0.6 - quality + rng.normal(0, 0.05, samples), 0, 1), np.round(tpr * 100)]
                    hib = [True, True, False, None]
                    tables.append(_long(common, "tpr-tnr", "localisation", loc_names, loc, hib, samples))
                    start = 0.9 + rng.normal(0, 0.02, samples)
                    steps = np.arange(morf_steps + 1)
                    decay = np.exp(-np.outer(1 + 3 * quality + rng.normal(0, 0.1, samples).clip(-0.9), steps) / morf_steps * 3)
                    curve = (start[:, None] * decay).clip(0, 1)
                    tables.append(_long(common, "aopc[patch=8,perturbation=black]", "faithfulness",
                                        [f"morf/{k}" for k in steps], list(curve.T), [False] * len(steps), samples))
                    rmse_names, rmse_vals = [], []
                    layer_depth = layers.index(v_params["layer"]) if "layer" in v_params else 0
                    for c in corruptions:
                        for sev in severities:
                            rmse_names.append(f"rmse/{c}/{sev}")
                            base = 10 + 4 * sev * (2 if c == "contrast" else 1) + 5 * layer_depth
                            rmse_vals.append(np.abs(base + rng.normal(0, 3, samples)))
                    tables.append(_long(common, "saliency-rmse", "robustness", rmse_names, rmse_vals,
                                        [False] * len(rmse_names), samples))
                if gallery:
                    _gallery(run_dir, cell, dataset, m_label, s, [v[0] for v in variants], gallery, size, rng)
    return write_run(run_dir, tables, {"config": {"source": "synthetic", "run": {"name": "synthetic", "seeds": list(seeds)}}})


def _long(common: dict, metric: str, category: str, names: list[str], values: list[np.ndarray],
          directions: list[bool | None], n: int) -> pa.Table:
    k = len(names)
    cols = {key: (np.tile(v, k) if isinstance(v, np.ndarray) else v) for key, v in common.items()}
    cols.update(metric_label=metric, category=category, value_name=np.repeat(np.array(names, dtype=object), n),
                value=np.concatenate(values).astype(float),
                higher_is_better=np.repeat(np.array(directions, dtype=object), n),
                unit=content_hash([{k: v for k, v in common.items() if not isinstance(v, np.ndarray)}, metric]))
    return table(cols, k * n)


def _gallery(run_dir, cell, dataset, model, seed, methods, k, size, rng) -> None:
    store = RunStore(run_dir)
    key = content_hash(cell)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((k, size, size), bool)
    images = rng.random((k, 1, size, size)) * 0.3
    for i in range(k):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2
        images[i, 0][masks[i]] += 0.6
    labels = rng.integers(0, 2, k)
    store.write_gallery(key, "inputs", {"images": images.astype(np.float16), "labels": labels, "predictions": labels,
                                        "masks": masks},
                        {"dataset_label": dataset, "model_label": model, "seed": seed, "class_names": ["round", "not-round"]})
    for j, label in enumerate(methods):
        blur = masks.astype(float) * (j + 1) / len(methods) + rng.random((k, size, size)) * 0.5
        store.write_gallery(key, content_hash([key, label]), {"attribution": blur.astype(np.float32)},
                            {"method_label": label, "reduction": "abs-luminance", "baseline": label == "random"})
