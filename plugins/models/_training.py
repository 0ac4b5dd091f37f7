"""A supervised training loop shared by the built-in model plugins.

Keeps data on the device when it fits, shuffles with a seeded generator, tracks validation loss
and accuracy per epoch, keeps the best state, stops early, and stops with a clear error when the
loss diverges. Plugins with their own objective pass ``step`` (e.g. a heatmap loss) and, where
validation must score the same objective, ``eval_loss``; plugins with their own model-selection
or stopping rule (Oliveira's fine-tuning) pass ``select`` and ``stop`` as functions of the history.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any, Union

import torch
import torch.nn.functional as F

from xbench import FitContext, FitReport, Split
from xbench.errors import XbenchError

DEVICE_BYTES_LIMIT = 2 * 1024**3

StepResult = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
"""What a training step returns: the mean loss, or (mean loss, logits) so train accuracy is tracked."""

Selector = Callable[[dict[str, float], Union[dict[str, float], None]], bool]
"""``select(record, best)``: whether this epoch's record becomes the kept state (best is None at first)."""


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


def cross_entropy_step(module: torch.nn.Module, batch: dict[str, Any]) -> StepResult:
    logits = module(batch["x"])
    return F.cross_entropy(logits, batch["y"]), logits


def cross_entropy_sum(module: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The default validation objective: summed cross-entropy, and the logits."""
    logits = module(batch["x"])
    return F.cross_entropy(logits, batch["y"], reduction="sum"), logits


@torch.no_grad()
def evaluate(module: torch.nn.Module, data: dict[str, Any], batch_size: int, device: torch.device,
             loss: Callable[[torch.nn.Module, dict[str, Any]], tuple[torch.Tensor, torch.Tensor]] = cross_entropy_sum,
             ) -> dict[str, float]:
    """Mean loss (``loss`` returns the batch's summed loss and its logits) and accuracy, in eval mode."""
    was_training = module.training
    module.eval()
    total, summed, correct = 0, 0.0, 0
    for batch in iterate(data, batch_size, device):
        batch_loss, logits = loss(module, batch)
        summed += float(batch_loss)
        correct += int((logits.argmax(1) == batch["y"]).sum())
        total += len(batch["y"])
    module.train(was_training)
    return {"loss": summed / max(total, 1), "accuracy": correct / max(total, 1)}


def lowest_val_loss(min_delta: float = 0.0) -> Selector:
    """Keep the epoch with the lowest validation loss (an improvement must exceed ``min_delta``)."""
    return lambda record, best: best is None or record["val_loss"] < best["val_loss"] - min_delta


def highest_val_accuracy(min_delta: float = 0.0) -> Selector:
    return lambda record, best: best is None or record["val_accuracy"] > best["val_accuracy"] + min_delta


def lowest_val_loss_near_best_accuracy(tolerance: float, min_delta: float = 0.0) -> Selector:
    """Keep the epoch with the lowest validation loss among those whose validation accuracy is within
    ``tolerance`` of the best accuracy seen so far: a loss that mixes in other terms (an explanation
    penalty) cannot keep a state that has lost the task. Stateful: make one per training run."""
    top = [-math.inf]

    def keep(record: dict[str, float], best: dict[str, float] | None) -> bool:
        top[0] = max(top[0], record["val_accuracy"])
        if record["val_accuracy"] < top[0] - tolerance:
            return False
        return (best is None or best["val_accuracy"] < top[0] - tolerance
                or record["val_loss"] < best["val_loss"] - min_delta)

    return keep


SELECTORS = {"val_loss": lowest_val_loss, "val_accuracy": highest_val_accuracy}


def fit_classifier(
    module: torch.nn.Module,
    train: Split,
    val: Split,
    ctx: FitContext,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    batch_size: int = 32,
    step: Callable[[torch.nn.Module, dict[str, Any]], StepResult] = cross_entropy_step,
    eval_loss: Callable[[torch.nn.Module, dict[str, Any]], tuple[torch.Tensor, torch.Tensor]] = cross_entropy_sum,
    scheduler: Any = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    select: str | Selector = "val_loss",
    stop: Callable[[list[dict[str, float]]], bool] | None = None,
    train_mode: Callable[[torch.nn.Module], Any] | None = None,
    before_validation: Callable[[torch.nn.Module], Any] | None = None,
    start_candidate: bool = False,
    name: str = "model",
) -> FitReport:
    """Train ``module`` in place and reload the state kept by ``select``.

    ``select`` is ``"val_loss"``, ``"val_accuracy"`` or a :data:`Selector`. ``patience`` stops after
    that many epochs without a newly kept state; ``stop(history)`` is an additional stopping rule.
    ``train_mode(module)`` sets train/eval modes before each epoch (default ``module.train()``),
    e.g. to keep a frozen part in eval mode. ``before_validation(module)`` runs before each
    validation (e.g. to recompute batch-norm statistics). With ``start_candidate`` the starting state
    is validated first and competes as epoch 0, so a run whose every epoch is worse keeps its start.
    """
    device = ctx.device
    module.to(device)
    train_data, val_data = _resident(train, device), _resident(val, device)
    generator = torch.Generator().manual_seed(ctx.seed)
    keep = SELECTORS[select](min_delta) if isinstance(select, str) else select
    history: list[dict[str, float]] = []
    best_record, best_state, waited = None, None, 0

    def validate(epoch: int, **train: float) -> dict[str, float]:
        if before_validation is not None:
            before_validation(module)
        val = evaluate(module, val_data, batch_size, device, eval_loss)
        return {"epoch": epoch, **train, "val_loss": val["loss"], "val_accuracy": val["accuracy"]}

    if start_candidate and epochs > 0:
        start = validate(0)
        if keep(start, None):
            best_record, best_state = start, copy.deepcopy(module.state_dict())
    for epoch in range(1, epochs + 1):
        train_mode(module) if train_mode is not None else module.train()
        total, seen, correct, counted = 0.0, 0, 0, 0
        for i, batch in enumerate(iterate(train_data, batch_size, device, generator=generator)):
            out = step(module, batch)
            loss, logits = out if isinstance(out, tuple) else (out, None)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"Training of {name} diverged: the loss became {float(loss.detach())} at epoch {epoch}, batch {i + 1}. "
                    "Lower the learning rate (param lr) or check the data; the other cells go on."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch["y"])
            seen += len(batch["y"])
            if logits is not None:
                correct += int((logits.detach().argmax(1) == batch["y"]).sum())
                counted += len(batch["y"])
        record = validate(epoch, train_loss=total / max(seen, 1))
        if scheduler is not None:
            scheduler.step(record["val_loss"]) if _wants_metric(scheduler) else scheduler.step()
        if counted:
            record["train_accuracy"] = correct / counted
        history.append(record)
        ctx.progress(epoch, epochs, loss=record["train_loss"], val_acc=record["val_accuracy"])
        if keep(record, best_record):
            best_record, waited = record, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
        if stop is not None and stop(history):
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    best = best_record or {}
    return FitReport(history=history, metrics={"val_loss": best.get("val_loss", math.nan),
                                               "val_accuracy": best.get("val_accuracy", math.nan),
                                               "best_epoch": float(best.get("epoch", 0)),
                                               "epochs": float(len(history))})


def trainable_parameters(module: torch.nn.Module) -> int:
    """How many parameters an optimiser would update (``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _wants_metric(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
