"""CAM methods against pytorch-grad-cam (Grad-CAM, HiResCAM, Grad-CAM++) and against torchcam
(``grad-cam-pp`` with ``legacy_torchcam = true``, what Treyer ran)."""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

from xbench import VerificationSpec, hookimpl
from xbench.verification import max_abs_difference

from ._inputs import explain


class FullRes(nn.Module):
    """Three 3×3 convs at the input's resolution, the last summed over space, then linear:
    pytorch-grad-cam resizes each map to the input, so layers at the input's resolution compare the
    maps themselves. The gradient at c3 is constant over the layer (W[t]), at c2 it is not. The sum
    (not mean) keeps gradients large next to pytorch-grad-cam's ε = 1e-6 in Grad-CAM++'s α."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(self.c3(x).sum((2, 3)))


class Pooled(nn.Module):
    """Three convs with max pooling between them (16, 8 and 4 px maps)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(nn.functional.max_pool2d(x, 2)))
        x = torch.relu(self.c3(nn.functional.max_pool2d(x, 2)))
        return self.fc(x.mean((2, 3)))


def _inputs(net_type):
    torch.manual_seed(0)
    net = net_type().eval()
    g = torch.Generator().manual_seed(1)
    return net, torch.rand(6, 1, 16, 16, generator=g), torch.tensor([0, 1, 1, 0, 1, 0])


GRAD_CAM_INPUTS = "a random 3-conv net at input resolution, 6 random 1×16×16 images, targets of both classes, " \
                  "layers c2 and c3"
GRAD_CAM_DIFFERENCES = ("pytorch-grad-cam min-max scales each map (1e-7 added to the maximum) and resizes it to "
                        "the input: compared with normalise = \"minmax\" at layers of the input's resolution")


def _against_pytorch_grad_cam(spec, reference: str, layers=("c2", "c3")) -> float:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x, t = _inputs(FullRes)
    worst = 0.0
    for name in layers:
        layer = getattr(net, name)
        with getattr(pytorch_grad_cam, reference)(model=net, target_layers=[layer]) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
        ours = explain(spec, net, x, t, {name: layer}, layer=name, normalise="minmax")
        worst = max(worst, max_abs_difference(ours, theirs))
    return worst


def grad_cam_against_pytorch_grad_cam(spec) -> float:
    return _against_pytorch_grad_cam(spec, "GradCAM")


def hires_cam_against_pytorch_grad_cam(spec) -> float:
    return _against_pytorch_grad_cam(spec, "HiResCAM")


def grad_cam_pp_against_pytorch_grad_cam(spec) -> float:
    """At c3 only, where the gradient is constant over the layer: see the differences."""
    return _against_pytorch_grad_cam(spec, "GradCAMPlusPlus", layers=("c3",))


