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

from .sources import DataSource

if TYPE_CHECKING:  # torch is imported lazily so that `xbench list` stays fast
    import torch
    from torch import Tensor, nn

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")

Tags = Union[frozenset[str], Callable[[Mapping[str, Any]], Iterable[str]]]
"""Capability tags: a fixed set, or a function of the resolved params (e.g. a hybrid loss needs a mask)."""

CATEGORIES = ("localisation", "faithfulness", "robustness", "sanity", "complexity", "classification")
"""Every metric category, in the order the leaderboard shows them."""


@dataclass(frozen=True)
class Param:
    """A plugin parameter: its default, the values it may take, and one line that says what it does.

    Why: the config is checked against these before anything runs, so a typo in a value
    (``fill = "grey"``) is a usage error naming the plugin, the key, the allowed values and the
    closest one, instead of a failure after the model has trained. ``choices`` and the bounds
    ``ge``/``le``/``gt`` apply to a scalar, or to every item of a list param; ``min_items`` bounds a
    list's length; ``check(value)`` returns a message for anything the rest cannot say (None = fine).
    ``label=True`` marks a param that says what a variant *is* (a pre-training source, a loss, a
    fill): variant labels show it whenever it differs from its default. A plugin may give a bare
    default instead of a ``Param``: then only the type is checked.
    """

    default: Any
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_items: int | None = None
    check: Callable[[Any], str | None] | None = None
    label: bool = False

    @property
    def type_name(self) -> str:
        return param_type(self.default)

    def describe(self) -> dict[str, Any]:
        """What ``xbench list --json`` shows of the param."""
        out: dict[str, Any] = {"type": self.type_name, "default": self.default, "doc": self.doc}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        bounds = {k: v for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le), ("min_items", self.min_items))
                  if v is not None}
        if bounds:
            out["range"] = bounds
        return out


def param_type(default: Any) -> str:
    """The type a param's values must have, named as TOML users know it."""
    if default is None:
        return "any"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), ((list, tuple), "list"),
                       (Mapping, "table")):
        if isinstance(default, kind):
            return name
    return type(default).__name__


def param_table(params: Mapping[str, Any]) -> dict[str, Param]:
    """A spec's params as :class:`Param` objects (a bare default becomes ``Param(default)``)."""
    return {k: v if isinstance(v, Param) else Param(v) for k, v in params.items()}


def defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    """A spec's params as plain defaults, as plugins receive them when a config sets nothing."""
    return {k: v.default if isinstance(v, Param) else v for k, v in params.items()}


@dataclass(frozen=True)
class Family:
    """A family of values that share one meaning and differ by their facets: a ``curve`` (a numeric
    ``level`` only, e.g. the step k of a MoRF curve), ``categorical`` (a named ``facet`` only, e.g.
    a region or a class) or a ``grid`` (both, e.g. corruption × severity).

    A metric returns a family as a mapping from facet to per-sample values: ``{3: tensor}`` for a
    curve, ``{"heart": tensor}`` for a categorical family, ``{("contrast", 3): tensor}`` for a grid.
    Rows keep the facets in columns of their own (``family``, ``facet``, ``level``), so the
    leaderboard never parses value names; ``value_name`` still reads ``rmse/contrast/3``.
    ``facet`` and ``level`` name the facets (shown on the leaderboard: "severity", "region").
    ``name`` is the family's name in the rows when it differs from its key in ``MetricSpec.values``,
    so a summary value and its breakdown can share a name (``sensitivity`` and ``sensitivity/NOR``).
    """

    higher_is_better: bool | None = None
    facet: str | None = None
    level: str | None = None
    name: str | None = None

    def __post_init__(self):
        if self.facet is None and self.level is None:
            raise ValueError("a Family needs a named facet (facet=...), a numeric one (level=...), or both")

    @property
    def kind(self) -> str:
        if self.facet is None:
            return "curve"
        return "categorical" if self.level is None else "grid"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "facet": self.facet, "level": self.level, "higher_is_better": self.higher_is_better,
                **({"name": self.name} if self.name else {})}


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
    (e.g. which MRI background was used). By convention ``info["removal_fills"]`` names the
    perturbation fills that remove content from these images (their background value, and blur),
    so that removal metrics can say when a fill adds content instead.
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

    Every spec kind takes ``params`` (name → :class:`Param` or a bare default) and an optional
    ``validate(params)`` for rules between params (raise ``ValueError`` with a one-line message);
    both are checked when the config is read, before any data is loaded. ``available(params)``
    says why real data cannot be read here (None when it can), cheaply, so that a study config can
    name a ``fallback`` dataset to stand in for it.
    """

    name: str
    load: Callable[[Mapping[str, Any], int], Dataset]
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    provides: Tags = frozenset()
    card: str = ""
    validate: Callable[[Mapping[str, Any]], None] | None = None
    available: Callable[[Mapping[str, Any]], str | None] | None = None


@dataclass
class FitReport:
    """What training tells the results: per-epoch history, final validation metrics, and warnings
    (one sentence each) when training ended in a known trap (memorised, collapsed, never improved)."""

    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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
    baselines. ``provides`` defaults to what any differentiable ``nn.Module`` with convolutions
    supports (gradients, CAM layers).

    ``architecture`` names the params that decide the initial weights (e.g. ``width``): with the run
    option ``seeding = "paired"``, variants that differ only in other params (the training
    objective, say) start from the same weights and see the same batches, so they can be compared
    pairwise over seeds. None means every param counts.
    """

    name: str
    build: Callable[[DatasetInfo, Mapping[str, Any]], nn.Module]
    fit: Callable[[nn.Module, Dataset, Mapping[str, Any], FitContext], FitReport]
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    provides: Tags = frozenset({"conv_layer", "gradients"})
    requires: Tags = frozenset()
    layers: Callable[[nn.Module], dict[str, nn.Module]] | None = None
    explainer: Callable[[nn.Module], Callable[[Tensor], Tensor] | None] | None = None
    validate: Callable[[Mapping[str, Any]], None] | None = None
    architecture: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """An attribution-method plugin.

    ``explain(model, inputs, targets, params) -> Tensor`` is batched on the model's device and
    returns ``(N, C, H, W)`` at input resolution or ``(N, h, w)`` / ``(N, 1, h, w)`` at a layer's
    resolution; xbench reduces it to ``(N, H, W)`` by the run's recorded rule before metrics see it.
    ``baseline=True`` marks a null baseline (random map, edge filter), shown as such on leaderboards.
    ``stochastic=True``: the method draws random numbers, and ``explain`` gets a keyword
    ``generator`` (a ``torch.Generator`` on the inputs' device, seeded per batch) to draw them from.
    """

    name: str
    explain: Callable[..., Tensor]
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    requires: Tags = frozenset()
    provides: Tags = frozenset()
    baseline: bool = False
    stochastic: bool = False
    validate: Callable[[Mapping[str, Any]], None] | None = None


