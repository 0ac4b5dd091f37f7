"""Running one cell: load → fit → predict → explain → score → rows, over one :class:`CellState`.

This is what an executor runs, in process or on a remote worker. It never writes results: every
unit's rows (or its error) go to ``deliver`` and the driver writes them. Every phase is guarded: a
failure while loading, fitting or predicting fails that cell's units with the phase named, a failing
method fails its units, a failing metric its unit, and the rest of the run goes on. A plugin that
changes what it was handed (the attribution, the inputs, the model's weights) fails its own units
with a message that names it, and everything is restored for the plugins after it.
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
from .hashing import content_hash
from .messages import CellJob, CellReport, Status, UnitResult, UnitTask
from .obtain import Worker, fingerprint, obtain_model, seed_of
from .specs import ArrayLike, Dataset, DatasetInfo, MetricSpec, TrainedModel


class PluginMisbehaved(ContractError):
    """A plugin changed something it was handed: its units fail, the others are protected."""


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
    weights: torch.Tensor | None = None       # fingerprint of the trained weights
    clean_state: dict[str, torch.Tensor] | None = None
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

    def restore_model(self) -> None:
        self.model.module.load_state_dict(self.clean_state)
        self.model.module.eval()


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
                _reraise_interrupt(exc)
                state.fail(job.units, phase, exc)
                _finish(state, started)
                return
        try:
            _gallery_inputs(state)
        except Exception as exc:  # noqa: BLE001 - figures are a convenience; the results go on
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
        state.worker, state.cell, state.dataset, state.info, state.device, state.cache, state.run.seeding,
        state.deliver, state.timings)
    report = state.model.report
    state.report.fit = {"history": report.history, "metrics": report.metrics, "warnings": list(report.warnings)}
    for warning in report.warnings:
        state.deliver(Status(f"{state.cell.title}: warning: {warning}", "warning"))
    state.clean_state = {k: v.detach().clone() for k, v in state.model.module.state_dict().items()}
    state.weights = fingerprint(state.model.module)


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
    state.logits = logits
    state.labels = state.test.labels.cpu()
    preds = logits.argmax(1)
    state.targets = state.labels if state.run.target == "label" else preds
    state.rows = results.RowBuilder(state.labels.numpy(), preds.numpy(), state.targets.numpy())


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
    ctx = results.metric_context(
        model=state.model, inputs=state.test.images, labels=state.labels.to(device), logits=state.logits.to(device),
        targets=state.targets.to(device), target_mode=state.run.target, params=task.metric.params,
        generator=_generator(device, task.key), predict=state.predict, device=device, dataset=state.dataset,
        reduction=state.run.reduction, shared=state.shared.of("test split"))
    guard = _Guard(state, ctx, images=state.test.images)
    try:
        with _timed(state.timings, "score"), _timed(state.report.metric_seconds, task.metric.label):
            # a metric that draws from the global RNG draws the same numbers on resume and on any worker
            torch.manual_seed(seed_of(task.key))
            values = results.score(spec, ctx)
        guard.check(f"metric {spec.name!r}")
        note = "; ".join(dict.fromkeys(reason for _, reason in ctx.notes)) or None
        state.deliver(UnitResult(task.key, table=state.rows.model_table(_identity(state, task), spec, values, note)))
    except BaseException as exc:  # noqa: BLE001
        _reraise_interrupt(exc)
        guard.restore()
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
        return run_method(mspec, model, x, targets, method.params,
                          generator=_generator(x.device, method.key, "re-explain") if mspec.stochastic else None)

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
            _reraise_interrupt(exc)
            for u in active:
                u.error = _error(state.job, u.task, "explain", exc)
            break
        if start == 0 and int(run.gallery):
            k = min(int(run.gallery), stop - start)
            state.deliver(results.gallery_maps(cell.key, method.key, att.reduced[:k].float().cpu().numpy(),
                                               method.label, run.reduction, mspec.baseline))
        mask = test.masks[start:stop].to(device) if test.masks is not None else None
        regions = {k: v[start:stop].to(device) for k, v in test.regions.items()}
        for u in active:
            ctx = results.metric_context(
                model=state.model, inputs=x, labels=state.labels[start:stop].to(device),
                logits=state.logits[start:stop].to(device), targets=t, target_mode=run.target,
                params=u.task.metric.params, generator=_generator(device, u.task.key, start), predict=state.predict,
                device=device, attribution=att, explainer=explainer, mask=mask, regions=regions,
                dataset=state.dataset, method=method.name, reduction=run.reduction,
                shared=state.shared.of((start, stop)))
            guard = _Guard(state, ctx)
            try:
                # the same global draws for this unit and batch wherever and whenever it runs
                torch.manual_seed(seed_of(u.task.key, start))
                with _timed(state.timings, "score"), _timed(state.report.metric_seconds, u.task.metric.label):
                    values = results.score(u.spec, ctx)
                guard.check(f"metric {u.spec.name!r}")
                u.add(values, results.notes_per_sample(ctx, stop - start))
            except BaseException as exc:  # noqa: BLE001
                _reraise_interrupt(exc)
                guard.restore()
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
    with _timed(state.timings, "explain"), before.measure(stop - start):
        raw = run_method(mspec, state.model, x, t, method.params, generator=generator)
    if not torch.equal(fingerprint(state.model.module), state.weights):
        state.restore_model()
        raise PluginMisbehaved(
            f"Method {method.label!r} changed the model's weights while explaining (a plugin must leave the model "
            "as it found it: work on a copy, or undo its changes). Its maps were discarded and not cached, the "
            "model was restored for the other methods, and this method's units fail.")
    cost.add(before.seconds, before.samples, before.added_bytes, before.memory)
    state.cache.save_attribution(key, raw, {"seconds": before.seconds, "added_bytes": before.added_bytes,
                                            "memory": before.memory})
    return raw


def _warm_up(state: CellState, mspec, method, x: torch.Tensor, t: torch.Tensor) -> None:
    """A method's first call in a process imports its library and sets itself up (Captum took 1.4 s,
    Zennit several, on a loaded 2-core machine): that call is made once per process, on one sample,
    unmeasured and discarded, so that the time per sample is the method's and not its imports'."""
    if method.name in state.worker.warmed:
        return
    state.worker.warmed.add(method.name)
    try:
        run_method(mspec, state.model, x[:1], t[:1], method.params,
                   generator=_generator(x.device, "warm-up") if mspec.stochastic else None)
    except Exception:  # noqa: BLE001 - the measured call meets (and reports) the same failure
        pass


class _Guard:
    """Keeps pristine copies of what a metric is handed (attribution, raw maps, inputs, labels,
    logits, targets, masks, regions) and the model's fingerprint; ``check`` fails the metric that
    changed any of them, ``restore`` puts them back for the next one."""

    FIELDS = ("attribution", "raw_attribution", "inputs", "labels", "logits", "targets", "mask")

    def __init__(self, state: CellState, ctx, images=None):
        self.state, self.ctx = state, ctx
        # a model-level metric is handed the whole test split: checked by checksum, not copied
        fields = [f for f in self.FIELDS if not (images is not None and f == "inputs")]
        self.copies = {f: getattr(ctx, f).clone() for f in fields if isinstance(getattr(ctx, f), torch.Tensor)}
        self.regions = {k: v.clone() for k, v in ctx.regions.items()}
        self.images = images if isinstance(images, torch.Tensor) else None
        self.images_sum = _checksum(self.images) if self.images is not None else None

    def changed(self) -> list[str]:
        out = [f"ctx.{f}" for f, copy in self.copies.items() if not torch.equal(getattr(self.ctx, f), copy)]
        out += [f"ctx.regions[{k!r}]" for k, copy in self.regions.items() if not torch.equal(self.ctx.regions[k], copy)]
        if self.images is not None and not torch.equal(_checksum(self.images), self.images_sum):
            out.append("the test images (ctx.inputs)")
        if not torch.equal(fingerprint(self.state.model.module), self.state.weights):
            out.append("the model's weights")
        return out

    def check(self, who: str) -> None:
        changed = self.changed()
        if changed:
            self.restore()
            raise PluginMisbehaved(
                f"The {who} changed {', '.join(changed)} in place. Metrics share what they are handed, so this "
                "would change other metrics' numbers: work on a copy (e.g. ctx.attribution.clamp(min=0) instead of "
                ".clamp_(min=0)). This unit fails; the others were given the original values.")

    def restore(self) -> None:
        self.state.shared.clear()
        for f, copy in self.copies.items():
            current = getattr(self.ctx, f)
            if not torch.equal(current, copy):
                current.copy_(copy)
        for k, copy in self.regions.items():
            if not torch.equal(self.ctx.regions[k], copy):
                self.ctx.regions[k].copy_(copy)
        if not torch.equal(fingerprint(self.state.model.module), self.state.weights):
            self.state.restore_model()
        if self.images is not None and not torch.equal(_checksum(self.images), self.images_sum):
            # the split was changed in place: load it again for this cell and every later one
            self.state.worker.forget(self.state.cell)
            self.state.dataset = self.state.worker.dataset(self.state.cell)


def _checksum(x: torch.Tensor) -> torch.Tensor:
    d = x.detach().double()
    return torch.stack([d.sum(), d.square().sum()])


# ----------------------------------------------------------------------------- helpers

def _reraise_interrupt(exc: BaseException) -> None:
    """A real interruption (Ctrl-C, SIGTERM: the driver raises :class:`RunInterrupted`) stops the
    run; anything else a plugin raises, ``SystemExit`` and a plugin's own ``KeyboardInterrupt``
    included, fails only its units."""
    if isinstance(exc, (RunInterrupted, GeneratorExit)):
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
