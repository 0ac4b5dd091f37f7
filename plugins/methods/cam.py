"""Class activation maps at any named conv layer, kept at the layer's resolution
(seed-algorithms.md §3.2, §4.6, §5.3).

With A the layer's activations ``(N, K, h, w)`` and g = ∂y_t/∂A for the target logit y_t:

- ``grad-cam``: ReLU(Σ_k mean_ij(g_k)·A_k), divided by its maximum (Callanan's analysis code).
- ``hires-cam``: ReLU(mean_k(A_k ⊙ g_k)), divided by its maximum (Callanan's loss and analysis).
- ``grad-cam-pp``: Grad-CAM++ as torchcam's source writes it: α = g² / (2g² + Σ_ab A_k(a,b)·g³) where
  g² > 0 (else 0), w_k = Σ_ij α·ReLU(g_k), ReLU(Σ_k w_k·A_k), then min-max to [0, 1].
  ``legacy_torchcam = true`` gives what torchcam (0.5.0, checked) actually returns, which is what
  Treyer's published numbers need: its in-place division lands on a copy (``alpha[mask].div_(…)``),
  so α = g², and its min-max divides by (max − min + 1e-8).

``layer`` names the layer (one of the model's target layers), ``""`` the deepest, or ``"#k"`` a
position among the target layers (``"#-1"`` = the deepest), which fits every model in one sweep.
Maps are returned as ``(N, h, w)``; the runner upsamples them to the input for metrics, and
metrics that compare maps per layer (saliency RMSE) get them at layer resolution through
``explain_raw``. A map that is zero everywhere stays zero (no division by zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbench import MethodSpec, Param, TrainedModel, hookimpl
from xbench.errors import XbenchError

from ._surgery import attribution_ready

CONV = frozenset({"gradients", "conv_layer"})
NORMALISATIONS = ("max", "minmax", "none")


def _layer_problem(name: str) -> str | None:
    if name.startswith("#"):
        try:
            int(name[1:])
        except ValueError:
            return "is not a layer position: write \"#k\" with an integer k (\"#-1\" = the deepest)"
    return None


LAYER_PARAM = Param("", "the target layer: a name among the model's target layers, \"#k\" the k-th of them "
                        "(\"#-1\" the deepest), or \"\" for the deepest", check=_layer_problem, label=True)


def _normalise_param(default: str) -> Param:
    return Param(default, "how the map is scaled: by its maximum, min-max to [0, 1], or not at all",
                 choices=NORMALISATIONS)


def resolve_layer(model: TrainedModel, name: str) -> nn.Module:
    """The target layer called ``name``; ``""`` means the last (deepest) one, and ``"#k"`` the k-th
    from the shallow end (``"#-1"`` the deepest, ``"#-2"`` the one before), so that one per-layer
    sweep fits models whose layers have different names."""
    layers = model.target_layers
    if not layers:
        raise XbenchError(
            f"Model {type(model.module).__name__} names no target layers, so a CAM method cannot run on it. "
            "Its model plugin must provide target layers (by default every nn.Conv2d) and the `conv_layer` tag."
        )
    if name == "":
        return list(layers.values())[-1]
    if name in layers:
        return layers[name]
    available = (f"Available layers, shallow to deep: {', '.join(layers)}. Set the method's `layer` param to one "
                 f"of them, to \"#k\" for the k-th of these {len(layers)} (\"#-1\" = the deepest), or to \"\" "
                 "for the deepest.")
    if name.startswith("#"):
        try:
            return list(layers.values())[int(name[1:])]
        except (ValueError, IndexError):
            raise XbenchError(f"Layer position {name!r} does not exist in model {type(model.module).__name__}. "
                              + available) from None
    raise XbenchError(f"Unknown target layer {name!r} for model {type(model.module).__name__}. " + available)


def activations_and_gradients(model: TrainedModel, x: torch.Tensor, target: torch.Tensor,
                              layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A = the layer's output and g = ∂y_t/∂A, for the whole batch in one forward and backward pass."""
    module = resolve_layer(model, layer)
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        captured.append(output)

    with attribution_ready(model.module) as m:
        handle = module.register_forward_hook(keep)
        try:
            logits = m(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise XbenchError(
                f"Target layer {layer or '(deepest)'!r} ran {len(captured)} times in one forward pass of "
                f"{type(m).__name__}; a CAM needs a layer that runs exactly once. Choose another `layer`."
            )
        a = captured[0]
        y = logits.gather(1, target.reshape(-1, 1).to(logits.device)).sum()
        (g,) = torch.autograd.grad(y, a)
    return a.detach(), g.detach()


def _normalise(cam: torch.Tensor, how: str, eps: float = 0.0) -> torch.Tensor:
    """``eps`` is added to the min-max span (torchcam adds 1e-8); 0 divides by the span itself."""
    flat = cam.flatten(1)
    if how == "none":
        return cam
    if how == "max":
        top = flat.amax(1)
        return cam / torch.where(top > 0, top, torch.ones_like(top)).view(-1, 1, 1)
    if how == "minmax":
        lo, hi = flat.amin(1).view(-1, 1, 1), flat.amax(1).view(-1, 1, 1)
        span = hi - lo
        return (cam - lo) / (torch.where(span > 0, span, torch.ones_like(span)) + eps)
    raise XbenchError(f"Unknown CAM normalisation {how!r}: use one of {', '.join(NORMALISATIONS)}.")


def grad_cam(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    a, g = activations_and_gradients(model, x, target, str(params["layer"]))
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    return _normalise(cam, str(params["normalise"]))


def hires_cam(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    a, g = activations_and_gradients(model, x, target, str(params["layer"]))
    cam = torch.relu((a * g).mean(1))
    return _normalise(cam, str(params["normalise"]))


def grad_cam_pp(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    a, g = activations_and_gradients(model, x, target, str(params["layer"]))
    g2 = g * g
    legacy = bool(params["legacy_torchcam"])
    if legacy:  # torchcam's alpha[mask].div_(denom[mask]) divides a copy: alpha stays g²
        alpha = g2
    else:
        denom = 2 * g2 + (a * g2 * g).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(g2 > 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * a).sum(1))
    return _normalise(cam, str(params["normalise"]), eps=1e-8 if legacy else 0.0)


@hookimpl
def xbench_methods():
    yield MethodSpec(
        name="grad-cam", explain=grad_cam, params={"layer": LAYER_PARAM, "normalise": _normalise_param("max")},
        description="Grad-CAM (Selvaraju et al.) at a named conv layer, at its resolution; / max (Callanan).",
        requires=CONV,
    )
    yield MethodSpec(
        name="hires-cam", explain=hires_cam, params={"layer": LAYER_PARAM, "normalise": _normalise_param("max")},
        description="HiResCAM (Draelos & Carin): channel mean of A ⊙ ∂y/∂A, ReLU, / max (Callanan).",
        requires=CONV,
    )
    yield MethodSpec(
        name="grad-cam-pp", explain=grad_cam_pp,
        params={"layer": LAYER_PARAM, "normalise": _normalise_param("minmax"),
                "legacy_torchcam": Param(False, "torchcam 0.5.0's actual output (α = g²), which Treyer's numbers need")},
        description="Grad-CAM++ (Chattopadhyay et al.) with torchcam's formula, min-max to [0, 1] (Treyer); "
                    "legacy_torchcam = true reproduces torchcam's actual output (alpha = g², as Treyer's numbers).",
        requires=CONV,
    )
