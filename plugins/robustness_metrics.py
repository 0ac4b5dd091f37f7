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

from xbench import MetricContext, MetricSpec, hookimpl
from xbench.attribution import reduce_attribution
from xbench.errors import UsageError

from .classification_metrics import auc_and_accuracy
from .localisation_metrics import constant_maps, finite_attribution, undefined_where

CORRUPTION_NAMES = ["gaussian_noise", "speckle_noise", "motion_blur", "contrast", "brightness"]
SEVERITIES = [1, 2, 3, 4, 5]
_PRIME = 2**31 - 1
_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


def content_seeds(images: torch.Tensor, corruption: str, severity: int) -> torch.Tensor:
    """One seed per image, from its content: its pixels quantised to integers 0..255, dotted with
    fixed pseudo-random weights below 2³¹ (drawn from seed 5) modulo the prime 2³¹−1, then mixed with
    the corruption's name (CRC-32) and the severity. Exact integer arithmetic (no product or partial
    sum reaches 2⁶³), so the seed is the same on every device and in every batch."""
    n = images.shape[0]
    q = (images.detach().clamp(0, 1) * 255).round().to(torch.int64).reshape(n, -1)
    d = q.shape[1]
    key = (d, str(q.device))
    if key not in _WEIGHTS:
        g = torch.Generator().manual_seed(5)
        _WEIGHTS[key] = torch.randint(0, _PRIME, (d,), generator=g, dtype=torch.int64).to(q.device)
    w = _WEIGHTS[key]
    h = torch.zeros(n, dtype=torch.int64, device=q.device)
    for start in range(0, d, 2**17):  # ≤ 2¹⁷ products < 2⁸·2³¹ each: the partial sum stays < 2⁵⁶
        h = (h + (q[:, start:start + 2**17] * w[start:start + 2**17]).sum(1)) % _PRIME
    c = zlib.crc32(corruption.encode())
    h = (h * 1_000_003 + c) % _PRIME
    return (h * 998_244_353 + int(severity)) % _PRIME


def _grid(ctx: MetricContext) -> tuple[list[str], list[int]]:
    from xbench.datasets.corruptions import CORRUPTIONS

    corruptions = [str(c) for c in ctx.params.get("corruptions", CORRUPTION_NAMES)]
    severities = [int(s) for s in ctx.params.get("severities", SEVERITIES)]
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown or not corruptions:
        raise UsageError(f"param 'corruptions' must be a non-empty list drawn from {', '.join(CORRUPTIONS)}; "
                         f"got {corruptions!r}.")
    if not severities or any(not 1 <= s <= 5 for s in severities):
        raise UsageError(f"param 'severities' must be a non-empty list of integers 1..5, got {severities!r}.")
    return corruptions, severities


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
    from xbench.datasets.corruptions import corrupt, corruption_options

    if ctx.explain is None or ctx.explain_raw is None:
        raise UsageError("saliency-rmse re-explains corrupted inputs and needs ctx.explain / ctx.explain_raw.")
    corruptions, severities = _grid(ctx)
    uint8 = bool(ctx.params.get("legacy_uint8", False))
    options = corruption_options(ctx.dataset)
    x = ctx.inputs
    _, bad = finite_attribution(ctx)
    size = native_size(ctx)
    # Until the core exposes the run's reduction rule on the context, layer maps use |A|: every rule
    # gives the same for the non-negative one-channel maps that CAMs are.
    rule = getattr(ctx, "reduction", None) or "abs-luminance"

    def as_maps(raw: torch.Tensor) -> torch.Tensor:
        return reduce_attribution(raw, size, rule, ctx.method or "?")

    if size is None:
        clean, explain = ctx.attribution, ctx.explain
    else:
        clean, explain = as_maps(torch.nan_to_num(ctx.raw_attribution.float())), (lambda v: as_maps(ctx.explain_raw(v)))
    clean = torch.nan_to_num(clean.float(), nan=0.0, posinf=0.0, neginf=0.0)
    reference = scaled_255(clean, uint8)
    flat_any = constant_maps(clean)
    out: dict[str, torch.Tensor] = {}
    for corruption in corruptions:
        for severity in severities:
            xc = corrupt(x, corruption, severity, content_seeds(x, corruption, severity), **options)
            maps = explain(xc).float()
            if tuple(maps.shape) != tuple(clean.shape):
                raise UsageError(f"method {ctx.method!r} returned maps of shape {tuple(maps.shape)} for corrupted "
                                 f"inputs but {tuple(clean.shape)} for clean ones; RMSE needs the same shape.")
            broken = ~torch.isfinite(maps).flatten(1).all(1)
            maps = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
            flat_any |= constant_maps(maps)
            rmse = (reference - scaled_255(maps, uint8)).flatten(1).square().mean(1).sqrt()
            if broken.any():
                ctx.flag(broken, f"explanation of the corrupted input ({corruption}, severity {severity}) "
                                 "contains NaN or Inf: that RMSE is undefined")
                rmse = torch.where(broken, torch.full_like(rmse, float("nan")), rmse)
            out[f"rmse/{corruption}/{severity}"] = rmse
    ctx.flag(flat_any & ~bad, "a constant saliency map (clean or corrupted) was scaled to all 0")
    return undefined_where(out, bad)


def corruption_classification(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """AUC/ACC clean and under every corruption × severity, and their drops; the test split is read
    once, in slices of ``batch_size`` (it may be a lazy array). AUCs rank the logits' float64
    log-odds, not float32 softmax scores, which tie at 1.0 for a confident model."""
    from xbench.datasets.corruptions import corrupt, corruption_options

    corruptions, severities = _grid(ctx)
    options = corruption_options(ctx.dataset)
    batch = max(1, int(ctx.params.get("batch_size", 256)))
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
    out = {"auc": auc0, "acc": acc0}
    for (corruption, severity), parts in logits.items():
        auc, acc = auc_and_accuracy(labels, torch.cat(parts).numpy() if parts else np.zeros((0, 2)))
        facet = f"{corruption}/{severity}"
        out.update({f"auc/{facet}": auc, f"acc/{facet}": acc,
                    f"delta_auc/{facet}": auc0 - auc, f"delta_acc/{facet}": acc0 - acc})
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="saliency-rmse", score=saliency_rmse, category="robustness", version="2",
        values={"rmse/*": False},
        params={"corruptions": list(CORRUPTION_NAMES), "severities": list(SEVERITIES), "legacy_uint8": False},
        description="RMSE between the clean and the corrupted input's saliency maps, each min-max scaled to "
                    "[0, 255], at the CAM's layer resolution or else at input resolution (Treyer), per "
                    "corruption and severity: rmse/<corruption>/<severity>. Lower is more robust.",
    )
    yield MetricSpec(
        name="corruption-classification", score=corruption_classification, category="robustness",
        scope="model", version="3",
        values={"auc": True, "acc": True, "auc/*": True, "acc/*": True, "delta_auc/*": False, "delta_acc/*": False},
        params={"corruptions": list(CORRUPTION_NAMES), "severities": list(SEVERITIES), "batch_size": 256},
        description="AUC and ACC on the clean test split and under each corruption and severity, with "
                    "ΔAUC = AUC_clean − AUC_corrupt and ΔACC (Treyer; medmnist's definitions).",
    )
