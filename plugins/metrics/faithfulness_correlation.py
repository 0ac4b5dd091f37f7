"""Faithfulness Correlation (Bhatt et al., IJCAI 2020), per sample, batched on the device.

For ``runs`` random subsets S of ``subset`` pixels (drawn without replacement from the run's
seeded generator), replace the pixels of S (every channel) by the ``fill`` and record
Δf = f(x) − f(x_S) and the attribution mass Σ_{i∈S} a_i of the reduced map; the value is the
Pearson correlation of the two over the runs. f is the target's ``logit`` (Quantus' default,
softmax off) or its softmax ``probability``. Fills as Quantus names them: ``black`` = each image's
minimum, ``white`` its maximum, ``mean`` its mean. Higher is more faithful. Undefined (flagged,
NaN) when the attribution sums or the output changes are the same in every run (a constant map).

Each run perturbs the whole batch in one forward pass (``runs`` passes per batch). Quantus (0.6)
draws the subset over the channel-pixels of a map broadcast to the image's channels; here over
pixels with every channel replaced, which is the same for one-channel images (where the test
compares them).
"""

from __future__ import annotations

import torch

from xbench import MetricContext, MetricSpec, Param, hookimpl

from ._common import class_probability

FILLS = ("black", "white", "mean")


def random_subsets(generator: torch.Generator, n: int, runs: int, pixels: int, size: int,
                   device=None) -> torch.Tensor:
    """(runs, N, size) pixel indices, each row a subset drawn without replacement (the ``size``
    smallest of fresh uniform keys), run by run."""
    return torch.stack([torch.rand((n, pixels), generator=generator, device=device).topk(size, dim=1,
                                                                                        largest=False).indices
                        for _ in range(runs)])


def _fill(x: torch.Tensor, how: str) -> torch.Tensor:
    flat = x.flatten(1)
    value = {"black": flat.amin(1), "white": flat.amax(1), "mean": flat.mean(1)}[how]
    return value.view(-1, 1, 1, 1).expand_as(x)


def _score(logits: torch.Tensor, targets: torch.Tensor, output: str) -> torch.Tensor:
    if output == "probability":
        return class_probability(logits, targets)
    return logits.double().gather(1, targets[:, None].to(logits.device))[:, 0]


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row pair (N, R); NaN where either row is constant."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / den.clamp(min=torch.finfo(den.dtype).tiny)
    return torch.where(den > 0, r.clamp(-1, 1), torch.full_like(r, float("nan")))


def faithfulness_correlation(ctx: MetricContext) -> dict[str, torch.Tensor]:
    x, p = ctx.inputs, ctx.params
    n, c, h, w = x.shape
    a = ctx.attribution.double().flatten(1)
    size = min(int(p["subset"]), h * w)
    targets = ctx.targets.long()
    output = str(p["output"])
    f0 = _score(ctx.logits, targets, output)
    fill = _fill(x, str(p["fill"]))
    subsets = random_subsets(ctx.generator, n, int(p["runs"]), h * w, size, device=x.device)
    deltas, sums = [], []
    for subset in subsets:
        hit = torch.zeros(n, h * w, dtype=torch.bool, device=x.device).scatter_(1, subset, True)
        perturbed = torch.where(hit.view(n, 1, h, w), fill, x)
        with torch.no_grad():
            deltas.append(f0 - _score(ctx.predict(perturbed), targets, output))
        sums.append(a.gather(1, subset).sum(1))
    r = pearson(torch.stack(sums, 1), torch.stack(deltas, 1))
    flat = ~torch.isfinite(r)
    if flat.any():
        ctx.flag(flat, "the attribution sums or the output changes were the same in every run: no correlation")
    return {"faithfulness_correlation": r}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="faithfulness-correlation", score=faithfulness_correlation, category="faithfulness",
        values={"faithfulness_correlation": True},
        params={"runs": Param(100, "random subsets per sample (Quantus: 100)", ge=2),
                "subset": Param(224, "pixels per subset (Quantus: 224)", ge=1),
                "fill": Param("black", "what replaces a subset: each image's minimum ('black'), maximum ('white') "
                                       "or mean", choices=FILLS),
                "output": Param("logit", "f: the target's 'logit' (Quantus' default) or softmax 'probability'",
                                choices=("logit", "probability"))},
        description="Faithfulness Correlation (Bhatt et al. 2020): Pearson correlation, over random pixel subsets, "
                    "between their attribution mass and the drop in the target's output when they are removed.",
    )
