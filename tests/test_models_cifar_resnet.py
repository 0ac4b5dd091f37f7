"""CIFAR-style ResNet-18 (Treyer): architecture, target layers, attribution-readiness, training."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from xbench import FitContext, testing
from xbench.plugins.models import cifar_resnet
from xbench.specs import defaults

CPU = torch.device("cpu")


def test_architecture_is_cifar_resnet18():
    info = testing.planted_dataset(n_train=8, n_val=8, n_test=8, size=28).describe()
    model = cifar_resnet.build(info, defaults(cifar_resnet.PARAMS))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [b.conv1.stride[0] for b in blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert model.fc.in_features == 512 and model.fc.out_features == 2
    # the well-known parameter count of CIFAR-10 ResNet-18 (3 channels, 10 classes)
    cifar10 = cifar_resnet.CifarResNet18(3, 10)
    assert sum(p.numel() for p in cifar10.parameters()) == 11_173_962
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    x = torch.rand(2, 1, 28, 28)
    assert model(x).shape == (2, 2)


def test_layers_are_the_eight_block_conv2_shallow_to_deep():
    model = cifar_resnet.CifarResNet18(3, 4, width=8)
    names = list(cifar_resnet.layers(model))
    assert names == [f"layer{i}.{j}.conv2" for i in range(1, 5) for j in (0, 1)]
    assert all(isinstance(m, nn.Conv2d) for m in cifar_resnet.layers(model).values())


def test_every_relu_module_runs_once_per_forward_so_hook_methods_work():
    from captum.attr import DeepLift, GuidedBackprop

    torch.manual_seed(0)
    model = cifar_resnet.CifarResNet18(1, 2, width=4).eval()
    calls: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    x = torch.rand(3, 1, 16, 16)
    model(x)
    for h in hooks:
        h.remove()
    assert set(calls.values()) == {1} and len(calls) == 17
    target = torch.tensor([0, 1, 0])
    for method in (DeepLift(model), GuidedBackprop(model)):
        attribution = method.attribute(x.clone().requires_grad_(), target=target)
        assert attribution.shape == x.shape and torch.isfinite(attribution).all()


def test_trains_from_scratch_and_beats_chance():
    data = testing.planted_dataset(n_train=384, n_val=96, n_test=96, size=24)
    params = {**defaults(cifar_resnet.PARAMS), "width": 8, "epochs": 4, "lr": 0.05, "batch_size": 32}
    torch.manual_seed(0)
    model = cifar_resnet.build(data.describe(), params)
    report = cifar_resnet.fit(model, data, params, FitContext(0, CPU, ""))
    model.eval()
    with torch.no_grad():
        accuracy = (model(data.test.images).argmax(1) == data.test.labels).float().mean().item()
    assert accuracy > 0.85, report.history
    assert report.metrics["val_accuracy"] > 0.85


def test_legacy_train_as_val_monitors_the_training_set():
    data = testing.planted_dataset(n_train=64, n_val=32, n_test=32, size=16)
    params = {**defaults(cifar_resnet.PARAMS), "width": 4, "epochs": 1, "batch_size": 64, "legacy_train_as_val": True}
    torch.manual_seed(0)
    model = cifar_resnet.build(data.describe(), params)
    report = cifar_resnet.fit(model, data, params, FitContext(0, CPU, ""))
    from xbench.plugins.models._training import _resident, evaluate

    on_train = evaluate(model, _resident(data.train, CPU), 64, CPU)
    assert report.history[0]["val_loss"] == pytest.approx(on_train["loss"], rel=1e-5)
