"""Running one cell: load → fit → predict → explain → score → rows, over one :class:`CellState`.

This is what an executor runs, in process or on a remote worker. It never writes results: every
unit's rows (or its error) go to ``deliver`` and the driver writes them. Every phase is guarded: a
failure while loading, fitting or predicting fails that cell's units with the phase named, a failing
method fails its units, a failing metric its unit, and the rest of the run goes on. A plugin that
changes what it was handed (the attribution, the inputs, the model's weights, its hooks or
submodules: see :mod:`xbench.guards`) fails its own units with a message that names it and what it
changed, and everything is restored for the plugins after it. A run-level failure (an interruption,
a full disk) is never blamed on a plugin: it stops the cell and reaches the driver.
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from . import results
from .attribution import run_method
from .cache import Cache
from .checks import ContractError
from .costs import Cost
from .devices import resolve_device
from .errors import RunInterrupted
from .guards import ModelGuard, NotFinite, PluginMisbehaved, Pristine, handed_dataset, handed_model, nonfinite_samples
from .hashing import content_hash
from .messages import CellJob, CellReport, Status, UnitResult, UnitTask
from .obtain import Worker, obtain_model, seed_of
from .specs import ArrayLike, Dataset, DatasetInfo, MetricSpec, TrainedModel
from .atomic import CannotWrite

__all__ = ["CellState", "PluginMisbehaved", "work"]


class SharedInputs:
    """Tensors derived from a batch's inputs alone (:meth:`MetricContext.reuse`: corrupted copies of
    the batch), computed once per cell and shared by every method's metrics instead of once per
    method; the least recently used go first beyond ``budget`` bytes."""

    def __init__(self, budget: int = 256 * 2**20):
        self.budget = budget
        self.items: OrderedDict[Any, torch.Tensor] = OrderedDict()
        self.size = 0

    def get(self, batch: Any, key: Any, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        entry = (batch, key)
        if entry in self.items:
            self.items.move_to_end(entry)
            return self.items[entry].clone()
        value = compute()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"ctx.reuse({key!r}, compute): compute() returned {type(value).__name__}; it shares "
                            "tensors only.")
        nbytes = value.element_size() * value.nelement()
        if nbytes <= self.budget:
            self.items[entry] = value.detach().clone()
            self.size += nbytes
            while self.size > self.budget:
                _, old = self.items.popitem(last=False)
                self.size -= old.element_size() * old.nelement()
        return value

    def of(self, batch: Any) -> Callable[[Any, Callable[[], torch.Tensor]], torch.Tensor]:
        return lambda key, compute: self.get(batch, key, compute)

    def clear(self) -> None:
        """Forget everything (a plugin changed the inputs in place: what was derived may be wrong)."""
        self.items.clear()
        self.size = 0


@dataclass
class CellState:
    """Everything the phases of one cell share."""

    job: CellJob
    worker: Worker
    deliver: Callable[[Any], None]
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    device: torch.device | None = None
    dataset: Dataset | None = None
    info: DatasetInfo | None = None
    cache: Cache | None = None
    model: TrainedModel | None = None
    guard: ModelGuard | None = None           # the model as it was before the first plugin call
    logits: torch.Tensor | None = None        # test split, CPU
    labels: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    rows: results.RowBuilder | None = None
    report: CellReport | None = None
    shared: SharedInputs = field(default_factory=lambda: SharedInputs())

    @property
    def run(self):
        return self.job.run

    @property
    def cell(self):
        return self.job.cell

    @property
    def registry(self):
        return self.worker.registry

    @property
    def test(self):
        return self.dataset.test

    def predict(self, images: ArrayLike) -> torch.Tensor:
        return _predict(self.model.module, images, int(self.run.batch_size), self.device)

    def fail(self, tasks, phase: str, exc: BaseException) -> None:
        for task in tasks:
            self.deliver(UnitResult(task.key, error=_error(self.job, task, phase, exc)))

    def changes(self, pristine: Pristine) -> list[str]:
        """What the last plugin call changed of ``pristine`` and of the model, all of it restored
        (a changed test split that cannot be restored is loaded again)."""
        changed = pristine.changed() + self.guard.changes()
        if changed:
            self.shared.clear()  # derived from what was changed, maybe
            self.guard.restore()
            if pristine.restore():
                self.worker.forget(self.cell)
                self.dataset = self.worker.dataset(self.cell)
        return changed


def work(job: CellJob, deliver: Callable[[Any], None], worker: Worker) -> None:
    """Run one cell and deliver a :class:`UnitResult` per unit, then a :class:`CellReport`.

    The run's ``threads`` option fixes torch's CPU thread count (and so the numerics) for the cell
    only: the caller's count is restored, so an in-process run leaves no trace on later ones."""
    with _threads(int(job.run.threads or 0)):
        state = CellState(job, worker, deliver)
        state.report = CellReport(job.cell.key, job.cell.title)
        started = time.perf_counter()
        for phase, step in (("load", _load), ("fit", _fit), ("predict", _predict_test)):
            try:
                step(state)
            except BaseException as exc:  # noqa: BLE001 - a plugin's SystemExit fails its units too
                _reraise_run_failure(exc)
                state.fail(job.units, phase, exc)
                _finish(state, started)
                return
        try:
            _gallery_inputs(state)
        except Exception as exc:  # noqa: BLE001 - figures are a convenience; the results go on
            _reraise_run_failure(exc)
            deliver(Status(f"{job.cell.title}: warning: no gallery for this cell ({type(exc).__name__}: {exc})",
                           "warning"))
        for task in job.units:
            if task.method is None:
                _score_model_unit(state, task)
        by_method: dict[str, list[UnitTask]] = defaultdict(list)
        for task in job.units:
            if task.method is not None:
                by_method[task.method.key].append(task)
        for tasks in by_method.values():
            _explain_and_score(state, tasks)
        _finish(state, started)


