"""The shared training loop: divergence stops the cell, selection rules decide the kept state,
small-cnn still trains."""

from __future__ import annotations

import pytest
import torch

from xbench import FitContext, testing
from xbench.plugins.models._training import TrainingDiverged, evaluate, fit_classifier, _resident

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def planted():
    return testing.planted_dataset(n_train=256, n_val=64, n_test=64, size=24)


def _model(seed=0):
    from xbench.plugins.models.small_cnn import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(1, 2, 4)


def test_nan_loss_raises_training_diverged(planted):
    module = _model()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)

    def nan_step(m, batch):
        return m(batch["x"]).sum() * float("nan")

    with pytest.raises(TrainingDiverged, match=r"diverged.*epoch 1, batch 1.*other cells go on"):
        fit_classifier(module, planted.train, planted.val, FitContext(0, CPU, ""), epochs=2, optimizer=optimizer,
                       step=nan_step, name="toy")


def test_custom_selector_decides_the_kept_state_and_stop_rule_ends_training(planted):
    module = _model()
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    first_only = lambda record, best: best is None  # noqa: E731
    report = fit_classifier(module, planted.train, planted.val, FitContext(0, CPU, ""), epochs=5,
                            optimizer=optimizer, select=first_only, stop=lambda history: len(history) == 3)
    assert report.metrics["epochs"] == 3 and report.metrics["best_epoch"] == 1
    assert all("train_accuracy" in h for h in report.history)
    # the module really holds epoch 1's weights: its validation loss is epoch 1's, not epoch 3's
    val = evaluate(module, _resident(planted.val, CPU), 64, CPU)
    assert val["loss"] == pytest.approx(report.history[0]["val_loss"], rel=1e-5)
    assert report.history[2]["val_loss"] != pytest.approx(report.history[0]["val_loss"], rel=1e-3)


def test_min_delta_and_patience_stop_early(planted):
    module = _model()
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    report = fit_classifier(module, planted.train, planted.val, FitContext(0, CPU, ""), epochs=6,
                            optimizer=optimizer, patience=1, min_delta=1e9)
    # nothing can improve by 1e9: the first epoch is kept and one epoch later training stops
    assert report.metrics["epochs"] == 2 and report.metrics["best_epoch"] == 1


def test_small_cnn_still_trains():
    data = testing.planted_dataset(n_train=512, n_val=64, n_test=64, size=24)
    model = testing.train_small_cnn(data, epochs=6)
    x, y = data.test.images, data.test.labels
    with torch.no_grad():
        accuracy = (model.module(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9
