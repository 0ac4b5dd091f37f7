"""Max- and Avg-Sensitivity against Captum's ``sensitivity_max`` and Quantus' MaxSensitivity and
AvgSensitivity, on the same model, saliency maps and perturbations."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xbench import TrainedModel, VerificationSpec, hookimpl, testing
from xbench.attribution import reduce_attribution, run_method
from xbench.registry import load_registry
from xbench.specs import defaults
from xbench.verification import max_abs_difference

SAMPLES, RADIUS = 5, 0.05
INPUTS = ("a random 2-conv net, 6 planted 1×16×16 images, absolute-gradient saliency maps, 5 uniform perturbations "
          "of radius 0.05")


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2)).eval()
    model = TrainedModel(net, None, {})
    split = testing.planted_split(6, size=16, seed=3)
    saliency = load_registry(entry_points=False).get("methods", "saliency").spec
    params = defaults(saliency.params)

    def explainer(model, x, targets):
        return run_method(saliency, model, x, targets, params)

    return model, split, explainer


def _ours(spec):
    from xbench.plugins.metrics.sensitivity import perturbations

    model, split, explainer = _setup()
    ctx = testing.metric_context(model, split, attribution=explainer(model, split.images, split.labels),
                                 explain=explainer, seed=11)
    out = testing.score(spec, ctx, samples=SAMPLES, radius=RADIUS)
    return out, perturbations(split.images, SAMPLES, RADIUS, torch.Generator().manual_seed(11))


def max_sensitivity_against_captum(spec) -> float:
    from captum.metrics import sensitivity_max

    model, split, explainer = _setup()
    out, deltas = _ours(spec)
    n = len(split.images)
    arranged = deltas.transpose(0, 1).reshape(n * SAMPLES, *deltas.shape[2:])  # row i·S + j: sample i, draw j

    def explanation(inputs, target):  # Captum hands a tuple and expects one back
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        return (reduce_attribution(explainer(model, x, target), (16, 16), "abs-luminance"),)

    theirs = sensitivity_max(explanation, split.images, perturb_func=lambda x: x + arranged,
                             n_perturb_samples=SAMPLES, target=split.labels)
    return max_abs_difference(out["max_sensitivity"], theirs)


def _against_quantus(spec, kind: str) -> float:
    import quantus

    model, split, explainer = _setup()
    out, deltas = _ours(spec)
    draws = iter(deltas)

    def perturb(arr, **_kwargs):
        return arr + next(draws).reshape(arr.shape).numpy()

    def explain_func(model, inputs, targets, **_kwargs):
        x = torch.as_tensor(inputs).float()
        maps = explainer(TrainedModel(model, None, {}), x, torch.as_tensor(targets).long())
        return reduce_attribution(maps, tuple(x.shape[-2:]), "abs-luminance")[:, None].numpy()

    metric = (quantus.MaxSensitivity if kind == "max" else quantus.AvgSensitivity)(
        nr_samples=SAMPLES, perturb_func=perturb, normalise=False, abs=False, disable_warnings=True)
    x = split.images.numpy()
    theirs = metric(model=model.module, x_batch=x, y_batch=split.labels.numpy(),
                    a_batch=explain_func(model.module, x, split.labels.numpy()), explain_func=explain_func,
                    device="cpu")
    return max_abs_difference(out[f"{kind}_sensitivity"], np.asarray(theirs))


def max_sensitivity_against_quantus(spec) -> float:
    return _against_quantus(spec, "max")


def avg_sensitivity_against_quantus(spec) -> float:
    return _against_quantus(spec, "avg")


@hookimpl
def xbench_verifications():
    same = "the same perturbations fed to the reference in its order; both divide by the clean map's Frobenius norm"
    yield VerificationSpec(
        name="sensitivity.captum", plugin="sensitivity", kind="metrics", library="captum",
        reference="captum.metrics.sensitivity_max (max_sensitivity)", check=max_sensitivity_against_captum,
        tolerance=1e-6, inputs=INPUTS, differences=same)
    yield VerificationSpec(
        name="sensitivity.quantus-max", plugin="sensitivity", kind="metrics", library="quantus",
        reference="quantus.MaxSensitivity", check=max_sensitivity_against_quantus, tolerance=1e-5, inputs=INPUTS,
        differences=same + "; Quantus with normalise = false, abs = false")
    yield VerificationSpec(
        name="sensitivity.quantus-avg", plugin="sensitivity", kind="metrics", library="quantus",
        reference="quantus.AvgSensitivity", check=avg_sensitivity_against_quantus, tolerance=1e-5, inputs=INPUTS,
        differences=same + "; Quantus with normalise = false, abs = false")
