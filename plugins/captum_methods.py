"""Attribution methods from Captum, batched on the model's device.

Each method is one small function ``(model, inputs, targets, params) -> (N, C, H, W)``; xbench
reduces the maps by the run's rule afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from xbench import MethodSpec, TrainedModel, hookimpl


def saliency(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    from captum.attr import Saliency

    return Saliency(model.module).attribute(x, target=target, abs=bool(params["abs"]))


def integrated_gradients(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]):
    from captum.attr import IntegratedGradients

    internal = int(params["internal_batch_size"]) or None
    return IntegratedGradients(model.module).attribute(
        x, baselines=torch.full_like(x, float(params["baseline"])), target=target, n_steps=int(params["steps"]),
        method=str(params["method"]), internal_batch_size=internal,
    )


@hookimpl
def xbench_methods():
    yield MethodSpec(
        name="saliency", explain=saliency, params={"abs": True},
        description="|∂y_t/∂x| (Simonyan et al.), Captum Saliency.", requires=frozenset({"gradients"}),
    )
    yield MethodSpec(
        name="integrated-gradients", explain=integrated_gradients,
        params={"steps": 50, "baseline": 0.0, "method": "gausslegendre", "internal_batch_size": 256},
        description="Integrated Gradients (Sundararajan et al.), constant baseline, Captum; "
                    "internal batching bounds memory.",
        requires=frozenset({"gradients"}),
    )
