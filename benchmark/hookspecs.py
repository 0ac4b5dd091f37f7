"""The hooks a plugin implements. Every hook yields typed spec objects (see :mod:`xbench.specs`).

A third-party package registers a module under the entry-point group ``xbench``::

    [project.entry-points.xbench]
    acme = "xbench_acme"

and implements any of the hooks below with ``@xbench.hookimpl``. Built-in plugins use exactly
the same hooks.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from .specs import SPEC_TYPES, DataSource, DatasetSpec, ExecutorSpec, MethodSpec, MetricSpec, ModelSpec, \
    VerificationSpec

PROJECT = "xbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def xbench_datasets() -> Iterable[DatasetSpec]:
    """Yield the datasets this plugin provides.

    Example::

        import torch
        from xbench import hookimpl, Dataset, DatasetSpec, Split

        def load(params, seed):
            g = torch.Generator().manual_seed(seed)
            x = torch.rand(8, 1, 16, 16, generator=g)
            y = torch.arange(8) % 2
            split = Split(images=x, labels=y, masks=x[:, 0] > 0.5)
            return Dataset("acme.noise", ("a", "b"), {"train": split, "val": split, "test": split})

        @hookimpl
        def xbench_datasets():
            yield DatasetSpec(name="acme.noise", load=load, provides=frozenset({"mask"}))
    """
    yield from ()


@hookspec
def xbench_models() -> Iterable[ModelSpec]:
    """Yield the models this plugin provides.

    Example::

        from torch import nn
        from xbench import hookimpl, FitReport, ModelSpec

        def build(info, params):
            return nn.Sequential(nn.Conv2d(info.channels, 4, 3), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, info.num_classes))

        @hookimpl
        def xbench_models():
            yield ModelSpec(name="acme.tiny", build=build, fit=lambda m, d, p, ctx: FitReport())
    """
    yield from ()


@hookspec
def xbench_methods() -> Iterable[MethodSpec]:
    """Yield the attribution methods this plugin provides.

    Example::

        import torch
        from xbench import hookimpl, MethodSpec

        def explain(model, x, target, params):
            x = x.detach().requires_grad_(True)
            model.module(x).gather(1, target[:, None]).sum().backward()
            return x.grad.abs()

        @hookimpl
        def xbench_methods():
            yield MethodSpec(name="acme.abs-grad", explain=explain)
    """
    yield from ()


@hookspec
def xbench_metrics() -> Iterable[MetricSpec]:
    """Yield the metrics this plugin provides.

    Example::

        from xbench import hookimpl, MetricSpec

        def score(ctx):
            a = ctx.attribution.clamp(min=0)
            inside = (a * ctx.mask).flatten(1).sum(1)
            return {"mass": inside / a.flatten(1).sum(1).clamp(min=1e-12)}

        @hookimpl
        def xbench_metrics():
            yield MetricSpec(name="acme.mass", score=score, values={"mass": True},
                             category="localisation", requires=frozenset({"mask"}))
    """
    yield from ()


@hookspec
def xbench_executors() -> Iterable[ExecutorSpec]:
    """Yield executors that run cells somewhere (in process, on a cluster).

    Example::

        from xbench import hookimpl, ExecutorSpec

        from xbench.obtain import Worker

        class Serial:
            def __init__(self, options):
                self.worker = Worker(options["registry"])  # this process's registry and caches
            def run(self, jobs, work, deliver):
                for job in jobs:
                    work(job, deliver, self.worker)
            def close(self):
                pass

        @hookimpl
        def xbench_executors():
            yield ExecutorSpec(name="acme.serial", create=Serial)
    """
    yield from ()


@hookspec
def xbench_verifications() -> Iterable[VerificationSpec]:
    """Yield cross-checks of methods or metrics (yours or any installed one) against independent
    implementations: ``xbench verify`` runs them and the leaderboard shows the verdict beside the
    plugin. A check gets the installed spec and returns the largest absolute difference.

    Example::

        import numpy as np
        import torch
        from torch import nn
        from xbench import TrainedModel, VerificationSpec, hookimpl, testing

        def against_numpy(spec):
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
                                   check=against_numpy, tolerance=1e-6,
                                   inputs="16 random 16×16 maps on planted masks")
    """
    yield from ()


@hookspec
def xbench_data_sources() -> Iterable[DataSource]:
    """Yield the real data and weight files this plugin reads: what each is, its licence, where
    to download it and its published checksum (or, behind terms of access, the steps). The core
    downloads, verifies and locates them (``xbench data``; :mod:`xbench.sources`).

    Example::

        from xbench import hookimpl, DataSource, RemoteFile

        @hookimpl
        def xbench_data_sources():
            yield DataSource(
                name="acme:scans", description="ACME scans, 2-D, 64 px", licence="CC BY 4.0",
                folder="acme", env="ACME_DIR",
                files=(RemoteFile("scans.npz", "https://example.org/scans.npz", "md5:" + "0" * 32, 1234),))

    The plugin then reads ``xbench.sources.file_path(source)``.
    """
    yield from ()


HOOKS = {kind: f"xbench_{kind}" for kind in SPEC_TYPES}
"""The hook of each kind."""
