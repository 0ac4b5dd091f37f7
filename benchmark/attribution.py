"""Calling a method safely, and the one recorded rule that reduces its output to ``(N, H, W)``.

Reduction rules (the run option ``reduction``, recorded in every row):

- ``abs-luminance`` (default): for 3-channel maps ``0.2989·|A_r| + 0.5870·|A_g| + 0.1140·|A_b|``
  (Oliveira et al.); ``|A|`` for one channel; the mean of ``|A_c|`` for other channel counts.
  Absolute values are what all four source projects score (Rio-Torto: "absolute values for
  fairness"; CAMs are non-negative already).
- ``abs-sum``: ``Σ_c |A_c|``; ``abs-max``: ``max_c |A_c|``; ``sum``: ``Σ_c A_c`` (signed);
  ``positive-sum``: ``max(Σ_c A_c, 0)``.

Maps at a layer's resolution (CAMs) are reduced the same way, then upsampled bilinearly
(``align_corners=False``) to the input's height and width.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from .errors import XbenchError
from .specs import MethodSpec, TrainedModel

LUMINANCE = (0.2989, 0.5870, 0.1140)


class AttributionError(XbenchError):
    """A method returned something that is not an attribution map for the batch."""


def reduce_attribution(raw: torch.Tensor, size: tuple[int, int], rule: str, method: str = "?") -> torch.Tensor:
    """Reduce a method's output to ``(N, H, W)`` float32 at input resolution by ``rule``."""
    if raw.dim() == 3:
        raw = raw[:, None]
    if raw.dim() != 4:
        raise AttributionError(
            f"Method {method!r} returned a tensor of shape {tuple(raw.shape)}; an attribution must be "
            "(N, C, H, W) at input resolution or (N, h, w) / (N, 1, h, w) at a layer's resolution."
        )
    a = raw.float()
    c = a.shape[1]
    if rule == "abs-luminance":
        if c == 3:
            w = torch.tensor(LUMINANCE, device=a.device, dtype=a.dtype).view(1, 3, 1, 1)
            out = (a.abs() * w).sum(1)
        else:
            out = a.abs().mean(1)
    elif rule == "abs-sum":
        out = a.abs().sum(1)
    elif rule == "abs-max":
        out = a.abs().amax(1)
    elif rule == "sum":
        out = a.sum(1)
    elif rule == "positive-sum":
        out = a.sum(1).clamp(min=0)
    else:
        raise ValueError(f"unknown reduction rule {rule!r}")
    if tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return out


def run_method(
    spec: MethodSpec, model: TrainedModel, inputs: torch.Tensor, targets: torch.Tensor, params: Mapping[str, Any],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Call ``spec.explain`` with gradients on, the model in eval mode, and no gradient left behind.
    A stochastic method gets ``generator`` (a seeded one on the inputs' device when none is given)."""
    module = model.module
    module.eval()
    x = inputs.detach().clone()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            # Captum announces on every call that it set requires_grad or hooked the ReLUs: by
            # design here, and thousands of lines of noise in a run's output.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"captum(\.|$)")
            if spec.stochastic:
                if generator is None:
                    generator = torch.Generator(device=x.device)
                    generator.manual_seed(0)
                out = spec.explain(model, x, targets, params, generator=generator)
            else:
                out = spec.explain(model, x, targets, params)
    finally:
        module.zero_grad(set_to_none=True)
        module.eval()
    if not isinstance(out, torch.Tensor):
        raise AttributionError(f"Method {spec.name!r} returned a {type(out).__name__}, expected a torch.Tensor.")
    if out.shape[0] != inputs.shape[0]:
        raise AttributionError(
            f"Method {spec.name!r} returned {out.shape[0]} maps for a batch of {inputs.shape[0]} inputs."
        )
    if out.dim() == 4 and out.shape[1] != 1 and tuple(out.shape[-2:]) != tuple(inputs.shape[-2:]):
        raise AttributionError(
            f"Method {spec.name!r} returned maps of shape {tuple(out.shape)} for inputs of shape "
            f"{tuple(inputs.shape)}: multi-channel maps must be at input resolution."
        )
    return out.detach()
