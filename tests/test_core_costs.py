"""What explaining costs is the method's own: the `centre` baseline adds next to nothing, integrated
gradients at 64 steps far more than saliency on the same batch, whatever the process held before;
and methods come out in the order of their real cost."""

from __future__ import annotations

import pytest
import torch

from helpers import torch_threads
from xbench import testing
from xbench.attribution import run_method
from xbench.costs import MEASURES, Cost
from xbench.registry import load_registry
from xbench.specs import defaults

N, SIZE = 32, 64


@pytest.fixture(scope="module")
def batch():
    registry = load_registry()
    data = testing.planted_dataset(n_train=8, n_val=8, n_test=N, size=SIZE)
    model = testing.model_from_spec(registry.get("models", "small-cnn").spec, data, {"width": 8})
    return registry, model, data.test.images, data.test.labels


def _cost(batch, method: str, **params) -> Cost:
    registry, model, x, t = batch
    spec = registry.get("methods", method).spec
    params = {**defaults(spec.params), **params}
    cost = Cost(torch.device("cpu"))
    with torch_threads(1):
        run_method(spec, model, x[:1], t[:1], params)  # its imports done, as a run's warm-up does
        with cost.measure(len(x)):
            run_method(spec, model, x, t, params)
    return cost


def test_centre_adds_next_to_nothing_and_integrated_gradients_far_more_than_saliency(batch):
    centre = _cost(batch, "centre")
    saliency = _cost(batch, "saliency")
    ig64 = _cost(batch, "integrated-gradients", steps=64)
    assert {c.memory for c in (centre, saliency, ig64)} == {"cpu-allocator"}
    maps = N * SIZE * SIZE * 4  # one float32 map per image
    assert centre.added_bytes <= 4 * maps  # its maps and little else
    assert saliency.added_bytes > 4 * centre.added_bytes
    # its 2048 path points in chunks of at most 128 MiB of inputs on a CPU (measured 2× saliency's
    # memory, whose 32 images run at once; 16× its time)
    assert ig64.added_bytes > 1.5 * saliency.added_bytes
    assert ig64.seconds > 8 * saliency.seconds  # 64 forward and backward passes against one
    assert centre.as_dict()["seconds_per_sample"] == pytest.approx(centre.seconds / N)


def test_the_methods_come_out_in_the_order_of_their_cost(batch):
    costs = {label: _cost(batch, method, **params) for label, method, params in
             (("centre", "centre", {}), ("saliency", "saliency", {}),
              ("ig[8 steps]", "integrated-gradients", {"steps": 8}),
              ("ig[64 steps]", "integrated-gradients", {"steps": 64}))}
    # time: one pass, eight, sixty-four
    assert sorted(costs, key=lambda m: costs[m].seconds) == list(costs)
    # memory: 256 path points at once (8 steps × 32 images) need more than saliency's 32 images;
    # 64 steps run in chunks within the same budget, so they need no more than 8 (measured 78
    # against 42 MiB)
    by_memory = sorted(costs, key=lambda m: costs[m].added_bytes)
    assert by_memory[:2] == ["centre", "saliency"] and by_memory[-1] == "ig[8 steps]"


def test_memory_held_before_the_method_is_not_its_cost_and_a_freed_peak_still_counts():
    held = torch.ones(64, 2**20)  # 256 MiB live before the block: not the block's
    cost = Cost(torch.device("cpu"))
    with cost.measure(1):
        torch.zeros(1024)
    assert cost.added_bytes < 2**20
    with cost.measure(1):
        big = torch.ones(16, 2**20)  # 64 MiB allocated, then freed: its peak counts
        del big
    assert 64 * 2**20 <= cost.added_bytes < 80 * 2**20 and cost.samples == 2
    assert held.shape[0] == 64 and cost.memory == "cpu-allocator" and cost.memory in MEASURES


def test_a_running_profiler_leaves_the_memory_unknown_and_the_time_measured():
    cost = Cost(torch.device("cpu"))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        with cost.measure(4):
            torch.ones(1024).sum()
    assert cost.added_bytes is None and cost.memory is None and cost.samples == 4 and cost.seconds > 0


@pytest.mark.gpu
def test_on_a_gpu_the_cuda_allocator_counts_what_the_block_adds():
    device = torch.device("cuda")
    held = torch.ones(64, 2**20, device=device)
    cost = Cost(device)
    with cost.measure(1):
        big = torch.ones(16, 2**20, device=device)
        del big
    assert cost.memory == "cuda-allocator" and 64 * 2**20 <= cost.added_bytes < 70 * 2**20
    assert held.device.type == "cuda"


def test_a_run_charges_no_method_its_first_call_in_the_process(tmp_path, use_sites):
    """The first call of a method in a process imports its library (seconds for Captum or Zennit on a
    loaded machine): the run makes it once, on one sample, unmeasured."""
    from helpers import TINY, write_config
    from xbench import load_results
    from xbench.config import load_config
    from xbench.runner import run

    use_sites("acme", "crash")
    config = write_config(tmp_path / "c.toml", TINY.replace("[methods.saliency]", '[methods."crash.slow-start"]'))
    registry = load_registry()
    summary = run(load_config(str(config), registry), registry, out=tmp_path / "run")
    assert not summary.failed
    rows = load_results(tmp_path / "run")
    slow = rows[rows["method"] == "crash.slow-start"]
    # 32 samples explained, the 1 s sleep not among them
    assert len(slow) and (slow["explain_seconds"] * 32 < 0.5).all()
    assert (slow["explain_peak_bytes"] > 0).all()
    # the manifest says how the memory was counted, and what each metric took
    import json

    cell = next(iter(json.loads((tmp_path / "run" / "manifest.json").read_text())["cells"].values()))
    assert {c["memory"] for c in cell["costs"].values()} == {"cpu-allocator"}
    assert set(cell["metric_seconds"]) == {"tpr-tnr", "acme.mass", "classification", "model-fit"}
    assert all(s > 0 for s in cell["metric_seconds"].values())
