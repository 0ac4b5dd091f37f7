"""CAM methods: the definitions computed by hand on a model whose gradients are known, layer
resolution at every layer, layer selection and its errors. (Against pytorch-grad-cam and torchcam:
plugins/verifications/methods_cam.py, run by tests/test_verification.py.)

The cross-check against pytorch-grad-cam (LayerCAM, XGrad-CAM, Score-CAM) is a registered verification
(plugins/verifications/methods_cam.py), which `xbench verify` and
tests/test_verification.py run."""

import pytest
import torch
from torch import nn

from xbench import DatasetInfo, TrainedModel
from xbench.attribution import run_method
from xbench.errors import XbenchError
from xbench.plugins.verifications.methods_cam import Pooled as Deep  # convs at 16, 8 and 4 px
from xbench.registry import load_registry
from xbench.specs import defaults

INFO = DatasetInfo("toy", 1, 16, 16, ("a", "b"))
GRADIENT_CAMS = ["grad-cam", "hires-cam", "grad-cam-pp", "layer-cam", "xgrad-cam"]
CAMS = [*GRADIENT_CAMS, "score-cam"]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


class GapNet(nn.Module):
    """conv → global average pool → linear: ∂y_t/∂A_k(i,j) = W[t,k] / (h·w) everywhere, so every
    CAM has a closed form in A and W."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def run(registry, name, model, x, t, **params):
    spec = registry.get("methods", name).spec
    return run_method(spec, model, x, t, {**defaults(spec.params), **params})


def test_cams_match_their_closed_forms(registry):
    net = GapNet().eval()
    model = TrainedModel(net, INFO, {"conv": net.conv})
    x, t = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 1])
    with torch.no_grad():
        a = net.conv(x)  # (3, 4, 16, 16)
    g = (net.fc.weight[t] / (16 * 16)).detach()[:, :, None, None].expand_as(a)

    gradcam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
    gradcam = gradcam / gradcam.flatten(1).amax(1).clamp(min=1e-30).view(-1, 1, 1)
    torch.testing.assert_close(run(registry, "grad-cam", model, x, t), gradcam)

    hires = torch.relu((g * a).mean(1))
    hires = hires / hires.flatten(1).amax(1).clamp(min=1e-30).view(-1, 1, 1)
    torch.testing.assert_close(run(registry, "hires-cam", model, x, t), hires)

    c = g[:, :, 0, 0]  # the constant gradient per channel
    alpha = c**2 / (2 * c**2 + c**3 * a.sum((2, 3)))
    w = 16 * 16 * alpha * torch.relu(c)
    pp = torch.relu((w[:, :, None, None] * a).sum(1))
    lo, hi = pp.flatten(1).amin(1).view(-1, 1, 1), pp.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(run(registry, "grad-cam-pp", model, x, t), (pp - lo) / (hi - lo))


def test_grad_cam_pp_legacy_torchcam_closed_form(registry):
    """What torchcam returns, by hand on GapNet (g = W[t,k]/(h·w) = c_k everywhere): α = c² (its
    division lands on a copy), w_k = h·w·c_k²·ReLU(c_k), then (cam − min)/(max − min + 1e-8). The
    maps are ~1e-7 here, so torchcam's 1e-8 visibly lowers the maximum below 1."""
    net = GapNet().eval()
    model = TrainedModel(net, INFO, {"conv": net.conv})
    x, t = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 1])
    with torch.no_grad():
        a = net.conv(x)
    c = (net.fc.weight[t] / (16 * 16)).detach()
    w = 16 * 16 * c**2 * torch.relu(c)
    pp = torch.relu((w[:, :, None, None] * a).sum(1))
    lo, hi = pp.flatten(1).amin(1).view(-1, 1, 1), pp.flatten(1).amax(1).view(-1, 1, 1)
    got = run(registry, "grad-cam-pp", model, x, t, legacy_torchcam=True)
    torch.testing.assert_close(got, (pp - lo) / (hi - lo + 1e-8))
    assert not torch.allclose(got, run(registry, "grad-cam-pp", model, x, t), atol=1e-3)  # the formula differs


def test_cams_follow_the_target_class(registry):
    net = GapNet().eval()
    model = TrainedModel(net, INFO, {"conv": net.conv})
    x = torch.rand(2, 1, 16, 16)
    zero = run(registry, "grad-cam", model, x, torch.tensor([0, 0]), normalise="none")
    one = run(registry, "grad-cam", model, x, torch.tensor([1, 1]), normalise="none")
    assert not torch.allclose(zero, one)


