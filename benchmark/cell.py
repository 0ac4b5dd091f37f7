"""Running one cell: load the data, fit (or restore) the model, predict, explain, score.

This is what an executor runs, in process or on a remote worker. It never writes results: every
unit's rows (or its error) go to ``deliver``, and the driver writes them. Every failure is caught
per unit, so one broken method or metric never costs the rest of the cell.
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .attribution import reduce_attribution, run_method
from .cache import Cache
from .checks import check_dataset
from .config import Variant
from .devices import resolve_device
from .hashing import content_hash
from .plan import Cell
from .registry import Registry, load_registry
from .specs import ArrayLike, FitContext, FitReport, MetricContext, MetricSpec, TrainedModel
from .store import SCHEMA


@dataclass(frozen=True)
class UnitTask:
    key: str
    method: Variant | None
    metric: Variant


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run a cell: plain data, picklable."""

    cell: Cell
    units: tuple[UnitTask, ...]
    run: Mapping[str, Any]
    cache_dir: str
    device: str


@dataclass
class UnitResult:
    key: str
    table: pa.Table | None = None
    error: dict[str, Any] | None = None


@dataclass
class CellReport:
    """Facts about a finished cell for the manifest: data facts, training report, timings."""

    key: str
    title: str
    dataset_info: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    model_cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    device: str = ""


@dataclass
class GalleryItem:
    """Arrays for the leaderboard's heatmap gallery: the first test samples of a cell (``name`` =
    "inputs") or one method's reduced maps on them (``name`` = the method variant's key)."""

    cell_key: str
    name: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


@dataclass
class Status:
    """A progress note from inside a cell (shown by local executors)."""

    text: str


_ACTIVE_REGISTRY: Registry | None = None
_DATASETS: OrderedDict[str, Any] = OrderedDict()


def use_registry(registry: Registry | None) -> None:
    """Make in-process cells use the driver's registry (workers elsewhere load their own)."""
    global _ACTIVE_REGISTRY
    _ACTIVE_REGISTRY = registry


def _registry() -> Registry:
    global _ACTIVE_REGISTRY
    if _ACTIVE_REGISTRY is None:
        _ACTIVE_REGISTRY = load_registry()
    return _ACTIVE_REGISTRY


def seed_of(*parts: Any) -> int:
    return int(content_hash(parts), 16) % (2**63 - 1)


@contextmanager
def _timed(timings: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] += time.perf_counter() - start


