"""Faithfulness metrics against Quantus (AOPC's MoRF curve as RegionPerturbation, the deletion curve
as PixelFlipping) and pytorch-grad-cam (ROAD's MoRF and LeRF curves and their combined score)."""

from __future__ import annotations

import numpy as np
import torch

from xbench import VerificationSpec, hookimpl, testing
from xbench.verification import max_abs_difference

from ._inputs import PLANTED, module_context, planted_cnn


def aopc_against_quantus(spec) -> float:
    """Quantus' RegionPerturbation returns f(x⁰) − f(x^k) for k = 1..L with patches ranked by their
    summed relevance (the mean, for equal patches): xbench's morf/0 − morf/k, for both fills."""
    import quantus

    data, model = planted_cnn()
    x, y = data.test.images[:16], data.test.labels[:16]
    a = torch.rand(16, 32, 32, generator=torch.Generator().manual_seed(4)) + data.test.masks[:16]
    worst = 0.0
    for fill, baseline in (("black", 0.0), ("white", 1.0)):
        ctx = testing.metric_context(model, data.test, attribution=a, n=16)
        out = testing.score(spec, ctx, patch=8, fill=fill, **{"class": "label"})
        curve = torch.stack([out[f"morf/{k}"] for k in range(17)], 1).numpy()
        metric = quantus.RegionPerturbation(patch_size=8, regions_evaluation=100, perturb_baseline=baseline,
                                            normalise=False, abs=False, disable_warnings=True)
        theirs = np.asarray(metric(model=model.module, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(),
                                   device="cpu", softmax=True, batch_size=16))
        worst = max(worst, max_abs_difference(curve[:, :1] - curve[:, 1:], theirs))
    return worst


def road_against_pytorch_grad_cam(spec) -> float:
    """morf/<p>, lerf/<p> and road against ROADMostRelevantFirst, ROADLeastRelevantFirst and
    ROADCombined, on maps without ties (distinct values in [0.5, 1), where grad-cam's LeRF map
    1 − cam is exact) and on maps of 10 levels of 40 pixels, so that grad-cam's percentile
    thresholds and xbench's ranks remove the same pixels at every p."""
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from xbench.plugins.models.small_cnn import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(3, 2, 8).eval()
    g = torch.Generator().manual_seed(5)
    n = 4
    distinct = 0.5 + torch.argsort(torch.rand(n, 24 * 24, generator=g), 1).float() / (2 * 24 * 24)
    levels = (torch.argsort(torch.rand(n, 20 * 20, generator=g), 1) // 40).float() / 9
    labels = torch.ones(n, dtype=torch.long)
    percentages = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    targets = [ClassifierOutputSoftmaxTarget(1)] * n
    imputer = road.NoisyLinearImputer(noise=0.0)
    worst = 0.0
    for size, flat in ((24, distinct), (20, levels)):  # at 24 × 24 the "round" count differs at 20 and 40 %
        cam = flat.view(n, size, size)
        x = torch.rand(n, 3, size, size, generator=g)
        clean = torch.softmax(model(x), 1)[:, 1].detach().double()
        out = testing.score(spec, module_context(model, x, cam, labels), noise=0.0, percentages=percentages,
                            **{"class": "label"})
        for pct in percentages:  # grad-cam's percentile q removes 100 − q %
            for name, remove in (("morf", road.RemoveMostRelevantFirst), ("lerf", road.RemoveLeastRelevantFirst)):
                metric = road.PerturbationConfidenceMetric(remove(100 - pct, imputer))
                theirs = torch.from_numpy(metric(x, cam.numpy(), targets, model)).double() + clean
                worst = max(worst, max_abs_difference(out[f"{name}/{pct}"], theirs))
        combined = road.ROADCombined(percentiles=percentages)
        combined.morf_averager.imputer = lambda q: road.PerturbationConfidenceMetric(
            road.RemoveMostRelevantFirst(q, imputer))
        combined.lerf_averager.imputer = lambda q: road.PerturbationConfidenceMetric(
            road.RemoveLeastRelevantFirst(q, imputer))
        theirs = torch.from_numpy(combined(x, cam.numpy(), targets, model)).double()
        worst = max(worst, max_abs_difference(out["road"], 2 * theirs))
    return worst


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="aopc.quantus", plugin="aopc", kind="metrics", library="quantus",
        reference="quantus.RegionPerturbation (MoRF order)", check=aopc_against_quantus, tolerance=1e-6,
        inputs=PLANTED + "; random maps plus the mask; patch 8 (16 steps); "
               "black and white fills",
        differences="Quantus returns f(x⁰) − f(x^k), compared with morf/0 − morf/k; class = \"label\"; "
                    "normalise and abs off")
    yield VerificationSpec(
        name="deletion.quantus", plugin="deletion", kind="metrics", library="quantus",
        reference="quantus.PixelFlipping", check=deletion_against_quantus, tolerance=1e-6,
        inputs=PLANTED + "; random maps plus the mask; 16 steps of 64 pixels, black fill",
        differences="the curve after each step (Quantus has no clean point and integrates differently): "
                    "deletion/1 … deletion/16 with patch = 1; class = \"label\"; normalise and abs off")
    yield VerificationSpec(
        name="road.pytorch-grad-cam", plugin="road", kind="metrics", library="grad-cam",
        reference="pytorch_grad_cam.metrics.road (ROADMostRelevantFirst, ROADLeastRelevantFirst, ROADCombined)",
        check=road_against_pytorch_grad_cam, tolerance=1e-5,
        inputs="a random small CNN; 4 random 3×24×24 images with maps of distinct values, 4 of 3×20×20 with "
               "maps of 10 levels of 40 pixels; p = 10 … 90 %",
        differences="noise = 0 in both (the imputation's noise is random); grad-cam's percentile q removes "
                    "100 − q % (xbench's default count = \"percentile\" removes the same pixels); its "
                    "ROADCombined is (LeRF − MoRF)/2, xbench's road LeRF − MoRF; class scores are softmax "
                    "probabilities in both")


def deletion_against_quantus(spec) -> float:
    """Quantus' PixelFlipping removes the most relevant pixels `features_in_step` at a time and
    records the softmax probability of the label after each step: xbench's deletion curve
    deletion/1 … deletion/16 with patch = 1 and 16 steps of 64 pixels."""
    import quantus

    data, model = planted_cnn()
    x, y = data.test.images[:16], data.test.labels[:16]
    a = torch.rand(16, 32, 32, generator=torch.Generator().manual_seed(6)) + data.test.masks[:16]
    ctx = testing.metric_context(model, data.test, attribution=a, n=16)
    out = testing.score(spec, ctx, patch=1, steps=16, fill="black", **{"class": "label"})
    ours = torch.stack([out[f"deletion/{j}"] for j in range(1, 17)], 1)
    metric = quantus.PixelFlipping(features_in_step=64, perturb_baseline=0.0, normalise=False, abs=False,
                                   disable_warnings=True)
    theirs = np.asarray(metric(model=model.module, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(),
                               device="cpu", softmax=True, batch_size=16))
    return max_abs_difference(ours, theirs)
