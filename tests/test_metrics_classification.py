"""Classification metrics: hand-computed confusion counts with the correct sensitivity/specificity
names (the source swapped them), macro AUROC/AUPRC, per-class value families, degenerate splits.
(Against scikit-learn: plugins/verifications/metrics_classification.py.)"""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from xbench import Dataset, MetricContext, testing
from xbench.plugins.metrics import classification as cm
from xbench.plugins.verifications.metrics_classification import confident_logits, exact_log_odds

SPEC = next(s for s in cm.xbench_metrics() if s.name == "classification")


def ctx_for(labels, probs, class_names=None):
    labels = torch.as_tensor(labels)
    logits = torch.as_tensor(probs, dtype=torch.float64).log()
    dataset = Dataset("d", tuple(class_names), {}) if class_names else None
    return MetricContext(model=None, inputs=torch.zeros(len(labels), 1, 1, 1), labels=labels, logits=logits,
                         targets=labels, params={}, generator=torch.Generator(), device=torch.device("cpu"),
                         predict=None, dataset=dataset)


def test_binary_hand_computed_with_correct_names():
    # labels 1,1,1,0,0 ; P(class 1) = .9,.8,.3,.6,.2 → predictions 1,1,0,1,0
    # class 1 positive: TP 2, FN 1, TN 1, FP 1 → sensitivity 2/3, specificity 1/2, accuracy 3/5
    # AUROC: positives {.9,.8,.3} vs negatives {.6,.2}: pairs won 2+2+1 = 5 of 6
    p1 = torch.tensor([0.9, 0.8, 0.3, 0.6, 0.2], dtype=torch.float64)
    out = testing.score(SPEC, ctx_for([1, 1, 1, 0, 0], torch.stack([1 - p1, p1], 1), ("round", "not-round")))
    assert out["accuracy"].item() == pytest.approx(3 / 5)
    assert out["sensitivity"].item() == pytest.approx(2 / 3)
    assert out["specificity"].item() == pytest.approx(1 / 2)
    assert out["balanced_accuracy"].item() == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["auroc"].item() == pytest.approx(5 / 6)
    # AP of class 1 (ranking .9 .8 .6 .3 .2 → hits at 1, 2, 4): (1 + 1 + 3/4)/3; of class 0 (scores
    # .8 .7 .4 .2 .1 for samples 4, 2, 3, 1, 0 → hits at 1, 3): (1 + 2/3)/2; AUPRC = their mean
    ap1, ap0 = (1 + 1 + 3 / 4) / 3, (1 + 2 / 3) / 2
    assert out["auprc"].item() == pytest.approx((ap1 + ap0) / 2)
    # per class, named by the dataset's class names; class 0's sensitivity is class 1's specificity
    assert out["sensitivity/not-round"].item() == pytest.approx(2 / 3)
    assert out["sensitivity/round"].item() == pytest.approx(1 / 2)
    assert out["specificity/round"].item() == pytest.approx(2 / 3)
    assert out["auprc/not-round"].item() == pytest.approx(ap1)
    assert out["auroc/round"].item() == pytest.approx(5 / 6)
    assert all(SPEC.direction(name) is True for name in SPEC.values)  # every value and family: higher is better


def test_multiclass_macro_and_per_class():
    labels = [0, 1, 2, 2]
    probs = [[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]]
    out = testing.score(SPEC, ctx_for(labels, probs))
    # predictions 0, 1, 1, 2; per class sensitivity 1, 1, 1/2; specificity 1, 2/3, 1
    assert [out[f"sensitivity/class-{c}"].item() for c in range(3)] == pytest.approx([1, 1, 0.5])
    assert [out[f"specificity/class-{c}"].item() for c in range(3)] == pytest.approx([1, 2 / 3, 1])
    assert out["sensitivity"].item() == pytest.approx(2.5 / 3)
    assert out["accuracy"].item() == pytest.approx(3 / 4)
    # one-vs-rest AUROCs: class 0: 1; class 1: .4 vs {.2,.5,.2} → 2/3; class 2: {.4,.6} vs {.1,.3} → 1
    assert out["auroc/class-1"].item() == pytest.approx(2 / 3)
    assert out["auroc"].item() == pytest.approx((1 + 2 / 3 + 1) / 3)


def test_degenerate_split_gives_nan_not_a_crash():
    out = testing.score(SPEC, ctx_for([1, 1], [[0.2, 0.8], [0.6, 0.4]]))
    assert math.isnan(out["auroc"]) and math.isnan(out["specificity"]) and out["sensitivity"] == 0.5
    assert math.isnan(out["auroc/class-0"]) and math.isnan(out["sensitivity/class-0"])


def test_class_names_are_made_safe_facets():
    out = testing.score(SPEC, ctx_for([0, 1], [[0.6, 0.4], [0.3, 0.7]], ("NOR/normal", "DCM dilated")))
    assert "sensitivity/NOR-normal" in out and "auroc/DCM-dilated" in out
    numeric = testing.score(SPEC, ctx_for([0, 1], [[0.6, 0.4], [0.3, 0.7]], ("0", "1")))
    assert "sensitivity/class-0" in numeric  # never a bare number: the leaderboard would read a curve


