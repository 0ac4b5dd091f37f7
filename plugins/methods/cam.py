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

- ``layer-cam`` (Jiang et al. 2021): ReLU(Σ_k ReLU(g_k) ⊙ A_k), per position.
- ``xgrad-cam`` (Fu et al. 2020): w_k = Σ_ij g_k(i,j)·A_k(i,j) / Σ_ij A_k(i,j), ReLU(Σ_k w_k·A_k); a
  channel whose activations sum to 0 gets weight 0 (pytorch-grad-cam adds 1e-7 to the sum instead).
- ``score-cam`` (Wang et al. 2020), gradient-free: each channel A_k, upsampled bilinearly to the
  input and min-max scaled to [0, 1], masks the input; w_k is the softmax probability of the target
  class for x ⊙ M_k (the authors' code; a constant channel is skipped, w_k = 0), and the map is
  ReLU(Σ_k w_k·A_k). ``variant = "pytorch-grad-cam"`` gives that library's: align-corners
  upsampling, min-max with +1e-8, and w = softmax over the channels of the target *logits*. The
  N·K masked inputs run in chunks that fit ``memory_mb``.

These three are xbench's own, checked against pytorch-grad-cam 1.5.7 (``grad-cam``) in the tests.
That library does not fit the plugin's conventions: it moves activations and gradients to NumPy on
the CPU, returns maps upsampled to the input (cv2) and min-max scaled, so the layer resolution that
saliency RMSE compares at is lost, and its Score-CAM loops over images in Python with 16 masked
copies per forward pass. It is not slower on a CPU: measured on the loaded 2-core machine, Score-CAM
on 16 images 1×64×64 at the 32-channel deepest layer of a small CNN took 0.34–0.42 s there and
0.39–0.57 s here (the spread is the machine's load); here the masked copies stay on the model's
device and the chunk follows ``memory_mb``.

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
import torch.nn.functional as F
from torch import nn

from xbench import MethodSpec, Param, TrainedModel, hookimpl
from xbench.errors import XbenchError

from ._chunking import MEMORY_PARAM, rows_within, with_backoff
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


def _forward_capturing(model: TrainedModel, m: nn.Module, x: torch.Tensor, layer: str):
    """The logits of ``x`` and the target layer's output in that forward pass."""
    module = resolve_layer(model, layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        logits = m(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise XbenchError(
            f"Target layer {layer or '(deepest)'!r} ran {len(captured)} times in one forward pass of "
            f"{type(m).__name__}; a CAM needs a layer that runs exactly once. Choose another `layer`."
        )
    return logits, captured[0]


def activations_and_gradients(model: TrainedModel, x: torch.Tensor, target: torch.Tensor,
                              layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A = the layer's output and g = ∂y_t/∂A, for the whole batch in one forward and backward pass."""
    with attribution_ready(model.module) as m:
        logits, a = _forward_capturing(model, m, x, layer)
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


def layer_cam(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    a, g = activations_and_gradients(model, x, target, str(params["layer"]))
    cam = torch.relu((torch.relu(g) * a).sum(1))
    return _normalise(cam, str(params["normalise"]))


def xgrad_cam(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    a, g = activations_and_gradients(model, x, target, str(params["layer"]))
    total = a.sum(dim=(2, 3), keepdim=True)
    weights = torch.where(total != 0, (g * a).sum(dim=(2, 3), keepdim=True) / torch.where(total != 0, total, 1.0),
                          torch.zeros_like(total))
    cam = torch.relu((weights * a).sum(1))
    return _normalise(cam, str(params["normalise"]))


def score_cam(model: TrainedModel, x: torch.Tensor, target: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    library = str(params["variant"]) == "pytorch-grad-cam"
    n = len(x)
    with torch.no_grad(), attribution_ready(model.module) as m:
        _, a = _forward_capturing(model, m, x, str(params["layer"]))
        k = a.shape[1]
        flat = a.flatten(2)
        lo, hi = flat.amin(2), flat.amax(2)                           # (N, K), at layer resolution
        constant = hi == lo
        target = target.to(x.device)

        def attempt(rows: int) -> torch.Tensor:
            scores = torch.empty(n * k, device=x.device, dtype=torch.float32)
            for start in range(0, n * k, rows):
                j = torch.arange(start, min(start + rows, n * k), device=x.device)
                i, c = j // k, j % k
                up = F.interpolate(a[i, c][:, None], size=x.shape[-2:], mode="bilinear", align_corners=library)
                up_flat = up.flatten(1)
                low, high = up_flat.amin(1).view(-1, 1, 1, 1), up_flat.amax(1).view(-1, 1, 1, 1)
                if library:
                    masks = (up - low) / (high - low + 1e-8)
                else:
                    span = high - low
                    masks = torch.where(span > 0, (up - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(up))
                out = m(x[i] * masks).float()
                picked = out.gather(1, target[i][:, None])[:, 0] if library else \
                    out.softmax(1).gather(1, target[i][:, None])[:, 0]
                scores[start:start + len(j)] = picked
            return scores.view(n, k)

        scores = with_backoff(attempt, rows_within(m, x, params["memory_mb"], grad=False), "score-cam")
    weights = scores.softmax(1) if library else torch.where(constant, torch.zeros_like(scores), scores)
    cam = torch.relu((weights[:, :, None, None] * a).sum(1))
    return _normalise(cam, str(params["normalise"]))


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
    yield MethodSpec(
        name="layer-cam", explain=layer_cam, params={"layer": LAYER_PARAM, "normalise": _normalise_param("max")},
        description="LayerCAM (Jiang et al. 2021): ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k) at a named conv layer, at its "
                    "resolution; / max.",
        requires=CONV,
    )
    yield MethodSpec(
        name="xgrad-cam", explain=xgrad_cam, params={"layer": LAYER_PARAM, "normalise": _normalise_param("max")},
        description="XGrad-CAM (Fu et al. 2020): channel weights Σ g·A / Σ A, ReLU of the weighted sum of "
                    "activations, at the layer's resolution; / max.",
        requires=CONV,
    )
    yield MethodSpec(
        name="score-cam", explain=score_cam,
        params={"layer": LAYER_PARAM, "normalise": _normalise_param("max"),
                "variant": Param("wang", "'wang': the authors' code (softmax probability of the target per masked "
                                         "input); 'pytorch-grad-cam': that library's (softmax over channels of the "
                                         "target logits, align-corners upsampling)",
                                 choices=("wang", "pytorch-grad-cam")),
                "memory_mb": MEMORY_PARAM},
        description="Score-CAM (Wang et al. 2020): channels as input masks, weighted by the target's probability "
                    "on each masked input; gradient-free, at the layer's resolution; / max.",
        requires=frozenset({"conv_layer"}),
    )
