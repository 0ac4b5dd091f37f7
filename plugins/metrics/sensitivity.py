"""Max- and Avg-Sensitivity (Yeh et al., NeurIPS 2019): how much an explanation changes when the
input moves a little, per sample, re-explaining with the same method.

For ``samples`` perturbations δ_j, each pixel and channel drawn i.i.d. from U(−r, r) (the L∞ ball
of radius r = ``radius``, as Captum's ``sensitivity_max`` and Quantus' ``uniform_noise`` draw
them), from the run's seeded generator:

    s_j = ‖Φ(x + δ_j) − Φ(x)‖_F / ‖Φ(x)‖_F,   max_sensitivity = max_j s_j,   avg_sensitivity = mean_j s_j

with Φ the reduced (N, H, W) map, x and every perturbed input explained for the same class (the
run's target) through ``ctx.explain``. The clean map is re-explained too, as Captum's
``sensitivity_max`` does, rather than taken from ``ctx.attribution``: the runner seeds every
re-explanation of a batch alike, so a stochastic method's clean and perturbed maps share their
random draws, whereas ``ctx.attribution`` was drawn with the batch's own seed and its difference
would count the method's own noise as sensitivity. Dividing by the clean map's norm, as both Captum and
Quantus do, makes methods of different scales comparable. An all-zero clean map leaves s
undefined (flagged, NaN; Captum divides by 1 there instead). Lower is more robust. The
perturbed input is not clipped to the data range (neither library clips it).

Cost: ``samples`` + 1 re-explanations per batch. A re-explanation whose map is not finite gives a
non-finite value, which the context's NaN handling reports; nothing here repairs it.
"""

from __future__ import annotations

import torch

from xbench import MetricContext, MetricSpec, Param, hookimpl
from xbench.errors import UsageError


def perturbations(x: torch.Tensor, samples: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """(samples, N, C, H, W) perturbations U(−radius, radius), drawn sample by sample."""
    return torch.stack([(torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * radius
                        for _ in range(samples)])


def sensitivity(ctx: MetricContext) -> dict[str, torch.Tensor]:
    if ctx.explain is None:
        raise UsageError("sensitivity re-explains perturbed inputs and needs ctx.explain.")
    x = ctx.inputs
    clean = ctx.explain(x, targets=ctx.targets).double().flatten(1)
    norm = clean.norm(dim=1)
    values = []
    for delta in perturbations(x, int(ctx.params["samples"]), float(ctx.params["radius"]), ctx.generator):
        maps = ctx.explain(x + delta, targets=ctx.targets).double().flatten(1)
        values.append((maps - clean).norm(dim=1) / norm.clamp(min=torch.finfo(norm.dtype).tiny))
    s = torch.stack(values, 1)
    zero = norm == 0
    if zero.any():
        ctx.flag(zero, "the clean explanation is zero everywhere: its relative sensitivity is undefined")
        s = torch.where(zero[:, None], torch.full_like(s, float("nan")), s)
    return {"max_sensitivity": s.amax(1), "avg_sensitivity": s.mean(1)}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="sensitivity", score=sensitivity, category="robustness",
        values={"max_sensitivity": False, "avg_sensitivity": False},
        params={"samples": Param(10, "perturbed copies explained per input (Captum's default 10)", ge=1),
                "radius": Param(0.02, "r: each pixel moves by U(−r, r) (Captum's default 0.02; Quantus' 0.2)", gt=0)},
        description="Max- and Avg-Sensitivity (Yeh et al. 2019): the largest and the mean relative change "
                    "‖Φ(x+δ) − Φ(x)‖/‖Φ(x)‖ of the explanation over uniform perturbations δ in an L∞ ball; "
                    "lower is more robust.",
    )
