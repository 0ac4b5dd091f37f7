"""The expanding methods against their libraries or their authors' code: SmoothGrad and VarGrad
(Captum NoiseTunnel with a per-image σ), DeepLiftShap (Captum, chunked to one input at a time),
LIME and KernelSHAP (Captum per image), RISE (the authors' mask code and formula), feature
ablation and KernelSHAP (exact on a model additive in the superpixels)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from xbench import VerificationSpec, hookimpl
from xbench.verification import max_abs_difference

from ._inputs import explain


def _conv_net(seed: int, channels: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3)).eval()


def _ranged_images() -> torch.Tensor:
    """Three 3×12×12 images with ranges 1, 0.25 and 4 (and different minima)."""
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    return x * torch.tensor([1.0, 0.25, 4.0]).view(3, 1, 1, 1) + torch.tensor([0.0, 0.5, -2.0]).view(3, 1, 1, 1)


def _noise_tunnel(spec, kind: str) -> float:
    from captum.attr import NoiseTunnel, Saliency

    from xbench.plugins.methods._chunking import seeded

    net, x, t = _conv_net(0), _ranged_images(), torch.tensor([0, 1, 2])
    worst = 0.0
    for i in range(len(x)):
        ours = explain(spec, net, x[i:i + 1], t[i:i + 1], samples=16, noise=0.2)  # the run's generator: seed 0
        span = float(x[i].max() - x[i].min())
        with seeded(torch.Generator().manual_seed(0)):
            theirs = NoiseTunnel(Saliency(net)).attribute(x[i:i + 1], nt_type=kind, nt_samples=16,
                                                          stdevs=0.2 * span, target=t[i:i + 1], abs=False)
        worst = max(worst, max_abs_difference(ours, theirs.detach()))
    return worst


def smoothgrad_against_captum(spec) -> float:
    return _noise_tunnel(spec, "smoothgrad")


def vargrad_against_captum(spec) -> float:
    return _noise_tunnel(spec, "vargrad")


def deeplift_shap_against_captum(spec) -> float:
    from captum.attr import DeepLiftShap

    from xbench.plugins.methods.captum import deeplift_shap_baselines

    net = _conv_net(2)
    x, t = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 0])
    ours = explain(spec, net, x, t, samples=6, memory_mb=1e-6)  # one input per chunk
    baselines = deeplift_shap_baselines(x, "noise", 6, torch.Generator().manual_seed(0))
    return max_abs_difference(ours, DeepLiftShap(net).attribute(x, baselines=baselines, target=t).detach())


def blobs(n: int = 3, seed: int = 0) -> torch.Tensor:
    """Images of flat coloured rectangles plus mild noise: SLIC has edges to follow."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, 24, 24).clone()
    for i in range(n):
        for _ in range(4):
            top, left = torch.randint(0, 16, (2,), generator=g).tolist()
            x[i, :, top:top + 8, left:left + 8] = torch.rand(3, 1, 1, generator=g)
    return (x + 0.02 * torch.rand(x.shape, generator=g)).clamp(0, 1)


def _surrogate_against_captum(spec) -> float:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import KernelShap, Lime

    from xbench.plugins.methods import superpixel as sp
    from xbench.plugins.methods._chunking import seeded
    from xbench.specs import defaults

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    x, t = blobs(), torch.tensor([0, 1, 1])
    params = {**defaults(spec.params), "samples": 40, "segments": 12}
    ours = explain(spec, net, x, t, **params)
    mask = sp.features(x, params)
    base = sp.fill_image(x, mask, params["fill"])
    forward = (lambda z: net(z).softmax(1))
    reference = (KernelShap(forward) if spec.name == "kernel-shap" else
                 Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0),
                      similarity_func=sp.lime_similarity(params["kernel_width"])))
    with seeded(torch.Generator().manual_seed(0)), torch.no_grad():
        theirs = torch.cat([reference.attribute(x[i:i + 1], baselines=base[i:i + 1], target=t[i:i + 1],
                                                feature_mask=mask[i:i + 1], n_samples=params["samples"])
                            for i in range(len(x))])
    return max_abs_difference(ours, theirs)


