"""heatmap-loss (Callanan): the HiResCAM-outside-the-heart term moves attribution into the heart,
compared with its cross-entropy baseline trained the same way; losses, tags and the legacy option."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import torch_threads
from xbench import Dataset, FitContext, Split
from xbench.datasets.synthetic_cardiac import CLASSES, generate
from xbench.errors import XbenchError
from xbench.plugins.models import heatmap_loss as hl
from xbench.specs import defaults

CPU = torch.device("cpu")


def _half(split: Split) -> Split:
    """Half-resolution cardiac images (52×67) keep the test fast; the heart mask is resized with them."""
    x = F.interpolate(split.images, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
    mask = F.interpolate(split.masks.float()[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0.5
    return Split(x, split.labels, mask, {"heart": mask})


@pytest.fixture(scope="module")
def cardiac():
    # the source's geometry (legacy_variability doubles every size, as in its experiments: heart ≈ 13 %)
    sizes = (("train", 400), ("val", 100), ("test", 100))
    splits = {name: _half(generate(n, 0, i, mode="sex_size", legacy_variability=True)) for i, (name, n) in enumerate(sizes)}
    return Dataset("cardiac-small", CLASSES, splits)


@pytest.fixture(scope="module")
def trained(cardiac):
    """Both variants trained with one torch thread (the numbers, and so the margins below, do not
    depend on the caller's OMP_NUM_THREADS: with 2 threads the heatmap model once reached 0.75)."""
    models = {}
    with torch_threads(1):
        for loss in ("cce", "heatmap"):
            models[loss] = _train(cardiac, loss)
    return models


def _train(cardiac, loss):
    params = {**defaults(hl.PARAMS), "loss": loss, "width": 0.125, "pretrain": "none", "lr": 1e-3, "epochs": 8,
              "batch_size": 32, "patience": 8}
    torch.manual_seed(0)
    model = hl.build(cardiac.describe(), params)
    return model, hl.fit(model, cardiac, params, FitContext(0, CPU, ""))


def _accuracy(model, split):
    with torch.no_grad():
        return (model.eval()(split.images).argmax(1) == split.labels).float().mean().item()


def test_heatmap_loss_puts_more_attribution_inside_the_heart_than_its_cce_baseline(cardiac, trained):
    test = cardiac.test
    heart_area = test.masks.float().mean().item()
    share = {loss: hl.cam_mass_inside(model, test, CPU) for loss, (model, _) in trained.items()}
    accuracy = {loss: _accuracy(model, test) for loss, (model, _) in trained.items()}
    assert accuracy["cce"] > 0.8 and accuracy["heatmap"] > 0.8, accuracy  # chance: 0.25
    print("heart share", share, "heart area", heart_area, "accuracy", accuracy)
    assert share["cce"] > heart_area  # both look at the heart more than chance would
    assert share["heatmap"] > share["cce"] + 0.1, (share, heart_area)
    assert trained["heatmap"][1].metrics["val_cam_in_region"] > trained["cce"][1].metrics["val_cam_in_region"]


def test_both_variants_train_every_layer_unless_legacy_frozen_base(cardiac, trained):
    total = sum(p.numel() for p in trained["cce"][0].parameters())
    assert trained["cce"][1].metrics["trainable_parameters"] == total
    assert trained["heatmap"][1].metrics["trainable_parameters"] == total
    params = {**defaults(hl.PARAMS), "loss": "cce", "width": 0.0625, "pretrain": "none", "lr": 1e-3, "epochs": 1,
              "batch_size": 50, "legacy_frozen_base": True}
    small = Dataset("tiny", CLASSES, {k: Split(s.images[:50], s.labels[:50], s.masks[:50]) for k, s in
                                      (("train", cardiac.train), ("val", cardiac.val), ("test", cardiac.test))})
    torch.manual_seed(0)
    model = hl.build(small.describe(), params)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = hl.fit(model, small, params, FitContext(0, CPU, ""))
    assert report.metrics["trainable_parameters"] == sum(p.numel() for p in model.head.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("features."))
    assert not torch.equal(before["head.0.weight"], model.state_dict()["head.0.weight"])


def test_heatmap_warmup_ramps_the_term_linearly_over_its_epochs():
    params = {**defaults(hl.PARAMS), "heatmap_weight": 2.0, "heatmap_warmup": 1.5}
    ramp = list(itertools.islice(hl.warmup_weights(params, 4), 9))  # 1.5 epochs of 4 steps: 6 steps
    assert ramp == pytest.approx([0.0, 2 / 6, 4 / 6, 1.0, 8 / 6, 10 / 6, 2.0, 2.0, 2.0])
    source = list(itertools.islice(hl.warmup_weights({**params, "heatmap_warmup": 0.0}, 4), 3))
    assert source == [2.0, 2.0, 2.0]  # the source's default: full weight from the first step


def test_fit_trains_its_first_step_without_the_term_under_warmup(cardiac):
    """One step per epoch (50 images, batch 50): under a warm-up its only step has weight 0, so the
    model trains exactly as one with the term off, and unlike one with the term at full weight."""
    small = Dataset("tiny", CLASSES, {k: Split(s.images[:50], s.labels[:50], s.masks[:50]) for k, s in
                                      (("train", cardiac.train), ("val", cardiac.val), ("test", cardiac.test))})
    base = {**defaults(hl.PARAMS), "loss": "heatmap", "width": 0.0625, "pretrain": "none", "lr": 1e-3, "epochs": 1,
            "batch_size": 50}
    states = {}
    with torch_threads(1):
        for name, change in (("warmup", {"heatmap_warmup": 1.0}), ("off", {"heatmap_weight": 0.0}), ("full", {})):
            torch.manual_seed(0)
            model = hl.build(small.describe(), {**base, **change})
            hl.fit(model, small, {**base, **change}, FitContext(0, CPU, ""))
            states[name] = model.state_dict()
    assert all(torch.equal(v, states["off"][k]) for k, v in states["warmup"].items())
    assert not all(torch.equal(v, states["full"][k]) for k, v in states["warmup"].items())


def test_hirescam_is_the_channel_mean_of_activation_times_gradient():
    torch.manual_seed(0)
    model = hl.HeatmapVGG(3, 4, 64, 64, width=0.0625).eval()
    x = torch.rand(3, 3, 64, 64)
    a, logits = model.activations(x)
    cam = hl.hirescam(a, logits)
    for i in range(3):  # one sample at a time, from the definition
        ai, li = model.activations(x[i:i + 1])
        (g,) = torch.autograd.grad(li[0, li[0].argmax()], ai)
        ref = F.relu((ai * g).mean(1))[0]
        ref = ref / ref.max() if ref.max() > 0 else ref
        assert torch.allclose(cam[i], ref, atol=1e-6)
    cam = cam.detach()
    assert cam.shape == (3, 4, 4) and float(cam.min()) >= 0 and float(cam.max()) <= 1
    assert torch.allclose(logits, model(x), atol=1e-6)


def test_cce_on_sigmoid_matches_the_keras_definition():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [-3.0, 4.0, 1.0, -2.0]])
    y = torch.tensor([0, 2])
    p = torch.sigmoid(logits)
    p = p / p.sum(1, keepdim=True)
    expected = torch.stack([-torch.log(p[0, 0]), -torch.log(p[1, 2])])
    assert torch.allclose(hl.cce_on_sigmoid(logits, y), expected)