def grad_cam_pp_against_torchcam(spec) -> float:
    """legacy_torchcam = true gives torchcam's own maps at every layer of a pooled net."""
    from torchcam import methods

    net, x, t = _inputs(Pooled)
    layers = {"c1": net.c1, "c2": net.c2, "c3": net.c3}
    worst = 0.0
    for name, layer in layers.items():
        extractor = methods.GradCAMpp(net, target_layer=layer, input_shape=(1, 16, 16))
        try:
            theirs = extractor(t.tolist(), net(x))[0].detach()
        finally:
            extractor.remove_hooks()
        ours = explain(spec, net, x, t, layers, layer=name, legacy_torchcam=True)
        worst = max(worst, max_abs_difference(ours, theirs))
    return worst


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="grad-cam.pytorch-grad-cam", plugin="grad-cam", kind="methods", library="grad-cam",
        reference="pytorch_grad_cam.GradCAM", check=grad_cam_against_pytorch_grad_cam, tolerance=1e-5,
        inputs=GRAD_CAM_INPUTS, differences=GRAD_CAM_DIFFERENCES)
    yield VerificationSpec(
        name="hires-cam.pytorch-grad-cam", plugin="hires-cam", kind="methods", library="grad-cam",
        reference="pytorch_grad_cam.HiResCAM", check=hires_cam_against_pytorch_grad_cam, tolerance=1e-5,
        inputs=GRAD_CAM_INPUTS,
        differences=GRAD_CAM_DIFFERENCES + "; it sums the channels where xbench averages them (a constant factor)")
    yield VerificationSpec(
        name="grad-cam-pp.pytorch-grad-cam", plugin="grad-cam-pp", kind="methods", library="grad-cam",
        reference="pytorch_grad_cam.GradCAMPlusPlus", check=grad_cam_pp_against_pytorch_grad_cam, tolerance=1e-4,
        inputs=GRAD_CAM_INPUTS.replace("layers c2 and c3", "layer c3"),
        differences=GRAD_CAM_DIFFERENCES + "; it adds 1e-6 to α's denominator. Its α (as the paper's Eq. 19) "
                    "weighs Σ_ab A_ab by g³ at (i, j), xbench's (as torchcam's source) sums A·g³ over the layer: "
                    "the two agree where the gradient is constant over the layer (a layer followed by global "
                    "pooling, as compared here) and differ elsewhere")
    yield VerificationSpec(
        name="grad-cam-pp.torchcam", plugin="grad-cam-pp", kind="methods", library="torchcam",
        reference="torchcam.methods.GradCAMpp", check=grad_cam_pp_against_torchcam, tolerance=1e-5,
        inputs="a random 3-conv net with max pooling, 6 random 1×16×16 images, layers c1, c2, c3 (16, 8, 4 px)",
        differences="with legacy_torchcam = true, which reproduces torchcam's α = g² (its division lands on a "
                    "copy) and (max − min + 1e-8); the default follows the formula torchcam's source writes, and "
                    "differs from torchcam by design")


def _added_cam_against_pytorch_grad_cam(spec) -> float:
    """LayerCAM, XGrad-CAM and Score-CAM at the first (input-resolution) layer of the pooled net."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reference = {"layer-cam": "LayerCAM", "xgrad-cam": "XGradCAM", "score-cam": "ScoreCAM"}[spec.name]
    net, x, t = _inputs(Pooled)
    extra = {"variant": "pytorch-grad-cam"} if spec.name == "score-cam" else {}
    with contextlib.redirect_stderr(io.StringIO()):  # Score-CAM's per-image progress bars
        with getattr(pytorch_grad_cam, reference)(model=net, target_layers=[net.c1]) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    ours = explain(spec, net, x, t, {"c1": net.c1, "c2": net.c2, "c3": net.c3}, layer="c1", normalise="minmax",
                   **extra)
    return max_abs_difference(ours, theirs)


@hookimpl(specname="xbench_verifications")
def added_cams():
    for name, differences in (
            ("layer-cam", ""),
            ("xgrad-cam", "; it adds 1e-7 to each channel's activation sum, xbench gives a zero-sum channel weight 0"),
            ("score-cam", "; compared with variant = \"pytorch-grad-cam\" (softmax over the channels of the target "
                          "logits, align-corners upsampling, +1e-8 in the mask's min-max); the default follows the "
                          "authors' code (each masked input's target probability)")):
        yield VerificationSpec(
            name=f"{name}.pytorch-grad-cam", plugin=name, kind="methods", library="grad-cam",
            reference=f"pytorch_grad_cam.{ {'layer-cam': 'LayerCAM', 'xgrad-cam': 'XGradCAM', 'score-cam': 'ScoreCAM'}[name]}",
            check=_added_cam_against_pytorch_grad_cam, tolerance=1e-5,
            inputs="a random 3-conv net with max pooling, 6 random 1×16×16 images, layer c1 (input resolution)",
            differences=GRAD_CAM_DIFFERENCES + differences)
