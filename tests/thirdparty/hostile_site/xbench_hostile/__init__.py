"""A third-party plugin that breaks the rules the core promises to enforce: it changes what it is
handed, exits, returns nothing or nonsense. Each misdeed must cost only its own units."""

import torch
from torch import nn

from xbench import Dataset, DatasetSpec, FitReport, MethodSpec, MetricSpec, ModelSpec, Split, hookimpl


def clamp_in_place(ctx):
    """Zeroes every map in place (the defect that once turned another metric's mass into the mask area)."""
    ctx.attribution.mul_(0.0)
    return {"value": torch.zeros(len(ctx.inputs))}


def exits(ctx):
    raise SystemExit(3)


def interrupts(ctx):
    raise KeyboardInterrupt("a plugin's own interrupt")


def returns_nothing(ctx):
    return {}


def returns_complex(ctx):
    return {"value": torch.zeros(len(ctx.inputs), dtype=torch.complex64)}


def returns_nan(ctx):
    return {"value": torch.full((len(ctx.inputs),), float("nan"))}


def edits_weights(model, x, target, params):
    """A 'method' that perturbs the model it explains: every later method would explain another model."""
    with torch.no_grad():
        for p in model.module.parameters():
            p.add_(1.0)
    return x.abs()


def empty_test(params, seed):
    g = torch.Generator().manual_seed(seed)
    train = Split(torch.rand(16, 1, 8, 8, generator=g), torch.arange(16) % 2)
    test = Split(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    return Dataset("hostile.empty-test", ("a", "b"), {"train": train, "val": train, "test": test})


class OneLogit(nn.Module):
    """Returns one logit per image for a two-class dataset."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


@hookimpl
def xbench_datasets():
    yield DatasetSpec(name="hostile.empty-test", load=empty_test)


@hookimpl
def xbench_models():
    yield ModelSpec(name="hostile.one-logit", build=lambda info, params: OneLogit(info.channels),
                    fit=lambda module, data, params, ctx: FitReport())


@hookimpl
def xbench_methods():
    yield MethodSpec(name="hostile.weights", explain=edits_weights, requires=frozenset({"gradients"}))


@hookimpl
def xbench_metrics():
    for name, fn in (("clamp", clamp_in_place), ("exit", exits), ("interrupt", interrupts), ("empty", returns_nothing),
                     ("complex", returns_complex), ("nan", returns_nan)):
        yield MetricSpec(name=f"hostile.{name}", score=fn, values={"value": None}, category="sanity")


class CrashAfterFirst:
    """An executor that runs the first cell and then fails itself: xbench crashing mid-run."""

    def __init__(self, options):
        from xbench.obtain import Worker

        self.worker = Worker(options["registry"])

    def run(self, jobs, work, deliver):
        for i, job in enumerate(jobs):
            if i == 1:
                raise RuntimeError("the executor crashed")
            work(job, deliver, self.worker)

    def close(self):
        pass


@hookimpl
def xbench_executors():
    from xbench import ExecutorSpec

    yield ExecutorSpec(name="hostile.crash", create=CrashAfterFirst)
