"""Robustness under corruption (Treyer; seed-algorithms.md §4.4–4.6, §5.4.6–7).

- ``saliency-rmse`` (per sample): re-explain each corrupted input with the same method, min-max the
  clean and the corrupted map to [0, 255] (a constant map becomes 0) and report
  RMSE = sqrt(mean((H_clean − H_corrupt)²)) as ``rmse/<corruption>/<severity>``. Maps that a method
  returns at a layer's resolution (CAMs) are compared there, as the source did; per-layer tables come
  from method variants with different layers. Input-resolution maps are compared after the run's
  reduction. The corrupted input is explained for the run's target mode (``label``: the same label;
  ``predicted``: each input's own argmax, which is Treyer's choice).
- ``corruption-classification`` (per model): AUC and ACC of the model on the clean test split and
  on every corruption × severity, and ΔAUC = AUC_clean − AUC_corrupt, ΔACC likewise
  (``auc/<c>/<s>``, ``acc/…``, ``delta_auc/…``, ``delta_acc/…``).

Corruption seeds are a documented hash of each image's content (its pixels quantised to 1/255),
the corruption and the severity (:func:`content_seeds`): the same image gets the same noise
whatever its batch, method or device, so methods are compared on identical corrupted inputs and the
saliency and classification metrics see the same corrupted images.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from xbench import Family, MetricContext, MetricSpec, Param, hookimpl
from xbench.attribution import reduce_attribution
from xbench.datasets._corruptions import CORRUPTIONS, SEVERITIES
from xbench.errors import UsageError

from ._common import constant_maps, defined
from .classification import auc_and_accuracy

_PRIME = 2**31 - 1


def content_seeds(images: torch.Tensor, corruption: str, severity: int) -> torch.Tensor:
    """One seed per image, from its content: its pixels quantised to integers 0..255, dotted with
    fixed pseudo-random weights below 2³¹ (drawn from seed 5) modulo the prime 2³¹−1, then mixed with
    the corruption's name (CRC-32) and the severity. Exact integer arithmetic (no product or partial
    sum reaches 2⁶³), so the seed is the same on every device and in every batch."""
    n = images.shape[0]
    q = (images.detach().clamp(0, 1) * 255).round().to(torch.int64).reshape(n, -1)
    d = q.shape[1]
    w = torch.randint(0, _PRIME, (d,), generator=torch.Generator().manual_seed(5), dtype=torch.int64).to(q.device)
    h = torch.zeros(n, dtype=torch.int64, device=q.device)
    for start in range(0, d, 2**17):  # ≤ 2¹⁷ products < 2⁸·2³¹ each: the partial sum stays < 2⁵⁶
        h = (h + (q[:, start:start + 2**17] * w[start:start + 2**17]).sum(1)) % _PRIME
    c = zlib.crc32(corruption.encode())
    h = (h * 1_000_003 + c) % _PRIME
    return (h * 998_244_353 + int(severity)) % _PRIME


def _grid(ctx: MetricContext) -> tuple[list[str], list[int]]:
    return [str(c) for c in ctx.params["corruptions"]], [int(s) for s in ctx.params["severities"]]


def scaled_255(maps: torch.Tensor, uint8: bool = False) -> torch.Tensor:
    """Min-max each (N, h, w) map to [0, 255]; a constant map becomes all 0 (as cv2 NORM_MINMAX does).
    ``uint8`` rounds to integers as the source's uint8 output did."""
    flat = maps.double().flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp(min=torch.finfo(flat.dtype).tiny) * 255,
                      torch.zeros_like(flat))
    return (out.round() if uint8 else out).reshape(maps.shape)


def native_size(ctx: MetricContext) -> tuple[int, int] | None:
    """The layer resolution of the method's raw maps, or None when they are at input resolution."""
    raw = ctx.raw_attribution
    if raw is None:
        return None
    size = tuple(raw.shape[-2:])
    return None if size == tuple(ctx.inputs.shape[-2:]) else size


