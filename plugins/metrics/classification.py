"""Model-level classification metrics on the test split (seed-algorithms.md §5.4.8): accuracy,
balanced accuracy, AUROC and AUPRC (macro, one-vs-rest, ranking the softmax scores), sensitivity and
specificity, and the same per class as value families (``sensitivity/<class>`` …).

Rankings use each class's log-odds ``log(p_c/(1 − p_c)) = z_c − logsumexp_{j≠c} z_j`` in float64
(:func:`log_odds`), which orders samples exactly as the softmax probability does: a float32 p_c is
exactly 1.0 once a margin passes ≈17 (and even a float64 ``log_softmax`` is 0 past ≈37), so a
confident model's distinct scores would tie and AUROC/AUPRC would drift.

Sensitivity = TP/(TP+FN) and specificity = TN/(TN+FP) with class 1 as the positive class for two
classes (Oliveira's source swaps the two names; these are the correct ones, so its published
"sensitivity" is our ``specificity``), and the macro mean over one-vs-rest classes otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xbench import Family, MetricContext, MetricSpec, hookimpl
from xbench.results import facet_text
from xbench.specs import EXPLANATION_STATS

PER_CLASS = ("sensitivity", "specificity", "auroc", "auprc")


def _binary_score(score, positive: np.ndarray, values: np.ndarray) -> float:
    """A ranking score of one-vs-rest ``positive`` against ``values``; NaN unless both kinds occur."""
    if positive.any() and (~positive).any():
        return float(score(positive, values))
    return float("nan")


def _mean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def log_odds(logits: np.ndarray) -> np.ndarray:
    """``(N, K)`` float64 one-vs-rest log-odds of the softmax, ``z_c − logsumexp_{j≠c} z_j``: the
    ranking score of every AUROC/AUPRC here, monotone in ``p_c`` but never saturating (module docstring).
    Log-probabilities are logits too, so they may be passed instead.

    Computed so that equal probabilities give equal scores, as ranks need (ties stay ties): each
    row is first shifted by its maximum (exact for float32 logits in float64), so logits that differ
    by a constant score the same, and the other classes are summed in sorted order, so a
    permutation of them does too."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    others = np.where(np.eye(z.shape[1], dtype=bool)[None], -np.inf, z[:, None, :])
    return z - np.logaddexp.reduce(np.sort(others, axis=2), axis=2)


