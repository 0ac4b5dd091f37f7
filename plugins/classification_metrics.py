"""Model-level classification metrics on the test split: accuracy, balanced accuracy, AUROC and
AUPRC (macro, one-vs-rest, from softmax scores), sensitivity and specificity.

Sensitivity = TP/(TP+FN) and specificity = TN/(TN+FP) with class 1 as the positive class for two
classes (Oliveira's source swaps the two names; these are the correct ones), and the macro mean
over one-vs-rest classes otherwise.
"""

from __future__ import annotations

import numpy as np
import torch

from xbench import MetricContext, MetricSpec, hookimpl


def _ovr_scores(y: np.ndarray, prob: np.ndarray, score) -> float:
    values = []
    for c in range(prob.shape[1]):
        positive = y == c
        if positive.any() and (~positive).any():
            values.append(score(positive, prob[:, c]))
    return float(np.mean(values)) if values else float("nan")


def classification(ctx: MetricContext) -> dict[str, torch.Tensor]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = ctx.labels.cpu().numpy()
    prob = ctx.probabilities.double().cpu().numpy()
    pred = prob.argmax(1)
    k = prob.shape[1]
    if k == 2:
        auroc = roc_auc_score(y, prob[:, 1]) if len(np.unique(y)) == 2 else float("nan")
        auprc = _ovr_scores(y, prob, average_precision_score)
        positives = [1]
    else:
        auroc = _ovr_scores(y, prob, roc_auc_score)
        auprc = _ovr_scores(y, prob, average_precision_score)
        positives = list(range(k))
    sens, spec = [], []
    for c in positives:
        tp = np.sum((pred == c) & (y == c))
        fn = np.sum((pred != c) & (y == c))
        tn = np.sum((pred != c) & (y != c))
        fp = np.sum((pred == c) & (y != c))
        sens.append(tp / (tp + fn) if tp + fn else np.nan)
        spec.append(tn / (tn + fp) if tn + fp else np.nan)
    recalls = [np.mean(pred[y == c] == c) for c in range(k) if np.any(y == c)]
    out = {
        "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "auroc": float(auroc), "auprc": float(auprc),
        "sensitivity": float(np.nanmean(sens)) if not np.all(np.isnan(sens)) else float("nan"),
        "specificity": float(np.nanmean(spec)) if not np.all(np.isnan(spec)) else float("nan"),
    }
    return {name: torch.tensor(value, dtype=torch.float64) for name, value in out.items()}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="classification", score=classification, category="classification", scope="model",
        values={"accuracy": True, "balanced_accuracy": True, "auroc": True, "auprc": True,
                "sensitivity": True, "specificity": True},
        description="Accuracy, balanced accuracy, macro AUROC/AUPRC, sensitivity and specificity on the test split.",
    )
