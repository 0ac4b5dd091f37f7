"""Classification and robustness metrics against scikit-learn (AUROC, AUPRC and accuracy, clean and
under corruption) and Treyer's saliency RMSE re-implemented in numpy."""

from __future__ import annotations

import numpy as np
import torch

from xbench import MetricContext, Split, TrainedModel, VerificationSpec, hookimpl, testing
from xbench.verification import max_abs_difference


def confident_logits(n: int = 400, k: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, float32 logits) of a confident, sometimes wrong model: the chosen class leads every
    other by a margin of 20–40 (85 % of the time the true class), all logits shifted by a common
    offset. Float32 softmax scores are 1.0 for nearly all of them, so only a metric that ranks by
    the exact scores matches scikit-learn on the exact log-odds."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    wrong = torch.rand(n, generator=g) < 0.15
    chosen = torch.where(wrong, (labels + torch.randint(1, k, (n,), generator=g)) % k, labels)
    logits = torch.randn(n, k, generator=g) * 3
    logits[torch.arange(n), chosen] = logits.amax(1) + 20 + 20 * torch.rand(n, generator=g)
    logits += 50 * torch.randn(n, 1, generator=g)
    return labels, logits.float()


def exact_log_odds(logits: torch.Tensor) -> np.ndarray:
    """log(p_c / (1 − p_c)) in float64, one class at a time: z_c − m − log Σ_{j≠c} exp(z_j − m)."""
    z = logits.double().numpy()
    out = np.empty_like(z)
    for c in range(z.shape[1]):
        rest = np.delete(z, c, axis=1)
        m = rest.max(1)
        out[:, c] = z[:, c] - m - np.log(np.exp(rest - m[:, None]).sum(1))
    return out


def classification_against_sklearn(spec) -> float:
    from sklearn.metrics import average_precision_score, roc_auc_score

    worst = 0.0
    for k in (2, 3):
        labels, logits = confident_logits(k=k)
        y = labels.numpy()
        ctx = MetricContext(model=None, inputs=torch.zeros(len(y), 1, 1, 1), labels=labels, logits=logits,
                            targets=labels, params={}, generator=torch.Generator(), device=torch.device("cpu"),
                            predict=None)
        out = testing.score(spec, ctx)
        exact = exact_log_odds(logits)
        aurocs = [roc_auc_score(y == c, exact[:, c]) for c in range(k)]
        auprcs = [average_precision_score(y == c, exact[:, c]) for c in range(k)]
        pairs = [(out["auroc"], aurocs[1] if k == 2 else np.mean(aurocs)), (out["auprc"], np.mean(auprcs)),
                 (out["accuracy"], np.mean(logits.argmax(1).numpy() == y))]
        pairs += [(out[f"auroc/class-{c}"], aurocs[c]) for c in range(k)]
        worst = max([worst] + [max_abs_difference(ours, theirs) for ours, theirs in pairs])
    return worst


