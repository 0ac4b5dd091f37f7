"""Where a VGG backbone's starting weights come from, for ``vgg16-finetune`` and ``heatmap-loss``.

- ``none``: the random initialisation the runner seeded.
- ``imagenet``: torchvision's ImageNet VGG16 checkpoint from a local file (param ``weights``) or
  torchvision's cache (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``). Nothing is downloaded:
  a missing file is a clear error.
- ``mri``: in-domain pre-training that xbench performs itself on axial brain slices
  (:func:`xbench.datasets._brain_slices.axial_slices`: the skull-stripped T1 volumes in ``mri_folder``
  or ``$XBENCH_HCP_DIR``, else the MNI152 template nilearn ships; ``pretrain_mni_template`` says which). The source pre-trained on HCP sex labels, which no public offline
  data carries; the pretext task here is self-supervised rotation prediction (0/90/180/270°,
  Gidaris et al. 2018), which needs no labels and forces features of brain anatomy.
- ``synthetic-ood``: **not ImageNet**. An out-of-domain stand-in that the quick preset uses where no
  ImageNet weights exist: supervised pre-training on generated non-medical images (five coloured,
  textured shapes on smooth colour backgrounds, to be told apart by shape).

Pre-trained weights depend only on the architecture, the input size and the pre-training params,
never on the run's seed, so one pre-training serves every seed and fine-tune degree. They are
cached under the plugin's ``FitContext.cache_dir`` and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, Split
from xbench.errors import XbenchError
from xbench.hashing import content_hash
from xbench.store import atomic_write_bytes

from ._training import fit_classifier

VERSION = "1"
SOURCES = ("none", "imagenet", "mri", "synthetic-ood")
TORCHVISION_FILE = "vgg16-397923af.pth"
OOD_CLASSES = ("disk", "square", "triangle", "cross", "ring")

PARAMS = {
    "weights": "",
    "pretrain_images": 20000,
    "pretrain_epochs": 20,
    "pretrain_lr": 0.01,
    "pretrain_batch_size": 64,
    "pretrain_seed": 0,
    "mri_folder": "",
}
"""Pre-training params shared by the models that use this module (merged into their ``params``)."""


class PretrainingError(XbenchError):
    """Pre-trained weights are missing or do not fit the architecture."""


def initialise(module: nn.Module, info: DatasetInfo, params: Mapping[str, Any], ctx: FitContext, *,
               build_pretext: Callable[[int], nn.Module], head: str, keep: str = "") -> dict[str, float]:
    """Load ``params["pretrain"]``'s weights into ``module`` in place, except the layer ``head``
    (the task's new output layer) and, when ``keep`` is given, every key outside that prefix.

    ``build_pretext(classes)`` builds the same architecture with a ``classes``-way head for the
    pretext tasks, with a BatchNorm2d after each conv (folded away after pre-training). Returns numeric facts for the fit report (e.g. the pretext validation accuracy).
    """
    source = str(params["pretrain"])
    if source == "none":
        return {}
    if source == "imagenet":
        state, facts = imagenet_state(str(params["weights"])), {}
    elif source in ("mri", "synthetic-ood"):
        state, facts = pretext_state(source, info, params, ctx, build_pretext)
    else:
        raise PretrainingError(f"pretrain {source!r} is not a pre-training source; use one of {', '.join(SOURCES)}.")
    load_backbone(module, state, head=head, keep=keep, source=source)
    return facts


def imagenet_state(path: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG16 state dict, from ``path`` or torchvision's cache; never downloaded."""
    file = Path(path).expanduser() if path else Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if not file.is_file():
        where = f"the file {str(file)!r} (param weights)" if path else f"torchvision's cache ({file})"
        raise PretrainingError(
            f"pretrain = \"imagenet\" needs torchvision's ImageNet VGG16 weights, but {where} does not exist, and "
            "xbench never downloads. On a machine with internet, run `python -c \"import torchvision; "
            f"torchvision.models.vgg16(weights='IMAGENET1K_V1')\"` (it saves {TORCHVISION_FILE} in torchvision's "
            "cache) and copy the file here, or set the model param weights to its path; or use pretrain = "
            "\"synthetic-ood\" (xbench's out-of-domain stand-in) or \"mri\"."
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainingError(f"Could not read ImageNet weights from {str(file)!r}: {exc}. The file must be a "
                               "PyTorch state dict of torchvision's VGG16 (e.g. vgg16-397923af.pth).") from None
    if not isinstance(state, Mapping):
        raise PretrainingError(f"{str(file)!r} holds a {type(state).__name__}, not a state dict of VGG16 weights.")
    return dict(state)


def load_backbone(module: nn.Module, state: Mapping[str, torch.Tensor], *, head: str, keep: str = "",
                  source: str = "pre-trained") -> None:
    """Copy every entry of ``module``'s state (except ``head``, and outside ``keep`` when given) from
    ``state``. A 3-channel first conv loaded into a 1-channel model is summed over its input channels."""
    target = module.state_dict()
    wanted = [k for k in target if not k.startswith(head + ".") and (not keep or k.startswith(keep))]
    problems, update = [], {}
    for key in wanted:
        value = state.get(key)
        if value is None:
            problems.append(f"{key} is missing")
            continue
        shape = tuple(target[key].shape)
        if tuple(value.shape) != shape and value.dim() == 4 and shape[1] == 1 and value.shape[1] == 3 \
                and value.shape[0] == shape[0] and value.shape[2:] == shape[2:]:
            value = value.sum(1, keepdim=True)
        if tuple(value.shape) != shape:
            problems.append(f"{key} has shape {tuple(value.shape)}, the model needs {shape}")
            continue
        update[key] = value.to(target[key].dtype)
    if problems:
        raise PretrainingError(
            f"The {source} weights do not fit this architecture: " + "; ".join(problems[:4])
            + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")
            + ". torchvision's ImageNet VGG16 needs width = 1.0; weights pre-trained by xbench are only reused "
              "for the same width, channels and input size."
        )
    module.load_state_dict(update, strict=False)


def pretext_state(source: str, info: DatasetInfo, params: Mapping[str, Any], ctx: FitContext,
                  build_pretext: Callable[[int], nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Weights pre-trained on ``source``'s pretext task, from the cache or trained now and cached."""
    classes = 4 if source == "mri" else len(OOD_CLASSES)
    seed = int(params["pretrain_seed"])
    # Pre-training draws from its own seeded stream and leaves the caller's untouched, so the
    # fine-tuning that follows is the same whether these weights were trained now or cached.
    with _own_rng(ctx.device):
        torch.manual_seed(seed)
        model = build_pretext(classes)
        identity = {
            "version": VERSION, "source": source, "architecture": type(model).__name__,
            "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
            "input": [info.channels, info.height, info.width],
            **{k: params[k] for k in ("pretrain_images", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size",
                                      "pretrain_seed")},
            "mri_folder": mri_folder(params) if source == "mri" else "",
        }
        key = content_hash(identity)
        folder = Path(ctx.cache_dir) / "pretrain" if ctx.cache_dir else None
        if folder is not None:
            hit = _load(folder, f"{source}-{key}")
            if hit is not None:
                return hit[0], {**hit[1], "pretrain_cached": 1.0}
        data = pretext_dataset(source, info, params)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(params["pretrain_lr"]), momentum=0.9,
                                    weight_decay=5e-4)
        epochs = int(params["pretrain_epochs"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        progress = ctx.progress
        pctx = dataclasses.replace(ctx, seed=seed, progress=lambda s, t, **n: progress(s, t, pretraining=source, **n))
        report = fit_classifier(model, data.train, data.val, pctx, epochs=epochs, optimizer=optimizer,
                                batch_size=int(params["pretrain_batch_size"]), scheduler=scheduler,
                                select="val_accuracy", name=f"{source} pre-training")
    facts = {"pretrain_val_accuracy": report.metrics["val_accuracy"], "pretrain_epochs_run": report.metrics["epochs"],
             "pretrain_chance": 1.0 / classes}
    if source == "mri":
        facts["pretrain_mni_template"] = float(not identity["mri_folder"])
    state = fold_batchnorm(model)
    if folder is not None:
        _save(folder, f"{source}-{key}", state, {**facts, "identity": identity})
    return state, {**facts, "pretrain_cached": 0.0}


def _own_rng(device: torch.device):
    """Fork torch's global generators (the CPU's, and the device's on CUDA) for the ``with`` block."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def fold_batchnorm(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` with every BatchNorm2d that follows a Conv2d inside an
    ``nn.Sequential`` folded into that conv and removed (the later layers' indices shift down).

    Why: plain VGG16 (no batch norm) hardly trains from scratch, so pretext pre-training trains the
    batch-norm variant and hands over the exactly equivalent plain network (in eval mode).
    """
    model = copy.deepcopy(model).cpu().eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Sequential):
                setattr(parent, name, _folded(child))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def _folded(seq: nn.Sequential) -> nn.Sequential:
    kept: list[nn.Module] = []
    for m in seq:
        if isinstance(m, nn.BatchNorm2d) and kept and isinstance(kept[-1], nn.Conv2d):
            conv = kept[-1]
            scale = m.weight / torch.sqrt(m.running_var + m.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(m.running_mean)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - m.running_mean) * scale + m.bias)
        else:
            kept.append(m)
    return nn.Sequential(*kept)


def _load(folder: Path, stem: str):
    weights, info = folder / f"{stem}.pt", folder / f"{stem}.json"
    if not (weights.is_file() and info.is_file()):
        return None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        facts = json.loads(info.read_text())
    except Exception:  # a damaged entry is recomputed, never trusted
        return None
    return state, {k: float(v) for k, v in facts.items() if isinstance(v, (int, float))}


def _save(folder: Path, stem: str, state: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(folder / f"{stem}.pt", buffer.getvalue())
    atomic_write_bytes(folder / f"{stem}.json", json.dumps(facts, indent=2, default=str).encode("utf-8"))


def pretext_dataset(source: str, info: DatasetInfo, params: Mapping[str, Any]) -> Dataset:
    """The pretext task's data at the model's input size: 90% train, 10% validation."""
    n = int(params["pretrain_images"])
    if n < 20:
        raise XbenchError(f"pretrain_images = {n} is too few to pre-train on; use at least a few hundred.")
    seed = int(params["pretrain_seed"])
    if source == "mri":
        images, labels = rotation_task(mri_folder(params), n, info.height, info.width, info.channels, seed)
        names = ("0", "90", "180", "270")
    else:
        images, labels = ood_images(n, info.height, info.width, info.channels, seed)
        names = OOD_CLASSES
    n_val = max(n // 10, 1)
    splits = {"train": Split(images[n_val:], labels[n_val:]), "val": Split(images[:n_val], labels[:n_val])}
    splits["test"] = splits["val"]
    return Dataset(f"pretext-{source}", names, splits)


def mri_folder(params: Mapping[str, Any]) -> str:
    """The T1 folder for MRI pre-training: ``mri_folder``, else ``$XBENCH_HCP_DIR`` (as hcp-lesions),
    else "" (nilearn's MNI152 template)."""
    from xbench.datasets.hcp_lesions import ENV
    from xbench.datasets._realdata import resolve_root

    root = resolve_root(str(params["mri_folder"]), ENV)
    return str(root) if root is not None else ""


def rotation_task(folder: str, count: int, height: int, width: int, channels: int,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial brain slices, each rotated by a random multiple of 90°; the label is the rotation."""
    from xbench.datasets._brain_slices import axial_slices

    side = max(height, width)
    slices, _ = axial_slices(folder or None, count=count, size=side, seed=seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (count,), generator=g)
    x = slices.float()[:, None]
    for k in range(1, 4):
        chosen = labels == k
        x[chosen] = torch.rot90(x[chosen], k, dims=(2, 3))
    if (height, width) != (side, side):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1).expand(-1, channels, -1, -1).contiguous(), labels


def ood_images(count: int, height: int, width: int, channels: int, seed: int,
               chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated non-medical images: a coloured, textured shape (the class, see ``OOD_CLASSES``)
    at a random place, size and angle on a smooth random colour background. Deterministic for ``seed``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(OOD_CLASSES), (count,), generator=g)
    out = torch.empty(count, channels, height, width)
    yy = torch.arange(height, dtype=torch.float32).view(1, -1, 1)
    xx = torch.arange(width, dtype=torch.float32).view(1, 1, -1)
    side = min(height, width)
    for s in range(0, count, chunk):
        lab = labels[s:s + chunk]
        n = len(lab)
        background = 0.3 + 0.4 * F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(height, width),
                                               mode="bilinear", align_corners=False)
        background = background + 0.03 * torch.randn(n, 3, height, width, generator=g)
        col = lambda v: v.view(-1, 1, 1)  # noqa: E731
        cy = col((0.25 + 0.5 * torch.rand(n, generator=g)) * height)
        cx = col((0.25 + 0.5 * torch.rand(n, generator=g)) * width)
        r = col((0.15 + 0.15 * torch.rand(n, generator=g)) * side)
        angle = col(torch.rand(n, generator=g) * 2 * math.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * torch.cos(angle) + dy * torch.sin(angle)
        v = -dx * torch.sin(angle) + dy * torch.cos(angle)
        rho = torch.sqrt(u * u + v * v)
        shapes = torch.stack([
            rho < r,
            (u.abs() < 0.8 * r) & (v.abs() < 0.8 * r),
            (v > -r / 2) & (math.sqrt(3) * u + v < r) & (-math.sqrt(3) * u + v < r),
            ((u.abs() < r / 3) & (v.abs() < r)) | ((v.abs() < r / 3) & (u.abs() < r)),
            (rho < r) & (rho > r / 2),
        ], 1)
        inside = shapes[torch.arange(n), lab][:, None]
        # a dark or a bright colour, so the shape stands out from the mid-range background in grey too
        bright = torch.rand(n, 1, 1, 1, generator=g) < 0.5
        colour = torch.where(bright, 0.75, 0.0) + 0.25 * torch.rand(n, 3, 1, 1, generator=g)
        texture = 0.9 + 0.1 * torch.rand(n, 1, height, width, generator=g)
        rgb = torch.where(inside, colour * texture, background).clamp(0, 1)
        if channels == 3:
            out[s:s + n] = rgb
        else:
            grey = (rgb * torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            out[s:s + n] = grey.expand(-1, channels, -1, -1)
    return out, labels