def _error(job: CellJob, task: UnitTask, phase: str, exc: BaseException) -> dict[str, Any]:
    cell = job.cell
    return {
        "unit": task.key,
        "cell": cell.title,
        "dataset": cell.dataset.label,
        "model": cell.model.label,
        "seed": cell.seed,
        "method": task.method.label if task.method else None,
        "metric": task.metric.label,
        "phase": phase,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def work(job: CellJob, deliver: Callable[[Any], None]) -> None:
    """Run one cell and deliver a :class:`UnitResult` per unit, then a :class:`CellReport`.

    The run's ``threads`` option fixes torch's CPU thread count (and so the numerics) for the cell
    only: the caller's count is restored, so an in-process run leaves no trace on later ones."""
    threads = int(job.run.get("threads") or 0)
    before = torch.get_num_threads()
    if threads and before != threads:
        torch.set_num_threads(threads)
    try:
        _run_cell(job, deliver)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _run_cell(job: CellJob, deliver: Callable[[Any], None]) -> None:
    timings: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    registry = _registry()
    cell, run = job.cell, job.run
    report = CellReport(job.cell.key, cell.title)

    def fail_all(tasks, phase, exc):
        for task in tasks:
            deliver(UnitResult(task.key, error=_error(job, task, phase, exc)))

    try:
        device = resolve_device(job.device)
        report.device = str(device)
        with _timed(timings, "load"):
            dataset = _load_dataset(registry, cell)
        report.dataset_info = dict(dataset.info)
        info = dataset.describe()
    except Exception as exc:
        fail_all(job.units, "load", exc)
        return
    cache = Cache(job.cache_dir)
    try:
        trained, report.model_cached = _obtain_model(registry, cell, dataset, info, device, cache, timings, deliver)
        report.fit = {"history": trained.report.history, "metrics": trained.report.metrics}
    except Exception as exc:
        fail_all(job.units, "fit", exc)
        return

    test = dataset.test
    batch_size = int(run["batch_size"])
    try:
        with _timed(timings, "predict"):
            logits = _predict(trained.module, test.images, batch_size, device).cpu()
    except Exception as exc:
        fail_all(job.units, "predict", exc)
        return
    labels = test.labels.cpu()
    preds = logits.argmax(1)
    targets = labels if run["target"] == "label" else preds
    predict = lambda x: _predict(trained.module, x, batch_size, device)  # noqa: E731

    k = min(int(run.get("gallery", 0)), len(test))
    if k:
        arrays = {"images": test.images[:k].numpy().astype(np.float16), "labels": labels[:k].numpy(),
                  "predictions": preds[:k].numpy()}
        if test.masks is not None:
            arrays["masks"] = test.masks[:k].numpy()
        deliver(GalleryItem(cell.key, "inputs", arrays, {
            "dataset_label": cell.dataset.label, "model_label": cell.model.label, "seed": cell.seed,
            "class_names": list(dataset.class_names)}))

    base = _Rows(job, labels, preds, targets)
    model_units = [t for t in job.units if t.method is None]
    for task in model_units:
        spec = registry.get("metrics", task.metric.name).spec
        ctx = MetricContext(
            model=trained, inputs=test.images, labels=labels.to(device), logits=logits.to(device),
            targets=targets.to(device), params=task.metric.params,
            generator=_generator(device, task.key), device=device, predict=predict, dataset=dataset,
            mask=None, regions={},
        )
        try:
            with _timed(timings, "score"):
                values = _validated(spec, spec.score(ctx), None)
            deliver(UnitResult(task.key, table=base.model_table(task, spec, values)))
        except Exception as exc:
            deliver(UnitResult(task.key, error=_error(job, task, "score", exc)))

    n = len(test) if not run["samples"] else min(int(run["samples"]), len(test))
    by_method: dict[str, list[UnitTask]] = defaultdict(list)
    for task in job.units:
        if task.method is not None:
            by_method[task.method.key].append(task)
    for tasks in by_method.values():
        _explain_and_score(job, registry, trained, dataset, tasks, n, logits, labels, targets, predict,
                           device, cache, timings, base, deliver)
    timings["total"] = time.perf_counter() - started
    report.timings = dict(timings)
    deliver(report)


def _explain_and_score(job, registry, trained, dataset, tasks, n, logits, labels, targets, predict,
                       device, cache, timings, base, deliver):
    run = job.run
    method = tasks[0].method
    mspec = registry.get("methods", method.name).spec
    test = dataset.test
    size = tuple(test.images.shape[-2:])
    rule = run["reduction"]
    batch_size = int(run["batch_size"])
    collected: dict[str, dict[str, list[torch.Tensor]]] = {t.key: defaultdict(list) for t in tasks}
    notes: dict[str, list[list[str]]] = {t.key: [] for t in tasks}
    failed: dict[str, dict[str, Any]] = {}
    specs = {t.key: registry.get("metrics", t.metric.name).spec for t in tasks}

    def explain_raw_fn(batch_targets):
        def explain_raw(x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
            if targets is None:
                targets = batch_targets if run["target"] == "label" else predict(x).argmax(1)
            return run_method(mspec, trained, x, targets.to(x.device), method.params)

        def explain(x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
            return reduce_attribution(explain_raw(x, targets), tuple(x.shape[-2:]), rule, method.name)

        return explain_raw, explain

    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = test.images[start:stop].to(device)
        t = targets[start:stop].to(device)
        key = content_hash({"model": job.cell.model_key, "method": method.key, "target": run["target"],
                            "start": start, "stop": stop})
        deliver(Status(f"{job.cell.title}: {method.label} {stop}/{n}"))
        try:
            raw = cache.load_attribution(key)
            if raw is None:
                torch.manual_seed(seed_of(key))
                with _timed(timings, "explain"):
                    raw = run_method(mspec, trained, x, t, method.params)
                cache.save_attribution(key, raw)
            raw = raw.to(device)
            reduced = reduce_attribution(raw, size, rule, method.name)
        except Exception as exc:
            for task in tasks:
                failed.setdefault(task.key, _error(job, task, "explain", exc))
            break
        bad = ~torch.isfinite(reduced).flatten(1).all(1)
        if bad.any():
            reduced = torch.nan_to_num(reduced, nan=0.0, posinf=0.0, neginf=0.0)
            raw = torch.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        k = min(int(run.get("gallery", 0)), stop - start) if start == 0 else 0
        if k:
            deliver(GalleryItem(job.cell.key, method.key, {"attribution": reduced[:k].float().cpu().numpy()},
                                {"method_label": method.label, "reduction": rule,
                                 "baseline": bool(mspec.baseline)}))
        explain_raw, explain = explain_raw_fn(t)
        mask = test.masks[start:stop].to(device) if test.masks is not None else None
        regions = {k: v[start:stop].to(device) for k, v in test.regions.items()}
        for task in tasks:
            if task.key in failed:
                continue
            spec = specs[task.key]
            ctx = MetricContext(
                model=trained, inputs=x, labels=labels[start:stop].to(device), logits=logits[start:stop].to(device),
                targets=t, params=task.metric.params, generator=_generator(device, task.key, start),
                device=device, predict=predict, attribution=reduced, raw_attribution=raw, mask=mask,
                regions=regions, explain=explain, explain_raw=explain_raw, dataset=dataset, method=method.name,
            )
            if bad.any():
                ctx.flag(bad, "attribution contains NaN or Inf")
            try:
                torch.manual_seed(seed_of(task.key, start))
                with _timed(timings, "score"):
                    values = _validated(spec, spec.score(ctx), stop - start)
            except Exception as exc:
                failed[task.key] = _error(job, task, "score", exc)
                continue
            for name, v in values.items():
                if bad.any():
                    v = v.clone()
                    v[bad] = float("nan")
                collected[task.key][name].append(v)
            notes[task.key].append(_notes(ctx, stop - start))
    for task in tasks:
        if task.key in failed:
            deliver(UnitResult(task.key, error=failed[task.key]))
            continue
        values = {k: torch.cat(v) for k, v in collected[task.key].items()}
        flat_notes = [note for chunk in notes[task.key] for note in chunk]
        deliver(UnitResult(task.key, table=base.sample_table(task, specs[task.key], values, n, flat_notes,
                                                             bool(mspec.baseline))))


def _notes(ctx: MetricContext, n: int) -> list[str | None]:
    out: list[list[str]] = [[] for _ in range(n)]
    for where, reason in ctx.notes:
        for i in torch.nonzero(where[:n]).flatten().tolist():
            if reason not in out[i]:
                out[i].append(reason)
    return ["; ".join(r) if r else None for r in out]


def _validated(spec: MetricSpec, values: Any, n: int | None) -> dict[str, torch.Tensor]:
    if not isinstance(values, Mapping):
        raise TypeError(f"metric {spec.name!r} returned a {type(values).__name__}; score() must return a dict")
    out = {}
    for name, value in values.items():
        try:
            spec.direction(name)
        except KeyError:
            raise ValueError(f"metric {spec.name!r} returned the undeclared value {name!r}; "
                             f"declare it in MetricSpec.values (declared: {sorted(spec.values)})") from None
        v = torch.as_tensor(value).detach().to("cpu", torch.float64)
        if n is None:
            if v.numel() != 1:
                raise ValueError(f"model-level metric {spec.name!r} returned {tuple(v.shape)} for {name!r}; expected a scalar")
            v = v.reshape(())
        else:
            if v.numel() != n:
                raise ValueError(f"metric {spec.name!r} returned shape {tuple(v.shape)} for {name!r}; "
                                 f"expected one value per sample ({n},)")
            v = v.reshape(n)
        out[name] = v
    return out


def _generator(device: torch.device, *parts: Any) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed_of(*parts))
    return g


def _predict(module: torch.nn.Module, images: ArrayLike, batch_size: int, device: torch.device) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            outs.append(module(images[s:s + batch_size].to(device)).float())
    if not outs:
        return torch.empty(0, 0, device=device)
    return torch.cat(outs)


def _load_dataset(registry: Registry, cell: Cell):
    key = cell.dataset_key
    if key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    spec = registry.get("datasets", cell.dataset.name).spec
    dataset = spec.load(dict(cell.dataset.params), cell.seed)
    check_dataset(dataset, cell.dataset.label)
    _DATASETS[key] = dataset
    while len(_DATASETS) > 1:
        _DATASETS.popitem(last=False)
    return dataset


def _default_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}


def _obtain_model(registry, cell, dataset, info, device, cache, timings, deliver) -> tuple[TrainedModel, bool]:
    spec = registry.get("models", cell.model.name).spec
    params = dict(cell.model.params)
    untrained = bool(params.pop("untrained", False))
    torch.manual_seed(seed_of(cell.model_key, "init"))
    with _timed(timings, "build"):
        module = spec.build(info, params)
    cached = False
    if untrained:
        report = FitReport()
    else:
        hit = cache.load_model(cell.model_key)
        if hit is not None:
            state, report = hit
            module.load_state_dict(state)
            cached = True
        else:
            module.to(device)
            torch.manual_seed(seed_of(cell.model_key, "fit"))
            np.random.seed(seed_of(cell.model_key, "fit") % (2**32))

            def progress(step, total, **numbers):
                shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items())
                deliver(Status(f"{cell.title}: training {step}/{total} {shown}"))

            ctx = FitContext(seed=cell.seed, device=device, cache_dir=str(cache.root / "plugins" / cell.model.name),
                             progress=progress)
            with _timed(timings, "fit"):
                report = spec.fit(module, dataset, params, ctx)
            if not isinstance(report, FitReport):
                raise TypeError(f"model {cell.model.name!r}: fit() returned {type(report).__name__}, expected FitReport")
            cache.save_model(cell.model_key, module.state_dict(), report,
                             {"model": cell.model.label, "dataset": cell.dataset.label, "seed": cell.seed})
    module.to(device).eval()
    layers = spec.layers(module) if spec.layers else _default_layers(module)
    explain = spec.explainer(module) if spec.explainer else getattr(module, "explain", None)
    return TrainedModel(module=module, info=info, target_layers=layers, explain=explain, report=report), cached