def _finish(state: CellState, started: float) -> None:
    timings = dict(state.timings)
    timings["total"] = time.perf_counter() - started
    state.report.timings = timings
    state.deliver(state.report)


# ----------------------------------------------------------------------------- phases

def _load(state: CellState) -> None:
    state.device = resolve_device(state.job.device)
    state.report.device = str(state.device)
    start = time.perf_counter()
    state.dataset = state.worker.dataset(state.cell)
    state.report.dataset_info = dict(state.dataset.info)
    state.info = state.dataset.describe()
    test = state.dataset.test
    if len(test) == 0:
        raise ContractError(f"Dataset {state.cell.dataset.label!r} has an empty test split, so there is nothing to "
                            "predict or explain in this cell; give it test samples (e.g. a larger n_test).")
    state.timings["load"] += time.perf_counter() - start
    state.cache = Cache(state.job.cache_dir)


def _fit(state: CellState) -> None:
    state.model, state.report.model_cached = obtain_model(
        state.worker, state.cell, state.dataset, state.info, state.device, state.cache, state.deliver,
        state.timings)
    report = state.model.report
    state.report.fit = {"history": report.history, "metrics": report.metrics, "warnings": list(report.warnings)}
    for warning in report.warnings:
        state.deliver(Status(f"{state.cell.title}: warning: {warning}", "warning"))


def _predict_test(state: CellState) -> None:
    start = time.perf_counter()
    logits = state.predict(state.test.images).cpu()
    state.timings["predict"] += time.perf_counter() - start
    classes = len(state.dataset.class_names)
    if logits.dim() != 2 or logits.shape[1] < classes:
        raise ContractError(
            f"Model {state.cell.model.label!r} returned logits of shape {tuple(logits.shape)} for "
            f"{len(state.test)} test images, but dataset {state.cell.dataset.label!r} has {classes} classes: a "
            f"model must return (N, {classes}) logits, one column per class (build it with info.num_classes).")
    _check_logits(state, logits)
    # the model as every plugin must leave it (taken after its first forward pass, which may set it up)
    state.guard = ModelGuard(state.model.module)
    state.logits = logits
    state.labels = state.test.labels.cpu()
    preds = logits.argmax(1)
    state.targets = state.labels if state.run.target == "label" else preds
    state.rows = results.RowBuilder(state.labels.numpy(), preds.numpy(), state.targets.numpy())


