"""Classification metrics: hand-computed confusion counts with the correct sensitivity/specificity
names (the source swapped them), macro AUROC/AUPRC, per-class value families, degenerate splits."""

from __future__ import annotations

import math

import pytest
import torch

from xbench import Dataset, MetricContext
from xbench.plugins.metrics import classification as cm

SPEC = next(iter(cm.xbench_metrics()))


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
    out = SPEC.score(ctx_for([1, 1, 1, 0, 0], torch.stack([1 - p1, p1], 1), ("round", "not-round")))
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
    assert all(SPEC.direction(name) is True for name in out)


def test_multiclass_macro_and_per_class():
    labels = [0, 1, 2, 2]
    probs = [[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]]
    out = SPEC.score(ctx_for(labels, probs))
    # predictions 0, 1, 1, 2; per class sensitivity 1, 1, 1/2; specificity 1, 2/3, 1
    assert [out[f"sensitivity/class-{c}"].item() for c in range(3)] == pytest.approx([1, 1, 0.5])
    assert [out[f"specificity/class-{c}"].item() for c in range(3)] == pytest.approx([1, 2 / 3, 1])
    assert out["sensitivity"].item() == pytest.approx(2.5 / 3)
    assert out["accuracy"].item() == pytest.approx(3 / 4)
    # one-vs-rest AUROCs: class 0: 1; class 1: .4 vs {.2,.5,.2} → 2/3; class 2: {.4,.6} vs {.1,.3} → 1
    assert out["auroc/class-1"].item() == pytest.approx(2 / 3)
    assert out["auroc"].item() == pytest.approx((1 + 2 / 3 + 1) / 3)


def test_degenerate_split_gives_nan_not_a_crash():
    out = SPEC.score(ctx_for([1, 1], [[0.2, 0.8], [0.6, 0.4]]))
    assert math.isnan(out["auroc"]) and math.isnan(out["specificity"]) and out["sensitivity"] == 0.5
    assert math.isnan(out["auroc/class-0"]) and math.isnan(out["sensitivity/class-0"])


def test_class_names_are_made_safe_facets():
    out = SPEC.score(ctx_for([0, 1], [[0.6, 0.4], [0.3, 0.7]], ("NOR/normal", "DCM dilated")))
    assert "sensitivity/NOR-normal" in out and "auroc/DCM-dilated" in out
    numeric = SPEC.score(ctx_for([0, 1], [[0.6, 0.4], [0.3, 0.7]], ("0", "1")))
    assert "sensitivity/class-0" in numeric  # never a bare number: the leaderboard would read a curve
