"""Checks and helpers the built-in metrics share (not a plugin)."""

from __future__ import annotations

import torch

from xbench import MetricContext
from xbench.errors import DataError


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
