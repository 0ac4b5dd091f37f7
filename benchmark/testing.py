"""A test kit for plugin authors (and xbench's own tests): small data with a planted signal, a model
trained on it in seconds, metric contexts built by hand, and conformance checks.

Example::

    from xbench import testing
    data = testing.planted_dataset(seed=0)
    model = testing.train_small_cnn(data)
    ctx = testing.metric_context(model, data.test, attribution=data.test.masks[:8].float())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .checks import check_dataset
from .specs import (Dataset, FitContext, FitReport, MethodSpec, MetricContext, MetricSpec, ModelSpec, Split, TrainedModel,
                    defaults)


def planted_split(n: int, *, size: int = 32, channels: int = 1, seed: int = 0, patch: int = 8,
                  noise: float = 0.1) -> Split:
    """Noise images with one planted ``patch``×``patch`` pattern at a random place; the mask is the patch.

    Class 0 carries a bright square, class 1 a bright square with a dark centre (a ring): the class
    is decidable only from the patch, so a model that works must look there.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=g) % 2
    x = torch.rand(n, channels, size, size, generator=g) * noise
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    top = torch.randint(0, size - patch + 1, (n,), generator=g)
    left = torch.randint(0, size - patch + 1, (n,), generator=g)
    rows = torch.arange(size)
    inside_r = (rows[None, :] >= top[:, None]) & (rows[None, :] < (top + patch)[:, None])
    inside_c = (rows[None, :] >= left[:, None]) & (rows[None, :] < (left + patch)[:, None])
    masks = inside_r[:, :, None] & inside_c[:, None, :]
    q = patch // 4
    core_r = (rows[None, :] >= (top + q)[:, None]) & (rows[None, :] < (top + patch - q)[:, None])
    core_c = (rows[None, :] >= (left + q)[:, None]) & (rows[None, :] < (left + patch - q)[:, None])
    core = core_r[:, :, None] & core_c[:, None, :]
    pattern = masks & ~(core & (labels == 1)[:, None, None])
    x = torch.where(pattern[:, None], torch.ones_like(x) * 0.9, x)
    return Split(images=x.float(), labels=labels.long(), masks=masks, regions={"patch": masks})


def planted_dataset(*, n_train: int = 512, n_val: int = 128, n_test: int = 128, size: int = 32,
                    channels: int = 1, seed: int = 0) -> Dataset:
    """Train/val/test splits of :func:`planted_split`, deterministic for ``seed``."""
    splits = {name: planted_split(n, size=size, channels=channels, seed=seed * 3 + i)
              for i, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test)))}
    return Dataset("planted", ("square", "ring"), splits)


def train_small_cnn(dataset: Dataset, *, epochs: int = 8, seed: int = 0, width: int = 8,
                    device: str | torch.device = "cpu", lr: float = 3e-3) -> TrainedModel:
    """The built-in ``small-cnn`` trained on ``dataset``: a real model, in a few seconds on a CPU."""
    from xbench.plugins.models import small_cnn

    device = torch.device(device)
    torch.manual_seed(seed)  # the initial weights, as a run seeds them before build
    params = {**defaults(small_cnn.PARAMS), "width": width, "epochs": epochs, "lr": lr, "patience": epochs}
    module = small_cnn.build(dataset.describe(), params)
    report = small_cnn.fit(module, dataset, params, FitContext(seed=seed, device=device, cache_dir=""))
    module.eval()
    layers = {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}
    return TrainedModel(module=module, info=dataset.describe(), target_layers=layers, report=report)


def model_from_spec(spec: ModelSpec, dataset: Dataset, params: Mapping[str, Any] | None = None, *, seed: int = 0,
                    fit: bool = False) -> TrainedModel:
    """A model plugin's network for ``dataset`` (its defaults updated by ``params``), built from
    ``seed`` as a run builds it, trained only with ``fit``, wrapped with its target layers and
    in-model explainer exactly as a run wraps it."""
    from .obtain import default_layers

    merged = {**defaults(spec.params), **(params or {})}
    torch.manual_seed(seed)  # the initial weights, as a run seeds them before build
    module = spec.build(dataset.describe(), merged)
    report = spec.fit(module, dataset, merged, FitContext(seed=seed, device=torch.device("cpu"), cache_dir="")) \
        if fit else FitReport()
    module.eval()
    layers = spec.layers(module) if spec.layers else default_layers(module)
    explain = spec.explainer(module) if spec.explainer else getattr(module, "explain", None)
    return TrainedModel(module=module, info=dataset.describe(), target_layers=layers, explain=explain, report=report)


