"""Gradient methods (Captum inside xbench) against Zennit, an independent implementation of the
same rules: the plain gradient, gradient × input, Guided Backprop, DeconvNet, Integrated Gradients
and LRP-ε; occlusion against a plain re-implementation of its definition."""

from __future__ import annotations

import torch
from torch import nn

from xbench import VerificationSpec, hookimpl
from xbench.verification import max_abs_difference

from ._inputs import explain

NET = ("a random conv-ReLU-maxpool-conv-ReLU-avgpool-linear net (3 classes), 6 random 3×16×16 images, "
       "targets of every class")


def _net_and_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3)).eval()
    g = torch.Generator().manual_seed(1)
    return net, torch.rand(6, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def _zennit(net, x, t, composite=None, attributor=None, relevance_of_logit: bool = False):
    """Zennit's attribution of the target logit: its output gradient a one-hot vector, or for LRP
    (``relevance_of_logit``) the one-hot times the logit, the relevance LRP starts from."""
    from zennit.attribution import Gradient

    start = torch.eye(3)[t]
    if relevance_of_logit:
        with torch.no_grad():
            start = start * net(x)
    with (attributor or Gradient)(model=net, composite=composite) as attribute:
        _, relevance = attribute(x, start)
    return relevance.detach()


def saliency_against_zennit(spec) -> float:
    net, x, t = _net_and_inputs()
    return max_abs_difference(explain(spec, net, x, t), _zennit(net, x, t).abs())


def input_x_gradient_against_zennit(spec) -> float:
    net, x, t = _net_and_inputs()
    return max_abs_difference(explain(spec, net, x, t), _zennit(net, x, t) * x)


def guided_backprop_against_zennit(spec) -> float:
    from zennit.composites import GuidedBackprop

    net, x, t = _net_and_inputs()
    return max_abs_difference(explain(spec, net, x, t), _zennit(net, x, t, GuidedBackprop()))


def deconvolution_against_zennit(spec) -> float:
    from zennit.composites import LayerMapComposite
    from zennit.rules import ReLUDeconvNet

    net, x, t = _net_and_inputs()
    composite = LayerMapComposite([(nn.ReLU, ReLUDeconvNet())])
    return max_abs_difference(explain(spec, net, x, t), _zennit(net, x, t, composite))


def integrated_gradients_against_zennit(spec) -> float:
    from functools import partial

    from zennit.attribution import IntegratedGradients

    net, x, t = _net_and_inputs()
    ours = explain(spec, net, x, t, steps=32, method="riemann_right")
    return max_abs_difference(ours, _zennit(net, x, t, attributor=partial(IntegratedGradients, n_iter=32)))


def lrp_epsilon_against_zennit(spec) -> float:
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, Norm, Pass
    from zennit.types import Activation, AvgPool, Convolution, Linear

    net, x, t = _net_and_inputs()
    eps = 1e-9
    composite = LayerMapComposite([(Activation, Pass()), (Convolution, Epsilon(eps)), (Linear, Epsilon(eps)),
                                   (AvgPool, Norm(stabilizer=eps))])
    return max_abs_difference(explain(spec, net, x, t, epsilon=eps),
                              _zennit(net, x, t, composite, relevance_of_logit=True))


def occlusion_by_hand(net, x, t, window: int, stride: int, baseline: float) -> torch.Tensor:
    """Zeiler & Fergus's occlusion as Captum defines it: each window (all channels) set to the
    baseline; a pixel's attribution is the mean drop of the target logit over the windows that
    cover it. One window at a time, on purpose."""
    n, c, h, w = x.shape
    with torch.no_grad():
        clean = net(x).gather(1, t[:, None])[:, 0]
        total, count = torch.zeros(n, h, w, dtype=torch.float64), torch.zeros(h, w, dtype=torch.float64)
        for top in range(0, h - window + 1, stride):
            for left in range(0, w - window + 1, stride):
                occluded = x.clone()
                occluded[:, :, top:top + window, left:left + window] = baseline
                drop = (clean - net(occluded).gather(1, t[:, None])[:, 0]).double()
                total[:, top:top + window, left:left + window] += drop[:, None, None]
                count[top:top + window, left:left + window] += 1
    return (total / count.clamp(min=1))[:, None].expand(n, c, h, w)


def occlusion_against_definition(spec) -> float:
    net, x, t = _net_and_inputs()
    ours = explain(spec, net, x, t, window=4, stride=2, baseline=0.5, perturbations_per_eval=5)
    return max_abs_difference(ours, occlusion_by_hand(net, x, t, 4, 2, 0.5))


@hookimpl
def xbench_verifications():
    zennit = dict(kind="methods", library="zennit", inputs=NET)
    yield VerificationSpec(name="saliency.zennit", plugin="saliency", reference="zennit.attribution.Gradient",
                           check=saliency_against_zennit, tolerance=1e-6, differences="abs = true: |gradient|",
                           **zennit)
    yield VerificationSpec(name="input-x-gradient.zennit", plugin="input-x-gradient",
                           reference="zennit.attribution.Gradient, times the input",
                           check=input_x_gradient_against_zennit, tolerance=1e-6, **zennit)
    yield VerificationSpec(name="guided-backprop.zennit", plugin="guided-backprop",
                           reference="zennit.composites.GuidedBackprop", check=guided_backprop_against_zennit,
                           tolerance=1e-6, **zennit)
    yield VerificationSpec(name="deconvolution.zennit", plugin="deconvolution",
                           reference="zennit.rules.ReLUDeconvNet on every ReLU", check=deconvolution_against_zennit,
                           tolerance=1e-6, **zennit)
    yield VerificationSpec(name="integrated-gradients.zennit", plugin="integrated-gradients",
                           reference="zennit.attribution.IntegratedGradients", tolerance=1e-5,
                           check=integrated_gradients_against_zennit,
                           differences="method = \"riemann_right\" with 32 steps (Zennit's rule: α = k/32, "
                                       "k = 1 … 32); xbench's default is Gauss–Legendre", **zennit)
    yield VerificationSpec(name="lrp-epsilon.zennit", plugin="lrp-epsilon",
                           reference="zennit.rules.Epsilon on convolutions and linear layers, Norm on average "
                                     "pooling, Pass on ReLU", check=lrp_epsilon_against_zennit, tolerance=1e-5,
                           differences="ε = 1e-9 in both; the output relevance is the target logit in both "
                                       "(Zennit is given it); max pooling passes relevance to the maximum in both",
                           **zennit)
    yield VerificationSpec(name="occlusion.definition", plugin="occlusion", kind="methods",
                           reference="Zeiler & Fergus's occlusion as Captum defines it (mean logit drop over the "
                                     "windows covering a pixel), re-implemented one window at a time",
                           check=occlusion_against_definition, tolerance=1e-5,
                           inputs=NET + "; window 4, stride 2, baseline 0.5")