@pytest.mark.parametrize("method", CAMS)
def test_cams_have_the_resolution_of_each_layer_and_default_to_the_deepest(registry, method):
    torch.manual_seed(0)
    net = Deep().eval()
    layers = {"c1": net.c1, "c2": net.c2, "c3": net.c3}
    model = TrainedModel(net, INFO, layers)
    x, t = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    shapes = {name: tuple(run(registry, method, model, x, t, layer=name).shape) for name in layers}
    assert shapes == {"c1": (2, 16, 16), "c2": (2, 8, 8), "c3": (2, 4, 4)}
    torch.testing.assert_close(run(registry, method, model, x, t), run(registry, method, model, x, t, layer="c3"))
    torch.testing.assert_close(run(registry, method, model, x, t, layer="#-1"),
                               run(registry, method, model, x, t, layer="c3"))
    torch.testing.assert_close(run(registry, method, model, x, t, layer="#1"),
                               run(registry, method, model, x, t, layer="c2"))
    out = run(registry, method, model, x, t, layer="c1")
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_unknown_layer_is_a_clear_error_listing_the_layers(registry):
    net = Deep().eval()
    model = TrainedModel(net, INFO, {"c1": net.c1, "c2": net.c2, "c3": net.c3})
    with pytest.raises(XbenchError, match=r"Unknown target layer 'c9'.*c1, c2, c3"):
        run(registry, "grad-cam", model, torch.rand(1, 1, 16, 16), torch.tensor([0]), layer="c9")
    with pytest.raises(XbenchError, match=r"Layer position '#3' does not exist.*c1, c2, c3"):
        run(registry, "hires-cam", model, torch.rand(1, 1, 16, 16), torch.tensor([0]), layer="#3")


def test_a_zero_map_stays_zero_instead_of_nan(registry):
    net = GapNet().eval()
    with torch.no_grad():
        net.fc.weight.zero_()
    model = TrainedModel(net, INFO, {"conv": net.conv})
    for method in GRADIENT_CAMS:  # (Score-CAM needs no gradient: its weights are the probabilities, here ½)
        out = run(registry, method, model, torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))
        assert torch.equal(out, torch.zeros_like(out)), method


# ----------------------------------------------------------------------------- LayerCAM, XGrad-CAM, Score-CAM

def test_layer_cam_and_xgrad_cam_closed_forms(registry):
    """On GapNet g = W[t,k]/(h·w) everywhere: LayerCAM = ReLU(Σ_k ReLU(c_k)·A_k) and XGrad-CAM's
    weight is Σ_ij c_k A_k / Σ_ij A_k = c_k, so XGrad-CAM = ReLU(Σ_k c_k A_k) (= Grad-CAM here)."""
    net = GapNet().eval()
    model = TrainedModel(net, INFO, {"conv": net.conv})
    x, t = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 1])
    with torch.no_grad():
        a = net.conv(x)
    c = (net.fc.weight[t] / (16 * 16)).detach()[:, :, None, None]
    layer = torch.relu((torch.relu(c) * a).sum(1))
    xgrad = torch.relu((c * a).sum(1))
    for name, want in (("layer-cam", layer), ("xgrad-cam", xgrad)):
        got = run(registry, name, model, x, t, normalise="none")
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_score_cam_weighs_each_channel_by_the_probability_of_its_masked_input(registry):
    """The authors' definition computed one channel at a time: mask = min-max of the upsampled
    channel, w_k = softmax(f(x ⊙ mask))_t; a constant channel gets weight 0."""
    torch.manual_seed(0)
    net = Deep().eval()
    model = TrainedModel(net, INFO, {"c1": net.c1, "c2": net.c2, "c3": net.c3})
    x, t = torch.rand(2, 1, 16, 16), torch.tensor([1, 0])
    got = run(registry, "score-cam", model, x, t, layer="c2", normalise="none", memory_mb=1e-6)
    with torch.no_grad():
        a = net.c2(nn.functional.max_pool2d(torch.relu(net.c1(x)), 2))
        want = torch.zeros(2, 8, 8)
        for i in range(2):
            for k in range(a.shape[1]):
                up = nn.functional.interpolate(a[i:i + 1, k:k + 1], size=(16, 16), mode="bilinear",
                                               align_corners=False)
                if up.max() == up.min():
                    continue
                mask = (up - up.min()) / (up.max() - up.min())
                w = net(x[i:i + 1] * mask).softmax(1)[0, t[i]]
                want[i] += w * a[i, k]
    torch.testing.assert_close(got, torch.relu(want), rtol=1e-4, atol=1e-6)
