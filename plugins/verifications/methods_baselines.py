"""Null baselines against scipy: the edge filters are scipy.ndimage's, per image and channel."""

from __future__ import annotations

import torch
from torch import nn

from xbench import VerificationSpec, hookimpl
from xbench.verification import max_abs_difference

from ._inputs import explain

INPUTS = "4 random 3×12×10 images and 4 random 1×12×10 images (float64 reference, float32 ours)"


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(4, c, 12, 10, generator=g, dtype=torch.float64) for c in (3, 1)]


def _maps(spec, x, **params):
    module = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 2))  # the baselines ignore the model
    return explain(spec, module, x.float(), torch.zeros(len(x), dtype=torch.long), **params)


def sobel_against_scipy(spec) -> float:
    import numpy as np
    import scipy.ndimage as ndi

    worst = 0.0
    for x in _images():
        for axis in (-1, -2):
            expected = np.stack([ndi.sobel(im, axis=axis) for im in x.numpy()])
            worst = max(worst, max_abs_difference(_maps(spec, x, axis=axis), expected))
    return worst


def laplace_against_scipy(spec) -> float:
    import numpy as np
    import scipy.ndimage as ndi

    return max(max_abs_difference(_maps(spec, x), np.stack([ndi.laplace(im) for im in x.numpy()]))
               for x in _images())


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="sobel.scipy", plugin="sobel", kind="methods", library="scipy",
        reference="scipy.ndimage.sobel per image and channel, axis −1 and −2", check=sobel_against_scipy,
        tolerance=1e-5, inputs=INPUTS, differences="none (reflect padding in both)")
    yield VerificationSpec(
        name="laplace.scipy", plugin="laplace", kind="methods", library="scipy",
        reference="scipy.ndimage.laplace per image and channel", check=laplace_against_scipy, tolerance=1e-5,
        inputs=INPUTS, differences="none (reflect padding in both)")
