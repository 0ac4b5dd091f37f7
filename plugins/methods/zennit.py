"""Layer-wise relevance propagation with Zennit composites (seed-algorithms.md §1.9, §5.3).

- ``lrp-epsilon-plus-flat``: flat rule on the first layer, z⁺ on convolutions, ε on dense layers.
- ``lrp-epsilon-gamma-box``: z^B (box ``[low, high]``, the data range) on the first convolution,
  γ on the other convolutions, ε on dense layers.
- ``lrp-epsilon-alpha2-beta1``: α2β1 on convolutions, ε on dense layers.
- ``lrp-alpha1-beta0``: Deep Taylor, α1β0 (= z⁺) on every convolution and dense layer, as in
  Rio-Torto et al.'s comparison.

The output relevance is the explained logit (one-hot × logit), so input relevances are in logit
units and sum to it where the rules conserve, as Captum's LRP does.

Canonizers are chosen from the module at run time (``canonizer = "auto"``): ``resnet``
(Zennit's ResNetCanonizer: merges batch norms and makes the residual sum a module with a rule)
where there are torchvision ``BasicBlock``/``Bottleneck`` modules, ``merge-batchnorm``
(SequentialMergeBatchNorm) where there is batch norm, and the VGG canonizer otherwise (the same
batch-norm merge, a no-op without batch norm).

Why ``requires = {"gradients", "lrp"}``: Zennit attaches rules by layer type and lets the gradient
through every other operation, so on a model with multiplicative gates or skip connections that
no canonizer rewrites, it returns a modified gradient that is not LRP, without any error. The
``lrp`` tag is the model's promise that its forward pass is a chain of layers that the rules cover
exactly. Residual networks built from torchvision blocks (tag ``resnet``) are covered exactly too,
through the canonizer; the plan can only require all of a set of tags, so they are reached once
the core accepts alternatives (see the module's report), or by a model that also tags ``lrp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbench import MethodSpec, Param, TrainedModel, hookimpl
from xbench.errors import XbenchError

from ._surgery import attribution_ready

LRP = frozenset({"gradients", "lrp"})
CANONIZERS = ("auto", "resnet", "merge-batchnorm", "vgg", "none")


def choose_canonizer(module: nn.Module) -> str:
    """``resnet`` if the model has torchvision residual blocks, ``merge-batchnorm`` if it has batch
    norm, else ``vgg``."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    kinds = [type(m) for m in module.modules()]
    if any(issubclass(k, (BasicBlock, Bottleneck)) for k in kinds):
        return "resnet"
    if any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds):
        return "merge-batchnorm"
    return "vgg"


def canonizers_for(module: nn.Module, name: str) -> list:
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    if name == "auto":
        name = choose_canonizer(module)
    if name == "resnet":
        return [ResNetCanonizer()]
    if name == "merge-batchnorm":
        return [SequentialMergeBatchNorm()]
    if name == "vgg":
        return [VGGCanonizer()]
    if name == "none":
        return []
    raise XbenchError(f"Unknown Zennit canonizer {name!r}: use one of {', '.join(CANONIZERS)}.")


def _composite(name: str, x: torch.Tensor, params: Mapping[str, Any], canonizers: list):
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat, LayerMapComposite, \
        layer_map_base
    from zennit.rules import AlphaBeta
    from zennit.types import Convolution

    eps, stab = params.get("epsilon", 0.0), float(params["stabilizer"])  # α1β0 has no ε
    if name == "epsilon-plus-flat":
        return EpsilonPlusFlat(epsilon=float(eps), stabilizer=stab, canonizers=canonizers)
    if name == "epsilon-gamma-box":
        low, high = float(params["low"]), float(params["high"])  # low < high: the spec's validate
        return EpsilonGammaBox(low=torch.full_like(x, low), high=torch.full_like(x, high), epsilon=float(eps),
                               gamma=float(params["gamma"]), stabilizer=stab, canonizers=canonizers)
    if name == "epsilon-alpha2-beta1":
        return EpsilonAlpha2Beta1(epsilon=float(eps), stabilizer=stab, canonizers=canonizers)
    if name == "alpha1-beta0":
        rule = AlphaBeta(alpha=1.0, beta=0.0, stabilizer=stab)
        layer_map = layer_map_base(stab) + [(Convolution, rule), (nn.Linear, rule)]
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    raise ValueError(name)


def relevance(composite_name: str, model: TrainedModel, x: torch.Tensor, target: torch.Tensor,
              params: Mapping[str, Any]) -> torch.Tensor:
    """Input relevance ``(N, C, H, W)`` for the target logits, in one batched backward pass."""
    with attribution_ready(model.module) as m:
        composite = _composite(composite_name, x, params, canonizers_for(m, str(params["canonizer"])))
        x = x.detach().requires_grad_(True)
        with composite.context(m) as modified:
            logits = modified(x)
            onehot = torch.zeros_like(logits).scatter_(1, target.reshape(-1, 1).to(logits.device), 1.0)
            (r,) = torch.autograd.grad(logits, x, grad_outputs=onehot * logits.detach())
    return r


def _method(composite_name: str):
    def explain(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
        return relevance(composite_name, model, x, target, params)

    explain.__name__ = "lrp_" + composite_name.replace("-", "_")
    return explain


def _box_bounds(params) -> None:
    if not float(params["low"]) < float(params["high"]):
        raise ValueError(f"lrp-epsilon-gamma-box needs low < high (the data range), got low = {params['low']} and "
                         f"high = {params['high']}")


@hookimpl
def xbench_methods():
    common = {"stabilizer": Param(1e-6, "added to denominators so no rule divides by zero", gt=0),
              "canonizer": Param("auto", "how the model is rewritten for the rules first: auto picks resnet, "
                                         "merge-batchnorm or vgg from the model", choices=CANONIZERS)}
    epsilon = Param(1e-6, "the ε-rule's stabiliser on dense layers", ge=0)
    yield MethodSpec(
        name="lrp-epsilon-plus-flat", explain=_method("epsilon-plus-flat"), params={"epsilon": epsilon, **common},
        description="LRP, Zennit EpsilonPlusFlat: flat first layer, z⁺ convolutions, ε dense layers.", requires=LRP,
    )
    yield MethodSpec(
        name="lrp-epsilon-gamma-box", explain=_method("epsilon-gamma-box"),
        params={"epsilon": epsilon, "gamma": Param(0.25, "the γ-rule's weight on positive contributions", ge=0),
                "low": Param(0.0, "the z^B rule's lower bound: the smallest input value"),
                "high": Param(1.0, "the z^B rule's upper bound: the largest input value"), **common},
        validate=_box_bounds,
        description="LRP, Zennit EpsilonGammaBox: z^B first convolution over [low, high], γ convolutions, "
                    "ε dense layers.",
        requires=LRP,
    )
    yield MethodSpec(
        name="lrp-epsilon-alpha2-beta1", explain=_method("epsilon-alpha2-beta1"), params={"epsilon": epsilon, **common},
        description="LRP, Zennit EpsilonAlpha2Beta1: α2β1 convolutions, ε dense layers.", requires=LRP,
    )
    yield MethodSpec(
        name="lrp-alpha1-beta0", explain=_method("alpha1-beta0"), params=dict(common),
        description="Deep Taylor decomposition: LRP α1β0 (z⁺) on every layer, Zennit (Rio-Torto et al.'s comparison).",
        requires=LRP,
    )
