"""ROAD speed: xbench's batched imputation against pytorch-grad-cam's ROAD (one scipy solve per image
and percentage), measured in one run on the same small CNN, batch 32 of 3×64×64, percentages
10..90, noise 0.01, maps that are smooth like CAMs (bilinear upsampling of 8×8 noise: large
connected holes, the hard case for an iterative solver):

- ``gradcam-morf``: ``ROADMostRelevantFirstAverage`` (MoRF only, 9 solves per image);
- ``gradcam-combined``: ``ROADCombined`` (MoRF and LeRF, 18 solves per image);
- ``xbench``: the ``road`` metric (MoRF and LeRF curves and the combined score; its timing includes
  building the context, one more clean forward pass);
- ``quantus`` and ``xbench-1ch``: Quantus' ``ROAD`` (MoRF only, one scipy solve per image and
  percentage, with a ``lil_matrix`` built per solve) against xbench's ``road`` on the same batch
  with one channel (Quantus indexes the map's pixels in the image's flattened channels, so it runs
  on one-channel images only), compared at equal solves: Quantus makes 9 per image, xbench 18.

Run::

    OMP_NUM_THREADS=1 pytest tests/benchmarks/test_bench_road.py --benchmark-enable -s

``XBENCH_BENCH_DEVICE`` (default ``cpu``) picks xbench's device; grad-cam and Quantus always solve on
the CPU. The last test prints the ratios and asserts the floors on the fastest rounds: grad-cam's
ROADCombined / xbench ≥ ``FLOOR``, Quantus / xbench at equal solves ≥ ``QUANTUS_FLOOR``. The issue's
target is 10× over grad-cam on a CPU; it is not met. Measured on one thread of the shared 2-core
machine under heavy load from other work (2026-12-07, load 11, CPU time, ``--benchmark-timer
time.process_time``): 3.0× grad-cam's ROADCombined (xbench 2.5 s, grad-cam 7.5 s; the solver before
this change, timed interleaved with the new one and grad-cam in one process: 2.26× against 3.12×),
1.5× its MoRF-only average, 6.1× Quantus' ROAD at equal solves. Where xbench's time goes: ~7–9 multigrid-preconditioned CG
iterations per solve (V(3,3) Jacobi cycles; 12–16 before), each a few dozen tensor passes over the
32×3×64×64 batch, memory-bound on one core, and 19 forward passes (see
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
FLOOR = 2.5  # grad-cam's ROADCombined / xbench's road, fastest rounds (measured 3.0×)
QUANTUS_FLOOR = 4.5  # Quantus' ROAD / xbench's road at equal solves, fastest rounds (measured 6.1×)
MEDIANS: dict[str, float] = {}
FASTEST: dict[str, float] = {}


def _setup(channels=3):
    torch.manual_seed(0)
    module = SmallCNN(channels, 2, 16).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 64, 64, generator=g)[:, :channels].contiguous()
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


def _quantus(benchmark, module, x, cam, labels):
    quantus = pytest.importorskip("quantus")
    metric = quantus.ROAD(noise=0.01, percentages=rm.PERCENTAGES, normalise=False, abs=False, disable_warnings=True,
                          display_progressbar=False, return_aggregate=False)
    xs, ys, maps = x.numpy(), labels.numpy(), cam[:, None].numpy()
    out = benchmark.pedantic(lambda: metric(model=module, x_batch=xs, y_batch=ys, a_batch=maps, device="cpu",
                                            softmax=True, batch_size=32), rounds=2, iterations=1, warmup_rounds=0)
    assert set(out) == set(rm.PERCENTAGES)


KINDS = {"xbench": (_xbench, 3),
         "gradcam-morf": (lambda b, *s: _gradcam(b, *s, combined=False), 3),
         "gradcam-combined": (lambda b, *s: _gradcam(b, *s, combined=True), 3),
         "xbench-1ch": (_xbench, 1),
         "quantus": (_quantus, 1)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_road_speed(benchmark, kind):
    pytest.importorskip("pytorch_grad_cam")
    run, channels = KINDS[kind]
    benchmark.group = f"road 32x{channels}x64x64"
    run(benchmark, *_setup(channels))
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
    if "quantus" in MEDIANS and "xbench-1ch" in MEDIANS:  # per solve: Quantus 9 per image, xbench 18
        lines.append(f"quantus (1 channel, MoRF only): {MEDIANS['quantus']:.2f} s, "
                     f"xbench {MEDIANS['xbench-1ch']:.2f} s: "
                     f"{2 * MEDIANS['quantus'] / MEDIANS['xbench-1ch']:.1f}x xbench at equal solves (medians), "
                     f"{2 * FASTEST['quantus'] / FASTEST['xbench-1ch']:.1f}x (fastest)")
    print("\n" + "\n".join(lines))
    ratio = FASTEST["gradcam-combined"] / FASTEST["xbench"]
    assert ratio >= FLOOR, f"xbench's ROAD only {ratio:.1f}x faster than grad-cam's ROADCombined (floor {FLOOR}x)"
    if "quantus" in FASTEST and "xbench-1ch" in FASTEST:
        ratio = 2 * FASTEST["quantus"] / FASTEST["xbench-1ch"]
        assert ratio >= QUANTUS_FLOOR, f"xbench's ROAD only {ratio:.1f}x faster than Quantus' at equal solves"
