"""Perturbation methods over groups of pixels, from Captum: LIME, KernelSHAP and feature ablation.

Each image is cut into features, and a feature is "removed" by filling its pixels:

- ``features = "slic"`` (default): SLIC superpixels (scikit-image), about ``segments`` per image,
  computed on the image min-max scaled to [0, 100] (the range of Lab lightness, for which SLIC's
  default ``compactness`` 10 is tuned), with its channels as they are, so grey and colour images
  segment alike; numbered 0..M−1 per image. ``features = "patches"``: a grid of ``patch``² squares.
- ``fill``: ``mean``, each feature filled with its own mean colour (lime_image's default,
  ``hide_color=None``), or ``black`` 0, ``gray`` 0.5, ``white`` 1.

Methods (the attribution of a feature is spread over its pixels, as Captum returns it):

- ``lime`` (Ribeiro et al. 2016), Captum Lime with lime_image's settings: ``samples`` random on/off
  vectors (each feature on with probability ½), a ridge regression (α = 1, with intercept) of the
  model's ``output`` on them, weighted by sqrt(exp(−d²/w²)) with d the cosine distance of the
  vector from all-on and w = ``kernel_width`` (0.25).
- ``kernel-shap`` (Lundberg & Lee 2017), Captum KernelShap: coalitions sampled by the Shapley
  kernel, the full and the empty coalition weighted 10⁶, an unregularised weighted linear
  regression; exact Shapley values for a model additive in the features.
- ``feature-ablation``: Captum FeatureAblation, the drop in the model's ``output`` when one feature
  at a time is filled; the whole batch at once (features are numbered per image).

LIME and KernelSHAP fit one surrogate per image, so Captum is called once per image (it would do
the same with a batch, but count the features of the whole batch as every image's M, which
changes KernelSHAP's kernel): the perturbed copies of one image run in chunks that fit
``memory_mb``. Their random draws come from the run's seeded per-batch generator. SLIC runs per
image on the CPU (scikit-image has no batched form); the rest runs on the model's device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from xbench import MethodSpec, Param, TrainedModel, hookimpl

from ._chunking import MEMORY_PARAM, rows_within, seeded, with_backoff
from ._surgery import attribution_ready

FILLS = {"mean": None, "black": 0.0, "gray": 0.5, "white": 1.0}
OUTPUTS = ("probability", "logit")


def slic_features(x: torch.Tensor, segments: int, compactness: float) -> torch.Tensor:
    """SLIC superpixels of every image of ``x`` (N, C, H, W): (N, 1, H, W) int64 labels 0..M_i−1."""
    from skimage.segmentation import slic

    images = x.detach().float().cpu().numpy()
    out = np.empty((len(images), 1, *images.shape[-2:]), dtype=np.int64)
    for i, image in enumerate(images):
        lo, hi = float(image.min()), float(image.max())
        scaled = (image - lo) / (hi - lo) * 100 if hi > lo else np.zeros_like(image)
        labels = slic(np.moveaxis(scaled.astype(np.float64), 0, -1), n_segments=int(segments),
                      compactness=float(compactness), start_label=0, convert2lab=False, channel_axis=-1)
        out[i, 0] = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    return torch.from_numpy(out).to(x.device)


def patch_features(x: torch.Tensor, patch: int) -> torch.Tensor:
    """A grid of ``patch``² squares (partial ones at the right and bottom), numbered row-major."""
    n, _, h, w = x.shape
    cols = math.ceil(w / patch)
    rows = torch.arange(h, device=x.device) // patch
    grid = rows[:, None] * cols + torch.arange(w, device=x.device)[None, :] // patch
    return grid.expand(n, 1, h, w).clone()


def features(x: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    if params["features"] == "patches":
        return patch_features(x, int(params["patch"]))
    return slic_features(x, int(params["segments"]), float(params["compactness"]))


def fill_image(x: torch.Tensor, mask: torch.Tensor, fill: str) -> torch.Tensor:
    """What replaces a removed feature, pixel by pixel: its mean colour per image, or a constant."""
    if FILLS[fill] is not None:
        return torch.full_like(x, FILLS[fill])
    n, c = x.shape[:2]
    m = int(mask.max()) + 1
    index = (mask.flatten(1) + torch.arange(n, device=x.device)[:, None] * m)  # (N, H·W), per image
    sums = torch.zeros(c, n * m, device=x.device, dtype=x.dtype)
    sums.index_add_(1, index.flatten(), x.transpose(0, 1).flatten(1))
    counts = torch.bincount(index.flatten(), minlength=n * m).to(x.dtype).clamp(min=1)
    means = sums / counts
    return means[:, index.flatten()].view(c, n, *x.shape[2:]).transpose(0, 1).contiguous()


def _forward(m: torch.nn.Module, output: str):
    return (lambda z: m(z).softmax(1)) if output == "probability" else m


def lime_similarity(kernel_width: float):
    """lime_image's weight of a perturbed sample: sqrt(exp(−d²/w²)), d = the cosine distance between
    its on/off vector and all-on (d = 1 for the all-off vector, as scikit-learn's cosine distance)."""

    def similarity(_original, _perturbed, interpretable, **_kwargs):
        z = interpretable.float().reshape(-1)
        on = float(z.sum())
        d = 1.0 - on / math.sqrt(on * z.numel()) if on > 0 else 1.0
        return math.sqrt(math.exp(-(d * d) / (kernel_width * kernel_width)))

    return similarity


def _per_image(model: TrainedModel, x, target, params, build, what: str, generator) -> torch.Tensor:
    mask = features(x, params)
    base = fill_image(x, mask, str(params["fill"]))
    samples = int(params["samples"])
    with attribution_ready(model.module) as m, seeded(generator), torch.no_grad():
        explainer = build(_forward(m, str(params["output"])))

        def attempt(rows: int) -> torch.Tensor:
            return torch.cat([explainer.attribute(x[i:i + 1], baselines=base[i:i + 1], target=target[i:i + 1],
                                                  feature_mask=mask[i:i + 1], n_samples=samples,
                                                  perturbations_per_eval=rows)
                              for i in range(len(x))])

        return with_backoff(attempt, rows_within(m, x, params["memory_mb"], grad=False), what)


def lime(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any], *,
         generator: torch.Generator) -> torch.Tensor:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    def build(forward):
        return Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0),
                    similarity_func=lime_similarity(float(params["kernel_width"])))

    return _per_image(model, x, target, params, build, "lime", generator)


