"""Faithfulness Correlation against Quantus with the same random subsets, and Krishna et al.'s
agreement metrics against their definitions transcribed per sample."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import torch
from torch import nn

from xbench import TrainedModel, VerificationSpec, hookimpl, testing
from xbench.attribution import run_method
from xbench.registry import load_registry
from xbench.specs import defaults
from xbench.verification import max_abs_difference

RUNS, SUBSET = 30, 20


def faithfulness_correlation_against_quantus(spec) -> float:
    import quantus

    from xbench.plugins.metrics.faithfulness_correlation import random_subsets

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                        nn.Linear(36, 2)).eval()
    split = testing.planted_split(6, size=12, seed=2, patch=4)
    maps = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    ctx = testing.metric_context(TrainedModel(net, None, {}), split, attribution=maps, seed=9)
    ours = testing.score(spec, ctx, runs=RUNS, subset=SUBSET)["faithfulness_correlation"]
    order = iter(random_subsets(torch.Generator().manual_seed(9), 6, RUNS, 144, SUBSET).numpy().reshape(-1, SUBSET))
    metric = quantus.FaithfulnessCorrelation(nr_runs=RUNS, subset_size=SUBSET, perturb_baseline="black",
                                             normalise=False, abs=False, return_aggregate=False,
                                             disable_warnings=True)
    with mock.patch.object(np.random, "choice", side_effect=lambda *a, **k: next(order)):
        theirs = metric(model=net, x_batch=split.images.numpy(), y_batch=split.labels.numpy(),
                        a_batch=maps.numpy(), device="cpu")
    return max_abs_difference(ours, np.asarray(theirs))


def krishna(a: np.ndarray, b: np.ndarray, k: int) -> dict[str, float]:
    """Feature, rank, sign and signed-rank agreement at top-k (Krishna et al. 2022, as OpenXAI)."""
    ta = np.argsort(-np.abs(a), kind="stable")[:k]
    tb = np.argsort(-np.abs(b), kind="stable")[:k]
    common = set(ta) & set(tb)
    same_rank = [f for f, g in zip(ta, tb) if f == g]
    return {"feature_agreement": len(common) / k, "rank_agreement": len(same_rank) / k,
            "sign_agreement": sum(np.sign(a[f]) == np.sign(b[f]) for f in common) / k,
            "signed_rank_agreement": sum(np.sign(a[f]) == np.sign(b[f]) for f in same_rank) / k}


def agreement_against_the_definitions(spec) -> float:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2)).eval()
    model = TrainedModel(net, None, {})
    split = testing.planted_split(6, size=16, seed=4)
    registry = load_registry(entry_points=False)

    def method(name, **params):
        m = registry.get("methods", name).spec
        return run_method(m, model, split.images, split.labels, {**defaults(m.params), **params})

    raw, ref = method("input-x-gradient"), method("saliency", abs=False)
    top = [0.1, 0.25, 0.5]
    out = testing.score(spec, testing.metric_context(model, split, attribution=raw), reference="saliency",
                        reference_params={"abs": False}, patch=4, top=top)
    pa = raw.sum(1).reshape(6, 4, 4, 4, 4).mean((2, 4)).reshape(6, -1).double().numpy()  # 4×4 patch means
    pb = ref.sum(1).reshape(6, 4, 4, 4, 4).mean((2, 4)).reshape(6, -1).double().numpy()
    worst = 0.0
    for fraction in top:
        k = math.ceil(fraction * 16)
        for i in range(6):
            for name, value in krishna(pa[i], pb[i], k).items():
                worst = max(worst, abs(float(out[f"{name}/{fraction!r}"][i]) - value))
    return worst


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="faithfulness-correlation.quantus", plugin="faithfulness-correlation", kind="metrics", library="quantus",
        reference="quantus.FaithfulnessCorrelation", check=faithfulness_correlation_against_quantus, tolerance=1e-6,
        inputs="a random conv net, 6 planted 1×12×12 images, random maps, 30 runs of 20 pixels",
        differences="the same subsets fed to Quantus' np.random.choice in its order; fill 'black' = each image's "
                    "minimum in both; logits; one channel (Quantus samples channel-pixels, xbench pixels)")
    yield VerificationSpec(
        name="agreement.krishna", plugin="agreement", kind="metrics",
        reference="Krishna et al. 2022's definitions (as OpenXAI writes them), per sample",
        check=agreement_against_the_definitions, tolerance=1e-12,
        inputs="a random 2-conv net, 6 planted 1×16×16 images, input × gradient against signed saliency, 4×4 patches, "
               "k = 10 %, 25 %, 50 % of 16 patches",
        differences="none (ties broken by feature index in both)")
