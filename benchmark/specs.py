"""The typed, frozen objects that plugins hand to xbench, and the data they exchange.

A plugin never subclasses anything: it yields one of the four ``*Spec`` objects from a hook
(see :mod:`xbench.hookspecs`). Specs carry metadata (name, version, params with defaults,
capability tags) and plain callables; the runner owns batching, devices, caching and results.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

if TYPE_CHECKING:  # torch is imported lazily so that `xbench list` stays fast
    import torch
    from torch import Tensor, nn

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")

Tags = Union[frozenset[str], Callable[[Mapping[str, Any]], Iterable[str]]]
"""Capability tags: a fixed set, or a function of the resolved params (e.g. a hybrid loss needs a mask)."""


def resolve_tags(tags: Tags, params: Mapping[str, Any]) -> frozenset[str]:
    """Tags of a spec for the given params."""
    return frozenset(tags(params)) if callable(tags) else frozenset(tags)


@runtime_checkable
class ArrayLike(Protocol):
    """What a split's images, masks and regions must offer: a length, a shape and batch indexing.

    A ``torch.Tensor`` qualifies; large datasets pass a lazy array (see :class:`LazyArray`).
    """

    shape: Any

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Tensor: ...


class LazyArray:
    """A batch-indexable array whose items are produced on demand by ``fetch(indices) -> Tensor``.

    Why: MedMNIST at 224 px or ImageNet images do not fit in memory as float32; the runner only
    ever asks for one batch at a time.
    """

    def __init__(self, length: int, item_shape: tuple[int, ...], fetch: Callable[[list[int]], Tensor]):
        self._length = int(length)
        self.shape = (self._length, *item_shape)
        self._fetch = fetch

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Tensor:
        import torch

        if isinstance(index, slice):
            indices = list(range(*index.indices(self._length)))
        elif isinstance(index, int):
            return self._fetch([index])[0]
        else:
            indices = [int(i) for i in torch.as_tensor(index).reshape(-1).tolist()]
        if any(i < 0 or i >= self._length for i in indices):
            raise IndexError(f"index out of range for a lazy array of length {self._length}")
        return self._fetch(indices)


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    images: ``(N, C, H, W)`` float32, in [0, 1] unless the dataset card says otherwise.
    labels: ``(N,)`` int64 class indices.
    masks: ``(N, H, W)`` bool ground truth of the class-relevant region, or None.
    regions: named ``(N, H, W)`` bool masks (e.g. heart, fat, marker).
    meta: per-sample arrays of length N (e.g. sex, source file); recorded, never required.
    """

    images: ArrayLike
    labels: Tensor
    masks: ArrayLike | None = None
    regions: Mapping[str, ArrayLike] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know to build its architecture."""

    name: str
    channels: int
    height: int
    width: int
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Dataset:
    """Splits plus the facts about them that results must record.

    ``splits`` maps ``train``, ``val`` and ``test`` to a :class:`Split`, or to a zero-argument
    callable returning one (loaded on first use). ``info`` holds facts to record with the results
    (e.g. which MRI background was used).
    """

    name: str
    class_names: tuple[str, ...]
    splits: Mapping[str, Split | Callable[[], Split]]
    info: Mapping[str, Any] = field(default_factory=dict)
    _loaded: dict = field(default_factory=dict, repr=False, compare=False)

    def split(self, name: str) -> Split:
        if name not in self._loaded:
            if name not in self.splits:
                raise KeyError(f"dataset {self.name!r} has no split {name!r} (it has {sorted(self.splits)})")
            value = self.splits[name]
            self._loaded[name] = value() if callable(value) else value
        return self._loaded[name]

    @property
    def train(self) -> Split:
        return self.split("train")

    @property
    def val(self) -> Split:
        return self.split("val")

    @property
    def test(self) -> Split:
        return self.split("test")

    def describe(self) -> DatasetInfo:
        _, c, h, w = self.test.images.shape
        return DatasetInfo(self.name, int(c), int(h), int(w), tuple(self.class_names))


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset plugin.

    ``load(params, seed) -> Dataset`` must be deterministic for a seed. ``provides`` lists what the
    data offers downstream: ``mask`` (ground truth of the class-relevant region), ``regions``,
    ``grayscale`` or ``rgb``. ``card`` is a short Markdown description: what it is, where it comes
    from, its licence, what the mask means and how to get the real data.
    """

    name: str
    load: Callable[[Mapping[str, Any], int], Dataset]
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    provides: Tags = frozenset()
    card: str = ""


@dataclass
class FitReport:
    """What training tells the results: per-epoch history and final validation metrics."""

    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitContext:
    """What the runner gives a model's ``fit``: the seed, device, a progress callback and a cache.

    ``progress(step, total, **numbers)`` updates the run's progress bar. ``cache_dir`` is where a
    plugin may keep expensive intermediate artefacts (e.g. a pre-trained backbone) across runs.
    """

    seed: int
    device: torch.device
    cache_dir: str
    progress: Callable[..., None] = lambda *args, **kwargs: None


@dataclass
class TrainedModel:
    """A network ready for attribution: eval mode, on the run's device.

    ``target_layers`` are the named layers CAM methods may use, shallow to deep (the last is the
    default). ``explain`` is an in-model explainer ``x -> (N, H, W)`` in [0, 1], if the model has one.
    """

    module: nn.Module
    info: DatasetInfo
    target_layers: dict[str, nn.Module]
    explain: Callable[[Tensor], Tensor] | None = None
    report: FitReport = field(default_factory=FitReport)


