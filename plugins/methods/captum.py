"""Attribution methods from Captum, batched on the model's device (seed-algorithms.md §2.6, §5.3).

Each method is one small function ``(model, inputs, targets, params) -> (N, C, H, W)``; xbench
reduces the maps by the run's rule afterwards. Defaults are Oliveira et al.'s Captum settings
(zero baselines, 50 Gauss–Legendre steps, 5 GradientSHAP samples with no noise, ε = 1e-9 LRP).
Every call runs inside :func:`attribution_ready`, so in-place ReLUs work and the model is left as
it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbench import MethodSpec, Param, TrainedModel, hookimpl

from .cam import LAYER_PARAM, resolve_layer
from ._surgery import attribution_ready, give_each_call_its_module

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


def integrated_gradients(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import IntegratedGradients

    internal = int(params["internal_batch_size"]) or None
    with attribution_ready(model.module) as m:
        return IntegratedGradients(m).attribute(
            x, baselines=torch.full_like(x, float(params["baseline"])), target=target, n_steps=int(params["steps"]),
            method=str(params["method"]), internal_batch_size=internal,
        )


def gradient_shap(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    """One constant baseline (Oliveira: all zeros), ``samples`` random points on the path per input."""
    from captum.attr import GradientShap

    baselines = torch.full_like(x[:1], float(params["baseline"]))
    with attribution_ready(model.module) as m:
        return GradientShap(m).attribute(x, baselines=baselines, target=target, n_samples=int(params["samples"]),
                                         stdevs=float(params["stdevs"]))


def deeplift(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import DeepLift

    with attribution_ready(model.module) as m:
        give_each_call_its_module(m, x[:1])  # DeepLift's hooks need one call per module (ResNet blocks)
        return DeepLift(m).attribute(x, baselines=torch.full_like(x, float(params["baseline"])), target=target)


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
        return Occlusion(m).attribute(
            x, sliding_window_shapes=(x.shape[1], w, w), strides=(x.shape[1], s, s), target=target,
            baselines=float(params["baseline"]), perturbations_per_eval=int(params["perturbations_per_eval"]),
        )


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
                "internal_batch_size": Param(256, "path points evaluated at once (bounds memory); 0 = all", ge=0)},
        description="Integrated Gradients (Sundararajan et al.), constant baseline, Captum; "
                    "internal batching bounds memory.",
        requires=GRADIENTS,
    )
    yield MethodSpec(
        name="gradient-shap", explain=gradient_shap,
        params={"samples": Param(5, "random points on the path per input", ge=1),
                "stdevs": Param(0.0, "σ of the noise added to each sample (Oliveira: 0)", ge=0),
                "baseline": Param(0.0, "the constant baseline image")},
        description="GradientSHAP (Lundberg & Lee), Captum; one constant baseline, as Oliveira et al.",
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
                "perturbations_per_eval": Param(16, "occluded copies per forward pass", ge=1)},
        description="Occlusion (Zeiler & Fergus), Captum: logit drop when a square patch is set to the baseline.",
    )
