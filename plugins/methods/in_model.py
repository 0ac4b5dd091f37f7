"""The explanation that the joint explainer–classifier produces itself (Rio-Torto et al., §1.2, §5.3).

The explainer is class-agnostic: it maps an image to one ``(N, H, W)`` map in [0, 1] that the
classifier multiplies into its features, so the targets do not change it (for two-class models,
Rio-Torto's setting, the map explains the positive class). It runs without gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from xbench import MethodSpec, TrainedModel, hookimpl
from xbench.errors import XbenchError


def in_model(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    if model.explain is None:
        raise XbenchError(
            f"Model {type(model.module).__name__} has no in-model explainer, so method 'in-model' cannot run on it. "
            "Only models that provide the `in_model_explainer` tag (and define `explain(x)`) can be explained "
            "this way."
        )
    with torch.no_grad():
        out = model.explain(x)
    if out.dim() == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if out.dim() != 3 or out.shape[0] != x.shape[0]:
        raise XbenchError(
            f"The in-model explainer of {type(model.module).__name__} returned shape {tuple(out.shape)} for inputs "
            f"{tuple(x.shape)}; it must return (N, H, W) or (N, 1, H, W)."
        )
    return out.float()


@hookimpl
def xbench_methods():
    yield MethodSpec(
        name="in-model", explain=in_model,
        description="The joint explainer–classifier's own explanation (Rio-Torto et al.), class-agnostic.",
        requires=frozenset({"in_model_explainer"}),
    )
