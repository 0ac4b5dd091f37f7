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
from .guards import NotFinite, PluginMisbehaved, digest, named_tensors, nonfinite_split, nonfinite_weights, split_tensors
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
        self._seals: dict[str, dict[str, str | None]] = {}
        self.warmed: set[str] = set()

    def forget(self, cell: Cell) -> None:
        """Drop the cell's dataset (e.g. after a plugin changed it in place): the next use reloads it."""
        self._datasets.pop(cell.dataset_key, None)
        self._seals.pop(cell.dataset_key, None)

    def dataset(self, cell: Cell) -> Dataset:
        """The cell's dataset, loaded once, checked against the contract, and free of NaN and Inf
        (a :class:`NotFinite` error names each split that holds them, with counts)."""
        key = cell.dataset_key
        if key in self._datasets:
            self._datasets.move_to_end(key)
            return self._datasets[key]
        spec = self.registry.get("datasets", cell.dataset.name).spec
        dataset = spec.load(dict(cell.dataset.params), cell.seed)
        check_dataset(dataset, cell.dataset.label)
        _check_finite(dataset, cell)
        self._datasets[key] = dataset
        while len(self._datasets) > self.datasets_kept:
            self._seals.pop(self._datasets.popitem(last=False)[0], None)
        return dataset

    def seal(self, cell: Cell) -> None:
        """Remember the digest of every tensor of the cell's dataset (before a plugin that is handed
        all of it, a model's fit, runs); :meth:`changed` says which differ afterwards."""
        if cell.dataset_key not in self._seals:
            self._seals[cell.dataset_key] = {k: digest(v) for k, v in split_tensors(self.dataset(cell)).items()}

    def changed(self, cell: Cell) -> list[str]:
        seal = self._seals.get(cell.dataset_key, {})
        now = split_tensors(self.dataset(cell))
        return [k for k, d in seal.items() if k not in now or digest(now[k]) != d]


def _check_finite(dataset: Dataset, cell: Cell) -> None:
    found = [f"its {name} split's images hold {where}" for name in ("train", "val", "test")
             if (where := nonfinite_split(dataset.split(name)))]
    if found:
        raise NotFinite(
            f"Dataset {cell.dataset.label!r} (seed {cell.seed}): {'; '.join(found)}. A model cannot be trained, "
            "tested or explained on NaN or Inf values: fix the dataset or its files (e.g. replace missing pixels "
            "by the background value). This dataset's cells fail; the rest of the run goes on.")


def model_seeds(cell: Cell, architecture: tuple[str, ...] | None) -> tuple[int, int]:
    """(initialisation seed, training seed) of a cell's model.

    ``variant`` seeding hashes the model's full params, so every variant starts from its own
    weights. ``paired`` hashes only the dataset, the seed, the model's name and its
    ``architecture`` params: variants that differ only in their objective start from the same
    weights and see the same random draws, so they can be compared pairwise over seeds. The
    seeding is the cell's (``[run] seeding``), and part of its model's key."""
    if cell.seeding == "paired":
        params = cell.model.params
        arch = {k: params[k] for k in (architecture if architecture is not None else sorted(params)) if k in params}
        base = {"data": cell.dataset_key, "model": cell.model.name, "architecture": arch, "seed": cell.seed}
        return seed_of(base, "init"), seed_of(base, "fit")
    return seed_of(cell.model_key, "init"), seed_of(cell.model_key, "fit")


def default_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}


def obtain_model(worker: Worker, cell: Cell, dataset: Dataset, info: DatasetInfo, device: torch.device,
                 cache: Cache, deliver: Callable[[Any], None],
                 timings: dict[str, float]) -> tuple[TrainedModel, bool]:
    """The cell's trained model, in eval mode on ``device``, and whether it came from the cache.

    The model is built under its initialisation seed; an ``untrained`` model stops there (the null
    baseline). Otherwise the cache is asked first; a miss trains under the training seed and
    caches the weights and the fit report (``weights_only`` on the way back). Weights that hold NaN
    or Inf are a :class:`NotFinite` error naming each layer (and never cached); a fit that changes
    the dataset in place is a :class:`PluginMisbehaved` error naming the split and field."""
    import time

    spec = worker.registry.get("models", cell.model.name).spec
    params = dict(cell.model.params)
    untrained = bool(params.pop("untrained", False))
    init_seed, fit_seed = model_seeds(cell, spec.architecture)
    torch.manual_seed(init_seed)  # build draws the initial weights from the global RNG: the seed decides them
    start = time.perf_counter()
    module = spec.build(info, params)
    timings["build"] += time.perf_counter() - start
    cached = False
    if untrained:
        report = FitReport()
        _check_weights(module, cell, "as built (untrained)", "its build() must make finite initial weights")
    else:
        hit = cache.load_model(cell.model_key)
        if hit is not None:
            state, report = hit
            module.load_state_dict(state)
            cached = True
            _check_weights(module, cell, "from the cache", f"delete its cache entry ({cache.root / 'models'}/"
                                                           f"{cell.model_key}.*) to train it again")
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
            worker.seal(cell)
            start = time.perf_counter()
            report = spec.fit(module, dataset, params, ctx)
            timings["fit"] += time.perf_counter() - start
            changed = worker.changed(cell)
            if changed:
                worker.forget(cell)
                raise PluginMisbehaved(
                    f"Model {cell.model.label!r}: its fit changed the dataset in place ({', '.join(changed)}), so "
                    "later cells would train and be scored on other data. A fit must leave the dataset as it found "
                    "it: transform copies (x = x * 2, not x.mul_(2)). The dataset is loaded again for the other "
                    "cells; this cell fails.")
            if not isinstance(report, FitReport):
                raise TypeError(f"model {cell.model.name!r}: fit() returned {type(report).__name__}, expected FitReport")
            _check_weights(module, cell, "after training", "training diverged: lower the learning rate, or check "
                                                            "the training data and the loss for NaN")
            cache.save_model(cell.model_key, module.state_dict(), report,
                             {"model": cell.model.label, "dataset": cell.dataset.label, "seed": cell.seed})
    module.to(device).eval()
    layers = spec.layers(module) if spec.layers else default_layers(module)
    explain = spec.explainer(module) if spec.explainer else getattr(module, "explain", None)
    return TrainedModel(module=module, info=info, target_layers=layers, explain=explain, report=report), cached


def _check_weights(module: torch.nn.Module, cell: Cell, origin: str, advice: str) -> None:
    bad = nonfinite_weights(module)
    if bad:
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        raise NotFinite(f"Model {cell.model.label!r} {origin} holds NaN or Inf in its weights: {', '.join(bad[:6])}"
                        f"{more}. Its predictions and explanations would be meaningless: {advice}. This cell fails; "
                        "the rest of the run goes on.")


def fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """An exact digest of every parameter and buffer by name (BLAKE2 of the bytes, so NaN equals NaN
    and a negated or permuted weight differs), as 16 bytes: ``torch.equal`` before and after a call
    says whether the call left the weights as it found them. The cell compares against a copy."""
    text = content_hash({k: digest(v) for k, v in named_tensors(module).items()}, length=32)
    return torch.frombuffer(bytearray.fromhex(text), dtype=torch.uint8)