def saliency_rmse(ctx: MetricContext) -> dict[str, torch.Tensor]:
    from xbench.datasets._corruptions import corrupt, corruption_options

    if ctx.explain is None or ctx.explain_raw is None:
        raise UsageError("saliency-rmse re-explains corrupted inputs and needs ctx.explain / ctx.explain_raw.")
    corruptions, severities = _grid(ctx)
    uint8 = bool(ctx.params["legacy_uint8"])
    options = corruption_options(ctx.dataset)
    x = ctx.inputs
    size = native_size(ctx)

    def as_maps(raw: torch.Tensor) -> torch.Tensor:
        return reduce_attribution(raw, size, ctx.reduction, ctx.method or "?")

    if size is None:
        clean, explain = ctx.attribution.float(), ctx.explain
    else:
        clean, explain = as_maps(ctx.raw_attribution.float()), (lambda v: as_maps(ctx.explain_raw(v)))
    reference = scaled_255(clean, uint8)
    flat_any = constant_maps(clean)
    out: dict[tuple[str, int], torch.Tensor] = {}
    shown = repr(sorted(options.items()))
    for corruption in corruptions:
        for severity in severities:
            # the same corrupted batch for every method: computed once per cell
            xc = ctx.reuse(("corrupt", corruption, severity, shown),
                           lambda c=corruption, s=severity: corrupt(x, c, s, content_seeds(x, c, s), **options))
            maps = explain(xc).float()
            if tuple(maps.shape) != tuple(clean.shape):
                raise UsageError(f"method {ctx.method!r} returned maps of shape {tuple(maps.shape)} for corrupted "
                                 f"inputs but {tuple(clean.shape)} for clean ones; RMSE needs the same shape.")
            flat_any |= constant_maps(maps)
            out[corruption, severity] = (reference - scaled_255(maps, uint8)).flatten(1).square().mean(1).sqrt()
    ctx.flag(flat_any & defined(ctx), "a constant saliency map (clean or corrupted) was scaled to all 0")
    return {"rmse": out}


def corruption_classification(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """AUC/ACC clean and under every corruption × severity, and their drops; the test split is read
    once, in slices of ``batch_size`` (it may be a lazy array). AUCs rank the logits' float64
    log-odds, not float32 softmax scores, which tie at 1.0 for a confident model."""
    from xbench.datasets._corruptions import corrupt, corruption_options

    corruptions, severities = _grid(ctx)
    options = corruption_options(ctx.dataset)
    batch = int(ctx.params["batch_size"])
    images = ctx.inputs
    n = len(images)
    labels = ctx.labels.cpu().numpy()
    logits: dict[tuple[str, int], list[torch.Tensor]] = {(c, s): [] for c in corruptions for s in severities}
    for start in range(0, n, batch):
        xb = images[start:min(start + batch, n)].to(ctx.device)
        for corruption, severity in logits:
            xc = corrupt(xb, corruption, severity, content_seeds(xb, corruption, severity), **options)
            with torch.no_grad():
                logits[corruption, severity].append(ctx.predict(xc).double().cpu())
    auc0, acc0 = auc_and_accuracy(labels, ctx.logits.detach().double().cpu().numpy())
    grids: dict[str, dict[tuple[str, int], float]] = {"auc_grid": {}, "acc_grid": {}, "delta_auc": {}, "delta_acc": {}}
    for key, parts in logits.items():
        auc, acc = auc_and_accuracy(labels, torch.cat(parts).numpy() if parts else np.zeros((0, 2)))
        grids["auc_grid"][key], grids["acc_grid"][key] = auc, acc
        grids["delta_auc"][key], grids["delta_acc"][key] = auc0 - auc, acc0 - acc
    tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return {"auc": tensor(auc0), "acc": tensor(acc0),
            **{name: {key: tensor(v) for key, v in grid.items()} for name, grid in grids.items()}}


def _grid_params(**extra) -> dict[str, Param]:
    return {
        "corruptions": Param(list(CORRUPTIONS), "which ImageNet-C corruptions to apply", choices=CORRUPTIONS, min_items=1),
        "severities": Param(list(SEVERITIES), "which severities, 1 (mild) to 5", choices=SEVERITIES, min_items=1),
        **extra,
    }


def _corruption_family(name: str | None = None, higher: bool | None = None) -> Family:
    return Family(higher, facet="corruption", level="severity", name=name)


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="saliency-rmse", score=saliency_rmse, category="robustness", version="3",
        values={"rmse": _corruption_family(higher=False)},
        params=_grid_params(legacy_uint8=Param(False, "round the [0, 255] maps to integers, as the source's uint8 "
                                                      "maps were")),
        description="RMSE between the clean and the corrupted input's saliency maps, each min-max scaled to "
                    "[0, 255], at the CAM's layer resolution or else at input resolution (Treyer), per "
                    "corruption and severity: rmse/<corruption>/<severity>. Lower is more robust.",
    )
    yield MetricSpec(
        name="corruption-classification", score=corruption_classification, category="robustness",
        scope="model", version="4",
        values={"auc": True, "acc": True, "auc_grid": _corruption_family("auc", True),
                "acc_grid": _corruption_family("acc", True), "delta_auc": _corruption_family(higher=False),
                "delta_acc": _corruption_family(higher=False)},
        params=_grid_params(batch_size=Param(256, "test images corrupted and classified at once", ge=1)),
        description="AUC and ACC on the clean test split and under each corruption and severity, with "
                    "ΔAUC = AUC_clean − AUC_corrupt and ΔACC (Treyer; medmnist's definitions).",
    )
