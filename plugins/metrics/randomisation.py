"""Sanity checks by randomisation: does the explanation depend on what the model learned?

- ``mprt``: model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018). Re-initialise the model's layers and re-explain the same inputs for the same class;
  compare each explanation with the trained model's by Spearman rank correlation of the absolute
  maps and by SSIM. An explanation that stays the same when the weights are destroyed does not
  depend on them, so it cannot explain what the model learned: **low similarity passes**.
- ``smprt``: smooth MPRT (Hedström et al., "Sanity Checks Revisited: An Exploration to Repair the
  Model Parameter Randomisation Test", XAI in Action workshop, NeurIPS 2023): the same, with every
  explanation (trained and randomised) first denoised by averaging it over ``samples`` noisy copies
  of the input, so that the gradient noise which a randomised network also produces is not mistaken
  for a change of the explanation. **Low similarity passes.**
- ``emprt``: efficient MPRT (Hedström et al. 2023): the relative rise in explanation complexity,
  (H(ê_random) − H(ê)) / H(ê), from the trained to the fully randomised model, with H the discrete
  entropy of a histogram of the absolute map. A faithful explanation of a random network is noisier
  than the trained model's: **a rise above 0 (``ratio`` above 1) passes; higher is better.**
- ``random-logit``: random logit test (Sixt et al., "When Explanations Lie: Why Many Modified BP
  Attributions Fail", ICML 2020): explain a random other class, drawn uniformly from the K − 1
  classes that are not the explained one, and compare with the explanation of the explained class
  (SSIM, and Spearman). A class-insensitive explanation (a constant map, an edge filter, a
  class-agnostic in-model explainer) scores 1: **low similarity passes.**

These are necessary conditions, not sufficient ones: a random map "passes" every one of them.
Read them beside the ground-truth metrics: a method that localises well but keeps similarity near 1
here highlights what is in the image, not what the model uses.

**Which layers, in which order.** A *layer* is every module that directly owns parameters (Conv,
Linear, normalisation layers, …) and takes part in the forward pass; their order is the order in
which they first run in a forward pass of one input (recorded with forward hooks on the copy), so
depth 1 is the layer the input meets first and depth L the output layer. Values of a family are
indexed by that depth d (``spearman/<d>``, ``ssim/<d>``) in every mode:

- ``cascade`` (Adebayo's cascading randomisation, "top-down"): depth d is the model with layers
  d..L re-initialised, i.e. from the output layer down to layer d; depth 1 is the fully randomised
  network. Read the curve from d = L (only the output layer random) to d = 1.
- ``bottom-up`` (Quantus' ``bottom_up``, which Hedström et al. recommend): layers 1..d re-initialised;
  depth L is the fully randomised network.
- ``independent`` (Adebayo's independent randomisation): layer d alone re-initialised.

The headline value (``spearman``, ``ssim``) is the similarity with the fully randomised network in
the ``cascade`` and ``bottom-up`` modes (what Hedström et al. compare) and the mean over the layers
in ``independent`` mode (no network is fully random there). ``curve = false`` skips the per-layer
family and explains only the fully randomised network: one explanation per batch instead of L.

**Re-initialisation.** Each layer is re-initialised by its own ``reset_parameters()`` (PyTorch's
default scheme: Conv/Linear weights Kaiming-uniform with a = √5, biases U(±1/√fan_in); normalisation
layers get weight 1, bias 0 and fresh running statistics, exactly as Quantus does), under a seed of
its own, drawn for depth d from a CPU generator seeded with the param ``seed``. A module without
``reset_parameters`` gets each of its own parameters drawn from N(0, s²), s the standard deviation of
the trained values. So the randomised network is the same for every batch, method, mode and unit
of a run (methods are compared on one random network, and results do not depend on the batch size),
and layer d's random weights are the same in all three modes. The global RNG is left as it was.

The trained model is never touched: randomisation happens on one ``copy.deepcopy`` of the module per
batch, wrapped in a new :class:`~xbench.TrainedModel` whose ``target_layers`` (for CAMs) are the
copy's layers of the same names and whose in-model explainer is rebound to the copy. The copy is
randomised progressively (cascade, bottom-up) or one layer at a time and restored (independent), so
memory is one extra model whatever L is. The trained model's explanation is always the cell's
``ctx.attribution`` (``ctx.raw_attribution`` for sMPRT's clean sample): it is never re-explained.

**Similarity measures** (both per sample, batched on the device, float64):

- Spearman: the Pearson correlation of the average ranks (ties share their mean rank, as
  ``scipy.stats.spearmanr``) of the absolute maps. Undefined (NaN, flagged) when a map is constant.
- SSIM (Wang et al. 2004) of the absolute maps each scaled to [0, 1] by its maximum (as Adebayo et
  al.'s ``abs_grayscale_norm`` and Quantus' ``normalise_by_max`` scale them; an all-zero map stays
  zero), so that SSIM compares structure and not scale, with data range 1, a 7×7 uniform window
  (the largest odd window ≤ the map's sides when it is smaller), sample covariances (×w²/(w²−1)),
  C1 = (0.01)², C2 = (0.03)², averaged over the windows that lie inside the map: exactly
  ``skimage.metrics.structural_similarity(a, b, data_range=1)`` with its defaults. Two identical
  maps, constant ones included, score 1.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from xbench import Family, MetricContext, MetricSpec, Param, TrainedModel, hookimpl
from xbench.attribution import reduce_attribution
from xbench.errors import DataError, UsageError

from ._common import constant_maps, defined

MODES = ("cascade", "bottom-up", "independent")
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


# ----------------------------------------------------------------------------- similarity

def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Per row of ``v`` (N, P), the 1-based ranks with ties given their mean rank (float64), as
    ``scipy.stats.rankdata(method="average")``: one sort, then each tie group's first and last
    sorted position by a running max / min."""
    v = v.double()
    n, p = v.shape
    s, order = torch.sort(v, dim=1, stable=True)
    pos = torch.arange(p, device=v.device, dtype=torch.float64).expand(n, p)
    starts = torch.ones_like(s, dtype=torch.bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(1).values
    last = torch.where(ends, pos, torch.full_like(pos, p - 1)).flip(1).cummin(1).values.flip(1)
    return torch.empty_like(s).scatter_(1, order, (first + last) / 2 + 1)


def _centred_ranks(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = average_ranks(a.flatten(1))
    r = r - r.mean(1, keepdim=True)
    return r, r.norm(dim=1)


def _correlation(ra: torch.Tensor, na: torch.Tensor, rb: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    den = na * nb
    r = (ra * rb).sum(1) / den.clamp(min=torch.finfo(den.dtype).tiny)
    return torch.where(den > 0, r.clamp(-1, 1), torch.full_like(r, float("nan")))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (N, …) → (N,); NaN where a map is constant."""
    return _correlation(*_centred_ranks(a), *_centred_ranks(b))


def max_normalised(a: torch.Tensor) -> torch.Tensor:
    """|a| / max|a| per map (N, …), in [0, 1]; an all-zero map stays zero."""
    a = a.double().abs()
    peak = a.flatten(1).amax(1).view(-1, *([1] * (a.dim() - 1)))
    return torch.where(peak > 0, a / peak.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(a))


def _ssim_window(shape: torch.Size, window: int) -> int:
    h, w = shape[-2:]
    win = min(int(window), h, w)
    return win - (1 - win % 2)  # odd


def _pool(t: torch.Tensor, win: int) -> torch.Tensor:
    return F.avg_pool2d(t, win, stride=1)  # the means over the windows that lie inside the map


def _ssim_stats(a: torch.Tensor, win: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = max_normalised(a)[:, None]
    return x, _pool(x, win), _pool(x * x, win)


def _ssim(stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor], b: torch.Tensor, win: int) -> torch.Tensor:
    x, ux, uxx = stats
    y = max_normalised(b)[:, None]
    uy, uyy, uxy = _pool(torch.cat([y, y * y, x * y], 1), win).unbind(1)
    ux, uxx = ux[:, 0], uxx[:, 0]
    cov = win * win / (win * win - 1) if win > 1 else 1.0
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = SSIM_WINDOW) -> torch.Tensor:
    """SSIM of each pair of maps (N, H, W) → (N,), on the max-normalised absolute maps (see the
    module docstring: skimage's ``structural_similarity(data_range=1)`` with its defaults)."""
    win = _ssim_window(a.shape, window)
    return _ssim(_ssim_stats(a, win), b, win)


class Reference:
    """A batch of reference maps (N, H, W) prepared once (ranks of |a|, SSIM window means) for
    comparisons with the maps of every randomised model."""

    def __init__(self, maps: torch.Tensor):
        self.ranks = _centred_ranks(maps.abs())
        self.win = _ssim_window(maps.shape, SSIM_WINDOW)
        self.stats = _ssim_stats(maps, self.win)

    def similarities(self, other: torch.Tensor) -> dict[str, torch.Tensor]:
        """Spearman of |maps| and SSIM of the max-normalised |maps|, per sample."""
        return {"spearman": _correlation(*self.ranks, *_centred_ranks(other.abs())),
                "ssim": _ssim(self.stats, other, self.win)}


def histogram_entropy(a: torch.Tensor, bins: int) -> torch.Tensor:
    """Discrete entropy (nats) of each map's histogram (N, …) → (N,): ``bins`` equal-width bins over
    the map's own [min, max] (a constant map: [v − ½, v + ½], all in one bin, entropy 0), the last
    bin closed; the bin of every value decided exactly as ``numpy.histogram`` does, then
    H = −Σ p log p over the bins' shares, as ``scipy.stats.entropy`` of the counts (Quantus'
    ``discrete_entropy``)."""
    v = a.flatten(1).double()
    n = v.shape[0]
    lo, hi = v.amin(1, keepdim=True), v.amax(1, keepdim=True)
    flat = hi == lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    idx = ((v - lo) * (bins / (hi - lo))).long().clamp(0, bins - 1)
    step = (hi - lo) / bins
    edge = lambda i: torch.where(i == bins, hi, i.double() * step + lo)  # noqa: E731 - numpy.linspace
    idx = idx - (v < edge(idx)).long()
    idx = idx + ((v >= edge(idx + 1)) & (idx != bins - 1)).long()
    counts = torch.zeros(n, bins, dtype=torch.float64, device=v.device).scatter_add_(1, idx, torch.ones_like(v))
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)


# ----------------------------------------------------------------------------- randomisation

def layer_seeds(seed: int, count: int) -> list[int]:
    """The seed of the random weights of the layer at each depth 1..count (index 0 = depth 1)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2**62, (count,), generator=g).tolist()


def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def forward_order(module: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules that directly own parameters, in the order they first run on ``x``."""
    names = {m: n for n, m in module.named_modules() if _own_parameters(m)}
    seen: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda m, _args, name=n: seen.append(name) if name not in seen else None)
             for m, n in names.items()]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The default generators of the CPU and of ``device`` seeded with ``seed`` inside, restored after."""
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(int(seed))
        yield


def reinitialise_(module: nn.Module, seed: int) -> None:
    """Re-draw ``module``'s own parameters under ``seed``: its ``reset_parameters()`` where it has one,
    else N(0, s²) with s the standard deviation of the current values."""
    params = _own_parameters(module)
    device = params[0].device if params else torch.device("cpu")
    with _seeded(seed, device), torch.no_grad():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
            return
        for p in params:
            s = float(p.detach().float().std()) if p.numel() > 1 else float(p.detach().abs().float().mean())
            p.normal_(0.0, s if s > 0 else 1e-2)


def restore_(copy_module: nn.Module, original: nn.Module) -> None:
    """Put ``original``'s own parameters and buffers back into ``copy_module`` (the same layer)."""
    with torch.no_grad():
        for dst, src in zip(copy_module.parameters(recurse=False), original.parameters(recurse=False)):
            dst.copy_(src)
        for dst, src in zip(copy_module.buffers(recurse=False), original.buffers(recurse=False)):
            dst.copy_(src)


def copy_of(model: TrainedModel) -> TrainedModel:
    """A deep copy of ``model``'s module, with its target layers and in-model explainer on the copy."""
    module = model.module
    clone = copy.deepcopy(module).eval()
    names = {m: n for n, m in module.named_modules()}
    layers = {}
    for key, layer in model.target_layers.items():
        if layer not in names:
            raise UsageError(f"target layer {key!r} of the model is not one of its submodules, so it cannot be found "
                             "on the randomised copy; name target layers that are submodules of the model.")
        layers[key] = clone.get_submodule(names[layer])
    explain = model.explain
    if explain is not None:
        owner = getattr(explain, "__self__", None)
        if not isinstance(owner, nn.Module) or owner not in names:
            raise UsageError("the model's in-model explainer is not a method of the model or of one of its "
                             "submodules, so it cannot be moved onto the randomised copy; randomisation tests "
                             "need the explainer to be a bound method (e.g. module.explain).")
        explain = types.MethodType(explain.__func__, clone.get_submodule(names[owner]))
    return dataclasses.replace(model, module=clone, target_layers=layers, explain=explain)


def randomisations(model: TrainedModel, x: torch.Tensor, mode: str, seed: int,
                   curve: bool = True) -> Iterator[tuple[int, TrainedModel]]:
    """Yield ``(depth, randomised copy)`` for each step of ``mode`` (see the module docstring). One
    copy is mutated between steps: use each before asking for the next. Without ``curve`` only the
    fully randomised network is yielded, at depth 1 (cascade) or L (bottom-up); ``independent``
    needs ``curve`` (the metrics' ``validate`` says so when a config is read)."""
    randomised = copy_of(model)
    names = forward_order(randomised.module, x[:1])
    if not names:
        raise UsageError("the model has no layer with parameters that runs in its forward pass: there is "
                         "nothing to randomise.")
    seeds = layer_seeds(seed, len(names))
    layers = [randomised.module.get_submodule(n) for n in names]
    depths = range(1, len(names) + 1)
    if mode == "independent":
        originals = [model.module.get_submodule(n) for n in names]
        for d in depths:
            reinitialise_(layers[d - 1], seeds[d - 1])
            yield d, randomised
            restore_(layers[d - 1], originals[d - 1])
        return
    steps = list(reversed(depths)) if mode == "cascade" else list(depths)
    for i, d in enumerate(steps):
        reinitialise_(layers[d - 1], seeds[d - 1])
        if curve or i == len(steps) - 1:
            yield d, randomised


def _require_explain(ctx: MetricContext, name: str) -> None:
    if ctx.explain is None or ctx.explain_raw is None:
        raise UsageError(f"{name} re-explains the inputs on randomised copies of the model and needs ctx.explain "
                         "(the runner provides it; in a test pass explain= to xbench.testing.metric_context).")


def _nan_where(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    return torch.where(where.to(values.device), torch.full_like(values, float("nan")), values)


def _flag_constant(ctx: MetricContext, maps: torch.Tensor, what: str) -> None:
    ctx.flag(constant_maps(maps) & defined(ctx), f"constant explanation {what}: Spearman undefined (SSIM is)")


def layer_test(ctx: MetricContext, reference: torch.Tensor, explain) -> dict:
    """Similarity of ``reference`` with ``explain(randomised model)`` at every step of the run's
    ``mode``: the headline values and (with ``curve``) the per-depth families."""
    p = ctx.params
    mode, curve = str(p["mode"]), bool(p["curve"])
    per_depth: dict[str, dict[int, torch.Tensor]] = {"spearman": {}, "ssim": {}}
    constant = torch.zeros(len(reference), dtype=torch.bool, device=reference.device)
    prepared = Reference(reference)
    for depth, randomised in randomisations(ctx.model, ctx.inputs, mode, int(p["seed"]), curve):
        maps = explain(randomised).float()
        constant |= constant_maps(maps)
        for key, value in prepared.similarities(maps).items():
            per_depth[key][depth] = value
    _flag_constant(ctx, reference, "of the trained model")
    ctx.flag(constant & defined(ctx), "constant explanation of a randomised model: Spearman undefined there (SSIM is)")
    out: dict = {}
    for key, members in per_depth.items():
        ordered = dict(sorted(members.items()))
        if mode == "independent":
            out[key] = torch.stack(list(ordered.values())).mean(0)
        else:
            out[key] = ordered[min(ordered) if mode == "cascade" else max(ordered)]
        if curve:
            out[f"{key}_layers"] = ordered
    return out


# ----------------------------------------------------------------------------- metrics

def mprt(ctx: MetricContext) -> dict:
    _require_explain(ctx, "mprt")
    targets = ctx.targets
    return layer_test(ctx, ctx.attribution.float(), lambda m: ctx.explain(ctx.inputs, targets=targets, model=m))


def standard_normal(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The noise directions of sMPRT (a function of its own so that a test can record them)."""
    return torch.randn(shape, generator=generator, device=device)


def smoothed(ctx: MetricContext, model: TrainedModel | None, noise_seed: int, clean: torch.Tensor | None = None
             ) -> torch.Tensor:
    """The mean of the method's raw maps over ``samples`` inputs: ``samples − 1`` noisy copies
    x + σ·(max x − min x)·z, z ~ N(0, 1) (the same draws for every model: one generator seeded with
    ``noise_seed``, drawn in the same order whatever ``chunk``), and the clean x (``clean``: its map
    when already known), reduced by the run's rule. ``chunk`` noisy copies of the batch are
    explained per call."""
    x, targets = ctx.inputs, ctx.targets
    samples, sigma, chunk = int(ctx.params["samples"]), float(ctx.params["sigma"]), int(ctx.params["chunk"])
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, *([1] * (x.dim() - 1)))
    g = torch.Generator(device=x.device).manual_seed(noise_seed)
    total = clean.float() if clean is not None else ctx.explain_raw(x, targets=targets, model=model).float()
    for start in range(0, samples - 1, chunk):
        k = min(chunk, samples - 1 - start)
        noisy = torch.cat([x + sigma * span * standard_normal(x.shape, g, x.device).to(x.dtype) for _ in range(k)])
        maps = ctx.explain_raw(noisy, targets=targets.repeat(k), model=model).float()
        total = total + maps.view(k, len(x), *maps.shape[1:]).sum(0)
    return reduce_attribution(total / samples, tuple(x.shape[-2:]), ctx.reduction, ctx.method or "?")


def smprt(ctx: MetricContext) -> dict:
    _require_explain(ctx, "smprt")
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator, device=ctx.generator.device))
    reference = smoothed(ctx, None, noise_seed, clean=ctx.raw_attribution)
    return layer_test(ctx, reference, lambda m: smoothed(ctx, m, noise_seed))


def emprt(ctx: MetricContext) -> dict:
    _require_explain(ctx, "emprt")
    bins = int(ctx.params["bins"])
    ((_, randomised),) = list(randomisations(ctx.model, ctx.inputs, "bottom-up", int(ctx.params["seed"]), curve=False))
    maps = ctx.explain(ctx.inputs, targets=ctx.targets, model=randomised).float()
    h0 = histogram_entropy(ctx.attribution.float().abs(), bins)
    h1 = histogram_entropy(maps.abs(), bins)
    zero = h0 <= 0
    ctx.flag(zero & defined(ctx), "constant explanation of the trained model: entropy 0, eMPRT undefined")
    ratio = _nan_where(h1 / h0.clamp(min=torch.finfo(h0.dtype).tiny), zero)
    return {"emprt": ratio - 1, "ratio": ratio, "entropy_trained": h0, "entropy_random": h1}


def other_classes(targets: torch.Tensor, classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class drawn uniformly from the ``classes − 1`` that are not each sample's target."""
    shift = torch.randint(1, classes, targets.shape, generator=generator, device=generator.device)
    return (targets.long() + shift.to(targets.device)) % classes


def random_logit(ctx: MetricContext) -> dict:
    _require_explain(ctx, "random-logit")
    classes = int(ctx.logits.shape[1])
    if classes < 2:
        raise DataError(f"random-logit needs at least two classes to draw another one from; the model has {classes}.")
    other = other_classes(ctx.targets, classes, ctx.generator)
    reference = ctx.attribution.float()
    maps = ctx.explain(ctx.inputs, targets=other, model=None).float()
    _flag_constant(ctx, reference, "of the explained class")
    _flag_constant(ctx, maps, "of the other class")
    return {**Reference(reference).similarities(maps), "other_class": other.double()}


# ----------------------------------------------------------------------------- specs

def _validate_layers(params) -> None:
    if params["mode"] == "independent" and not params["curve"]:
        raise ValueError("mode = 'independent' randomises one layer at a time and has no fully randomised network: "
                         "it needs curve = true")


SEED = Param(0, "seed of the re-initialised weights (the same random network for every batch, method and unit)",
             ge=0)
PASSES = ("Low similarity passes (the explanation depends on the learned weights); similarity near 1 fails, as "
          "an edge filter does.")


def _layer_values() -> dict:
    return {"spearman": False, "ssim": False,
            "spearman_layers": Family(False, level="depth", name="spearman"),
            "ssim_layers": Family(False, level="depth", name="ssim")}


@hookimpl
def xbench_metrics():
    yield MetricSpec(
        name="mprt", score=mprt, category="sanity", version="2", values=_layer_values(), validate=_validate_layers,
        params={"mode": Param("cascade", "which layers are re-initialised at depth d: d..L ('cascade', from the "
                                         "output layer down), 1..d ('bottom-up') or d alone ('independent')",
                              choices=MODES),
                "curve": Param(True, "also report the similarity at every depth (spearman/<d>, ssim/<d>); false "
                                     "explains only the fully randomised network"),
                "seed": SEED},
        description="Model-parameter randomisation test (Adebayo et al. 2018): re-initialise the layers from the "
                    "output layer down (cascade; or bottom-up, or one at a time) and compare the explanation with "
                    "the trained model's by Spearman rank correlation of |maps| and SSIM; spearman/ssim is the "
                    "similarity with the fully randomised network (the mean over layers when independent), "
                    "spearman/<d> at depth d (1 = first layer). " + PASSES,
    )
    yield MetricSpec(
        name="smprt", score=smprt, category="sanity", version="2", values=_layer_values(), validate=_validate_layers,
        params={"mode": Param("bottom-up", "with curve: which layers are re-initialised at depth d: 1..d "
                                           "('bottom-up'), d..L ('cascade') or d alone ('independent')",
                              choices=MODES),
                "curve": Param(False, "also report the similarity at every depth (L times the cost)"),
                "samples": Param(50, "N, inputs each explanation is averaged over: N − 1 noisy copies and the "
                                     "clean input", ge=1),
                "sigma": Param(0.1, "noise standard deviation, relative to each input's range (max − min)", ge=0),
                "chunk": Param(1, "noisy copies of the batch explained per call (memory grows with it)", ge=1),
                "seed": SEED},
        description="Smooth MPRT (Hedström et al. 2023): MPRT on explanations denoised by averaging over N − 1 "
                    "noisy copies of the input and the clean one (σ relative to the input's range), trained and "
                    "fully randomised network compared by Spearman of |maps| and SSIM. " + PASSES,
    )
    yield MetricSpec(
        name="emprt", score=emprt, category="sanity", version="2",
        values={"emprt": True, "ratio": True, "entropy_trained": None, "entropy_random": None},
        params={"bins": Param(100, "equal-width histogram bins over each map's range", ge=1), "seed": SEED},
        description="Efficient MPRT (Hedström et al. 2023): relative rise in explanation complexity from the "
                    "trained to the fully randomised network, (H_random − H_trained)/H_trained, H the discrete "
                    "entropy of a histogram of |map|; ratio = H_random/H_trained. Higher is better: above 0 "
                    "(ratio above 1) passes, 0 or below fails (the explanation ignores the weights).",
    )
    yield MetricSpec(
        name="random-logit", score=random_logit, category="sanity", version="2",
        values={"ssim": False, "spearman": False, "other_class": None},
        description="Random logit test (Sixt et al. 2020): SSIM (and Spearman of |maps|) between the "
                    "explanation of the explained class and of a random other class; other_class is the drawn "
                    "class. Low similarity passes (the explanation depends on the class); a class-insensitive "
                    "map scores 1 and fails.",
    )
