"""Getting what a cell needs: its dataset (loaded once per worker and kept while the next cell
uses it too) and its trained model (from the content-addressed cache, or trained and cached).

An executor creates one :class:`Worker` per process that runs cells and passes it to every cell;
the worker owns the registry and the dataset cache, so nothing here is a hidden global.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .cache import Cache
from .checks import check_dataset
from .hashing import content_hash
from .messages import Status
from .plan import Cell
from .registry import Registry
from .specs import Dataset, DatasetInfo, FitContext, FitReport, TrainedModel

SEEDINGS = ("variant", "paired")


def seed_of(*parts: Any) -> int:
    """A 63-bit seed from a content hash of ``parts``."""
    return int(content_hash(parts), 16) % (2**63 - 1)


class Worker:
    """One process's state across the cells it runs: the plugin registry, the last dataset loaded
    (cells are ordered dataset-major, so consecutive cells usually share it), and the methods
    already called once here (their imports are done: :func:`xbench.cell._warm_up`)."""

    def __init__(self, registry: Registry, datasets_kept: int = 1):
        self.registry = registry
        self.datasets_kept = datasets_kept
        self._datasets: OrderedDict[str, Dataset] = OrderedDict()
        self.warmed: set[str] = set()

    def forget(self, cell: Cell) -> None:
        """Drop the cell's dataset (e.g. after a plugin changed it in place): the next use reloads it."""
        self._datasets.pop(cell.dataset_key, None)

    def dataset(self, cell: Cell) -> Dataset:
        key = cell.dataset_key
        if key in self._datasets:
            self._datasets.move_to_end(key)
            return self._datasets[key]
        spec = self.registry.get("datasets", cell.dataset.name).spec
        dataset = spec.load(dict(cell.dataset.params), cell.seed)
        check_dataset(dataset, cell.dataset.label)
        self._datasets[key] = dataset
        while len(self._datasets) > self.datasets_kept:
            self._datasets.popitem(last=False)
        return dataset


def model_seeds(cell: Cell, architecture: tuple[str, ...] | None, seeding: str) -> tuple[int, int]:
    """(initialisation seed, training seed) of a cell's model.

    ``variant`` seeding hashes the model's full params, so every variant starts from its own
    weights. ``paired`` hashes only the dataset, the seed, the model's name and its
    ``architecture`` params: variants that differ only in their objective start from the same
    weights and see the same random draws, so they can be compared pairwise over seeds."""
    if seeding == "paired":
        params = cell.model.params
        arch = {k: params[k] for k in (architecture if architecture is not None else sorted(params)) if k in params}
        base = {"data": cell.dataset_key, "model": cell.model.name, "architecture": arch, "seed": cell.seed}
        return seed_of(base, "init"), seed_of(base, "fit")
    return seed_of(cell.model_key, "init"), seed_of(cell.model_key, "fit")


def default_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}


def obtain_model(worker: Worker, cell: Cell, dataset: Dataset, info: DatasetInfo, device: torch.device,
                 cache: Cache, seeding: str, deliver: Callable[[Any], None],
                 timings: dict[str, float]) -> tuple[TrainedModel, bool]:
    """The cell's trained model, in eval mode on ``device``, and whether it came from the cache.

    The model is built under its initialisation seed; an ``untrained`` model stops there (the null
    baseline). Otherwise the cache is asked first; a miss trains under the training seed and
    caches the weights and the fit report (``weights_only`` on the way back)."""
    import time

    spec = worker.registry.get("models", cell.model.name).spec
    params = dict(cell.model.params)
    untrained = bool(params.pop("untrained", False))
    init_seed, fit_seed = model_seeds(cell, spec.architecture, seeding)
    torch.manual_seed(init_seed)  # build draws the initial weights from the global RNG: the seed decides them
    start = time.perf_counter()
    module = spec.build(info, params)
    timings["build"] += time.perf_counter() - start
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
            # fit's shuffles, dropout and augmentation draw from the global RNGs: the training seed decides them
            torch.manual_seed(fit_seed)
            np.random.seed(fit_seed % (2**32))

            def progress(step, total, **numbers):
                shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items())
                deliver(Status(f"{cell.title}: training {step}/{total} {shown}", "fit"))

            ctx = FitContext(seed=cell.seed, device=device, cache_dir=str(cache.plugin_dir(cell.model.name)),
                             progress=progress)
            start = time.perf_counter()
            report = spec.fit(module, dataset, params, ctx)
            timings["fit"] += time.perf_counter() - start
            if not isinstance(report, FitReport):
                raise TypeError(f"model {cell.model.name!r}: fit() returned {type(report).__name__}, expected FitReport")
            cache.save_model(cell.model_key, module.state_dict(), report,
                             {"model": cell.model.label, "dataset": cell.dataset.label, "seed": cell.seed})
    module.to(device).eval()
    layers = spec.layers(module) if spec.layers else default_layers(module)
    explain = spec.explainer(module) if spec.explainer else getattr(module, "explain", None)
    return TrainedModel(module=module, info=info, target_layers=layers, explain=explain, report=report), cached


def fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """A cheap checksum of every parameter and buffer (the norm of each, in one pass over memory):
    a plugin that changes the model's weights changes it. Deterministic on one device, so it is
    compared exactly."""
    floats = [t.detach() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    others = [t.detach() for t in module.buffers() if not t.is_floating_point()]
    with torch.no_grad():
        parts = [torch.stack(torch._foreach_norm(floats)).double().cpu()] if floats else []
        parts += [torch.stack([t.double().sum() for t in others]).cpu()] if others else []
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
