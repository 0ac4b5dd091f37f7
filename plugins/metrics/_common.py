"""Checks and helpers the built-in metrics share (not a plugin)."""

from __future__ import annotations

import torch

from xbench import MetricContext
from xbench.errors import DataError, UsageError


def _names(ctx: MetricContext) -> tuple[str, str]:
    dataset = getattr(ctx.dataset, "name", None) or "(unnamed dataset)"
    return dataset, ctx.method or "(unnamed method)"


def checked_mask(ctx: MetricContext, mask: torch.Tensor | None, what: str = "ground-truth mask") -> torch.Tensor:
    """``mask`` as bool, or a :class:`DataError` naming the dataset and method when its shape is not
    the attribution's ``(N, H, W)`` (a mask at another resolution would silently score nonsense)."""
    dataset, method = _names(ctx)
    expected = tuple(ctx.attribution.shape)
    if mask is None:
        raise DataError(f"Dataset {dataset!r} gives no {what} for method {method!r}, but this metric needs one; "
                        "declare the 'mask'/'regions' tags only when the split carries them.")
    if tuple(mask.shape) != expected:
        raise DataError(
            f"Dataset {dataset!r} gives a {what} of shape {tuple(mask.shape)}, but the attribution of method "
            f"{method!r} is {expected} (N, H, W) at the images' resolution. Masks must be (N, H, W) bool at "
            "image resolution, one per test image: fix the dataset's masks (or its image size) so they match.")
    return mask.bool()


def constant_maps(a: torch.Tensor) -> torch.Tensor:
    """Which maps of a batch are constant (every pixel the same value)."""
    flat = a.flatten(1)
    return flat.amax(1) == flat.amin(1)


def defined(ctx: MetricContext) -> torch.Tensor:
    """The samples whose attribution was finite (the core reports the others' values as NaN)."""
    bad = ctx.undefined
    if bad is None:
        return torch.ones(len(ctx.inputs), dtype=torch.bool, device=ctx.device)
    return ~bad.to(ctx.device)


CLASS_DOC = ("whose softmax probability f is: the explained 'target', the 'label', the clean 'predicted' class, "
             "or a fixed class index")


def class_choice(value) -> str | None:
    """The ``check`` of a ``class`` param (see :func:`explained_class`)."""
    if value in ("target", "label", "predicted") or (isinstance(value, str) and value.isdigit()):
        return None
    return "must be 'target', 'label', 'predicted' or a class index as a string (e.g. \"1\")"


def explained_class(ctx: MetricContext, choice) -> torch.Tensor:
    """Class whose probability is f: the run's explained ``target``, the ``label``, the clean
    ``predicted`` class, or a fixed class index (AOPC's source used index 1)."""
    n = len(ctx.inputs)
    if choice == "target":
        return ctx.targets.long()
    if choice == "label":
        return ctx.labels.long()
    if choice == "predicted":
        return ctx.predictions.long()
    k = ctx.logits.shape[1]
    try:
        index = int(choice)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < k:
        raise UsageError(f"param 'class' must be 'target', 'label', 'predicted' or a class index "
                         f"0..{k - 1} (as a string in TOML, e.g. \"1\"), got {choice!r}.")
    return torch.full((n,), index, dtype=torch.long, device=ctx.device)


def class_probability(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Softmax probability of ``classes`` under ``logits`` (N, K), as float64 (N,)."""
    return logits.float().softmax(1).gather(1, classes[:, None].to(logits.device))[:, 0].double()


def positive_share(a: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ(a⁺·region)/Σa⁺ per sample of ``a`` (N, H, W) in float64, and where Σa⁺ = 0 (the share is
    then 0; callers report it as undefined)."""
    h = a.double().clamp(min=0).flatten(1)
    total = h.sum(1)
    share = (h * region.flatten(1).double()).sum(1) / total.clamp(min=torch.finfo(h.dtype).tiny)
    return share, total <= 0