class _Rows:
    """Builds the tidy rows of a unit as an Arrow table with the store's schema."""

    def __init__(self, job: CellJob, labels: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor):
        self.job = job
        self.labels = labels.numpy()
        self.preds = preds.numpy()
        self.targets = targets.numpy()

    def _constants(self, task: UnitTask, spec: MetricSpec, method_baseline: bool) -> dict[str, Any]:
        cell, run = self.job.cell, self.job.run
        m = task.method
        baseline = bool(cell.model.params.get("untrained")) or method_baseline
        return {
            "unit": task.key,
            "dataset": cell.dataset.name, "dataset_label": cell.dataset.label,
            "dataset_version": cell.dataset.version, "dataset_params": cell.dataset.params_json,
            "model": cell.model.name, "model_label": cell.model.label,
            "model_version": cell.model.version, "model_params": cell.model.params_json,
            "seed": cell.seed,
            "method": m.name if m else None, "method_label": m.label if m else None,
            "method_version": m.version if m else None, "method_params": m.params_json if m else None,
            "metric": task.metric.name, "metric_label": task.metric.label,
            "metric_version": task.metric.version, "metric_params": task.metric.params_json,
            "category": spec.category, "scope": spec.scope, "baseline": baseline,
            "target_mode": run["target"], "reduction": run["reduction"] if m else None,
        }

    def sample_table(self, task, spec, values, n, notes, method_baseline: bool) -> pa.Table:
        const = self._constants(task, spec, method_baseline)
        columns: dict[str, list] = defaultdict(list)
        sample = np.arange(n)
        for name, v in values.items():
            columns["value_name"].append(np.full(n, name, dtype=object))
            columns["higher_is_better"].append(np.full(n, spec.direction(name), dtype=object))
            columns["value"].append(v.numpy())
            columns["sample"].append(sample)
            columns["label"].append(self.labels[:n])
            columns["prediction"].append(self.preds[:n])
            columns["target"].append(self.targets[:n])
            columns["correct"].append(self.labels[:n] == self.preds[:n])
            columns["note"].append(np.asarray(notes, dtype=object))
        return self._table(const, columns)

    def model_table(self, task, spec, values) -> pa.Table:
        const = self._constants(task, spec, method_baseline=False)
        columns: dict[str, list] = defaultdict(list)
        for name, v in values.items():
            columns["value_name"].append(np.array([name], dtype=object))
            columns["higher_is_better"].append(np.array([spec.direction(name)], dtype=object))
            columns["value"].append(v.reshape(1).numpy())
            for col in ("sample", "label", "prediction", "target", "correct", "note"):
                columns[col].append(np.array([None], dtype=object))
        return self._table(const, columns)

    @staticmethod
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