def _check_logits(state: CellState, logits: torch.Tensor) -> None:
    """NaN or Inf logits are named for what causes them: the test images (a lazy split is only read
    here), or the model's forward pass on finite images and weights."""
    bad = ~torch.isfinite(logits).all(1)
    if not bool(bad.any()):
        return
    indices = bad.nonzero().flatten().tolist()
    images = state.test.images[indices]
    if not bool(torch.isfinite(images).all()):
        raise NotFinite(
            f"Dataset {state.cell.dataset.label!r} (seed {state.cell.seed}): its test split's images hold "
            f"{nonfinite_samples(images, indices, len(state.test))}. A model cannot be tested or explained on NaN or "
            "Inf values: fix the dataset or its files. This cell fails; the rest of the run goes on.")
    shown = ", ".join(map(str, indices[:8])) + (", …" if len(indices) > 8 else "")
    raise NotFinite(
        f"Model {state.cell.model.label!r} returned NaN or Inf logits for {len(indices)} of {len(state.test)} test "
        f"images ({shown}), although those images and its weights are finite: its forward pass overflows or "
        "divides by zero. This cell fails; the rest of the run goes on.")


def _gallery_inputs(state: CellState) -> None:
    k = min(int(state.run.gallery), len(state.test))
    if not k:
        return
    test, cell = state.test, state.cell
    state.deliver(results.gallery_inputs(
        cell.key, test.images[:k].numpy(), state.labels[:k].numpy(), state.logits[:k].argmax(1).numpy(),
        None if test.masks is None else test.masks[:k].numpy(),
        {"dataset_label": cell.dataset.label, "model_label": cell.model.label, "seed": cell.seed,
         "class_names": list(state.dataset.class_names)}))


# ----------------------------------------------------------------------------- scoring

def _identity(state: CellState, task: UnitTask, method_baseline: bool = False) -> results.UnitIdentity:
    return results.UnitIdentity(task.key, state.cell, task.method, task.metric, state.run.target,
                                state.run.reduction, method_baseline)


def _score_model_unit(state: CellState, task: UnitTask) -> None:
    spec = state.registry.get("metrics", task.metric.name).spec
    device = state.device
    handed = {"ctx.inputs": state.test.images, "ctx.labels": state.labels.to(device),
              "ctx.logits": state.logits.to(device), "ctx.targets": state.targets.to(device)}
    ctx = results.metric_context(
        model=handed_model(state.model), inputs=handed["ctx.inputs"], labels=handed["ctx.labels"],
        logits=handed["ctx.logits"], targets=handed["ctx.targets"], target_mode=state.run.target,
        params=task.metric.params, generator=_generator(device, task.key), predict=state.predict, device=device,
        dataset=handed_dataset(state.dataset), reduction=state.run.reduction,
        shared=state.shared.of("test split"))
    # the whole test split is too large to copy for every call: a digest of its bytes instead
    pristine = Pristine(handed, digest_only=["ctx.inputs"])
    try:
        try:
            with _timed(state.timings, "score"), _timed(state.report.metric_seconds, task.metric.label):
                # a metric that draws from the global RNG draws the same numbers on resume and on any worker
                torch.manual_seed(seed_of(task.key))
                values = results.score(spec, ctx)
        finally:
            changed = state.changes(pristine)
        if changed:
            raise _misbehaved_metric(spec.name, changed)
        note = "; ".join(dict.fromkeys(reason for _, reason in ctx.notes)) or None
        state.deliver(UnitResult(task.key, table=state.rows.model_table(_identity(state, task), spec, values, note)))
    except BaseException as exc:  # noqa: BLE001
        _reraise_run_failure(exc)
        state.deliver(UnitResult(task.key, error=_error(state.job, task, "score", exc)))


class _Collected:
    """One sample-level unit's values and notes, batch by batch."""

    def __init__(self, task: UnitTask, spec: MetricSpec):
        self.task, self.spec = task, spec
        self.values: dict[str, list[results.Value]] = {}
        self.notes: list[str | None] = []
        self.error: dict[str, Any] | None = None
        self.batches = 0

    def add(self, values: list[results.Value], notes: list[str | None]) -> None:
        names = [v.name for v in values]
        if self.batches and names != list(self.values):
            raise results.MetricOutputError(
                f"metric {self.spec.name!r} returned the values {names} for one batch but {list(self.values)} for "
                "the first: every batch must return the same values (NaN where one is undefined).")
        for v in values:
            self.values.setdefault(v.name, []).append(v)
        self.notes += notes
        self.batches += 1

    def merged(self) -> list[results.Value]:
        return [results.Value(parts[0].name, parts[0].higher_is_better, torch.cat([p.values for p in parts]),
                              parts[0].family, parts[0].facet, parts[0].level) for parts in self.values.values()]