class Confident(torch.nn.Module):
    """Logit margin z₁ − z₀ = 400·(mean(x) − ½): margins of 20–40 and more, where float32 softmax is 1.0."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(400.0))

    def forward(self, x):
        m = self.gain * (x.mean((1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(m), m], 1)


def corruption_classification_against_sklearn(spec) -> float:
    """AUC and accuracy clean and under two corruptions, and ΔAUC, against scikit-learn on the exact
    margins of the same corrupted images."""
    from sklearn.metrics import roc_auc_score

    from xbench.datasets._corruptions import corrupt
    from xbench.plugins.metrics.robustness import content_seeds

    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 2, (200,), generator=g)
    offset = (2 * labels - 1) * 0.05 + 0.04 * torch.randn(200, generator=g)
    images = (0.5 + offset[:, None, None, None] + 0.02 * torch.randn(200, 1, 16, 16, generator=g)).clamp(0, 1)
    model = TrainedModel(module=Confident().eval(), info=None, target_layers={})
    grid = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]}
    out = testing.score(spec, testing.metric_context(model, Split(images, labels)), **grid)
    y = labels.numpy()

    def auc_acc(x):
        with torch.no_grad():
            z = model.module(x)
        return roc_auc_score(y, (z[:, 1] - z[:, 0]).double().numpy()), float(np.mean(z.argmax(1).numpy() == y))

    clean_auc, clean_acc = auc_acc(images)
    worst = max(max_abs_difference(out["auc"], clean_auc), max_abs_difference(out["acc"], clean_acc))
    for c in grid["corruptions"]:
        for s in grid["severities"]:
            auc, acc = auc_acc(corrupt(images, c, s, content_seeds(images, c, s)))
            for key, want in (("auc", auc), ("acc", acc), ("delta_auc", clean_auc - auc), ("delta_acc", clean_acc - acc)):
                worst = max(worst, max_abs_difference(out[f"{key}/{c}/{s}"], want))
    return worst


def saliency_rmse_against_numpy(spec) -> float:
    """The image as its own map (so the RMSE measures the corrupted pixels): each map min-maxed to
    [0, 255] (a constant map to 0), then sqrt(mean((clean − corrupted)²)), per sample."""
    from xbench.datasets._corruptions import corrupt
    from xbench.plugins.metrics.robustness import content_seeds
    from xbench.plugins.models.small_cnn import SmallCNN

    split = testing.planted_split(12, size=32, seed=5)
    x = split.images
    torch.manual_seed(0)
    model = TrainedModel(module=SmallCNN(1, 2, width=4).eval(), info=None, target_layers={})
    grid = {"corruptions": ["gaussian_noise", "contrast", "motion_blur"], "severities": [1, 4]}
    ctx = testing.metric_context(model, split, attribution=x[:, 0], explain=lambda m, v, t: v.clone())
    out = testing.score(spec, ctx, **grid)

    def scaled(maps: np.ndarray) -> np.ndarray:
        flat = maps.reshape(len(maps), -1).astype(np.float64)
        lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
        return np.where(hi > lo, (flat - lo) / np.where(hi > lo, hi - lo, 1) * 255, 0.0)

    worst = 0.0
    for c in grid["corruptions"]:
        for s in grid["severities"]:
            xc = corrupt(x, c, s, content_seeds(x, c, s))
            want = np.sqrt(((scaled(x.numpy()) - scaled(xc.numpy())) ** 2).mean(1))
            worst = max(worst, max_abs_difference(out[f"rmse/{c}/{s}"], want))
    return worst


SAME_CORRUPTIONS = "both sides see the same corrupted images (xbench's corruptions, seeded by content)"


@hookimpl
def xbench_verifications():
    yield VerificationSpec(
        name="classification.sklearn", plugin="classification", kind="metrics", library="scikit-learn",
        reference="sklearn.metrics.roc_auc_score and average_precision_score on float64 log-odds",
        check=classification_against_sklearn, tolerance=1e-12,
        inputs="400 float32 logits of a confident, sometimes wrong model with 2 and with 3 classes (margins 20–40, "
               "where float32 softmax ties at 1.0)",
        differences="macro averages one-vs-rest over classes, the binary AUROC is class 1's; accuracy against "
                    "argmax")
    yield VerificationSpec(
        name="corruption-classification.sklearn", plugin="corruption-classification", kind="metrics",
        library="scikit-learn", reference="sklearn.metrics.roc_auc_score on the exact logit margins",
        check=corruption_classification_against_sklearn, tolerance=1e-12,
        inputs="a confident 2-class model on 200 1×16×16 images; Gaussian noise and contrast at severities 1 and 3",
        differences=SAME_CORRUPTIONS)
    yield VerificationSpec(
        name="saliency-rmse.numpy", plugin="saliency-rmse", kind="metrics", library="numpy",
        reference="Treyer's RMSE between min-max [0, 255] maps, re-implemented in numpy",
        check=saliency_rmse_against_numpy, tolerance=1e-9,
        inputs="12 planted 1×32×32 images as their own maps; Gaussian noise, contrast and motion blur at "
               "severities 1 and 4",
        differences=SAME_CORRUPTIONS + "; legacy_uint8 off (no rounding)")
