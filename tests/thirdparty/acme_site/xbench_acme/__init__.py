"""A sample third-party xbench plugin: one dataset, one method, one metric and its cross-check.

It is installed the way any package is: its ``.dist-info`` declares the entry point
``[xbench] acme = xbench_acme``, and xbench finds it through importlib.metadata.
"""

import numpy as np
import torch
from torch import nn

from xbench import DatasetSpec, MethodSpec, MetricSpec, TrainedModel, VerificationSpec, hookimpl, testing


def load(params, seed):
    return testing.planted_dataset(n_train=params["n_train"], n_val=params["n_test"], n_test=params["n_test"],
                                   size=params["size"], seed=seed)


def input_times_gradient_sign(model, x, target, params):
    """x · sign(∂y_t/∂x): a deliberately simple method."""
    x = x.detach().requires_grad_(True)
    grad, = torch.autograd.grad(model.module(x).gather(1, target[:, None]).sum(), x)
    return x.detach() * grad.sign()


def mass_in_mask(ctx):
    a = ctx.attribution.clamp(min=0)
    total = a.flatten(1).sum(1)
    inside = (a * ctx.mask).flatten(1).sum(1)
    ctx.flag(total == 0, "all-zero attribution")
    return {"mass": torch.where(total > 0, inside / total.clamp(min=1e-12), torch.zeros_like(total))}


@hookimpl
def xbench_datasets():
    yield DatasetSpec(name="acme.planted", load=load, version="1", params={"n_train": 256, "n_test": 64, "size": 24},
                      provides=frozenset({"mask", "grayscale"}), description="Planted squares and rings (acme).")


@hookimpl
def xbench_methods():
    yield MethodSpec(name="acme.x-sign-grad", explain=input_times_gradient_sign, requires=frozenset({"gradients"}),
                     description="Input times the sign of the gradient (acme).")


@hookimpl
def xbench_metrics():
    yield MetricSpec(name="acme.mass", score=mass_in_mask, values={"mass": True}, category="localisation",
                     requires=frozenset({"mask"}), description="Share of positive attribution inside the mask (acme).")


def mass_against_numpy(spec):
    """The metric on 16 random maps over planted masks against the same share computed in numpy."""
    data = testing.planted_dataset(n_train=8, n_val=8, n_test=16, size=16)
    model = TrainedModel(nn.Sequential(nn.Flatten(), nn.Linear(256, 2)), data.describe(), {})
    a = torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = testing.score(spec, testing.metric_context(model, data.test, attribution=a))["mass"]
    m = data.test.masks.numpy()
    theirs = (a.numpy() * m).sum((1, 2)) / a.numpy().sum((1, 2))
    return float(np.abs(ours.numpy() - theirs).max())


@hookimpl
def xbench_verifications():
    yield VerificationSpec(name="acme.mass.numpy", plugin="acme.mass", kind="metrics",
                           reference="the share of the map inside the mask, in numpy", library="numpy",
                           check=mass_against_numpy, tolerance=1e-6, inputs="16 random 16×16 maps on planted masks")
