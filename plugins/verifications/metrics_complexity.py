"""Sparseness and Complexity against Quantus on the same absolute maps."""

from __future__ import annotations

import numpy as np
import torch

from xbench import VerificationSpec, hookimpl, testing
from xbench.verification import max_abs_difference

from ._inputs import maps_context

INPUTS = "8 skewed random 16×16 maps, one with a single non-zero pixel, one constant"


def _maps() -> torch.Tensor:
    maps = torch.rand(8, 16, 16, generator=torch.Generator().manual_seed(4)) ** 4  # skewed, as attributions are
    maps[0] = 0
    maps[0, 3, 5] = 2.0
    maps[1] = 0.5
    return maps


def _against_quantus(spec) -> float:
    import quantus

    from xbench.plugins.models.small_cnn import SmallCNN

    maps = _maps()
    x = np.zeros((8, 1, 16, 16), dtype=np.float32)
    y = np.zeros(8, dtype=np.int64)
    model = SmallCNN(1, 2, width=4).eval()
    reference = quantus.Sparseness if spec.name == "sparseness" else quantus.Complexity
    theirs = reference(normalise=False, abs=True, disable_warnings=True)(
        model=model, x_batch=x, y_batch=y, a_batch=maps.double().numpy()[:, None].copy(), device="cpu")
    ours_maps = maps.double() + 1e-7 if spec.name == "sparseness" else maps  # Quantus' stabiliser, adjusted for
    ours = testing.score(spec, maps_context(ours_maps))[spec.name]
    return max_abs_difference(ours, np.asarray(theirs))


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="sparseness.quantus", plugin="sparseness", kind="metrics", library="quantus",
        reference="quantus.Sparseness", check=_against_quantus, tolerance=1e-6, inputs=INPUTS,
        differences="Quantus adds 1e-7 to every |a| before the Gini index: ours is given the maps plus 1e-7; "
                    "Quantus gets float64 maps")
    yield VerificationSpec(
        name="complexity.quantus", plugin="complexity", kind="metrics", library="quantus",
        reference="quantus.Complexity", check=_against_quantus, tolerance=1e-6, inputs=INPUTS,
        differences="Quantus adds 1e-12 inside the logarithm (below 1e-9 here); float64 maps")