class _Additive(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


def _additive_exact(spec) -> float:
    """Each superpixel's exact Shapley value (and ablation drop) of a model additive in the pixels:
    Σ_{its pixels} w·(x − fill), spread over its pixels."""
    from xbench.plugins.methods import superpixel as sp
    from xbench.specs import defaults

    net, x, t = _Additive().eval(), blobs(), torch.zeros(3, dtype=torch.long)
    params = {**defaults(spec.params), "segments": 10, "output": "logit",
              **({"samples": 200} if "samples" in spec.params else {})}
    mask = sp.features(x, params)
    contrib = ((x - sp.fill_image(x, mask, params["fill"])) * net.w.detach()).sum(1)
    want = torch.zeros_like(contrib)
    for i in range(len(x)):
        for f in mask[i, 0].unique():
            where = mask[i, 0] == f
            want[i][where] = contrib[i][where].sum()
    return max_abs_difference(explain(spec, net, x, t, **params), want[:, None].expand_as(x))


def rise_against_the_authors(spec) -> float:
    from skimage.transform import resize

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(12, 2)).eval()
    x, t = torch.rand(3, 1, 20, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1])
    count, cells, p = 60, 5, 0.4
    ours = explain(spec, net, x, t, masks=count, cells=cells, p=p, memory_mb=1e-6)[:, 0]
    g = torch.Generator().manual_seed(0)  # the run's generator, drawn in rise_masks' order
    grid = (torch.rand((count, cells, cells), generator=g) < p).numpy()
    cell = (math.ceil(20 / cells), math.ceil(28 / cells))
    sy = torch.randint(0, cell[0], (count,), generator=g).numpy()
    sx = torch.randint(0, cell[1], (count,), generator=g).numpy()
    up = ((cells + 1) * cell[0], (cells + 1) * cell[1])
    masks = np.stack([resize(grid[i].astype(float), up, order=1, mode="reflect", anti_aliasing=False)
                      [sy[i]:sy[i] + 20, sx[i]:sx[i] + 28] for i in range(count)])  # eclique/RISE generate_masks
    with torch.no_grad():
        probs = np.stack([net(x * torch.from_numpy(m).float()[None, None]).softmax(1).numpy() for m in masks], 1)
    sal = np.einsum("nk,khw->nhw", probs[np.arange(3), :, t.numpy()], masks) / (count * p)
    return max_abs_difference(ours.double(), sal)


@hookimpl
def xbench_verifications():
    for kind, check in (("smoothgrad", smoothgrad_against_captum), ("vargrad", vargrad_against_captum)):
        yield VerificationSpec(
            name=f"{kind}.captum", plugin=kind, kind="methods", library="captum",
            reference="captum.attr.NoiseTunnel(Saliency)", check=check, tolerance=1e-6,
            inputs="a random 2-conv net, 3 random 3×12×12 images of ranges 1, 0.25 and 4, 16 samples, noise 0.2",
            differences="Captum takes one σ per input tensor, so it is called per image with σ = noise × that "
                        "image's range and the same seeded global state")
    yield VerificationSpec(
        name="deeplift-shap.captum", plugin="deeplift-shap", kind="methods", library="captum",
        reference="captum.attr.DeepLiftShap", check=deeplift_shap_against_captum, tolerance=1e-6,
        inputs="a random 2-conv net, 4 random 3×12×12 images, 6 uniform-noise baselines; ours chunked to one input",
        differences="none: the same baselines (drawn from the run's generator)")
    for name in ("lime", "kernel-shap"):
        yield VerificationSpec(
            name=f"{name}.captum", plugin=name, kind="methods", library="captum",
            reference="captum.attr.Lime" if name == "lime" else "captum.attr.KernelShap",
            check=_surrogate_against_captum, tolerance=1e-6, needs=("scikit-learn", "scikit-image"),
            inputs="a random conv net, 3 images of coloured rectangles 3×24×24, 12 SLIC segments, 40 samples",
            differences="called per image, one perturbation per forward pass, with the plugin's features, mean-colour "
                        "fill and (LIME) lime_image's ridge and kernel, from the same seeded global state")
    for name in ("kernel-shap", "feature-ablation"):
        yield VerificationSpec(
            name=f"{name}.additive", plugin=name, kind="methods", reference="exact values of an additive model",
            check=_additive_exact, tolerance=1e-3, needs=("scikit-image",),
            inputs="a model linear in the pixels, 3 images of coloured rectangles 3×24×24, 10 SLIC segments",
            differences="none: each superpixel's Shapley value (and ablation drop) is Σ w·(x − fill) over it; "
                        "KernelSHAP with 200 coalitions fits it up to the regression's rounding")
    yield VerificationSpec(
        name="rise.authors", plugin="rise", kind="methods", library="scikit-image",
        reference="eclique/RISE generate_masks (skimage resize, reflect) and explain", check=rise_against_the_authors,
        tolerance=1e-5, inputs="a random conv net, 3 random 1×20×28 images, 60 masks, 5 × 5 cells, p = 0.4",
        differences="none: the authors' masks built from the same grids and shifts")
