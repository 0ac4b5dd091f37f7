"""Randomisation sanity checks against Quantus 0.6: MPRT (cascading, bottom-up and independent),
sMPRT, eMPRT and the random-logit test, with Captum's Saliency as the method on both sides.

Quantus re-initialises every layer by its ``reset_parameters()`` after ``torch.manual_seed(seed +
1)``: the same seed for every layer. Inside these checks xbench's per-depth seeds are set to 43
(Quantus' default 42 + 1), so that both build bit-identical random networks and every remaining
difference is in the metric."""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import numpy as np
import torch

from xbench import VerificationSpec, hookimpl, testing
from xbench.verification import max_abs_difference

from ._inputs import PLANTED, planted_cnn

N = 16
DEPTH = {"features.0": 1, "features.3": 2, "features.6": 3, "classifier": 4}  # the small CNN's layers
SAME_NETWORK = "xbench's per-depth seeds set to Quantus' one seed (43), so both randomise to the same weights"


def saliency(model, x, targets):
    """|∂y_t/∂x| by Captum, as xbench's `saliency` computes it: the method on xbench's side."""
    from captum.attr import Saliency

    return Saliency(model.module).attribute(x, target=targets, abs=True).detach()


def _quantus_saliency(model, inputs, targets, **kwargs):
    from captum.attr import Saliency

    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    return Saliency(model).attribute(x, target=torch.as_tensor(np.asarray(targets)), abs=True).detach().numpy()


@contextmanager
def _quantus_seeds():
    from xbench.plugins.metrics import randomisation

    with mock.patch.object(randomisation, "layer_seeds", lambda seed, count: [43] * count):
        yield


def _setup():
    data, model = planted_cnn()
    x, y = data.test.images[:N], data.test.labels[:N]
    ctx = testing.metric_context(model, data.test, attribution=saliency(model, x, y), explain=saliency, n=N)
    return model, x.numpy(), y.numpy(), ctx


def mprt_against_quantus(spec) -> float:
    """Every layer's per-sample Spearman correlation, and the headline, in each of the three orders."""
    import quantus

    model, x, y, _ = _setup()
    worst = 0.0
    for mode, order in (("cascade", "top_down"), ("bottom-up", "bottom_up"), ("independent", "independent")):
        _, _, _, ctx = _setup()
        with _quantus_seeds():
            ours = testing.score(spec, ctx, mode=mode)
        metric = quantus.MPRT(layer_order=order, disable_warnings=True)
        theirs = metric(model=model.module, x_batch=x, y_batch=y, a_batch=ctx.raw_attribution.numpy(),
                        explain_func=_quantus_saliency, device="cpu", batch_size=N)
        expected = list(DEPTH)[::-1] if mode == "cascade" else list(DEPTH)
        if [k for k in theirs if k != "original"] != expected:
            raise AssertionError(f"Quantus randomised the layers {list(theirs)}, expected {expected}")
        for name, depth in DEPTH.items():
            worst = max(worst, max_abs_difference(ours[f"spearman/{depth}"], theirs[name]))
        headline = (np.array([theirs[k] for k in DEPTH]).mean(0) if mode == "independent"
                    else list(theirs.values())[-1])
        worst = max(worst, max_abs_difference(ours["spearman"], headline))
    return worst


def smprt_against_quantus(spec) -> float:
    """Bottom-up, the fully randomised network only, given xbench's noise directions z (Quantus'
    noise is σ·(max x − min x)·z as xbench's; the last of the N samples is the clean input)."""
    import quantus

    from xbench.plugins.metrics import randomisation

    model, x, y, ctx = _setup()
    drawn = []
    real = randomisation.standard_normal
    with _quantus_seeds(), mock.patch.object(randomisation, "standard_normal",
                                             lambda *a: drawn.append(real(*a)) or drawn[-1]):
        ours = testing.score(spec, ctx, samples=5, sigma=0.2)
    directions = [z.numpy().astype(np.float64) for z in drawn[:4]]
    calls = iter(range(10**6))
    metric = quantus.SmoothMPRT(layer_order="bottom_up", nr_samples=5, noise_magnitude=0.2, skip_layers=True,
                                return_last_correlation=True, disable_warnings=True)
    with mock.patch.object(np.random, "randn", lambda *shape: directions[next(calls) % 4]):
        theirs = metric(model=model.module, x_batch=x, y_batch=y, a_batch=None, explain_func=_quantus_saliency,
                        explain_func_kwargs={"method": "Saliency"}, device="cpu", batch_size=N)
    return max_abs_difference(ours["spearman"], theirs)


