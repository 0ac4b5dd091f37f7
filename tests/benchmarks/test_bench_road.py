"""ROAD speed: xbench's batched imputation against pytorch-grad-cam's ROAD (one scipy solve per image
and percentage), measured in one run on the same small CNN, batch 32 of 3×64×64, percentages
10..90, noise 0.01, maps that are smooth like CAMs (bilinear upsampling of 8×8 noise: large
connected holes, the hard case for an iterative solver):

- ``gradcam-morf``: ``ROADMostRelevantFirstAverage`` (MoRF only, 9 solves per image);
- ``gradcam-combined``: ``ROADCombined`` (MoRF and LeRF, 18 solves per image);
- ``xbench``: the ``road`` metric (MoRF and LeRF curves and the combined score; its timing includes
  building the context, one more clean forward pass).

Run::

    OMP_NUM_THREADS=1 pytest tests/benchmarks/test_bench_road.py --benchmark-enable -s

``XBENCH_BENCH_DEVICE`` (default ``cpu``) picks xbench's device; grad-cam always solves on the CPU.
The last test prints the ratios and asserts ``FLOOR``: combined / xbench on the fastest rounds. The
issue's target is 10× on a CPU; it is not met. Measured on one thread of the shared 2-core machine
(2026-12): 3.1× by wall time (grad-cam combined 22.2 s, xbench 7.0 s, both slowed by other work)
and 3.2× by CPU time (``--benchmark-timer time.process_time``: 10.1 s against 3.1 s); the floor is
2.5×. Where xbench's time goes: ~12–16 multigrid-preconditioned CG iterations per solve, each a
few dozen tensor passes over the 32×3×64×64 batch, memory-bound on one core (see
``plugins/metrics/road.py``); on a GPU those passes are cheap (not measured: no GPU in this task).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xbench import TrainedModel, results
from xbench.plugins.metrics import road as rm
from xbench.plugins.models.small_cnn import SmallCNN
from xbench.specs import defaults

SPEC = next(iter(rm.xbench_metrics()))
DEVICE = torch.device(os.environ.get("XBENCH_BENCH_DEVICE", "cpu"))
FLOOR = 2.5  # grad-cam's ROADCombined / xbench's road, fastest rounds (measured 3.1–3.2× on one CPU thread)
MEDIANS: dict[str, float] = {}
FASTEST: dict[str, float] = {}


def _setup():
    torch.manual_seed(0)
    module = SmallCNN(3, 2, 16).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 64, 64, generator=g)
    cam = F.interpolate(torch.rand(32, 1, 8, 8, generator=g), size=64, mode="bilinear", align_corners=False)[:, 0]
    labels = torch.randint(0, 2, (32,), generator=g)
    return module, x, cam, labels


def _record(benchmark, kind):
    MEDIANS[kind] = benchmark.stats.stats.median
    FASTEST[kind] = benchmark.stats.stats.min


def _xbench(benchmark, module, x, cam, labels):
    module, x, cam, labels = module.to(DEVICE), x.to(DEVICE), cam.to(DEVICE), labels.to(DEVICE)
    params = {**defaults(SPEC.params), "class": "label"}

    def run():
        with torch.no_grad():
            logits = module(x).float()
        ctx = results.metric_context(
            model=TrainedModel(module=module, info=None, target_layers={}), inputs=x, labels=labels, logits=logits,
            targets=labels, target_mode="label", params=params, generator=torch.Generator(DEVICE).manual_seed(0),
            predict=module, device=DEVICE, attribution=results.prepare_attribution(cam, (64, 64), "sum"),
            reduction="sum")
        out = SPEC.score(ctx)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert set(out["morf"]) == set(rm.PERCENTAGES) and out["road"].shape == (32,)


def _gradcam(benchmark, module, x, cam, labels, combined):
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    targets = [targets_mod.ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    metric = road.ROADCombined(rm.PERCENTAGES) if combined else road.ROADMostRelevantFirstAverage(rm.PERCENTAGES)
    out = benchmark.pedantic(lambda: metric(x, cam.numpy(), targets, module), rounds=2, iterations=1,
                             warmup_rounds=0)
    assert np.asarray(out).shape == (32,)


KINDS = {"xbench": _xbench,
         "gradcam-morf": lambda b, *s: _gradcam(b, *s, combined=False),
         "gradcam-combined": lambda b, *s: _gradcam(b, *s, combined=True)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_road_speed(benchmark, kind):
    pytest.importorskip("pytorch_grad_cam")
    benchmark.group = "road 32x3x64x64"
    KINDS[kind](benchmark, *_setup())
    _record(benchmark, kind)


def test_ratio_meets_the_floor():
    """Prints grad-cam / xbench (run with -s) and asserts ``FLOOR`` for ROADCombined on the fastest rounds."""
    pytest.importorskip("pytorch_grad_cam")
    if "xbench" not in MEDIANS or "gradcam-combined" not in MEDIANS:
        pytest.fail("run the benchmarks above first (pytest --benchmark-enable)")
    lines = [f"xbench road on {DEVICE}: {MEDIANS['xbench']:.2f} s (median), {FASTEST['xbench']:.2f} s (fastest)"]
    for kind in ("gradcam-morf", "gradcam-combined"):
        if kind in MEDIANS:
            lines.append(f"{kind}: {MEDIANS[kind]:.2f} s, {MEDIANS[kind] / MEDIANS['xbench']:.1f}x xbench (medians), "
                         f"{FASTEST[kind] / FASTEST['xbench']:.1f}x (fastest)")
    print("\n" + "\n".join(lines))
    ratio = FASTEST["gradcam-combined"] / FASTEST["xbench"]
    assert ratio >= FLOOR, f"xbench's ROAD only {ratio:.1f}x faster than grad-cam's ROADCombined (floor {FLOOR}x)"
