"""A supervised training loop shared by the built-in model plugins.

Keeps data on the device when it fits, shuffles with a seeded generator, tracks validation loss
and accuracy per epoch, keeps the best state, stops early, and stops with a clear error when the
loss diverges. Plugins with their own objective pass ``step`` (e.g. a heatmap loss).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from xbench import FitContext, FitReport, Split
from xbench.errors import XbenchError

DEVICE_BYTES_LIMIT = 2 * 1024**3


class TrainingDiverged(XbenchError):
    """The loss became NaN or infinite: the cell stops, the rest of the run goes on."""


def _resident(split: Split, device: torch.device) -> dict[str, Any]:
    """The split's tensors, moved to the device once when they fit (no per-batch host copies)."""
    images = split.images
    move = isinstance(images, torch.Tensor) and images.numel() * 4 <= DEVICE_BYTES_LIMIT
    data = {"x": images.to(device) if move else images, "y": split.labels.to(device)}
    if split.masks is not None:
        data["mask"] = split.masks.to(device) if move and isinstance(split.masks, torch.Tensor) else split.masks
    data["regions"] = {k: (v.to(device) if move and isinstance(v, torch.Tensor) else v) for k, v in split.regions.items()}
    return data


def iterate(data: dict[str, Any], batch_size: int, device: torch.device, *,
            generator: torch.Generator | None = None) -> Iterator[dict[str, Any]]:
    """Batches as dicts of device tensors (``x``, ``y``, optional ``mask`` and ``regions``)."""
    n = len(data["y"])
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        dev_idx = idx.to(data["y"].device)
        batch = {"x": _take(data["x"], idx, dev_idx, device), "y": data["y"][dev_idx]}
        if "mask" in data:
            batch["mask"] = _take(data["mask"], idx, dev_idx, device)
        batch["regions"] = {k: _take(v, idx, dev_idx, device) for k, v in data["regions"].items()}
        yield batch


def _take(array, idx, dev_idx, device):
    if isinstance(array, torch.Tensor):
        return array[dev_idx if array.device == dev_idx.device else idx].to(device, non_blocking=True)
    return array[idx].to(device, non_blocking=True)


def cross_entropy_step(module: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return F.cross_entropy(module(batch["x"]), batch["y"])


@torch.no_grad()
def evaluate(module: torch.nn.Module, data: dict[str, Any], batch_size: int, device: torch.device) -> dict[str, float]:
    """Loss and accuracy on a resident split, in eval mode."""
    was_training = module.training
    module.eval()
    total, loss, correct = 0, 0.0, 0
    for batch in iterate(data, batch_size, device):
        logits = module(batch["x"])
        loss += float(F.cross_entropy(logits, batch["y"], reduction="sum"))
        correct += int((logits.argmax(1) == batch["y"]).sum())
        total += len(batch["y"])
    module.train(was_training)
    return {"loss": loss / max(total, 1), "accuracy": correct / max(total, 1)}


def fit_classifier(
    module: torch.nn.Module,
    train: Split,
    val: Split,
    ctx: FitContext,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    batch_size: int = 32,
    step: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor] = cross_entropy_step,
    scheduler: Any = None,
    patience: int | None = None,
    select: str = "val_loss",
    name: str = "model",
) -> FitReport:
    """Train ``module`` in place and reload its best state by ``select`` (val_loss or val_accuracy)."""
    device = ctx.device
    module.to(device)
    train_data, val_data = _resident(train, device), _resident(val, device)
    generator = torch.Generator().manual_seed(ctx.seed)
    history: list[dict[str, float]] = []
    best_score, best_state, best_epoch, waited = -math.inf, None, -1, 0
    for epoch in range(1, epochs + 1):
        module.train()
        total, seen = 0.0, 0
        for i, batch in enumerate(iterate(train_data, batch_size, device, generator=generator)):
            loss = step(module, batch)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"Training of {name} diverged: the loss became {float(loss)} at epoch {epoch}, batch {i + 1}. "
                    "Lower the learning rate (param lr) or check the data; the other cells go on."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch["y"])
            seen += len(batch["y"])
        val = evaluate(module, val_data, batch_size, device)
        if scheduler is not None:
            scheduler.step(val["loss"]) if _wants_metric(scheduler) else scheduler.step()
        record = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val["loss"],
                  "val_accuracy": val["accuracy"]}
        history.append(record)
        ctx.progress(epoch, epochs, loss=record["train_loss"], val_acc=record["val_accuracy"])
        score = -val["loss"] if select == "val_loss" else val["accuracy"]
        if score > best_score:
            best_score, best_epoch, waited = score, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    best = history[best_epoch - 1] if best_epoch > 0 else {}
    return FitReport(history=history, metrics={"val_loss": best.get("val_loss", math.nan),
                                               "val_accuracy": best.get("val_accuracy", math.nan),
                                               "best_epoch": float(best_epoch), "epochs": float(len(history))})


def _wants_metric(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