@pytest.mark.parametrize("k", [2, 3])
def test_the_checks_confident_model_ties_in_float32(k):
    """The inputs of the check against scikit-learn (classification.sklearn) are the hard kind: float32
    softmax scores tie at 1.0, so ranking by them gives other AUROCs than the exact log-odds."""
    from sklearn.metrics import roc_auc_score

    labels, logits = confident_logits(k=k)
    y, float32, exact = labels.numpy(), logits.softmax(1).numpy(), exact_log_odds(logits)
    assert (float32.max(1) == 1.0).mean() > 0.9
    tied = [roc_auc_score(y == c, float32[:, c]) for c in range(k)]
    right = [roc_auc_score(y == c, exact[:, c]) for c in range(k)]
    assert abs(np.mean(tied) - np.mean(right)) > 1e-3
    out = testing.score(SPEC, MetricContext(model=None, inputs=torch.zeros(len(y), 1, 1, 1), labels=labels,
                                            logits=logits, targets=labels, params={}, generator=torch.Generator(),
                                            device=torch.device("cpu"), predict=None))
    assert out["auroc"].item() == pytest.approx(right[1] if k == 2 else np.mean(right), abs=1e-12)


def test_log_odds_are_monotone_in_the_softmax_and_exact_for_two_classes():
    z = torch.tensor([[0.0, 3.0], [1.0, -2.0], [5.0, 5.0]], dtype=torch.float64)
    lo = cm.log_odds(z.numpy())
    np.testing.assert_array_equal(lo, torch.stack([z[:, 0] - z[:, 1], z[:, 1] - z[:, 0]], 1).numpy())
    z3 = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    p = z3.softmax(1).numpy()
    np.testing.assert_allclose(cm.log_odds(z3.numpy()), np.log(p / (1 - p)), rtol=1e-10, atol=1e-10)


def _ranked_exactly(logits: np.ndarray) -> np.ndarray:
    """Each class's one-vs-rest log-odds to 50 digits (mpmath), as dense ranks: equal
    probabilities get equal ranks, so ties are ties whatever the floating point."""
    import mpmath

    mpmath.mp.dps = 50
    n, k = logits.shape
    exact = [[mpmath.log(mpmath.exp(int(z[c])) / sum(mpmath.exp(int(z[j])) for j in range(k) if j != c))
              for c in range(k)] for z in logits]
    out = np.empty((n, k))
    for c in range(k):
        keys = [mpmath.nstr(row[c], 40) for row in exact]
        order = {key: i for i, key in enumerate(sorted(set(keys), key=lambda t: mpmath.mpf(t)))}
        out[:, c] = [order[key] for key in keys]
    return out


@pytest.mark.parametrize("k", [2, 3, 4])
def test_auroc_keeps_ties_of_logits_that_differ_by_a_constant(k):
    """Tied integer logits shifted per sample by a constant have the same probabilities: AUROC and
    AUPRC rank them as ties (as an exact computation does), whatever the shift."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    g = np.random.default_rng(k)
    n = 120
    base = g.integers(-3, 4, (n, k)).astype(np.float32)  # few distinct vectors: many tied probabilities
    labels = g.integers(0, k, n)
    shifted = base + g.integers(-40, 41, (n, 1)).astype(np.float32) * 4  # exact in float32
    ranks = _ranked_exactly(base)
    aurocs = [roc_auc_score(labels == c, ranks[:, c]) for c in range(k)]
    auprcs = [average_precision_score(labels == c, ranks[:, c]) for c in range(k)]
    reference = aurocs[1] if k == 2 else float(np.mean(aurocs))
    for z in (base, shifted):
        per = cm.per_class(labels, z)
        assert cm.auc_and_accuracy(labels, z)[0] == reference
        assert per["auroc"].tolist() == aurocs and per["auprc"].tolist() == auprcs
    lo_base, lo_shifted = cm.log_odds(base), cm.log_odds(shifted)
    np.testing.assert_array_equal(lo_base, lo_shifted)
    for c in range(k):  # equal probability ⇔ equal score
        same = ranks[:, c][:, None] == ranks[:, c][None, :]
        assert np.array_equal(same, lo_base[:, c][:, None] == lo_base[:, c][None, :])


def test_model_fit_records_the_explanation_statistics_a_fit_report_holds():
    """A model that explains itself reports val_explanation_* in its fit report; model-fit carries
    them into the rows (declared values, so the results accept them), and other models add none."""
    from xbench import DatasetInfo, FitReport, TrainedModel

    spec = next(s for s in cm.xbench_metrics() if s.name == "model-fit")
    split = testing.planted_split(8, size=8)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    info = DatasetInfo("d", 1, 8, 8, ("a", "b"))
    stats = {f"val_explanation_{k}": 0.1 * i for i, k in enumerate(cm.EXPLANATION_FIT, 1)}
    report = FitReport(history=[{"epoch": 1.0}], metrics={"val_accuracy": 0.75, **stats, "val_explanation_other": 9.0})
    out = testing.score(spec, testing.metric_context(TrainedModel(module, info, {}, report=report), split))
    assert {k: float(v) for k, v in out.items() if k.startswith("val_explanation_")} == pytest.approx(stats)
    assert float(out["val_accuracy"]) == 0.75
    assert spec.values["val_explanation_focus"] is True and spec.values["val_explanation_mean"] is None
    plain = FitReport(history=[{"epoch": 1.0}], metrics={"val_accuracy": 0.75})
    out = testing.score(spec, testing.metric_context(TrainedModel(module, info, {}, report=plain), split))
    assert set(out) == {"test_accuracy", "val_accuracy", "chance", "above_chance"}
