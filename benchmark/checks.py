"""Contract checks on what plugins return, with messages that name the plugin and the fix."""

from __future__ import annotations

import torch

from .errors import XbenchError
from .specs import Dataset, Split


class ContractError(XbenchError):
    """A plugin returned data that breaks the documented contract."""


def check_dataset(dataset: Dataset, name: str) -> None:
    """Raise :class:`ContractError` unless every split obeys the conventions of :class:`Split`."""
    if not isinstance(dataset, Dataset):
        raise ContractError(f"Dataset {name!r}: load() returned a {type(dataset).__name__}, expected xbench.Dataset.")
    if len(dataset.class_names) < 2:
        raise ContractError(f"Dataset {name!r} declares {len(dataset.class_names)} class(es); a classifier needs at least 2.")
    for split_name in ("train", "val", "test"):
        check_split(dataset.split(split_name), name, split_name, len(dataset.class_names))


def check_split(split: Split, name: str, split_name: str, num_classes: int) -> None:
    where = f"Dataset {name!r}, split {split_name!r}"
    shape = tuple(split.images.shape)
    if len(shape) != 4:
        raise ContractError(f"{where}: images have shape {shape}; expected (N, C, H, W).")
    n, _, h, w = shape
    labels = split.labels
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype != torch.int64:
        raise ContractError(f"{where}: labels must be a 1-D int64 tensor, got {getattr(labels, 'dtype', type(labels))} "
                            f"of shape {tuple(getattr(labels, 'shape', ()))}.")
    if len(labels) != n:
        raise ContractError(f"{where}: {n} images but {len(labels)} labels.")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ContractError(f"{where}: labels must lie in 0..{num_classes - 1} (one per class name).")
    if n:
        first = split.images[0:1]
        if first.dtype != torch.float32:
            raise ContractError(f"{where}: images must be float32, got {first.dtype}.")
    for mask_name, mask in [("mask", split.masks), *[(f"region {k!r}", v) for k, v in split.regions.items()]]:
        if mask is None:
            continue
        if tuple(mask.shape) != (n, h, w):
            raise ContractError(
                f"{where}: the {mask_name} has shape {tuple(mask.shape)} but the images are {shape}; "
                f"masks must be (N, H, W) = {(n, h, w)}, bool, at image resolution."
            )
        if n and mask[0:1].dtype != torch.bool:
            raise ContractError(f"{where}: the {mask_name} must be a bool tensor, got {mask[0:1].dtype}.")