def emprt_against_quantus(spec) -> float:
    import quantus

    model, x, y, ctx = _setup()
    with _quantus_seeds():
        ours = testing.score(spec, ctx)
    theirs = quantus.EfficientMPRT(abs=True, disable_warnings=True)(
        model=model.module, x_batch=x, y_batch=y, a_batch=ctx.raw_attribution.numpy(),
        explain_func=_quantus_saliency, device="cpu", batch_size=N)
    return max_abs_difference(ours["emprt"], theirs)


def random_logit_against_quantus(spec) -> float:
    """Two classes (the other class is forced), Spearman and SSIM."""
    import quantus
    from skimage.metrics import structural_similarity

    model, x, y, ctx = _setup()
    ours = testing.score(spec, ctx)

    def ssim_2d(a, b, batched=True, **kwargs):
        side = int(np.sqrt(a.shape[1]))
        norm = lambda v: (v / v.max() if v.max() > 0 else v).reshape(side, side)  # noqa: E731
        return [structural_similarity(norm(p), norm(q), data_range=1)
                for p, q in zip(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))]

    worst = 0.0
    for measure, key in ((quantus.similarity_func.correlation_spearman, "spearman"), (ssim_2d, "ssim")):
        metric = quantus.RandomLogit(num_classes=2, similarity_func=measure, abs=True, disable_warnings=True)
        theirs = metric(model=model.module, x_batch=x, y_batch=y, a_batch=ctx.raw_attribution.numpy(),
                        explain_func=_quantus_saliency, device="cpu", batch_size=N)
        worst = max(worst, max_abs_difference(ours[key], theirs))
    return worst


INPUTS = PLANTED + "; Captum Saliency maps"


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="mprt.quantus", plugin="mprt", kind="metrics", library="quantus", needs=("captum",),
        reference="quantus.MPRT (top_down, bottom_up, independent)", check=mprt_against_quantus, tolerance=1e-9,
        inputs=INPUTS + "; every layer of the three orders",
        differences=SAME_NETWORK + ". Quantus' return_average_correlation skips a key \"orig\" that does not exist "
                    "(it is \"original\"), so its average includes the unrandomised model (≈ 1): xbench's "
                    "independent headline is the mean over the randomised layers, compared with that mean")
    yield VerificationSpec(
        name="smprt.quantus", plugin="smprt", kind="metrics", library="quantus", needs=("captum",),
        reference="quantus.SmoothMPRT (bottom_up, last correlation)", check=smprt_against_quantus, tolerance=1e-5,
        inputs=INPUTS + "; 5 noise samples, σ = 0.2",
        differences=SAME_NETWORK + "; Quantus given xbench's noise directions; it adds float64 noise to float32 "
                    "inputs, xbench float32 noise, so near-tied gradients may swap ranks (measured 7e-7)")
    yield VerificationSpec(
        name="emprt.quantus", plugin="emprt", kind="metrics", library="quantus", needs=("captum",),
        reference="quantus.EfficientMPRT", check=emprt_against_quantus, tolerance=1e-6, inputs=INPUTS,
        differences=SAME_NETWORK + "; Quantus bins float32 maps, xbench float64 (a value on a bin edge could fall "
                    "the other way; measured 4e-16)")
    yield VerificationSpec(
        name="random-logit.quantus", plugin="random-logit", kind="metrics", library="quantus",
        needs=("captum", "scikit-image"), reference="quantus.RandomLogit (Spearman and SSIM)",
        check=random_logit_against_quantus, tolerance=1e-6, inputs=INPUTS + "; two classes",
        differences="Quantus' default SSIM runs on maps flattened to 1-D; it is given skimage's 2-D SSIM on the "
                    "max-normalised maps instead (what xbench computes); it normalises in float32 (measured 3e-8)")