def _explain_and_score(state: CellState, tasks: list[UnitTask]) -> None:
    run, cell = state.run, state.cell
    method = tasks[0].method
    mspec = state.registry.get("methods", method.name).spec
    units = [_Collected(t, state.registry.get("metrics", t.metric.name).spec) for t in tasks]
    test, device = state.test, state.device
    n = len(test) if not run.samples else min(int(run.samples), len(test))
    size = tuple(test.images.shape[-2:])
    batch = int(run.batch_size)
    cost = Cost(device)

    def explainer(model: TrainedModel, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The method again, for a metric that re-explains other inputs: checked like any call."""
        maps = run_method(mspec, model, x, targets, method.params,
                          generator=_generator(x.device, method.key, "re-explain") if mspec.stochastic else None)
        changed = state.changes(Pristine({}))
        if changed:
            raise PluginMisbehaved(f"Method {method.label!r} changed {', '.join(changed)} while re-explaining inputs "
                                   f"for a metric. {_METHOD_RULE} Everything was restored; this unit fails.")
        return maps

    for start in range(0, n, batch):
        stop = min(start + batch, n)
        active = [u for u in units if u.error is None]
        if not active:
            break
        state.deliver(Status(f"{cell.title}: {method.label} {stop}/{n}", "explain"))
        x = test.images[start:stop].to(device)
        t = state.targets[start:stop].to(device)
        try:
            raw = _explain_batch(state, mspec, method, x, t, start, stop, cost)
            att = results.prepare_attribution(raw.to(device), size, run.reduction, method.name)
        except BaseException as exc:  # noqa: BLE001
            _reraise_run_failure(exc)
            for u in active:
                u.error = _error(state.job, u.task, "explain", exc)
            break
        if start == 0 and int(run.gallery):
            k = min(int(run.gallery), stop - start)
            state.deliver(results.gallery_maps(cell.key, method.key, att.reduced[:k].float().cpu().numpy(),
                                               method.label, run.reduction, mspec.baseline))
        mask = test.masks[start:stop].to(device) if test.masks is not None else None
        regions = {k: v[start:stop].to(device) for k, v in test.regions.items()}
        labels, logits = state.labels[start:stop].to(device), state.logits[start:stop].to(device)
        # what every metric of this batch is handed, copied once and compared after each of them
        pristine = Pristine({"ctx.inputs": x, "ctx.labels": labels, "ctx.logits": logits, "ctx.targets": t,
                             "ctx.mask": mask, "ctx.attribution": att.reduced, "ctx.raw_attribution": att.raw,
                             "ctx.undefined": att.bad, **{f"ctx.regions[{k!r}]": v for k, v in regions.items()}})
        for u in active:
            ctx = results.metric_context(
                model=handed_model(state.model), inputs=x, labels=labels, logits=logits, targets=t,
                target_mode=run.target, params=u.task.metric.params, generator=_generator(device, u.task.key, start),
                predict=state.predict, device=device, attribution=att, explainer=explainer, mask=mask,
                regions=regions, dataset=handed_dataset(state.dataset), method=method.name, reduction=run.reduction,
                shared=state.shared.of((start, stop)))
            try:
                try:
                    # the same global draws for this unit and batch wherever and whenever it runs
                    torch.manual_seed(seed_of(u.task.key, start))
                    with _timed(state.timings, "score"), _timed(state.report.metric_seconds, u.task.metric.label):
                        values = results.score(u.spec, ctx)
                finally:
                    changed = state.changes(pristine)
                if changed:
                    raise _misbehaved_metric(u.spec.name, changed)
                u.add(values, results.notes_per_sample(ctx, stop - start))
            except BaseException as exc:  # noqa: BLE001
                _reraise_run_failure(exc)
                u.error = _error(state.job, u.task, "score", exc)
    state.report.costs[method.key] = {"method": method.label, **cost.as_dict()}
    for u in units:
        if u.error is not None:
            state.deliver(UnitResult(u.task.key, error=u.error))
            continue
        identity = _identity(state, u.task, bool(mspec.baseline))
        table = state.rows.sample_table(identity, u.spec, u.merged(), n, u.notes, cost.as_dict())
        state.deliver(UnitResult(u.task.key, table=table))


def _explain_batch(state: CellState, mspec, method, x, t, start: int, stop: int, cost: Cost) -> torch.Tensor:
    """The method's raw maps for one batch: from the attribution cache, or computed (seeded),
    checked for a changed model, and cached with what they cost."""
    key = content_hash({"model": state.cell.model_key, "method": method.key, "target": state.run.target,
                        "start": start, "stop": stop})
    hit = state.cache.load_attribution(key)
    if hit is not None:
        cost.add(hit.get("seconds"), stop - start, hit.get("added_bytes"), hit.get("memory"))
        return hit["maps"]
    _warm_up(state, mspec, method, x, t)
    # a method that draws from the global RNG (not its generator) gives the same maps as when cached
    torch.manual_seed(seed_of(key))
    generator = _generator(x.device, key) if mspec.stochastic else None
    before = Cost(state.device)
    pristine = Pristine({"the images it was handed": x, "the targets it was handed": t})
    try:
        with _timed(state.timings, "explain"), before.measure(stop - start):
            raw = run_method(mspec, handed_model(state.model), x, t, method.params, generator=generator)
    finally:
        changed = state.changes(pristine)
    if changed:
        raise _misbehaved_method(method.label, changed)
    cost.add(before.seconds, before.samples, before.added_bytes, before.memory)
    state.cache.save_attribution(key, raw, {"seconds": before.seconds, "added_bytes": before.added_bytes,
                                            "memory": before.memory})
    return raw


def _warm_up(state: CellState, mspec, method, x: torch.Tensor, t: torch.Tensor) -> None:
    """A method's first call in a process imports its library and sets itself up (Captum took 1.4 s,
    Zennit several, on a loaded 2-core machine): that call is made once per process, on a copy of one
    sample, unmeasured and discarded, so that the time per sample is the method's and not its
    imports'. It is guarded as every call is (a change it makes, even one the next call undoes,
    fails the method)."""
    if method.name in state.worker.warmed:
        return
    state.worker.warmed.add(method.name)
    try:
        run_method(mspec, handed_model(state.model), x[:1].clone(), t[:1].clone(), method.params,
                   generator=_generator(x.device, "warm-up") if mspec.stochastic else None)
    except Exception:  # noqa: BLE001 - the measured call meets (and reports) the same failure
        pass
    finally:
        changed = state.changes(Pristine({}))
    if changed:
        raise _misbehaved_method(method.label, changed)


_METHOD_RULE = ("A method must leave the model and what it is handed as it found them: work on a copy, remove "
                "every hook it registers, undo every change.")


def _misbehaved_method(label: str, changed: list[str]) -> PluginMisbehaved:
    return PluginMisbehaved(
        f"Method {label!r} changed {', '.join(changed)} while explaining. {_METHOD_RULE} Its maps were discarded "
        "and not cached, everything was restored for the other methods, and this method's units fail.")


def _misbehaved_metric(name: str, changed: list[str]) -> PluginMisbehaved:
    return PluginMisbehaved(
        f"The metric {name!r} changed {', '.join(changed)} in place. Metrics share what they are handed, so this "
        "would change other metrics' numbers: work on a copy (e.g. ctx.attribution.clamp(min=0) instead of "
        ".clamp_(min=0)) and remove every hook you register. This unit fails; the others were given the original "
        "values.")


# ----------------------------------------------------------------------------- helpers

def _reraise_run_failure(exc: BaseException) -> None:
    """A real interruption (Ctrl-C, SIGTERM: the driver raises :class:`RunInterrupted`) or a file
    the run cannot write (a full disk: :class:`CannotWrite`) stops the run; anything else a plugin
    raises, ``SystemExit`` and a plugin's own ``KeyboardInterrupt`` included, fails only its units."""
    if isinstance(exc, (RunInterrupted, GeneratorExit, CannotWrite)):
        raise exc


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


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads and before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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
