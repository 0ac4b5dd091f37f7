"""A third-party plugin that breaks the rules the core promises to enforce: it changes what it is
handed (weights, hooks, test images), exits, crashes, returns nothing or nonsense, brings NaN. Each
misdeed must cost only its own units, and be named for what it is."""

import torch
from torch import nn

from xbench import Dataset, DatasetSpec, FitReport, LazyArray, MethodSpec, MetricSpec, ModelSpec, Split, hookimpl


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


def negates_weights(model, x, target, params):
    """Negates every weight: each tensor keeps its norm, so a norm checksum cannot see it."""
    with torch.no_grad():
        for p in model.module.parameters():
            p.neg_()
    return x.abs()


def permutes_weights(model, x, target, params):
    """Reverses the order of the first layer's filters: every norm and sum stays the same."""
    first = next(p for p in model.module.parameters() if p.dim() > 1)
    with torch.no_grad():
        first.copy_(first.flip(0))
    return x.abs()


def swap_logits(module, inputs, output):
    return output.flip(1)


def leaves_a_hook(model, x, target, params):
    """Registers a forward hook that swaps the logits and leaves it there: every later method would
    explain the other class."""
    model.module.register_forward_hook(swap_logits)
    return x.abs()


def segfaults(model, x, target, params):
    """A method whose C code crashes the process (a null pointer read)."""
    import ctypes

    return ctypes.string_at(0)


def shuffles_test_images(ctx):
    """A model-level metric that reorders the test images in place (sums and norms unchanged): the
    sample rows would then pair another image with each label."""
    x = ctx.inputs
    x.copy_(x.flip(0))
    return {"value": torch.tensor(0.0)}


def empty_test(params, seed):
    g = torch.Generator().manual_seed(seed)
    train = Split(torch.rand(16, 1, 8, 8, generator=g), torch.arange(16) % 2)
    test = Split(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    return Dataset("hostile.empty-test", ("a", "b"), {"train": train, "val": train, "test": test})


def nan_test(params, seed, lazy=False):
    """Finite training data; a test split whose images 1 and 3 hold NaN (4 values each), as a
    tensor or as a lazy array (whose batches are only read when the cell predicts them)."""
    g = torch.Generator().manual_seed(seed)
    train = Split(torch.rand(16, 1, 8, 8, generator=g), torch.arange(16) % 2)
    images = torch.rand(6, 1, 8, 8, generator=g)
    images[[1, 3], 0, :2, :2] = float("nan")
    if lazy:
        images = LazyArray(6, (1, 8, 8), lambda idx, images=images: images[idx].clone())
    return Dataset("hostile.nan-test", ("a", "b"), {"train": train, "val": train,
                                                    "test": Split(images, torch.arange(6) % 2)})


def coarse(params, seed):
    """Images in steps of 1/256 (8-bit data): every sum of their values and of their squares is exact
    in float64, whatever the order, so a checksum of sums cannot see them reordered."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (24, 1, 8, 8), generator=g).float() / 256
    labels = torch.arange(24) % 2
    train = Split(images[:16], labels[:16])
    return Dataset("hostile.coarse", ("a", "b"), {"train": train, "val": train, "test": Split(images[16:], labels[16:])})


class Diverges(nn.Module):
    """A model whose training 'diverges': its fit leaves NaN in the head's bias."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2, 3, padding=1)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def diverge(module, data, params, ctx):
    with torch.no_grad():
        module.head.bias.fill_(float("nan"))
    return FitReport()


def edits_data(module, data, params, ctx):
    """A fit that normalises the training images in place: the next model would train on other data."""
    data.train.images.mul_(0.5)
    return FitReport()


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
    yield DatasetSpec(name="hostile.nan-test", load=nan_test)
    yield DatasetSpec(name="hostile.coarse", load=coarse)
    yield DatasetSpec(name="hostile.nan-lazy-test", load=lambda params, seed: nan_test(params, seed, lazy=True))


@hookimpl
def xbench_models():
    yield ModelSpec(name="hostile.one-logit", build=lambda info, params: OneLogit(info.channels),
                    fit=lambda module, data, params, ctx: FitReport())
    yield ModelSpec(name="hostile.diverges", build=lambda info, params: Diverges(info.channels), fit=diverge)
    yield ModelSpec(name="hostile.edits-data", build=lambda info, params: Diverges(info.channels), fit=edits_data)


@hookimpl
def xbench_methods():
    yield MethodSpec(name="hostile.weights", explain=edits_weights, requires=frozenset({"gradients"}))
    yield MethodSpec(name="hostile.negate", explain=negates_weights)
    yield MethodSpec(name="hostile.permute", explain=permutes_weights)
    yield MethodSpec(name="hostile.hook", explain=leaves_a_hook)
    yield MethodSpec(name="hostile.segfault", explain=segfaults)


@hookimpl
def xbench_metrics():
    for name, fn in (("clamp", clamp_in_place), ("exit", exits), ("interrupt", interrupts), ("empty", returns_nothing),
                     ("complex", returns_complex), ("nan", returns_nan)):
        yield MetricSpec(name=f"hostile.{name}", score=fn, values={"value": None}, category="sanity")
    yield MetricSpec(name="hostile.shuffle", score=shuffles_test_images, values={"value": None}, category="sanity",
                     scope="model")


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