@dataclass
class MetricContext:
    """Everything a metric may look at for one batch (``scope="sample"``) or one test split
    (``scope="model"``). Tensors are on ``device``.

    ``attribution`` is the reduced ``(N, H, W)`` map, ``raw_attribution`` what the method returned;
    both are finite: the core zeroes NaN/Inf, flags those samples, marks them in ``undefined`` and
    reports every value of theirs as NaN, whatever the metric returns for them.
    ``reduction`` is the run's rule that made one from the other.
    ``explain(x, targets=None, model=None)`` re-explains other inputs with the same method and
    reduction (targets default to the run's target mode; ``model`` another ``TrainedModel``, e.g. a
    randomised copy); ``explain_raw`` skips the reduction. Their maps are finite too: a sample whose
    map had NaN/Inf there is flagged and marked in ``undefined`` in the same way. ``predict(x)`` returns logits, batched.
    ``params`` holds every param of the metric, resolved (read ``ctx.params[key]``).
    ``flag(where, reason)`` records why some samples' values are undefined (e.g. an empty mask);
    those rows get the reason in their ``note``. ``reuse(key, compute)`` shares a tensor derived
    from the inputs alone (a corrupted copy) with every method's metrics of the cell.
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
    reduction: str = "abs-luminance"
    undefined: Tensor | None = None
    notes: list[tuple[Tensor, str]] = field(default_factory=list)
    shared: Callable[[Any, Callable[[], Tensor]], Tensor] | None = None

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def probabilities(self) -> Tensor:
        return self.logits.softmax(dim=1)

    def flag(self, where: Tensor, reason: str) -> None:
        self.notes.append((where.detach().to("cpu").bool().reshape(-1), str(reason)))

    def reuse(self, key: Any, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()``, a tensor that depends only on these inputs and on ``key`` (which names
        everything else it depends on, e.g. ``("corrupt", "contrast", 3)``), computed once per cell
        and batch and shared by the metrics of every method: the inputs are the same for all of
        them. Each call gets its own copy, so changing it changes nothing for the others. Outside a
        run (``shared`` None) it is simply computed."""
        return compute() if self.shared is None else self.shared(key, compute)


