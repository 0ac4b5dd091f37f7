"""Attribution methods from Captum, batched on the model's device (seed-algorithms.md §2.6, §5.3).

Each method is one small function ``(model, inputs, targets, params) -> (N, C, H, W)``; xbench
reduces the maps by the run's rule afterwards. Defaults are Oliveira et al.'s Captum settings
(zero baselines, 50 Gauss–Legendre steps, 5 GradientSHAP samples with no noise, ε = 1e-9 LRP).
Every call runs inside :func:`attribution_ready`, so in-place ReLUs work and the model is left as
it was.

Expanding methods (Integrated Gradients, GradientSHAP, SmoothGrad, VarGrad, DeepLiftShap,
occlusion) evaluate at most ``memory_mb`` worth of model inputs at once (:mod:`._chunking`);
those that draw random numbers (GradientSHAP, SmoothGrad, VarGrad, DeepLiftShap with noise
baselines) draw them from the runner's seeded per-batch generator.

- ``smoothgrad`` / ``vargrad`` (Smilkov et al. 2017; Adebayo et al. 2018): Captum's NoiseTunnel
  over Saliency: the mean (SmoothGrad) or the variance (VarGrad) of ∂y_t/∂x over ``samples`` noisy
  copies x + ε, ε ~ N(0, σ²) with σ = ``noise`` × (max − min of each image), Smilkov's "noise
  level". Captum takes one σ per input tensor, not per sample; so NoiseTunnel runs on the image
  rescaled to [0, 1] per sample, u = (x − min)/(max − min), with noise σ = ``noise`` on u and a
  forward that maps u back (min + u·(max − min)), and the gradients are divided by the range
  (its square for VarGrad). Exactly Captum's NoiseTunnel with stdevs = σ_i on image i (checked).
- ``deeplift-shap`` (Lundberg & Lee 2017): Captum's DeepLiftShap, the mean of DeepLIFT (Rescale)
  attributions over ``samples`` baselines: ``baselines = "noise"``, images of i.i.d. U(0, 1)
  pixels drawn from the per-batch generator (the model-free stand-in for SHAP's background
  sample; the method never sees training data), or ``"levels"``, constant images at ``samples``
  evenly spaced values from 0 to 1 (black to white).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbench import MethodSpec, Param, TrainedModel, hookimpl

from ._chunking import MEMORY_PARAM, chunks, rows_within, seeded, with_backoff
from ._surgery import attribution_ready, give_each_call_its_module
from .cam import LAYER_PARAM, resolve_layer

GRADIENTS = frozenset({"gradients"})
CONV = frozenset({"gradients", "conv_layer"})
LRP = frozenset({"gradients", "lrp"})

# Modules that only reshape or are the identity in eval mode: under the ε-rule relevance passes
# through them unchanged (Captum has no default rule for them and would refuse the model).
_PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
# The layers Captum's LRP gives the ε-rule by default, given it explicitly so that ε is a param.
_EPSILON_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool2d,
                   nn.AdaptiveAvgPool2d, *_PASS_THROUGH)


def saliency(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    from captum.attr import Saliency

    with attribution_ready(model.module) as m:
        return Saliency(m).attribute(x, target=target, abs=bool(params["abs"]))


def input_x_gradient(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import InputXGradient

    with attribution_ready(model.module) as m:
        return InputXGradient(m).attribute(x, target=target)


def expanded(model: TrainedModel, x: torch.Tensor, copies: int, params: Mapping[str, Any], what: str, call,
             grad: bool = True) -> torch.Tensor:
    """``call(rows, part)`` over consecutive parts of the batch, each part's ``copies`` expanded
    rows per input fitting in ``memory_mb`` (with the OOM back-off): ``rows`` is how many model
    inputs may run at once."""
    def attempt(rows: int) -> torch.Tensor:
        per_part = max(1, rows // max(1, copies))
        return torch.cat([call(rows, part) for part in chunks(len(x), per_part)])

    return with_backoff(attempt, rows_within(model.module, x, params["memory_mb"], grad), what)


def integrated_gradients(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import IntegratedGradients

    steps = int(params["steps"])
    with attribution_ready(model.module) as m:
        ig = IntegratedGradients(m)
        return expanded(model, x, steps, params, "integrated-gradients", lambda rows, part: ig.attribute(
            x[part], baselines=torch.full_like(x[part], float(params["baseline"])), target=target[part],
            n_steps=steps, method=str(params["method"]), internal_batch_size=max(rows, len(x[part]))))


def gradient_shap(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any], *,
                  generator: torch.Generator):
    """One constant baseline (Oliveira: all zeros), ``samples`` random points on the path per input."""
    from captum.attr import GradientShap

    baselines = torch.full_like(x[:1], float(params["baseline"]))
    samples = int(params["samples"])
    with attribution_ready(model.module) as m, seeded(generator):
        shap = GradientShap(m)
        return expanded(model, x, samples, params, "gradient-shap", lambda rows, part: shap.attribute(
            x[part], baselines=baselines, target=target[part], n_samples=samples, stdevs=float(params["stdevs"])))


def _noise_tunnel(kind: str):
    def explain(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any], *,
                generator: torch.Generator) -> torch.Tensor:
        from captum.attr import NoiseTunnel, Saliency

        flat = x.detach().flatten(1)
        lo = flat.amin(1).view(-1, *([1] * (x.dim() - 1)))
        span = flat.amax(1).view_as(lo) - lo
        span = torch.where(span > 0, span, torch.ones_like(span))  # a constant image: noise relative to 1
        u = (x.detach() - lo) / span
        samples = int(params["samples"])
        with attribution_ready(model.module) as m, seeded(generator):
            tunnel = NoiseTunnel(Saliency(lambda v, low, scale: m(low + v * scale)))

            def call(rows: int, part: slice) -> torch.Tensor:
                return tunnel.attribute(u[part], nt_type=kind, nt_samples=samples,
                                        nt_samples_batch_size=max(1, min(samples, rows // len(u[part]))),
                                        stdevs=float(params["noise"]), target=target[part], abs=bool(params["abs"]),
                                        additional_forward_args=(lo[part], span[part]))

            out = expanded(model, x, samples, params, kind, call)
        return out / (span * span if kind == "vargrad" else span)

    return explain


smoothgrad = _noise_tunnel("smoothgrad")
vargrad = _noise_tunnel("vargrad")


def deeplift(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import DeepLift

    with attribution_ready(model.module) as m:
        give_each_call_its_module(m, x[:1])  # DeepLift's hooks need one call per module (ResNet blocks)
        return DeepLift(m).attribute(x, baselines=torch.full_like(x, float(params["baseline"])), target=target)


def deeplift_shap_baselines(x: torch.Tensor, kind: str, samples: int, generator: torch.Generator) -> torch.Tensor:
    """``samples`` baseline images shaped like one input: U(0, 1) noise or evenly spaced grey levels."""
    if kind == "noise":
        return torch.rand((samples, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    levels = torch.linspace(0.0, 1.0, samples, device=x.device, dtype=x.dtype) if samples > 1 else \
        torch.zeros(1, device=x.device, dtype=x.dtype)
    return levels.view(-1, *([1] * (x.dim() - 1))).expand(samples, *x.shape[1:]).contiguous()


def deeplift_shap(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any], *,
                  generator: torch.Generator):
    from captum.attr import DeepLiftShap

    samples = int(params["samples"])
    baselines = deeplift_shap_baselines(x, str(params["baselines"]), samples, generator)
    with attribution_ready(model.module) as m:
        give_each_call_its_module(m, x[:1])
        shap = DeepLiftShap(m)
        return expanded(model, x, samples, params, "deeplift-shap",
                        lambda rows, part: shap.attribute(x[part], baselines=baselines, target=target[part]))


def guided_backprop(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import GuidedBackprop

    with attribution_ready(model.module) as m:
        return GuidedBackprop(m).attribute(x, target=target)


def deconvolution(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import Deconvolution

    with attribution_ready(model.module) as m:
        return Deconvolution(m).attribute(x, target=target)


def lrp_epsilon(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    """Captum LRP with the ε-rule on every layer that has one; relevance of the input sums to the
    explained logit (less what ε and biases absorb)."""
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    eps = float(params["epsilon"])
    with attribution_ready(model.module) as m:
        for layer in m.modules():
            if hasattr(layer, "rule"):
                continue  # a rule the model's author chose
            if isinstance(layer, _EPSILON_LAYERS):
                layer.rule = EpsilonRule(epsilon=eps)
        return LRP(m).attribute(x, target=target)


def guided_grad_cam(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    """Guided Backprop times Grad-CAM (upsampled, nearest) at ``layer`` (default: the deepest)."""
    from captum.attr import GuidedGradCam

    layer = resolve_layer(model, str(params["layer"]))
    with attribution_ready(model.module) as m:
        return GuidedGradCam(m, layer).attribute(x, target=target)


def occlusion(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    """Drop in the target logit when a ``window``² patch (all channels) is set to ``baseline``."""
    from captum.attr import Occlusion

    w, s = int(params["window"]), int(params["stride"])
    with attribution_ready(model.module) as m:
        occ = Occlusion(m)
        return expanded(model, x, 1, params, "occlusion", lambda rows, part: occ.attribute(
            x[part], sliding_window_shapes=(x.shape[1], w, w), strides=(x.shape[1], s, s), target=target[part],
            baselines=float(params["baseline"]), perturbations_per_eval=max(1, rows // len(x[part]))), grad=False)


@hookimpl
def xbench_methods():
    yield MethodSpec(
        name="saliency", explain=saliency, params={"abs": Param(True, "absolute gradients (Captum's abs=True)")},
        description="|∂y_t/∂x| (Simonyan et al.), Captum Saliency.", requires=GRADIENTS,
    )
    yield MethodSpec(
        name="input-x-gradient", explain=input_x_gradient,
        description="x ⊙ ∂y_t/∂x (Shrikumar et al.), Captum InputXGradient.", requires=GRADIENTS,
    )
    yield MethodSpec(
        name="integrated-gradients", explain=integrated_gradients,
        params={"steps": Param(50, "points on the path from the baseline to the input", ge=1),
                "baseline": Param(0.0, "the constant baseline image"),
                "method": Param("gausslegendre", "Captum's integration rule",
                                choices=("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                                         "riemann_middle")),
                "memory_mb": MEMORY_PARAM},
        description="Integrated Gradients (Sundararajan et al.), constant baseline, Captum; "
                    "path points chunked to the memory budget.",
        requires=GRADIENTS,
    )
    yield MethodSpec(
        name="gradient-shap", explain=gradient_shap,
        params={"samples": Param(5, "random points on the path per input", ge=1),
                "stdevs": Param(0.0, "σ of the noise added to each sample (Oliveira: 0)", ge=0),
                "baseline": Param(0.0, "the constant baseline image"),
                "memory_mb": MEMORY_PARAM},
        description="GradientSHAP (Lundberg & Lee), Captum; one constant baseline, as Oliveira et al.; path "
                    "positions drawn from the run's seeded generator.",
        requires=GRADIENTS, stochastic=True, version="2",
    )
    for name, explain, what in (("smoothgrad", smoothgrad, "mean"), ("vargrad", vargrad, "variance")):
        yield MethodSpec(
            name=name, explain=explain, stochastic=True,
            params={"samples": Param(50, "noisy copies per input (Smilkov et al.: 50)", ge=1),
                    "noise": Param(0.15, "σ of the Gaussian noise as a fraction of each image's range max − min "
                                         "(Smilkov et al.'s noise level: 10–20 %)", ge=0),
                    "abs": Param(False, "average absolute gradients instead of signed ones"),
                    "memory_mb": MEMORY_PARAM},
            description=f"{'SmoothGrad (Smilkov et al. 2017)' if what == 'mean' else 'VarGrad (Adebayo et al. 2018)'}: "
                        f"the {what} of the gradient over noisy copies, σ relative to each image's range; "
                        "Captum NoiseTunnel over Saliency.",
            requires=GRADIENTS,
        )
    yield MethodSpec(
        name="deeplift-shap", explain=deeplift_shap, stochastic=True,
        params={"samples": Param(8, "baseline images the attribution is averaged over", ge=1),
                "baselines": Param("noise", "'noise': i.i.d. U(0, 1) images from the run's seeded generator; "
                                            "'levels': constant images evenly spaced from 0 to 1",
                                   choices=("noise", "levels")),
                "memory_mb": MEMORY_PARAM},
        description="DeepLiftShap (Lundberg & Lee), Captum: DeepLIFT averaged over a distribution of baselines "
                    "(uniform-noise images, or grey levels from black to white).",
        requires=GRADIENTS,
    )
    yield MethodSpec(
        name="deeplift", explain=deeplift, params={"baseline": Param(0.0, "the constant reference image")},
        description="DeepLIFT, Rescale rule (Shrikumar et al.), constant baseline, Captum.", requires=GRADIENTS,
    )
    yield MethodSpec(
        name="guided-backprop", explain=guided_backprop,
        description="Guided Backpropagation (Springenberg et al.), Captum.", requires=GRADIENTS,
    )
    yield MethodSpec(
        name="deconvolution", explain=deconvolution,
        description="Deconvolution (Zeiler & Fergus), Captum.", requires=GRADIENTS,
    )
    yield MethodSpec(
        name="lrp-epsilon", explain=lrp_epsilon,
        params={"epsilon": Param(1e-9, "the ε-rule's stabiliser (Captum's default)", ge=0)},
        description="LRP with the ε-rule on every layer (Bach et al.), Captum's default rules.", requires=LRP,
    )
    yield MethodSpec(
        name="guided-grad-cam", explain=guided_grad_cam, params={"layer": LAYER_PARAM},
        description="Guided Grad-CAM (Selvaraju et al.), Captum; layer as for grad-cam ('' = the deepest).",
        requires=CONV,
    )
    yield MethodSpec(
        name="occlusion", explain=occlusion,
        params={"window": Param(16, "side of the occluding square, in pixels", ge=1),
                "stride": Param(8, "step between occlusions, in pixels", ge=1),
                "baseline": Param(0.0, "the value an occluded patch gets"),
                "memory_mb": MEMORY_PARAM},
        description="Occlusion (Zeiler & Fergus), Captum: logit drop when a square patch is set to the baseline.",
    )