def explain_maps(spec: MethodSpec, model: TrainedModel, inputs: torch.Tensor, targets: torch.Tensor,
            params: Mapping[str, Any] | None = None, *, reduction: str = "abs-luminance") -> torch.Tensor:
    """A method plugin's maps of ``inputs`` as metrics see them, ``(N, H, W)``: called the way a
    run calls it (gradients on, a seeded generator for a stochastic method) and reduced by
    ``reduction``; an ``AttributionError`` when what it returns is no map of the batch."""
    from .attribution import reduce_attribution, run_method

    raw = run_method(spec, model, inputs, targets, {**defaults(spec.params), **(params or {})})
    return reduce_attribution(raw, tuple(inputs.shape[-2:]), reduction, spec.name)


def metric_context(model: TrainedModel, split: Split, *, attribution: torch.Tensor | None = None,
                   params: Mapping[str, Any] | None = None, n: int | None = None,
                   explain=None, target: str = "label", seed: int = 0,
                   reduction: str = "abs-luminance", dataset: Dataset | None = None) -> MetricContext:
    """The :class:`MetricContext` a run would score over the first ``n`` samples of ``split``.

    ``attribution`` is what a method returned (``(N, C, H, W)`` at input resolution, or a CAM's
    ``(N, h, w)`` at its layer's resolution); it is reduced by ``reduction`` exactly as a run
    reduces it (by default ``abs-luminance``: pass ``reduction = "sum"`` to hand a metric a signed
    map). ``explain(model, x, targets) -> raw maps`` lets the metric re-explain inputs; targets
    follow ``target`` as in a run (``predicted``: each input's own predicted class). ``dataset``
    is what a model-level metric may read (e.g. its corruption options). Built by
    :func:`xbench.results.metric_context`, the factory the runner uses."""
    from . import results

    n = len(split) if n is None else n
    device = next(model.module.parameters()).device
    x = split.images[:n].to(device)
    with torch.no_grad():
        logits = model.module(x).float()
    labels = split.labels[:n].to(device)
    targets = labels if target == "label" else logits.argmax(1)

    def predict(batch):
        with torch.no_grad():
            return model.module(batch.to(device)).float()

    prepared = None
    if attribution is not None:
        prepared = results.prepare_attribution(attribution[:n].to(device), tuple(x.shape[-2:]), reduction)
    return results.metric_context(
        model=model, inputs=x, labels=labels, logits=logits, targets=targets, target_mode=target,
        params=dict(params or {}), generator=torch.Generator(device=device).manual_seed(seed), predict=predict,
        device=device, attribution=prepared, explainer=explain,
        mask=None if split.masks is None else split.masks[:n].to(device),
        regions={k: v[:n].to(device) for k, v in split.regions.items()}, reduction=reduction, dataset=dataset,
    )


def params_of(kind: str, spec: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The spec's defaults updated by ``params``, checked exactly as a config's are before a run:
    a ``UsageError`` naming the plugin, the key and what is allowed for a value a ``Param`` refuses
    (type, allowed values, bounds, its own check), and the spec's own ``ValueError`` for a rule
    between params (its ``validate``)."""
    from .config import check_param, plugin_params

    table = plugin_params(kind, spec)
    where = f"{kind[:-1]} {spec.name}"
    given = {key: check_param(where, kind, spec.name, key, value, table) for key, value in (params or {}).items()}
    merged = {**defaults(table), **given}
    if getattr(spec, "validate", None) is not None:
        spec.validate(merged)
    return merged


def score(spec: MetricSpec, ctx: MetricContext, **params: Any) -> dict[str, torch.Tensor]:
    """Score ``ctx`` as a run scores it, as ``{value_name: values}``: the spec's defaults updated by
    the context's params and by ``params``, checked as a config's would be (:func:`params_of`), the
    output validated, and the values of samples with non-finite attributions NaN."""
    from . import results

    ctx.params = params_of("metrics", spec, {**ctx.params, **params})
    return {v.name: v.values for v in results.score(spec, ctx)}


def check_dataset_spec(spec, params: Mapping[str, Any] | None = None, seed: int = 0) -> Dataset:
    """Load a dataset spec with its defaults updated by ``params`` (checked as a config's,
    :func:`params_of`) and check the data contract; loading twice with the same seed must give
    identical tensors."""
    merged = params_of("datasets", spec, params)
    first, second = spec.load(merged, seed), spec.load(merged, seed)
    check_dataset(first, spec.name)
    for split in ("train", "val", "test"):
        a, b = first.split(split), second.split(split)
        assert torch.equal(a.labels, b.labels), f"{spec.name}: labels of {split} differ between two loads with one seed"
        assert torch.equal(a.images[: min(8, len(a))], b.images[: min(8, len(b))]), \
            f"{spec.name}: images of {split} differ between two loads with one seed"
    return first