@dataclass(frozen=True)
class ModelSpec:
    """A model plugin.

    ``build(info, params) -> nn.Module`` makes the (untrained) architecture; the runner seeds the
    RNG first. ``fit(module, dataset, params, ctx) -> FitReport`` trains it in place. The runner
    caches trained weights by a content hash and restores them with ``build`` +
    ``load_state_dict(weights_only=True)``, so ``build`` must always produce the same structure.

    ``layers(module)`` names the target layers for CAM methods (default: every ``Conv2d``);
    ``explainer(module)`` returns the in-model explainer (default: ``module.explain`` if defined).
    Every model also accepts the param ``untrained`` (handled by xbench): skip ``fit``, for null
    baselines.
    """

    name: str
    build: Callable[[DatasetInfo, Mapping[str, Any]], nn.Module]
    fit: Callable[[nn.Module, Dataset, Mapping[str, Any], FitContext], FitReport]
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    provides: Tags = frozenset({"conv_layer"})
    requires: Tags = frozenset()
    layers: Callable[[nn.Module], dict[str, nn.Module]] | None = None
    explainer: Callable[[nn.Module], Callable[[Tensor], Tensor] | None] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """An attribution-method plugin.

    ``explain(model, inputs, targets, params) -> Tensor`` is batched on the model's device and
    returns ``(N, C, H, W)`` at input resolution or ``(N, h, w)`` / ``(N, 1, h, w)`` at a layer's
    resolution; xbench reduces it to ``(N, H, W)`` by the run's recorded rule before metrics see it.
    ``baseline=True`` marks a null baseline (random map, edge filter), shown as such on leaderboards.
    """

    name: str
    explain: Callable[[TrainedModel, Tensor, Tensor, Mapping[str, Any]], Tensor]
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    requires: Tags = frozenset()
    provides: Tags = frozenset()
    baseline: bool = False


CATEGORIES = ("localisation", "faithfulness", "robustness", "classification", "sanity", "complexity")


@dataclass
class MetricContext:
    """Everything a metric may look at for one batch (``scope="sample"``) or one test split
    (``scope="model"``). Tensors are on ``device``.

    ``attribution`` is the reduced ``(N, H, W)`` map, ``raw_attribution`` what the method returned.
    ``explain(x, targets=None)`` re-explains other inputs with the same method and reduction
    (targets default to the run's target mode); ``explain_raw`` skips the reduction.
    ``predict(x)`` returns logits, batched. ``flag(where, reason)`` records why some samples'
    values are undefined (e.g. an empty mask); those rows get the reason in their ``note``.
    """

    model: TrainedModel
    inputs: Tensor
    labels: Tensor
    logits: Tensor
    targets: Tensor
    params: Mapping[str, Any]
    generator: torch.Generator
    device: torch.device
    predict: Callable[[Tensor], Tensor]
    attribution: Tensor | None = None
    raw_attribution: Tensor | None = None
    mask: Tensor | None = None
    regions: Mapping[str, Tensor] = field(default_factory=dict)
    explain: Callable[..., Tensor] | None = None
    explain_raw: Callable[..., Tensor] | None = None
    dataset: Dataset | None = None
    method: str | None = None
    notes: list[tuple[Tensor, str]] = field(default_factory=list)

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def probabilities(self) -> Tensor:
        return self.logits.softmax(dim=1)

    def flag(self, where: Tensor, reason: str) -> None:
        self.notes.append((where.detach().to("cpu").bool().reshape(-1), str(reason)))


@dataclass(frozen=True)
class MetricSpec:
    """A metric plugin: a small pure function over a batch.

    ``score(ctx) -> {value_name: Tensor}`` with one value per sample (``scope="sample"``, shape
    ``(N,)``) or one per model (``scope="model"``, shape ``()``); every value name is declared in
    ``values`` with whether higher is better (None where there is no direction, e.g. counts).
    A declared name ending in ``/*`` covers a family of values whose facets follow in the name,
    separated by ``/``: ``morf/*`` for ``morf/0 … morf/L`` (a curve), ``rmse/*`` for
    ``rmse/<corruption>/<severity>``. ``requires`` names tags the dataset, model or method must
    provide (e.g. ``mask``).
    """

    name: str
    score: Callable[[MetricContext], Mapping[str, Tensor]]
    values: Mapping[str, bool | None]
    category: str
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    requires: Tags = frozenset()
    scope: str = "sample"

    def direction(self, value_name: str) -> bool | None:
        """Whether higher is better for a returned value name; KeyError if it is not declared."""
        if value_name in self.values:
            return self.values[value_name]
        for declared, higher in self.values.items():
            if declared.endswith("/*") and value_name.startswith(declared[:-1]) and len(value_name) > len(declared) - 1:
                return higher
        raise KeyError(value_name)


class Executor(Protocol):
    """Runs cell jobs and delivers their unit results to the driver, which writes them."""

    def run(self, jobs: list, work: Callable, deliver: Callable) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecutorSpec:
    """An executor plugin: ``create(options) -> Executor``.

    ``options`` holds ``scheduler`` (an address or ""), ``workers`` and ``device``. An executor calls
    ``work(job, deliver)`` for every job, in this process or elsewhere, and makes sure ``deliver``
    runs in the driver process for every unit result.
    """

    name: str
    create: Callable[[Mapping[str, Any]], Executor]
    description: str = ""
    version: str = "1"


SPEC_TYPES = {
    "datasets": DatasetSpec,
    "models": ModelSpec,
    "methods": MethodSpec,
    "metrics": MetricSpec,
    "executors": ExecutorSpec,
}
