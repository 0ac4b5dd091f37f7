"""Null baselines: maps that know nothing about the model, shown beside real methods so every
leaderboard has chance levels (seed-algorithms.md §2.7, §5.3). ``baseline=True`` marks them.

- ``random``: i.i.d. uniform [0, 1) per pixel, drawn from the generator the runner seeds per batch.
- ``sobel``: ``scipy.ndimage.sobel`` of each input image ``(C, H, W)``, default last axis: the
  derivative [-1, 0, 1] along that axis and the smoothing [1, 2, 1] along both other axes (the
  channel axis included), boundary mode ``reflect``. Signed, as in the source; the run's
  reduction takes absolute values.
- ``laplace``: ``scipy.ndimage.laplace`` of each input image: the sum of [1, -2, 1] along all
  three axes, boundary ``reflect``.
- ``centre``: the same map for every image, an isotropic Gaussian exp(−r²/2σ²), σ = ``sigma`` ×
  the shorter side. Objects tend to sit in the middle of photographs, so this is the chance level
  of localisation metrics there (TorchRay's model-free "center" baseline of the pointing game).
  ``peak = "centre"`` (default) centres it on the image's true centre ((H−1)/2, (W−1)/2) in pixel
  coordinates, so it is symmetric and, on an even side, has two (or four) equal maxima;
  ``peak = "torchray"`` centres it on the pixel (H // 2, W // 2), TorchRay's center point
  (W/2, H/2) (``examples/attribution_benchmark.py``) on the pixel grid: the same point on even
  sides, half a pixel below and right of it on odd ones (a map's maximum is a pixel); use it to
  compare with TorchRay's published center row.

Both filters are computed as tensor ops on the device for the whole batch and equal scipy's
results. The source (Oliveira et al.) reported a copy of the Laplace results as "Sobel";
``sobel`` computes Sobel, and ``legacy_laplace_copy = true`` reproduces the published number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from xbench import MethodSpec, Param, TrainedModel, hookimpl


def correlate1d(x: torch.Tensor, weights: Sequence[float], dim: int) -> torch.Tensor:
    """``scipy.ndimage.correlate1d`` with a 3-tap kernel and mode ``reflect`` (edge sample repeated)."""
    n = x.shape[dim]
    padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
    return sum(w * padded.narrow(dim, i, n) for i, w in enumerate(weights) if w != 0)


def sobel_map(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """Per-image Sobel of a ``(N, C, H, W)`` batch along image axis ``axis`` (-1 = W, -2 = H, -3 = C)."""
    out = correlate1d(x, (-1.0, 0.0, 1.0), axis)
    for other in (-3, -2, -1):
        if other != axis:
            out = correlate1d(out, (1.0, 2.0, 1.0), other)
    return out


def laplace_map(x: torch.Tensor) -> torch.Tensor:
    """Per-image Laplace of a ``(N, C, H, W)`` batch over its channel, height and width axes."""
    return sum(correlate1d(x, (1.0, -2.0, 1.0), d) for d in (-3, -2, -1))


CENTRES = {"centre": lambda side: (side - 1) / 2, "torchray": lambda side: side // 2}
"""Where ``centre``'s peak sits along a side of ``side`` pixels (module docstring)."""


def centre_map(height: int, width: int, sigma: float, device=None, dtype=torch.float32,
               peak: str = "centre") -> torch.Tensor:
    """An isotropic Gaussian of an ``height × width`` image peaking at ``peak`` (a key of
    :data:`CENTRES`), σ = ``sigma`` × the shorter side."""
    s = sigma * min(height, width)
    y = torch.arange(height, device=device, dtype=dtype) - CENTRES[peak](height)
    x = torch.arange(width, device=device, dtype=dtype) - CENTRES[peak](width)
    return torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * s * s))


def centre(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    peak = centre_map(*x.shape[-2:], float(params["sigma"]), device=x.device, peak=str(params["peak"]))
    return peak.expand(x.shape[0], 1, *peak.shape).clone()


def random_map(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any], *,
               generator: torch.Generator):
    return torch.rand(x.shape[0], 1, *x.shape[-2:], device=x.device, generator=generator)


def sobel(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    if params["legacy_laplace_copy"]:
        return laplace_map(x.detach().float())
    return sobel_map(x.detach().float(), int(params["axis"]))


def laplace(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    return laplace_map(x.detach().float())


@hookimpl
def xbench_methods():
    yield MethodSpec(name="random", explain=random_map, baseline=True, stochastic=True,
                     description="Null baseline: uniform random map, seeded per batch.")
    yield MethodSpec(name="sobel", explain=sobel, baseline=True, params={"axis": Param(-1, "the image axis of the derivative: -1 width, -2 height, -3 channels",
                                       choices=(-1, -2, -3)),
                             "legacy_laplace_copy": Param(False, "report Laplace as Sobel, as the source's pickles did")},
                     description="Null baseline: Sobel edge map of the input (scipy.ndimage.sobel, last axis).")
    yield MethodSpec(name="laplace", explain=laplace, baseline=True,
                     description="Null baseline: Laplace edge map of the input (scipy.ndimage.laplace, all axes).")
    yield MethodSpec(name="centre", explain=centre, baseline=True,
                     params={"sigma": Param(0.25, "σ of the Gaussian, as a fraction of the image's shorter side", gt=0),
                             "peak": Param("centre", "where the Gaussian peaks: 'centre' at ((H−1)/2, (W−1)/2), the true "
                                                     "centre; 'torchray' at the pixel (H//2, W//2), TorchRay's center point",
                                           choices=tuple(CENTRES), label=True)},
                     description="Null baseline: an isotropic Gaussian at the image centre, the same for every "
                                 "image (model-free; TorchRay's center baseline).")
