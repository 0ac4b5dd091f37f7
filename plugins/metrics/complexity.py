"""How concentrated an explanation is: Sparseness (Chalasani et al., ICML 2020) and Complexity
(Bhatt et al., IJCAI 2020), per sample on the reduced map's absolute values, batched.

- ``sparseness``: the Gini index of |a| over the pixels, sorted ascending a_(1) ≤ … ≤ a_(n):
  G = Σ_k (2k − n − 1)·a_(k) / (n·Σ_k a_(k)), from 0 (every pixel equal) to 1 − 1/n (one pixel
  holds everything). Higher is sparser, which Chalasani et al. count as better.
- ``complexity``: the entropy of the fractional contribution p_i = |a_i| / Σ_j |a_j|,
  H = −Σ_i p_i ln p_i (0 ln 0 = 0), from 0 (one pixel) to ln n (uniform). Lower is simpler.

Both are undefined for an all-zero map (flagged, NaN). Quantus (0.6) computes the same with small
stabilisers: Sparseness adds 1e-7 to every |a_i|, Complexity adds 1e-12 inside the logarithm; the
tests compare against Quantus with that adjusted for.
"""

from __future__ import annotations

import torch

from xbench import MetricContext, MetricSpec, hookimpl


def _magnitudes(ctx: MetricContext) -> tuple[torch.Tensor, torch.Tensor]:
    a = ctx.attribution.double().abs().flatten(1)
    total = a.sum(1)
    empty = total <= 0
    if empty.any():
        ctx.flag(empty, "the attribution is zero everywhere: how concentrated it is is undefined")
    return a, total


def gini(a: torch.Tensor) -> torch.Tensor:
    """Gini index of each row of non-negative ``a`` (N, n); NaN where a row sums to 0."""
    n = a.shape[1]
    s, _ = torch.sort(a, dim=1)
    k = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
    total = s.sum(1)
    g = ((2 * k - n - 1) * s).sum(1) / (n * total.clamp(min=torch.finfo(a.dtype).tiny))
    return torch.where(total > 0, g, torch.full_like(g, float("nan")))


def entropy(a: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of non-negative ``a`` (N, n) normalised to sum 1; NaN where it sums to 0."""
    total = a.sum(1, keepdim=True)
    p = a / total.clamp(min=torch.finfo(a.dtype).tiny)
    h = -torch.where(p > 0, p * torch.log(p.clamp(min=torch.finfo(a.dtype).tiny)), torch.zeros_like(p)).sum(1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, float("nan")))


def sparseness(ctx: MetricContext) -> dict[str, torch.Tensor]:
    a, _ = _magnitudes(ctx)
    return {"sparseness": gini(a)}


def complexity(ctx: MetricContext) -> dict[str, torch.Tensor]:
    a, _ = _magnitudes(ctx)
    return {"complexity": entropy(a)}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="sparseness", score=sparseness, category="complexity", values={"sparseness": True},
        description="Sparseness (Chalasani et al. 2020): the Gini index of the map's absolute values over the "
                    "pixels; higher is more concentrated.",
    )
    yield MetricSpec(
        name="complexity", score=complexity, category="complexity", values={"complexity": False},
        description="Complexity (Bhatt et al. 2020): the entropy of each pixel's share of the map's absolute "
                    "values; lower is simpler.",
    )
