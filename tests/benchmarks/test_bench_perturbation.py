"""Deletion and insertion speed, measured in one run against RISE's own batched loop on the same
model, images and maps:

- ``rise``: ``CausalMetric.evaluate`` of RISE (eclique/RISE, evaluation.py) in torch: a forward
  pass of the batch for the explained class, the substrate (black for deletion; for insertion
  RISE's blur, an 11×11 Gaussian kernel with σ = 5), then n_steps + 1 forward passes of the batch,
  each followed by copying the next ``step`` most salient pixels from the finish image;
- ``xbench``: the ``deletion`` / ``insertion`` metric with its defaults (black fill, blurred start,
  σ = 5), the same number of steps and ``class = "predicted"`` (RISE's class), on a context whose
  clean logits were computed before the timing: in a run that forward pass is the runner's, made
  once per batch for the method and every metric, so it is no metric's cost. RISE's loop needs its
  own (for its class) and forwards the clean image again at one end of the curve;
- ``clean``: that one forward pass of the batch, timed alone, so that the ratio with it charged to
  xbench is printed too (RISE / (xbench + clean)).

Sizes: a small CNN on batch 32 of 3×64×64 with 16 steps of 256 pixels, and on batch 16 of 3×224×224
with RISE's 28 steps of 224·8 pixels. Both remove the same pixels at every step (continuous maps),
so their deletion curves are the same (checked). Run::

    OMP_NUM_THREADS=1 pytest tests/benchmarks/test_bench_perturbation.py --benchmark-enable -s \
        --benchmark-timer time.process_time

The last test prints the ratios (RISE / xbench) and asserts ``TARGET`` on the medians of the rounds:
with a margin of 7–20 %, one lucky round of either side flips a ratio of the fastest rounds on a
shared machine (seen: 0.81× fastest, 1.08× medians, for insertion at 64 px).
Measured on one thread of the shared 2-core machine at load 10–20 (2026-12-07, CPU time, fastest
rounds of the code before and after this change, timed interleaved in one process): deletion 1.13×
at 64 px (before 1.10×) and 1.07× at 224 px (before 1.01×), insertion 1.17× (before 1.02×) and
1.10× (before 1.08×).
The margin is what the forward passes allow: xbench makes steps − 1 (deletion to black) or steps
(insertion) forward passes of the batch where RISE's loop makes steps + 2, so 1.07–1.2×; on a
loaded machine one kind's rounds can fall in a quieter spell than the other's: run it on an idle
machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xbench import TrainedModel, results
from xbench.plugins.metrics import perturbation as pm
from xbench.plugins.models.small_cnn import SmallCNN
from xbench.specs import defaults

SIZES = {
    "cnn-32x3x64-16steps": dict(batch=32, size=64, steps=16, rounds=7),
    "cnn-16x3x224-28steps": dict(batch=16, size=224, steps=28, rounds=3),
}
SPECS = {spec.name: spec for spec in pm.xbench_metrics()}
TARGET = 1.0  # RISE's batched loop / xbench, medians of the rounds
MEDIANS: dict[tuple[str, str, str], float] = {}
FASTEST: dict[tuple[str, str, str], float] = {}
CURVES: dict[tuple[str, str, str], torch.Tensor] = {}


def _setup(name):
    s = SIZES[name]
    torch.manual_seed(0)
    module = SmallCNN(3, 2, 16).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(s["batch"], 3, s["size"], s["size"], generator=g)
    a = torch.rand(s["batch"], s["size"], s["size"], generator=g)
    return s, module, x, a


def _rise_kernel(channels: int, klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """RISE's ``gkern``: a Dirac smoothed by scipy's gaussian_filter, on the channel diagonal."""
    from scipy.ndimage import gaussian_filter

    dirac = np.zeros((klen, klen))
    dirac[klen // 2, klen // 2] = 1
    kernel = np.zeros((channels, channels, klen, klen))
    kernel[range(channels), range(channels)] = gaussian_filter(dirac, nsig)
    return torch.from_numpy(kernel.astype("float32"))


def _rise(benchmark, kind, s, module, x, a):
    n, c, h, w = x.shape
    hw = h * w
    step = (hw + s["steps"] - 1) // s["steps"]
    n_steps = (hw + step - 1) // step
    kernel = _rise_kernel(c)

    def run():
        with torch.no_grad():
            top = module(x).softmax(1).argmax(1)
            salient_order = torch.argsort(a.reshape(n, hw), dim=1, descending=True)
            blurred = kind == "insertion"
            substrate = F.conv2d(x, kernel, padding=kernel.shape[-1] // 2) if blurred else torch.zeros_like(x)
            start, finish = (x.clone(), substrate) if kind == "deletion" else (substrate, x.clone())
            scores = torch.empty(n_steps + 1, n)
            for i in range(n_steps + 1):
                scores[i] = module(start).softmax(1).gather(1, top[:, None])[:, 0]
                coords = salient_order[:, step * i:step * (i + 1), None].transpose(1, 2).expand(n, c, -1)
                start.view(n, c, hw).scatter_(2, coords, finish.view(n, c, hw).gather(2, coords))
        return scores.T.double()

    return benchmark.pedantic(run, rounds=s["rounds"], iterations=1, warmup_rounds=1)


def _xbench(benchmark, kind, s, module, x, a):
    spec = SPECS[kind]
    params = {**defaults(spec.params), "steps": s["steps"], "class": "predicted"}
    labels = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        logits = module(x).float()

    def run():
        ctx = results.metric_context(
            model=TrainedModel(module=module, info=None, target_layers={}), inputs=x, labels=labels, logits=logits,
            targets=labels, target_mode="label", params=params, generator=torch.Generator().manual_seed(0),
            predict=module, attribution=results.prepare_attribution(a, tuple(a.shape[-2:]), "sum"), reduction="sum")
        return spec.score(ctx)

    out = benchmark.pedantic(run, rounds=s["rounds"], iterations=1, warmup_rounds=1)
    return torch.stack([out[f"{kind}_curve"][j] for j in range(s["steps"] + 1)], 1)


def _clean(benchmark, kind, s, module, x, a):
    def run():
        with torch.no_grad():
            return module(x).float()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


WHO = {"rise": _rise, "xbench": _xbench, "clean": _clean}


@pytest.mark.parametrize("name,kind,who", [(n, k, w) for n in SIZES for k in SPECS for w in WHO
                                           if w != "clean" or k == "deletion"])
def test_perturbation_speed(benchmark, name, kind, who):
    benchmark.group = f"{kind} {name}"
    CURVES[name, kind, who] = WHO[who](benchmark, kind, *_setup(name))
    MEDIANS[name, kind, who] = benchmark.stats.stats.median
    FASTEST[name, kind, who] = benchmark.stats.stats.min


def test_ratios_meet_the_target():
    """Prints RISE / xbench (run with -s) and asserts ``TARGET`` on the medians; the deletion curves
    agree (the same pixels removed at every step)."""
    lines, misses = [], []
    for name in SIZES:
        for kind in SPECS:
            if (name, kind, "rise") not in FASTEST or (name, kind, "xbench") not in FASTEST:
                continue
            if kind == "deletion":
                torch.testing.assert_close(CURVES[name, kind, "xbench"], CURVES[name, kind, "rise"], rtol=0, atol=1e-5)
            fastest = FASTEST[name, kind, "rise"] / FASTEST[name, kind, "xbench"]
            median = MEDIANS[name, kind, "rise"] / MEDIANS[name, kind, "xbench"]
            line = (f"{kind} {name}: xbench {MEDIANS[name, kind, 'xbench']:.2f} s (median), RISE's loop "
                    f"{MEDIANS[name, kind, 'rise']:.2f} s: {fastest:.2f}x (fastest rounds), {median:.2f}x (medians)")
            if (name, "deletion", "clean") in FASTEST:
                charged = FASTEST[name, kind, "xbench"] + FASTEST[name, "deletion", "clean"]
                line += f"; {FASTEST[name, kind, 'rise'] / charged:.2f}x with the clean pass charged to xbench"
            lines.append(line)
            if median < TARGET:
                misses.append(f"{kind} {name}: {median:.2f}x RISE's batched loop (medians; target {TARGET}x)")
    print("\ndeletion and insertion against RISE's batched loop:\n" + "\n".join(lines))
    assert lines, "run the benchmarks above first (pytest --benchmark-enable)"
    assert not misses, misses
