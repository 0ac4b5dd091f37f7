"""A third-party plugin whose every kind of spec fails in its own phase, for fault-isolation tests."""

import torch
from torch import nn

from xbench import DatasetSpec, FitReport, MethodSpec, MetricSpec, ModelSpec, hookimpl


class Boom(RuntimeError):
    pass


def load(params, seed):
    raise Boom("faulty dataset cannot load")


def build(info, params):
    return nn.Sequential(nn.Conv2d(info.channels, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2, info.num_classes))


def fit(module, dataset, params, ctx):
    raise Boom("faulty model cannot fit")


def explain(model, x, target, params):
    raise Boom("faulty method cannot explain")


def score(ctx):
    raise Boom("faulty metric cannot score")


def nan_method(model, x, target, params):
    """NaN maps for even-numbered samples of each batch, finite elsewhere."""
    out = torch.ones_like(x)
    out[::2] = float("nan")
    return out


def wrong_shape(ctx):
    return {"value": torch.zeros(3)}


@hookimpl
def xbench_datasets():
    yield DatasetSpec(name="faulty.data", load=load)


@hookimpl
def xbench_models():
    # declares no gradients (its Flatten module would break LRP): the plan skips gradient methods on it
    yield ModelSpec(name="faulty.model", build=build, fit=fit, provides=frozenset({"conv_layer"}))


@hookimpl
def xbench_methods():
    yield MethodSpec(name="faulty.method", explain=explain)
    yield MethodSpec(name="faulty.nan", explain=nan_method)


@hookimpl
def xbench_metrics():
    yield MetricSpec(name="faulty.metric", score=score, values={"x": True}, category="sanity")
    yield MetricSpec(name="faulty.shape", score=wrong_shape, values={"value": True}, category="sanity")


def xbench_method(self=None):  # a typo'd hook name: reported, not silently ignored
    return []
