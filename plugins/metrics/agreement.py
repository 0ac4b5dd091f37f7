"""Agreement between two explanation methods (Krishna et al., "The Disagreement Problem in
Explainable Machine Learning", 2022), per sample: the explained method against a ``reference``.

Features are ``patch`` × ``patch`` squares (``patch = 1``: pixels); a feature's attribution e is
the mean over its pixels of the method's signed map (its raw output summed over channels at input
resolution, so a sign survives; CAMs are non-negative). With T_m(k) the k features of largest |e|
of method m (ties by feature index) and rank_m(f) a feature's position in that order, at
k = ⌈fraction × features⌉ for each fraction in ``top``:

- ``feature_agreement/<fraction>``: |T_a(k) ∩ T_b(k)| / k;
- ``rank_agreement``: features at the same rank in both top-k lists / k;
- ``sign_agreement``: features in both top-k sets with the same sign of e / k;
- ``signed_rank_agreement``: same rank and same sign / k.

Why a metric with a reference method, not a leaderboard panel over pairs: the results contract
(``xbench.results``) stores metric values per sample, never maps (the gallery keeps a few per
cell, for figures), and the leaderboard reads the Parquet rows alone; agreement needs both
methods' maps for every scored sample. Here the metric explains the same batch with the
reference (any installed method, found through the plugin registry, with ``reference_params``),
so every (method, reference) pair is one row per sample that the leaderboard, claims and tests
already understand; a sweep over ``reference`` gives the full pairwise table. Agreement has no
better direction (two methods can agree on the wrong pixels), so the values are undirected.

Cost: one explanation by the reference per batch and method (a cheap reference such as
``saliency`` adds a gradient). No library implements these metrics (Quantus issue #216 is open);
the tests check them against a direct transcription of Krishna et al.'s definitions (OpenXAI's).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch

from xbench import Family, MetricContext, MetricSpec, Param, hookimpl
from xbench.attribution import reduce_attribution, run_method
from xbench.errors import UsageError
from xbench.specs import defaults

from .faithfulness import patch_relevance

VALUES = ("feature_agreement", "rank_agreement", "sign_agreement", "signed_rank_agreement")


@functools.lru_cache(maxsize=1)
def _registry():
    from xbench.registry import load_registry

    return load_registry()


def reference_maps(ctx: MetricContext, name: str, params: Mapping[str, Any]) -> torch.Tensor:
    """The reference method's raw maps of this batch, for the run's targets."""
    spec = _registry().get("methods", name).spec
    resolved = {**defaults(spec.params), **dict(params)}
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise UsageError(f"agreement: reference_params {unknown} are not params of method {name!r} "
                         f"(it has: {', '.join(sorted(spec.params)) or 'none'}).")
    generator = None
    if spec.stochastic:
        generator = torch.Generator(device=ctx.inputs.device)
        generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=ctx.generator,
                                                device=ctx.generator.device)))
    return run_method(spec, ctx.model, ctx.inputs, ctx.targets, resolved, generator=generator)


def features(raw: torch.Tensor, size: tuple[int, int], patch: int) -> torch.Tensor:
    """Signed feature attributions (N, P): the channel sum of ``raw`` at input resolution, averaged per patch."""
    signed = reduce_attribution(raw.float(), size, "sum")
    return patch_relevance(signed, patch)


def ranks(e: torch.Tensor) -> torch.Tensor:
    """Each feature's position when sorted by |e| descending, ties by index (N, P), 0 = the largest."""
    order = torch.sort(-e.abs(), dim=1, stable=True).indices
    out = torch.empty_like(order)
    out.scatter_(1, order, torch.arange(e.shape[1], device=e.device).expand_as(order))
    return out


def agreement(ea: torch.Tensor, eb: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Krishna et al.'s four agreements at top-k of two signed feature attributions (N, P)."""
    ra, rb = ranks(ea), ranks(eb)
    both = (ra < k) & (rb < k)
    same_rank = both & (ra == rb)
    same_sign = torch.sign(ea) == torch.sign(eb)
    return {"feature_agreement": both.sum(1) / k, "rank_agreement": same_rank.sum(1) / k,
            "sign_agreement": (both & same_sign).sum(1) / k,
            "signed_rank_agreement": (same_rank & same_sign).sum(1) / k}


def method_agreement(ctx: MetricContext) -> dict[str, Any]:
    if ctx.raw_attribution is None:
        raise UsageError("agreement compares the method's maps with a reference's and needs ctx.raw_attribution.")
    p = ctx.params
    size = tuple(ctx.inputs.shape[-2:])
    patch = int(p["patch"])
    ea = features(ctx.raw_attribution, size, patch).double()
    eb = features(reference_maps(ctx, str(p["reference"]), p["reference_params"]), size, patch).double()
    out: dict[str, dict[float, torch.Tensor]] = {name: {} for name in VALUES}
    for fraction in p["top"]:
        k = max(1, math.ceil(float(fraction) * ea.shape[1]))
        for name, value in agreement(ea, eb, k).items():
            out[name][float(fraction)] = value.double()
    return out


def _validate(params: Mapping[str, Any]) -> None:
    if str(params["reference"]) not in _registry().names("methods"):
        raise ValueError(f"agreement: reference method {params['reference']!r} is not installed "
                         f"(installed: {', '.join(_registry().names('methods'))})")


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="agreement", score=method_agreement, category="sanity", validate=_validate,
        values={name: Family(None, level="top") for name in VALUES},
        params={"reference": Param("saliency", "the method every explanation is compared with", label=True),
                "reference_params": Param({}, "params of the reference method (its defaults otherwise)"),
                "patch": Param(8, "side of the square features, in pixels (1 = pixels)", ge=1),
                "top": Param([0.05, 0.1, 0.25], "k as fractions of the features", gt=0, le=1, min_items=1)},
        description="Agreement with a reference method (Krishna et al. 2022): feature, rank, sign and signed-rank "
                    "agreement of the top-k features (patches by |mean signed attribution|), per fraction k.",
    )