def kernel_shap(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any], *,
                generator: torch.Generator) -> torch.Tensor:
    from captum.attr import KernelShap

    return _per_image(model, x, target, params, KernelShap, "kernel-shap", generator)


def feature_ablation(model: TrainedModel, x: torch.Tensor, target: torch.Tensor,
                     params: Mapping[str, Any]) -> torch.Tensor:
    from captum.attr import FeatureAblation

    mask = features(x, params)
    base = fill_image(x, mask, str(params["fill"]))
    with attribution_ready(model.module) as m, torch.no_grad():
        ablation = FeatureAblation(_forward(m, str(params["output"])))
        return with_backoff(lambda rows: ablation.attribute(
            x, baselines=base, target=target, feature_mask=mask, perturbations_per_eval=max(1, rows // len(x))),
            rows_within(m, x, params["memory_mb"], grad=False), "feature-ablation")


def _feature_params(output: str, fill: str = "mean") -> dict[str, Param]:
    return {
        "features": Param("slic", "the features: 'slic' superpixels or 'patches' (a square grid)",
                          choices=("slic", "patches"), label=True),
        "segments": Param(50, "SLIC: about how many superpixels per image", ge=1),
        "compactness": Param(10.0, "SLIC: shape against colour (higher = squarer), on images scaled to [0, 100]",
                             gt=0),
        "patch": Param(8, "patches: side of the squares, in pixels", ge=1),
        "fill": Param(fill, "what a removed feature becomes: its mean colour, or black, gray or white",
                      choices=tuple(FILLS)),
        "output": Param(output, "what the model's score is: the softmax 'probability' or the 'logit' of the target",
                        choices=OUTPUTS),
        "memory_mb": MEMORY_PARAM,
    }


@hookimpl
def xbench_methods():
    yield MethodSpec(
        name="lime", explain=lime, stochastic=True,
        params={"samples": Param(256, "perturbed copies per image (lime_image: 1000)", ge=2),
                "kernel_width": Param(0.25, "w of the proximity kernel sqrt(exp(−d²/w²)) (lime_image: 0.25)", gt=0),
                **_feature_params("probability")},
        description="LIME (Ribeiro et al. 2016) on SLIC superpixels, Captum Lime with lime_image's ridge "
                    "surrogate and cosine kernel; one surrogate per image.",
    )
    yield MethodSpec(
        name="kernel-shap", explain=kernel_shap, stochastic=True,
        params={"samples": Param(256, "coalitions sampled per image, the full and the empty one included", ge=2),
                **_feature_params("probability")},
        description="KernelSHAP (Lundberg & Lee 2017) on SLIC superpixels, Captum KernelShap; one regression "
                    "per image.",
    )
    yield MethodSpec(
        name="feature-ablation", explain=feature_ablation, params=_feature_params("logit"),
        description="Feature ablation, Captum: the drop in the target's logit when one SLIC superpixel (or "
                    "patch) is filled with its mean colour; batched.",
    )