@dataclass(frozen=True)
class MetricSpec:
    """A metric plugin: a small pure function over a batch.

    ``score(ctx) -> {name: Tensor}`` with one value per sample (``scope="sample"``, shape ``(N,)``)
    or one per model (``scope="model"``, shape ``()``). Every name is declared in ``values``: a
    plain value with whether higher is better (None where there is no direction, e.g. counts), or
    a :class:`Family` whose members the metric returns as a mapping from facet to values (a MoRF
    curve ``morf``, the RMSE grid ``rmse`` over corruption × severity). ``category`` is one of
    ``CATEGORIES``. ``requires`` names tags the dataset, model or method must provide (e.g. ``mask``).
    """

    name: str
    score: Callable[[MetricContext], Mapping[str, Any]]
    values: Mapping[str, bool | None | Family]
    category: str
    version: str = "1"
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    requires: Tags = frozenset()
    scope: str = "sample"
    validate: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"metric {self.name!r}: category {self.category!r} is not one of {', '.join(CATEGORIES)}")
        if self.scope not in ("sample", "model"):
            raise ValueError(f"metric {self.name!r}: scope must be 'sample' or 'model', got {self.scope!r}")

    def direction(self, name: str) -> bool | None:
        """Whether higher is better for a declared value or family; KeyError if it is not declared."""
        declared = self.values[name]
        return declared.higher_is_better if isinstance(declared, Family) else declared

    def family(self, name: str) -> Family | None:
        declared = self.values[name]
        return declared if isinstance(declared, Family) else None


class Executor(Protocol):
    """Runs cell jobs and delivers their unit results to the driver, which writes them: calls
    ``work(job, deliver, worker)`` for every job, with the :class:`xbench.obtain.Worker` of the process
    that runs it."""

    def run(self, jobs: list, work: Callable, deliver: Callable) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecutorSpec:
    """An executor plugin: ``create(options) -> Executor``.

    ``options`` holds ``scheduler`` (an address or ""), ``workers``, ``device``, ``registry`` (the
    driver's, for cells run in this process), ``out`` (the run directory) and ``settings`` (the
    config's ``[executor.<name>]`` table, checked against ``params`` and ``validate`` and completed
    with their defaults before anything runs). An executor calls ``work(job, deliver, worker)`` for every job,
    in this process or elsewhere, with one :class:`xbench.obtain.Worker` per process (its registry and
    dataset cache), and makes sure ``deliver`` runs in the driver process for every message.
    """

    name: str
    create: Callable[[Mapping[str, Any]], Executor]
    description: str = ""
    version: str = "1"
    params: Mapping[str, Any] = field(default_factory=dict)
    validate: Callable[[Mapping[str, Any]], None] | None = None


# ----------------------------------------------------------------------------- verification

VERIFIABLE = ("methods", "metrics")
"""The kinds a :class:`VerificationSpec` can check."""


@dataclass(frozen=True)
class VerificationSpec:
    """A cross-check of one method or metric against an independent implementation: what
    ``xbench verify`` runs, records and the leaderboard shows beside the plugin.

    ``check(spec) -> float`` gets the installed spec of ``plugin`` (kind ``kind``: "methods" or
    "metrics"), computes it and the reference on the same small ``inputs`` and returns the largest
    absolute difference; the check passes when that is at most ``tolerance``. ``library`` is the
    distribution of the reference (``quantus``, ``grad-cam``, ``scipy``) whose version the record
    shows, or "" for a re-implementation written in the check from the paper (``reference`` then
    says whose definition); ``needs`` lists other distributions the check imports. A check whose
    distributions are not installed is skipped, never failed. ``differences`` says which
    definition differences between the two were adjusted for (a normalisation, a float precision,
    a seed), so that a reader can judge what "agrees" means.
    """

    name: str
    plugin: str
    kind: str
    reference: str
    check: Callable[[Any], float]
    tolerance: float
    inputs: str
    library: str = ""
    differences: str = ""
    needs: tuple[str, ...] = ()
    version: str = "1"
    description: str = ""

    def __post_init__(self):
        if self.kind not in VERIFIABLE:
            raise ValueError(f"check {self.name!r}: kind must be one of {', '.join(VERIFIABLE)}, got {self.kind!r}")
        if not self.tolerance >= 0:
            raise ValueError(f"check {self.name!r}: tolerance must be a number >= 0, got {self.tolerance!r}")
        if not self.description:  # what `xbench list verifications` shows
            object.__setattr__(self, "description", f"{self.kind[:-1]} {self.plugin} against {self.reference}")


MODEL_FIT = "model-fit"
"""The metric every cell records whatever a config selects (test and validation accuracy against
chance), so every result can be read against whether its model learned; a study's accuracy floor
reads it."""

EXPLANATION_STATS = ("mean", "spread", "between", "pixel_spread", "mass_inside", "area_share", "focus", "pointing")
"""What a model that explains itself reports about its explanations of the validation split, as
``val_explanation_<name>`` in its fit report, and ``model-fit`` records: their level, the spread
within a map, between the maps' means and across images per pixel, and, against the mask (the last
four), the share of the mass inside it, the mask's area share, their ratio and the pointing game."""

PLUGIN_KINDS = ("datasets", "models", "methods", "metrics")
"""The four kinds of benchmark plugin, in the order a combination joins them."""

SPEC_TYPES = dict(zip((*PLUGIN_KINDS, "executors", "verifications", "data_sources"),
                      (DatasetSpec, ModelSpec, MethodSpec, MetricSpec, ExecutorSpec, VerificationSpec, DataSource)))
"""Every kind a plugin can provide (the four above, executors, cross-checks and data sources), with its spec type."""