def auc_and_accuracy(labels: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """§5.4.7: AUC = ROC-AUC on the positive-class score (two classes) or the mean one-vs-rest AUC;
    ACC = argmax accuracy (for two classes the same as thresholding the positive score at 0.5).
    ``logits`` ``(N, K)``; scores are ranked by their :func:`log_odds`."""
    from sklearn.metrics import roc_auc_score

    if len(labels) == 0:
        return float("nan"), float("nan")
    acc = float(np.mean(np.asarray(logits).argmax(1) == labels))
    score = log_odds(logits)
    if score.shape[1] == 2:
        return _binary_score(roc_auc_score, labels == 1, score[:, 1]), acc
    return _mean([_binary_score(roc_auc_score, labels == c, score[:, c]) for c in range(score.shape[1])]), acc


def per_class(labels: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest sensitivity, specificity, AUROC and AUPRC of every class (NaN where undefined),
    from ``(N, K)`` logits (rankings by :func:`log_odds`)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = logits.shape[1]
    pred = np.asarray(logits).argmax(1)
    score = log_odds(logits)
    truth = labels[:, None] == np.arange(k)[None]
    chosen = pred[:, None] == np.arange(k)[None]
    tp, fn = (chosen & truth).sum(0), (~chosen & truth).sum(0)
    tn, fp = (~chosen & ~truth).sum(0), (chosen & ~truth).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
    auroc = np.array([_binary_score(roc_auc_score, truth[:, c], score[:, c]) for c in range(k)])
    auprc = np.array([_binary_score(average_precision_score, truth[:, c], score[:, c]) for c in range(k)])
    return {"sensitivity": sens, "specificity": spec, "auroc": auroc, "auprc": auprc}


def class_facets(ctx: MetricContext, k: int) -> list[str]:
    """The classes as facets: the dataset's class names, else ``class-<index>`` (a bare number is
    prefixed, so a facet always reads as a class name)."""
    names = list(getattr(ctx.dataset, "class_names", ()) or ())
    facets = [facet_text(n) for n in names] if len(names) == k else []
    if len(set(facets)) != k:
        facets = [str(c) for c in range(k)]
    return [f"class-{f}" if f.lstrip("-").replace(".", "", 1).isdigit() else f for f in facets]


def classification(ctx: MetricContext) -> dict[str, torch.Tensor]:
    y = ctx.labels.cpu().numpy()
    logits = ctx.logits.detach().double().cpu().numpy()
    k = logits.shape[1]
    auroc, accuracy = auc_and_accuracy(y, logits)
    per = per_class(y, logits)
    positives = [1] if k == 2 else list(range(k))
    recalls = [np.mean(logits.argmax(1)[y == c] == c) for c in range(k) if np.any(y == c)]
    out = {
        "accuracy": accuracy,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "auroc": auroc,
        "auprc": _mean(per["auprc"]),
        "sensitivity": _mean(per["sensitivity"][positives]),
        "specificity": _mean(per["specificity"][positives]),
    }
    result: dict[str, Any] = {name: torch.tensor(value, dtype=torch.float64) for name, value in out.items()}
    for name in PER_CLASS:
        result[f"{name}_by_class"] = {facet: torch.tensor(float(per[name][c]), dtype=torch.float64)
                                      for facet, c in zip(class_facets(ctx, k), range(k))}
    return result


EXPLANATION_FIT = {k: True if k in ("mass_inside", "focus", "pointing") else None for k in EXPLANATION_STATS}
"""Each explanation statistic (``xbench.specs.EXPLANATION_STATS``) with its direction: more mass on
the object, a higher focus and more hits are better; the rest describe the map."""


def model_fit(ctx: MetricContext) -> dict[str, torch.Tensor]:
    """Did the model learn? Its test accuracy against chance (the share of the most frequent test
    class: what always answering that class scores), and the validation accuracy its training kept;
    for a model that explains itself, the explanation statistics its fit report holds."""
    y = ctx.labels.cpu()
    n = max(len(y), 1)
    test = float((ctx.logits.argmax(1).cpu() == y).double().mean()) if len(y) else float("nan")
    chance = float(torch.bincount(y).max()) / n if len(y) else float("nan")
    val = float(ctx.model.report.metrics.get("val_accuracy", float("nan")))
    if not ctx.model.report.history:
        ctx.flag(torch.ones(1, dtype=torch.bool), "no training history (an untrained or pre-built model): "
                                                   "no validation accuracy")
    values = [("test_accuracy", test), ("val_accuracy", val), ("chance", chance), ("above_chance", test - chance)]
    values += [(f"val_explanation_{k}", float(ctx.model.report.metrics[f"val_explanation_{k}"]))
               for k in EXPLANATION_FIT if f"val_explanation_{k}" in ctx.model.report.metrics]
    return {name: torch.tensor(v, dtype=torch.float64) for name, v in values}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="model-fit", score=model_fit, category="classification", scope="model", version="2",
        values={"test_accuracy": True, "val_accuracy": True, "chance": None, "above_chance": True,
                **{f"val_explanation_{k}": v for k, v in EXPLANATION_FIT.items()}},
        description="Whether the model learned: test accuracy, the validation accuracy its training kept, and "
                    "chance (the most frequent test class's share). Recorded for every cell, so claims and "
                    "readers can set an accuracy floor. Models that explain themselves add their explanations' "
                    "statistics on the validation split (val_explanation_*: level, spreads, mass inside the mask, "
                    "focus, pointing game), so a degenerate in-model explainer shows in the results.",
    )
    yield MetricSpec(
        name="classification", score=classification, category="classification", scope="model", version="4",
        values={"accuracy": True, "balanced_accuracy": True, "auroc": True, "auprc": True,
                "sensitivity": True, "specificity": True,
                **{f"{name}_by_class": Family(True, facet="class", name=name) for name in PER_CLASS}},
        description="Accuracy, balanced accuracy, macro AUROC/AUPRC, sensitivity and specificity (class 1 "
                    "positive for two classes, else macro one-vs-rest) on the test split, and one-vs-rest "
                    "values per class (<value>/<class>).",
    )