def _keras_cce_on_sigmoid(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The probability-space formula (Keras: renormalise, clip to [1e-7, 1 − 1e-7], −log)."""
    p = torch.sigmoid(logits)
    p = (p / p.sum(1, keepdim=True)).clamp(1e-7, 1 - 1e-7)
    return -p.gather(1, y[:, None]).log()[:, 0]


def test_cce_on_sigmoid_equals_the_probability_formula_where_that_is_finite():
    g = torch.Generator().manual_seed(0)
    logits = torch.cat([3 * torch.randn(60, 4, generator=g),
                        torch.tensor([[5.0, -20.0, -20.0, -20.0],    # q_y > 1 − 1e-7: clipped above
                                      [-20.0, 5.0, 5.0, 5.0],        # q_y < 1e-7: clipped below
                                      [-40.0, -41.0, -42.0, -60.0]])])  # far negative, still finite
    y = torch.cat([torch.randint(0, 4, (60,), generator=g), torch.tensor([0, 0, 1])])
    new, old = (logits.clone().requires_grad_(True) for _ in range(2))
    got, ref = hl.cce_on_sigmoid(new, y), _keras_cce_on_sigmoid(old, y)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert got[60].item() == pytest.approx(-math.log(1 - 1e-7), rel=0.2) and got[61].item() == pytest.approx(-math.log(1e-7))
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(new.grad, old.grad, rtol=1e-4, atol=1e-6)
    assert new.grad[60:62].abs().max() == 0  # clipped: no gradient, as in Keras


def test_cce_on_sigmoid_stays_finite_for_far_negative_logits():
    """σ(−90)/Σσ is 0/0 in float32; in log space every class is equally likely: loss log 4."""
    y = torch.tensor([0, 3, 1])
    logits = torch.tensor([[-90.0] * 4, [-90.0] * 4, [-90.0, -300.0, -95.0, -1000.0]], requires_grad=True)
    assert torch.isnan(_keras_cce_on_sigmoid(logits, y)[:2]).all()  # the old formula
    loss = hl.cce_on_sigmoid(logits, y)
    assert loss[:2].tolist() == pytest.approx([math.log(4)] * 2, abs=1e-5)  # float32 ulp at −88.6: 7.6e-6
    # third sample: q_1 = σ(−300)/Σσ ≈ e^(−210), clipped to 1e-7
    assert loss[2].item() == pytest.approx(-math.log(1e-7), rel=1e-6)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad[0], torch.tensor([-0.75, 0.25, 0.25, 0.25]))


def test_outside_mask_is_resized_bilinearly():
    region = torch.zeros(1, 8, 8, dtype=torch.bool)
    region[0, :4] = True
    out = hl.outside(region, (2, 2))
    assert torch.equal(out, torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]))


def test_requires_follow_the_params_and_missing_mask_is_clear():
    assert hl.requires({"loss": "heatmap", "region": "mask"}) == {"mask"}
    assert hl.requires({"loss": "heatmap", "region": "heart"}) == {"regions"}
    assert hl.requires({"loss": "cce", "region": "mask"}) == set()
    with pytest.raises(XbenchError, match="ground-truth mask"):
        hl.region_of({"regions": {}}, "mask")
    with pytest.raises(XbenchError, match=r"region 'fat' is not among.*heart"):
        hl.region_of({"regions": {"heart": None}}, "fat")


def _unread_cam_cells(height: int, width: int) -> torch.Tensor:
    """Which cells of the last conv's map get no gradient from the logits at this canvas, (h, w) bool."""
    torch.manual_seed(0)
    model = hl.HeatmapVGG(3, 4, height, width, width=0.125)
    a, logits = model.activations(torch.rand(4, 3, height, width))
    (g,) = torch.autograd.grad(logits.sum(), a)
    return g.abs().sum((0, 1)) == 0


def test_the_callanan_canvas_lets_every_cam_cell_reach_the_classifier():
    """At half resolution (52×68) VGG16's last pooling floors conv5's three rows to one pair, so the
    bottom row, where the male marker lies, never reaches the classifier: every CAM is zero there
    and the marker claim could not be decided. The preset's canvas (12 black rows below: 64×68)
    must not drop a cell, and its marker must lie in the bottom conv5 row it keeps."""
    import tomllib
    from importlib import resources

    from xbench.datasets import synthetic_cardiac as sc
    from xbench.specs import defaults

    assert _unread_cam_cells(52, 68)[-1].all() and not _unread_cam_cells(52, 68)[:-1].any()
    preset = tomllib.loads(resources.files("xbench").joinpath("presets", "callanan.toml").read_text("utf-8"))
    canvas = {k: preset["datasets"]["synthetic-cardiac"][k] for k in ("scale", "pad_bottom")}
    data = sc.load({**defaults(sc.PARAMS), **canvas, "mode": "sex_marker", "n_train": 4, "n_val": 4, "n_test": 8}, 0)
    height, width = data.test.images.shape[-2:]
    assert not _unread_cam_cells(height, width).any(), (height, width)
    rows = data.test.regions["marker"].nonzero()[:, 1]
    assert int(rows.max()) >= 16 * (height // 16 - 1)  # the marker reaches into conv5's bottom row
    pad = canvas["pad_bottom"]
    assert pad > 0 and float(data.test.images[..., height - pad:, :].abs().max()) == 0  # black rows
    assert not any(r[:, height - pad:].any() for r in (data.test.masks, *data.test.regions.values()))
